//! f. A peer is killed in the middle of a large layer: nodes 1 and 2 hold a
//! 256 MiB layer (imported, no registry at all), node 3 pulls it, and
//! whichever holder is seen uploading it is killed (SIGKILL) part-way, as its
//! upload counter shows. Shoal resumes from the other holder with a Range
//! request, and containerd sees no error: it asked for each blob exactly once.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_e2e::image::Arch;
use shoal_e2e::scenario::{KIB, MIB, PULL_TIMEOUT, Scenario, ensure_within, timed};
use shoal_e2e::wait::{Fatal, poll_until};
use shoal_e2e::{ClusterOptions, ImageSpec};

use crate::support::blob_bytes;

const BIG_LAYER: u64 = 256 * MIB;
/// The victim is killed once it has sent at least this much of the big layer…
const KILL_AFTER: u64 = 8 * MIB;
/// …and while at least this much of it is still to go.
const KILL_BEFORE_LAST: u64 = 64 * MIB;
const BOUND: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_a_peer_killed_mid_layer_is_resumed_from_another_without_containerd_noticing() -> Result<()> {
    let mut s = Scenario::start("f", &ClusterOptions { registry: false, ..ClusterOptions::with_shoal(3) }).await?;
    let host = if cfg!(target_arch = "aarch64") { Arch::Arm64 } else { Arch::Amd64 };
    let spec = ImageSpec { arches: vec![host], ..ImageSpec::multi_arch("e2e/f-big", "v1", &[4 * KIB, BIG_LAYER]) };
    let (image, built) = timed(async { s.build(&spec) }).await?;
    s.report("built the image", built);
    let platform = image.host_platform()?.clone();
    let big = platform.layers.iter().map(|l| l.size).max().context("no layers")?;
    let small = platform.blob_bytes() - big;
    let ((), imported) = timed(s.import_into(&[1, 2], &image)).await?;
    s.report("imported it into nodes 1 and 2", imported);
    s.wait_servable(3, &image).await?;

    let uploaded_before = [s.metrics(1).await?.blob_upload_bytes(), s.metrics(2).await?.blob_upload_bytes()];
    let puller_before = s.metrics(3).await?;
    let cri = s.cluster.node(3)?.cri().clone();
    let reference = s.reference(&image);
    let pull = tokio::spawn(async move { cri.pull(&reference, PULL_TIMEOUT).await });

    let scenario = &s;
    let pull_ref = &pull;
    let (victim, sent) = poll_until("a holder to be part-way through the big layer", BOUND, || async move {
        if pull_ref.is_finished() {
            return Err(Fatal("the pull finished before any holder was seen mid-layer".to_owned()).into());
        }
        for (holder, before) in [1, 2].into_iter().zip(uploaded_before) {
            let sent = scenario.metrics(holder).await?.blob_upload_bytes() - before;
            let of_big = sent - small as f64;
            if of_big >= KILL_AFTER as f64 && sent < (big - KILL_BEFORE_LAST) as f64 {
                return Ok(Some((holder, sent)));
            }
        }
        Ok(None)
    })
    .await?;
    s.cluster.node_mut(victim)?.shoal()?.kill();
    eprintln!("[scenario f] killed node {victim}'s Shoal after it had sent {:.1} MiB", sent / MIB as f64);

    let pulled = pull.await??;
    s.report("node 3 pulled the 256 MiB image across the kill", pulled.elapsed);
    ensure_within(pulled.elapsed, BOUND, "the pull across the kill")?;
    ensure!(s.cluster.node(3)?.cri().has_image(&s.reference(&image)).await?, "CRI on node 3 lacks the image");

    let survivor = 3 - victim;
    let survivor_sent = s.metrics(survivor).await?.blob_upload_bytes() - uploaded_before[survivor - 1];
    ensure!(survivor_sent > 0.0, "node {survivor} sent nothing: who finished the layer?");
    ensure!(
        survivor_sent < big as f64,
        "node {survivor} sent {survivor_sent} bytes, the whole big layer again: not resumed from where it broke"
    );
    let after = s.metrics(3).await?;
    let broken = ["body", "stall", "connect"].iter().map(|r| after.fetch_failures(r) - puller_before.fetch_failures(r));
    ensure!(broken.sum::<f64>() >= 1.0, "node 3 recorded no broken transfer: {after:?}");
    let requests = after.requests_of_kind("blob") - puller_before.requests_of_kind("blob");
    let blobs = platform.blobs().len() as f64;
    ensure!(
        requests == blobs,
        "containerd sent {requests} blob requests for {blobs} blobs: it saw an error and retried"
    );
    let from_peers = blob_bytes(&after, "peer") - blob_bytes(&puller_before, "peer");
    ensure!(from_peers >= platform.blob_bytes() as f64, "node 3 served {from_peers} blob bytes from peers");
    eprintln!(
        "[scenario f] node {victim} sent {:.1} MiB before dying, node {survivor} the remaining {:.1} MiB",
        sent / MIB as f64,
        survivor_sent / MIB as f64
    );
    s.finish().await
}
