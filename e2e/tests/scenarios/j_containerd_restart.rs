//! j. containerd restarts under a running Shoal: Shoal reconnects and
//! subscribes to its events again without being restarted. An image pulled
//! before the restart is still served, and an image pulled after it is
//! advertised within seconds (long before the 5 min periodic rescan could
//! have found it): both reach node 2 through peers with the upstream stopped.

use std::time::{Duration, Instant};

use anyhow::Result;
use shoal_e2e::scenario::{KIB, MIB, Scenario, ensure_within};
use shoal_e2e::wait::poll_until;
use shoal_e2e::{ClusterOptions, ImageSpec};

const BOUND: Duration = Duration::from_secs(30);
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Far below the 5 min re-advertisement: only the event subscription can be this fast.
const ADVERTISE_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j_shoal_follows_containerd_across_a_restart() -> Result<()> {
    let mut s = Scenario::start("j", &ClusterOptions::with_shoal(2)).await?;
    let layers = [4 * KIB, 256 * KIB, MIB];
    let before = s.push(&ImageSpec { seed: 100, ..ImageSpec::multi_arch("e2e/j-before", "v1", &layers) }).await?;
    let after = s.push(&ImageSpec { seed: 101, ..ImageSpec::multi_arch("e2e/j-after", "v1", &layers) }).await?;
    s.pull(1, &before).await?;

    let restart = Instant::now();
    s.cluster.node_mut(1)?.containerd().restart().await?;
    let node1 = s.cluster.node(1)?;
    poll_until("node 1's Shoal to report containerd connected", RECONNECT_TIMEOUT, || async {
        Ok((node1.metrics().await?.value("shoal_containerd_connected") == Some(1.0)).then_some(()))
    })
    .await?;
    s.report("containerd on node 1 restarted (stopped, started, answering)", restart.elapsed());

    s.pull(1, &after).await?;
    let pulled_at = Instant::now();
    s.cluster.node(2)?.wait_until_servable(&after, ADVERTISE_TIMEOUT).await?;
    s.report("node 1's new image became findable", pulled_at.elapsed());
    s.wait_servable(2, &before).await?;
    s.stop_upstream()?;
    for image in [&before, &after] {
        let elapsed = s.pull(2, image).await?;
        ensure_within(elapsed, BOUND, "node 2's pull through node 1")?;
        s.verify_content(2, image)?;
    }
    s.ensure_upstream_served_nothing_to(0, 2)?;
    s.finish().await
}
