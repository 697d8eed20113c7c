//! The real binary restarted, with SIGTERM and with `kill -9`: the identity
//! stays, the peer store brings the peers back without any bootstrap flag,
//! selection scores are restored, and local content is served to peers
//! right after start (the time is printed). Also: a corrupt state file is
//! set aside and the node starts anyway.
//!
//! Each test runs a real containerd daemon (started and killed by the test)
//! and `shoal` processes on 127.0.4.N; nothing leaves loopback.

use std::path::Path;

use crate::binary::{ShoalNode, eventually, free_port_on, get, ip, until_served};
use crate::seed::{SeededImage, layers, seed_image};
use crate::seeder::seeder;
use anyhow::{Result, ensure};
use http::StatusCode;
use shoal_e2e::containerd::Containerd;

/// A node with a containerd holding one image, and a peer without content
/// that bootstraps from it.
struct Pair {
    _containerd: Containerd,
    image: SeededImage,
    holder: ShoalNode,
    peer: ShoalNode,
    _dir: tempfile::TempDir,
}

impl Pair {
    async fn start(holder_n: u8, peer_n: u8) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("shoal-restart-").tempdir()?;
        let containerd = Containerd::start_temporary().await?;
        let seeder = seeder(&containerd, "k8s.io").await?;
        let image = seed_image(&seeder, "registry.test/app:v1", &layers("app", 3, 200_000)).await?;
        let registry_port = free_port_on(&[ip(holder_n), ip(peer_n)])?;
        let mut holder = ShoalNode::new(holder_n, registry_port, dir.path())?;
        holder.data_dir = Some(dir.path().join("holder"));
        holder.containerd = Some((containerd.socket(), containerd.content_dir()));
        let mut peer = ShoalNode::new(peer_n, registry_port, dir.path())?;
        peer.data_dir = Some(dir.path().join("peer"));
        holder.start(&[])?;
        peer.start(&[format!("--bootstrap-peers={}", holder.router_multiaddr())])?;
        Ok(Self { _containerd: containerd, image, holder, peer, _dir: dir })
    }

    /// The peer pulls `digest` through its mirror (from the holder).
    async fn peer_pulls(&self, digest: &shoal::oci::Digest) -> Result<()> {
        let url = self.peer.registry_url(&format!("/v2/app/blobs/{digest}?ns=registry.test"));
        eventually(&format!("{} pulls {digest} from its peer", self.peer.ip), || async {
            matches!(get(&url, &[]).await, Some((StatusCode::OK, body)) if shoal::oci::Digest::of(&body) == *digest)
        })
        .await
    }
}

async fn connected_peers(node: &ShoalNode) -> f64 {
    node.metric("shoal_connected_peers").await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_identity_peers_and_scores_come_back_and_content_is_served_at_once() -> Result<()> {
    let mut pair = Pair::start(1, 2).await?;
    pair.peer_pulls(&pair.image.layers[0]).await?;
    let (holder_name, mode) = pair.holder.identity_and_mode().await?;
    assert_eq!(mode, "fresh");

    assert!(pair.holder.terminate().await?.success(), "a clean exit on SIGTERM");
    let started = pair.holder.start(&[])?; // no bootstrap flag: peers come from the peer store
    let served_after = until_served(&pair.holder, "app", &pair.image.layers[1].to_string(), started).await?;
    println!("restart with persisted state (SIGTERM): first peer request served {served_after:?} after spawn");
    let (name, mode) = pair.holder.identity_and_mode().await?;
    assert_eq!((name.as_str(), mode.as_str()), (holder_name.as_str(), "recovered"), "same identity, recovered");
    eventually("the holder reconnects to its peer from the peer store", || async {
        connected_peers(&pair.holder).await >= 1.0
    })
    .await?;
    pair.peer_pulls(&pair.image.layers[1]).await?;

    // The peer restarts too: it finds the holder again, and its score for the holder is back.
    let scored = pair.peer.status_peers().await.expect("status page");
    ensure!(scored["scores"].as_array().is_some_and(|s| !s.is_empty()), "the peer scored the holder: {scored}");
    assert!(pair.peer.terminate().await?.success());
    pair.peer.start(&[])?;
    eventually("the peer reconnects from its peer store", || async { connected_peers(&pair.peer).await >= 1.0 })
        .await?;
    let restored = pair.peer.status_peers().await.expect("status page");
    let scores = restored["scores"].as_array().cloned().unwrap_or_default();
    ensure!(scores.iter().any(|s| s["peer"] == holder_name.as_str()), "the holder's score is restored: {restored}");
    pair.peer_pulls(&pair.image.layers[2]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_identity_and_peers_come_back_and_content_is_served_at_once() -> Result<()> {
    let mut pair = Pair::start(11, 12).await?;
    pair.peer_pulls(&pair.image.layers[0]).await?;
    let (holder_name, _) = pair.holder.identity_and_mode().await?;
    eventually("the holder saved its peer", || async {
        pair.holder.metric("shoal_state_saved_peers").await.unwrap_or(0.0) >= 1.0
    })
    .await?;

    pair.holder.kill9()?;
    let started = pair.holder.start(&[])?;
    let served_after = until_served(&pair.holder, "app", &pair.image.layers[1].to_string(), started).await?;
    println!("restart with persisted state (kill -9): first peer request served {served_after:?} after spawn");
    let (name, mode) = pair.holder.identity_and_mode().await?;
    assert_eq!((name.as_str(), mode.as_str()), (holder_name.as_str(), "recovered"));
    eventually("the holder reconnects to its peer", || async { connected_peers(&pair.holder).await >= 1.0 }).await?;
    pair.peer_pulls(&pair.image.layers[2]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_set_aside_and_the_node_starts_from_containerd() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("shoal-corrupt-").tempdir()?;
    let containerd = Containerd::start_temporary().await?;
    let image =
        seed_image(&seeder(&containerd, "k8s.io").await?, "registry.test/app:v1", &layers("c", 1, 1000)).await?;
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    std::fs::write(data_dir.join("state.redb"), b"not a database")?;
    let mut node = ShoalNode::new(21, free_port_on(&[ip(21)])?, dir.path())?;
    node.data_dir = Some(data_dir.clone());
    node.containerd = Some((containerd.socket(), containerd.content_dir()));
    let started = node.start(&[])?;
    until_served(&node, "app", &image.layers[0].to_string(), started).await?;
    node.ensure_running()?;
    assert_eq!(node.identity_and_mode().await?.1, "rebuilt");
    assert_eq!(std::fs::read(data_dir.join("state.redb.corrupt"))?, b"not a database");
    assert!(logged_warning(&node.log_path(), "setting it aside"), "a warning names what happened");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_data_dir_the_node_starts_cold_and_serves() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("shoal-cold-").tempdir()?;
    let containerd = Containerd::start_temporary().await?;
    let image =
        seed_image(&seeder(&containerd, "k8s.io").await?, "registry.test/app:v1", &layers("d", 1, 1000)).await?;
    let mut node = ShoalNode::new(22, free_port_on(&[ip(22)])?, dir.path())?;
    node.containerd = Some((containerd.socket(), containerd.content_dir()));
    let started = node.start(&[])?;
    let served_after = until_served(&node, "app", &image.layers[0].to_string(), started).await?;
    println!("cold start without a data dir: first peer request served {served_after:?} after spawn");
    assert_eq!(node.identity_and_mode().await?.1, "cold");
    Ok(())
}

fn logged_warning(log: &Path, words: &str) -> bool {
    std::fs::read_to_string(log).unwrap_or_default().lines().any(|l| l.contains("WARN") && l.contains(words))
}
