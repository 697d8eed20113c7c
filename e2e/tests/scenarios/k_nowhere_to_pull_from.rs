//! k. The upstream is down and no peer has the image: the pull fails fast
//! with containerd's normal error (its dial to the upstream is refused once
//! Shoal has answered 404), and nothing hangs.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use shoal_e2e::scenario::{PULL_TIMEOUT, Scenario, ensure_within, timed};
use shoal_e2e::{ClusterOptions, ImageSpec};

const FAILURE_BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_with_the_upstream_down_and_no_peer_holding_it_the_pull_fails_fast() -> Result<()> {
    let s = Scenario::start("k", &ClusterOptions { registry: false, ..ClusterOptions::with_shoal(3) }).await?;
    // Node 1 holds another image, so the DHT is not empty.
    let other = s.build(&ImageSpec::multi_arch("e2e/k-other", "v1", &[4096]))?;
    s.import(1, &other).await?;
    let reference = format!("{}/e2e/k-nowhere:v1", s.cluster.registry_host());

    let node = s.cluster.node(2)?;
    let (outcome, elapsed) = timed(async { Ok(node.cri().pull(&reference, PULL_TIMEOUT).await) }).await?;
    s.report("node 2's pull of an image nobody has failed", elapsed);
    let error = match outcome {
        Ok(pulled) => bail!("the pull of {reference} succeeded: {pulled:?}"),
        Err(error) => format!("{error:#}"),
    };
    eprintln!("[scenario k] containerd's error: {error}");
    ensure!(error.contains("connection refused"), "not containerd's error for a refused upstream: {error}");
    ensure_within(elapsed, FAILURE_BOUND, "the failing pull")?;
    ensure!(!node.cri().has_image(&reference).await?, "CRI lists {reference} after a failed pull");
    let metrics = s.metrics(2).await?;
    ensure!(metrics.requests("miss", "manifest") >= 1.0, "node 2's Shoal answered no miss: {metrics:?}");
    ensure!(metrics.requests("peer", "manifest") == 0.0, "node 2's Shoal claims a peer served it: {metrics:?}");
    s.finish().await
}
