//! The shape shared by the faulty-peer scenarios (c, d, e, g): node 1 is a
//! good peer, node 2 goes bad, node 3 pulls.
//!
//! - `shared` is held by nodes 1 and 2. Node 3 pulls it with the upstream
//!   stopped: every byte must come from peers, whichever of the two Shoal
//!   tries first.
//! - `only` is held by node 2 alone. Node 3 pulls it with the upstream
//!   running: Shoal must try the bad peer (the fault is really hit), give up
//!   within its timeouts, and answer 404 so that containerd falls back.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_e2e::scenario::{KIB, MIB, Scenario, ensure_within};
use shoal_e2e::shim::CorruptingShim;
use shoal_e2e::shoal::{REGISTRY_PORT, ShoalTuning, mirror_url};
use shoal_e2e::{BuiltImage, ImageSpec};

pub const LAYERS: &[u64] = &[4 * KIB, 256 * KIB, MIB];

/// The two images of a faulty-peer scenario.
pub struct FaultyPeer {
    pub shared: BuiltImage,
    pub only: BuiltImage,
}

impl FaultyPeer {
    /// Pushes both images and places them: `shared` on nodes 1 and 2 (node 2
    /// through its peer), `only` on node 2; node 3 can find both.
    pub async fn prepare(s: &Scenario, seed: u64) -> Result<Self> {
        let name = s.name;
        let shared_spec = ImageSpec { seed, ..ImageSpec::multi_arch(&format!("e2e/{name}-shared"), "v1", LAYERS) };
        let only_spec =
            ImageSpec { seed: seed + 1, ..ImageSpec::multi_arch(&format!("e2e/{name}-only"), "v1", LAYERS) };
        let shared = s.push(&shared_spec).await?;
        let only = s.push(&only_spec).await?;
        s.pull(1, &shared).await?;
        s.wait_servable(2, &shared).await?;
        s.pull(2, &shared).await?;
        s.pull(2, &only).await?;
        s.wait_servable(3, &shared).await?;
        s.wait_servable(3, &only).await?;
        Ok(Self { shared, only })
    }

    /// With the upstream stopped, node 3 pulls `shared`: all from peers, within `bound`.
    pub async fn pull_shared_from_peers(&self, s: &mut Scenario, bound: Duration) -> Result<Duration> {
        s.stop_upstream()?;
        let mark = s.upstream_mark()?;
        let before = s.metrics(3).await?;
        let elapsed = s.pull(3, &self.shared).await?;
        ensure_within(elapsed, bound, "node 3's pull of the shared image with a bad peer")?;
        let after = s.metrics(3).await?;
        let from_peers = blob_bytes(&after, "peer") - blob_bytes(&before, "peer");
        let needed = self.shared.host_platform()?.blob_bytes() as f64;
        ensure!(from_peers >= needed, "node 3 got {from_peers} blob bytes from peers, the pull needed {needed}");
        s.ensure_upstream_served_nothing_to(mark, 3)?;
        s.verify_content(3, &self.shared)?;
        let tried_bad = after.all_fetch_failures() - before.all_fetch_failures();
        eprintln!("[scenario {}] shared image: {tried_bad} attempt(s) on the bad peer failed first", s.name);
        Ok(elapsed)
    }

    /// With the upstream running, node 3 pulls `only`: Shoal must either
    /// record a failure for one of `reasons` (it tried the bad peer) or have
    /// excluded the bad peer already (health checks found it first), and the
    /// upstream must serve node 3 every blob, all within `bound`.
    pub async fn pull_only_from_upstream(
        &self,
        s: &mut Scenario,
        reasons: &[&str],
        bound: Duration,
    ) -> Result<Duration> {
        s.restart_upstream().await?;
        let mark = s.upstream_mark()?;
        let before = s.metrics(3).await?;
        let elapsed = s.pull(3, &self.only).await?;
        ensure_within(elapsed, bound, "node 3's pull of an image only the bad peer holds")?;
        let after = s.metrics(3).await?;
        let failures: f64 = reasons.iter().map(|r| after.fetch_failures(r) - before.fetch_failures(r)).sum();
        // Excluded when the pull started or when it ended: a probe may lift
        // the exclusion while the pull runs (the bad peer still answers probes).
        let excluded = before.sum("shoal_peers_excluded", &[]).max(after.sum("shoal_peers_excluded", &[]));
        ensure!(
            failures >= 1.0 || excluded >= 1.0,
            "node 3 neither recorded a {reasons:?} failure nor had the bad peer excluded ({after:?})"
        );
        let misses = after.requests("miss", "blob") - before.requests("miss", "blob");
        let blobs = self.only.host_platform()?.blobs().len() as f64;
        ensure!(misses >= blobs, "node 3's Shoal answered {misses} blob misses, expected one per blob ({blobs})");
        s.upstream_served(mark, 3, &self.only).await?;
        s.verify_content(3, &self.only)?;
        Ok(elapsed)
    }
}

/// `shoal_bytes_served_total{kind="blob", source}`.
pub fn blob_bytes(metrics: &shoal_e2e::metrics::Metrics, source: &str) -> f64 {
    metrics.sum("shoal_bytes_served_total", &[("source", source), ("kind", "blob")])
}

/// Where node 2's real registry listens when a shim stands in front of it.
const HIDDEN_REGISTRY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 52);

/// Starts Shoal on nodes 1 to 3 with node 2 behind a corrupting shim: its
/// registry binds to a hidden address and the shim stands where peers reach
/// it, while node 2's own containerd talks to its Shoal directly. Node 3
/// runs with `node3_args`. The shim starts out corrupting every blob body.
pub async fn start_with_corrupting_node2(s: &mut Scenario, node3_args: Vec<String>) -> Result<CorruptingShim> {
    let bad = s.cluster.node(2)?.ip;
    let shim = CorruptingShim::start(
        SocketAddr::from((bad, REGISTRY_PORT)),
        SocketAddr::from((HIDDEN_REGISTRY, REGISTRY_PORT)),
    )
    .await?;
    let upstream = s.cluster.registry_url();
    s.cluster.node(2)?.configure_mirror_at(&mirror_url(HIDDEN_REGISTRY), &[&upstream])?;
    s.cluster.start_shoal_on(1, ShoalTuning::default()).await?;
    s.cluster.start_shoal_on(2, ShoalTuning { registry_ip: Some(HIDDEN_REGISTRY), args: Vec::new() }).await?;
    s.cluster.start_shoal_on(3, ShoalTuning { registry_ip: None, args: node3_args }).await?;
    Ok(shim)
}
