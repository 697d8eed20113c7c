//! l. A trusted peer turns corrupt: node 2 sits behind a shim (as in g) that
//! is honest while node 3 pulls a first image from it, so node 2 earns
//! pass-through trust on node 3. Then the shim flips a byte of every blob
//! body of 1 MiB or more, and node 3 pulls an image only node 2 holds (layers large enough to
//! be passed through). The bad bytes reach containerd before the digest can
//! be checked, so that pull may fail; node 3's Shoal cuts the body, blames
//! node 2 and clears containerd's half-written ingest. What must hold: the
//! next pull (the kubelet's retry) succeeds from the upstream, and every
//! blob containerd committed hashes to its digest.

use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_e2e::scenario::{KIB, MIB, Scenario};
use shoal_e2e::{ClusterOptions, ImageSpec};

use crate::support::{blob_bytes, start_with_corrupting_node2};

const LAYERS: &[u64] = &[4 * KIB, 2 * MIB, 3 * MIB];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_a_trusted_peer_that_turns_corrupt_costs_at_most_one_pull() -> Result<()> {
    let mut s = Scenario::start("l", &ClusterOptions { shoal: false, ..ClusterOptions::with_shoal(3) }).await?;
    let trusting = vec!["--stream-after-verified".to_owned(), "2".to_owned()];
    let shim = start_with_corrupting_node2(&mut s, trusting).await?;
    shim.corrupt_from(None);

    let warmup = s.push(&ImageSpec { seed: 71, ..ImageSpec::multi_arch("e2e/l-warmup", "v1", LAYERS) }).await?;
    let victim = s.push(&ImageSpec { seed: 72, ..ImageSpec::multi_arch("e2e/l-victim", "v1", LAYERS) }).await?;
    s.pull(2, &warmup).await?;
    s.pull(2, &victim).await?;
    s.wait_servable(3, &warmup).await?;
    s.wait_servable(3, &victim).await?;

    // Node 2 earns trust: every blob of the warm-up image comes from it, verified.
    s.stop_upstream()?;
    let before = s.metrics(3).await?;
    s.pull(3, &warmup).await?;
    let after = s.metrics(3).await?;
    let needed = warmup.host_platform()?.blob_bytes() as f64;
    let from_peers = blob_bytes(&after, "peer") - blob_bytes(&before, "peer");
    ensure!(from_peers >= needed, "node 3 got {from_peers} blob bytes from node 2, the warm-up needed {needed}");

    // Node 2 turns corrupt, on blobs large enough to be passed through only
    // (a corrupt small blob would be caught in the spool and exclude node 2 first).
    s.restart_upstream().await?;
    shim.corrupt_from(Some(MIB));
    let first = s.pull(3, &victim).await;
    eprintln!("[scenario l] first pull after node 2 turned corrupt: {}", outcome(&first));
    let after_first = s.metrics(3).await?;
    let passed = after_first.sum("shoal_peer_blob_passthroughs_total", &[])
        - after.sum("shoal_peer_blob_passthroughs_total", &[]);
    eprintln!("[scenario l] node 3 passed {passed} blob(s) through from node 2");
    ensure!(passed >= 1.0, "node 3 never passed a blob through: node 2 did not earn trust");
    let mismatches = after_first.fetch_failures("digest_mismatch") - after.fetch_failures("digest_mismatch");
    ensure!(mismatches >= 1.0, "node 3 recorded no digest mismatch: it never took the corrupt bytes");
    ensure!(shim.corrupted() >= 1, "the shim corrupted nothing");
    if first.is_err() {
        let retry = s.pull(3, &victim).await;
        ensure!(retry.is_ok(), "the retry after a cut pass-through failed too: {}", outcome(&retry));
    }
    s.verify_content(3, &victim)?;
    drop(shim);
    s.finish().await
}

fn outcome(result: &Result<Duration>) -> String {
    match result {
        Ok(elapsed) => format!("succeeded in {:.2} s", elapsed.as_secs_f64()),
        Err(error) => format!("failed: {error:#}"),
    }
}
