//! The soak's figures, its summary line and JSON report
//! (`target/soak-report.json`), and its verdict: every bound the test
//! asserts is checked here, after the report is out, so that a failed run
//! still leaves its figures behind.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;
use shoal_e2e::bad_clients::{Kind, Tally};
use shoal_e2e::load::{FetchedBytes, PullDone, percentile};
use shoal_e2e::resources::Usage;

use crate::churn::Churn;
use crate::monitor::Monitor;
use crate::pulls::PullEvent;
use crate::{FD_GROWTH_MAX, LANES, MAX_PULLS, MIN_SAMPLES, NODES, PULLERS, RSS_GROWTH_MAX, WARM_UP_MAX, WARM_UP_MIN};

const MIB: f64 = 1024.0 * 1024.0;
/// Failed pulls listed in the report.
const KEPT_FAILURES: usize = 10;

/// Every pull of the run.
#[derive(Default)]
pub struct PullLog {
    pub times: Vec<Duration>,
    pub blob_bytes: u64,
    pub failed: usize,
    pub failures: Vec<String>,
}

impl PullLog {
    pub fn record(&mut self, event: PullEvent) {
        match event {
            PullEvent::Done(PullDone { elapsed, blob_bytes }) => {
                self.times.push(elapsed);
                self.blob_bytes += blob_bytes;
            }
            PullEvent::Failed(message) => {
                eprintln!("[soak] FAILED {message}");
                self.failed += 1;
                if self.failures.len() < KEPT_FAILURES {
                    self.failures.push(message);
                }
            }
        }
    }
}

/// What the run produced.
pub struct RunFigures {
    pub soaked_for: Duration,
    pub pulls: PullLog,
    pub churn: Churn,
    pub monitor: Monitor,
    pub bad_clients: BTreeMap<Kind, Tally>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    seed: u64,
    soak_secs: f64,
    pulls: usize,
    failed_pulls: usize,
    failures: Vec<String>,
    pull_p50_secs: f64,
    pull_p99_secs: f64,
    pull_max_secs: f64,
    pulled_blob_bytes: u64,
    blob_bytes_from_peers: Option<u64>,
    blob_bytes_from_upstream: Option<u64>,
    byte_accounting_error: Option<String>,
    peer_fetch_failures: BTreeMap<String, f64>,
    shoal_requests: u64,
    shoal_bytes_served: u64,
    scrape_failures: u64,
    kills: usize,
    restarts: usize,
    slowest_restart_secs: f64,
    bad_client_requests: u64,
    bad_clients: BTreeMap<Kind, Tally>,
    nodes: Vec<NodeReport>,
}

#[derive(Debug, Serialize)]
struct NodeReport {
    node: usize,
    processes: usize,
    rss_min_mib: f64,
    rss_max_mib: f64,
    fd_min: u64,
    fd_max: u64,
    processes_checked: Vec<ProcessGrowth>,
}

/// A process checked for leaks: its growth from the first to the last third.
#[derive(Debug, Serialize)]
struct ProcessGrowth {
    pid: u32,
    samples: usize,
    rss_growth_mib: f64,
    fd_growth: i64,
    /// Medians of each tenth of the process's life: RSS in MiB, open fds.
    rss_mib_by_tenth: Vec<f64>,
    fds_by_tenth: Vec<u64>,
    /// Open descriptors by kind at the first and at the last scrape.
    fds_first: BTreeMap<String, u64>,
    fds_last: BTreeMap<String, u64>,
}

impl Report {
    pub fn new(figures: &RunFigures, bytes: Result<FetchedBytes>, seed: u64) -> Self {
        let mut times = figures.pulls.times.clone();
        times.sort();
        let (shoal_requests, shoal_bytes_served) = figures.monitor.shoal_totals();
        let (from_peers, from_upstream, failures, error) = match bytes {
            Ok(b) => (Some(b.from_peers), Some(b.from_upstream), b.peer_fetch_failures, None),
            Err(err) => (None, None, BTreeMap::new(), Some(format!("{err:#}"))),
        };
        Self {
            seed,
            soak_secs: figures.soaked_for.as_secs_f64(),
            pulls: times.len(),
            failed_pulls: figures.pulls.failed,
            failures: figures.pulls.failures.clone(),
            pull_p50_secs: percentile(&times, 0.50).as_secs_f64(),
            pull_p99_secs: percentile(&times, 0.99).as_secs_f64(),
            pull_max_secs: times.last().copied().unwrap_or_default().as_secs_f64(),
            pulled_blob_bytes: figures.pulls.blob_bytes,
            blob_bytes_from_peers: from_peers,
            blob_bytes_from_upstream: from_upstream,
            byte_accounting_error: error,
            peer_fetch_failures: failures,
            shoal_requests,
            shoal_bytes_served,
            scrape_failures: figures.monitor.scrape_failures,
            kills: figures.churn.kills,
            restarts: figures.churn.restarts,
            slowest_restart_secs: figures.churn.restart_times.iter().max().copied().unwrap_or_default().as_secs_f64(),
            bad_client_requests: figures.bad_clients.values().map(|t| t.requests).sum(),
            bad_clients: figures.bad_clients.clone(),
            nodes: (1..=NODES).map(|node| node_report(&figures.monitor, node)).collect(),
        }
    }

