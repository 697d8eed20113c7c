//! The soak's peer churn: one node that never pulls is SIGKILLed and, a few
//! seconds later, started again (same data directory, so the same identity),
//! at seeded intervals so that a run can be replayed. Bounded: one step per
//! interval of at least [`DOWN_FOR`], and the run itself is bounded.

use std::time::Duration;

use anyhow::Result;
use shoal_e2e::Cluster;
use shoal_e2e::load::SplitMix64;
use tokio::time::Instant;

/// Up time between two kills: `UP_MIN_SECS ..= UP_MIN_SECS + UP_SPREAD_SECS`.
const UP_MIN_SECS: u64 = 15;
const UP_SPREAD_SECS: usize = 10;
/// How long the victim stays down.
const DOWN_FOR: Duration = Duration::from_secs(5);

pub struct Churn {
    rng: SplitMix64,
    victim: usize,
    down: bool,
    next: Instant,
    pub kills: usize,
    pub restarts: usize,
    pub restart_times: Vec<Duration>,
}

impl Churn {
    pub fn new(seed: u64, victim: usize) -> Self {
        let mut churn = Self {
            rng: SplitMix64::new(seed),
            victim,
            down: false,
            next: Instant::now(),
            kills: 0,
            restarts: 0,
            restart_times: Vec::new(),
        };
        churn.next = Instant::now() + churn.up_time();
        churn
    }

    /// When the next step is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Kills the victim if it is up, else starts it again.
    pub async fn step(&mut self, cluster: &mut Cluster, elapsed: Duration) -> Result<()> {
        if self.down {
            self.restart(cluster).await?;
            self.next = Instant::now() + self.up_time();
        } else {
            cluster.node_mut(self.victim)?.shoal()?.kill();
            self.down = true;
            self.kills += 1;
            self.next = Instant::now() + DOWN_FOR;
            eprintln!("[soak] {:.0} s: killed node {}'s Shoal (SIGKILL)", elapsed.as_secs_f64(), self.victim);
        }
        Ok(())
    }

    /// Starts the victim again if it is down.
    pub async fn finish(&mut self, cluster: &mut Cluster) -> Result<()> {
        if self.down { self.restart(cluster).await } else { Ok(()) }
    }

    async fn restart(&mut self, cluster: &mut Cluster) -> Result<()> {
        let start = Instant::now();
        cluster.node_mut(self.victim)?.restart_shoal().await?;
        self.down = false;
        self.restarts += 1;
        self.restart_times.push(start.elapsed());
        eprintln!("[soak] restarted node {}'s Shoal in {:.2} s", self.victim, start.elapsed().as_secs_f64());
        Ok(())
    }

    fn up_time(&mut self) -> Duration {
        Duration::from_secs(UP_MIN_SECS + self.rng.below(UP_SPREAD_SECS + 1) as u64)
    }
}
