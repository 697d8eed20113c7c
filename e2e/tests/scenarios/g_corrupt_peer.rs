//! g. A corrupt peer: node 2's Shoal binds its registry to 127.0.0.52 and a
//! shim stands where peers reach it (127.0.0.2:5000), flipping one byte of
//! every blob body it passes on. Shoal verifies every blob before a byte
//! reaches containerd: node 3's pulls complete from good sources (node 1, or
//! the upstream when node 2 is the only holder), and every blob containerd
//! committed hashes to its digest.

use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_e2e::ClusterOptions;
use shoal_e2e::scenario::Scenario;

use crate::support::{FaultyPeer, start_with_corrupting_node2};

const BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_a_corrupt_peer_never_gets_a_corrupt_byte_into_containerd() -> Result<()> {
    let mut s = Scenario::start("g", &ClusterOptions { shoal: false, ..ClusterOptions::with_shoal(3) }).await?;
    let shim = start_with_corrupting_node2(&mut s, Vec::new()).await?;

    let images = FaultyPeer::prepare(&s, 60).await?;
    let corrupted_before = shim.corrupted();
    images.pull_shared_from_peers(&mut s, BOUND).await?;
    let corrupted_shared = shim.corrupted() - corrupted_before;
    eprintln!("[scenario g] the shim corrupted {corrupted_shared} blob bodies during the shared image's pull");

    let corrupted_before = shim.corrupted();
    images.pull_only_from_upstream(&mut s, &["digest_mismatch"], BOUND).await?;
    let corrupted_only = shim.corrupted() - corrupted_before;
    // Once caught, the corrupt peer may be excluded before the second pull tries it.
    ensure!(corrupted_shared + corrupted_only >= 1, "the shim corrupted nothing: node 3 never fetched from node 2");
    eprintln!("[scenario g] the shim corrupted {corrupted_only} blob bodies; containerd committed none of them");
    drop(shim);
    s.finish().await
}