    /// The summary line, and one line per node and per kind of bad client.
    pub fn print(&self) {
        eprintln!(
            "[soak] SUMMARY {:.0} s: {} pulls ({} failed, p50 {:.3} s, p99 {:.3} s), {} Shoal requests, {} bytes \
             served ({} blob bytes pulled), {} bad-client requests, {} kills / {} restarts; {}",
            self.soak_secs,
            self.pulls,
            self.failed_pulls,
            self.pull_p50_secs,
            self.pull_p99_secs,
            self.shoal_requests,
            self.shoal_bytes_served,
            self.pulled_blob_bytes,
            self.bad_client_requests,
            self.kills,
            self.restarts,
            self.nodes
                .iter()
                .map(|n| format!(
                    "node {}: RSS {:.1}-{:.1} MiB, fds {}-{}",
                    n.node, n.rss_min_mib, n.rss_max_mib, n.fd_min, n.fd_max
                ))
                .collect::<Vec<_>>()
                .join("; "),
        );
        eprintln!(
            "[soak] blob bytes from peers {:?}, from the upstream {:?}; failed peer fetches {:?}",
            self.blob_bytes_from_peers, self.blob_bytes_from_upstream, self.peer_fetch_failures
        );
        for node in &self.nodes {
            eprintln!("[soak] node {} leak checks: {:?}", node.node, node.processes_checked);
        }
        for (kind, tally) in &self.bad_clients {
            eprintln!(
                "[soak] bad client {kind:?}: {} requests, statuses {:?}, closed {}, refused {}, hung {}, held {}",
                tally.requests, tally.statuses, tally.closed, tally.refused, tally.hung, tally.held_to_lifetime
            );
        }
    }

    /// Writes the report to `target/soak-report.json` (or under `CARGO_TARGET_DIR`).
    pub fn write_json(&self) -> Result<PathBuf> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
        std::fs::create_dir_all(&target)?;
        let path = target.join("soak-report.json");
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)?;
        Ok(path)
    }

    /// Fails with every bound the run broke.
    pub fn check(&self) -> Result<()> {
        let mut broken = Vec::new();
        if self.failed_pulls > 0 {
            broken.push(format!("{} pulls failed, e.g. {:?}", self.failed_pulls, self.failures));
        }
        if self.pulls < LANES {
            broken.push(format!("only {} pulls finished", self.pulls));
        }
        if self.pulls > MAX_PULLS {
            broken.push(format!("{} pulls ran, over the cap of {MAX_PULLS}", self.pulls));
        }
        if let Some(error) = &self.byte_accounting_error {
            broken.push(error.clone());
        }
        if self.kills == 0 || self.restarts != self.kills {
            broken.push(format!("churn: {} kills and {} restarts", self.kills, self.restarts));
        }
        broken.extend(self.leaks());
        broken.extend(self.bad_client_problems());
        if !broken.is_empty() {
            bail!("the soak broke {} bound(s):\n- {}", broken.len(), broken.join("\n- "));
        }
        Ok(())
    }

    fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        for node in &self.nodes {
            for p in &node.processes_checked {
                if p.rss_growth_mib * MIB > RSS_GROWTH_MAX as f64 || p.fd_growth > FD_GROWTH_MAX {
                    leaks.push(format!(
                        "node {} (pid {}) grew by {:.1} MiB and {} fds over {} samples (bounds {} MiB, {} fds)",
                        node.node,
                        p.pid,
                        p.rss_growth_mib,
                        p.fd_growth,
                        p.samples,
                        RSS_GROWTH_MAX as f64 / MIB,
                        FD_GROWTH_MAX
                    ));
                }
            }
            if PULLERS.contains(&node.node) && node.processes_checked.is_empty() {
                leaks.push(format!("node {} ran too briefly to be checked for leaks", node.node));
            }
        }
        leaks
    }

    fn bad_client_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for kind in Kind::ALL {
            let Some(tally) = self.bad_clients.get(&kind) else {
                problems.push(format!("bad client {kind:?} never ran"));
                continue;
            };
            let answered_or_closed = tally.statuses.values().sum::<u64>() + tally.closed + tally.held_to_lifetime;
            if answered_or_closed == 0 {
                problems.push(format!("bad client {kind:?} never reached a running node"));
            }
            if tally.hung > 0 {
                problems.push(format!("bad client {kind:?}: {} exchanges hung", tally.hung));
            }
            if tally.server_error_count() > 0 {
                problems.push(format!("bad client {kind:?} got 5xx: {:?}", tally.server_errors));
            }
        }
        problems
    }
}

fn node_report(monitor: &Monitor, node: usize) -> NodeReport {
    let rss = monitor.sampler.node_range(node, |u: &Usage| u.rss_bytes).unwrap_or_default();
    let fds = monitor.sampler.node_range(node, |u: &Usage| u.fds).unwrap_or_default();
    let series: Vec<_> = monitor.sampler.series().iter().filter(|s| s.node == node).collect();
    let processes_checked = series
        .iter()
        .filter_map(|s| {
            let warm_up = (s.samples.len() / 3).clamp(WARM_UP_MIN, WARM_UP_MAX);
            let growth = s.growth(warm_up, MIN_SAMPLES)?;
            Some(ProcessGrowth {
                pid: s.pid,
                samples: growth.samples,
                rss_growth_mib: growth.rss_bytes as f64 / MIB,
                fd_growth: growth.fds,
                rss_mib_by_tenth: s.medians(10, |u| u.rss_bytes).iter().map(|b| *b as f64 / MIB).collect(),
                fds_by_tenth: s.medians(10, |u| u.fds),
                fds_first: monitor.fd_kinds.get(&s.pid).map(|k| k.0.clone()).unwrap_or_default(),
                fds_last: monitor.fd_kinds.get(&s.pid).map(|k| k.1.clone()).unwrap_or_default(),
            })
        })
        .collect();
    NodeReport {
        node,
        processes: series.len(),
        rss_min_mib: rss.0 as f64 / MIB,
        rss_max_mib: rss.1 as f64 / MIB,
        fd_min: fds.0,
        fd_max: fds.1,
        processes_checked,
    }
}
