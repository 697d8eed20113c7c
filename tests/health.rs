//! Peer health through a real registry node on loopback: dead peers leave
//! selection after one failed attempt, a closed connection excludes a peer
//! before any request pays for it, and excluded peers are probed back in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fake_peer.rs"]
mod fake_peer;
#[path = "support/images.rs"]
mod images;
#[path = "support/node.rs"]
mod node;
#[path = "support/wait.rs"]
mod wait;

use std::time::Duration;
use wait::eventually;

use fake_peer::{advertise, dead_endpoint};
use http::StatusCode;
use images::{TestImage, add_image, layer_bytes};
use node::{TestNode, blob_path, get};
use shoal::mirror::{ExclusionReason, PeerStatus};
use shoal::oci::Key;
use shoal::routing::PeerName;
use shoal::routing::memory::MemoryNetwork;
use tokio::time::Instant;

const IMAGE: &str = "registry.test/team/app:v1";

async fn holder(network: &MemoryNetwork, name: &str) -> (TestNode, TestImage) {
    let node = TestNode::start(network, name).await;
    let image = add_image(&node.store, IMAGE, &[layer_bytes(1, 300_000)]);
    node.sync().await;
    (node, image)
}

fn status_of(node: &TestNode, peer: &str) -> Option<PeerStatus> {
    node.mirror.scores().snapshot().into_iter().find(|s| s.peer == peer)
}

#[tokio::test]
async fn a_dead_peer_is_excluded_within_one_failed_attempt() {
    let network = MemoryNetwork::new();
    let (_holder, image) = holder(&network, "holder").await;
    let (digest, bytes) = image.layers[0].clone();
    advertise(&network, "dead", dead_endpoint().await, &[Key::Digest(digest)]).await;
    let puller = TestNode::start(&network, "puller").await;
    let connect_failures = || puller.metric(r#"shoal_peer_fetch_failures_total{reason="connect"}"#);

    // The choice is random: pull until the dead peer has been tried once
    // (about two pulls; 64 without it would take odds of 2^-64).
    for _ in 0..64 {
        let reply = get(&puller.url(&blob_path(&digest))).await;
        assert_eq!((reply.status, &reply.body), (StatusCode::OK, &bytes));
        if connect_failures() == 1 {
            break;
        }
    }
    assert_eq!(connect_failures(), 1);
    let dead = status_of(&puller, "dead").unwrap();
    assert_eq!((dead.state, dead.reason), ("excluded", Some(ExclusionReason::Unreachable)));

    for _ in 0..20 {
        let reply = get(&puller.url(&blob_path(&digest))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(connect_failures(), 1, "no request tried the dead peer again");
    eventually("the dead peer's probes fail and back off", || {
        status_of(&puller, "dead").is_some_and(|s| s.failed_probes >= 2 && s.state == "excluded")
    })
    .await;
    assert!(puller.metric(r#"shoal_peer_probes_total{result="failed"}"#) >= 2);
    assert_eq!(puller.metric("shoal_peers_excluded"), 1);
}

#[tokio::test]
async fn a_closed_connection_excludes_a_peer_before_any_request_pays_for_it() {
    let network = MemoryNetwork::new();
    let (_holder, image) = holder(&network, "holder").await;
    let (victim, _) = holder(&network, "victim").await;
    let puller = TestNode::start(&network, "puller").await;
    let (digest, bytes) = image.layers[0].clone();

    // The victim dies: its server stops, and the router reports the closed
    // connection. Its provider records stay, as in the DHT.
    let victim_addr = victim.addr;
    drop(victim);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(victim_addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the victim's listener did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    network.disconnect(&PeerName::new("victim"));
    let status = status_of(&puller, "victim").unwrap();
    assert_eq!((status.state, status.reason), ("excluded", Some(ExclusionReason::Disconnected)));

    for _ in 0..20 {
        let reply = get(&puller.url(&blob_path(&digest))).await;
        assert_eq!((reply.status, &reply.body), (StatusCode::OK, &bytes));
    }
    let failures = puller.metrics.encode().unwrap();
    // Every reason is exported from the start; none may have counted.
    let failed = failures.lines().filter(|l| l.starts_with("shoal_peer_fetch_failures_total{") && !l.ends_with(" 0"));
    assert_eq!(failed.count(), 0, "no attempt failed:\n{failures}");
}

#[tokio::test]
async fn a_disconnected_peer_that_still_serves_is_probed_back_in_on_probation() {
    let network = MemoryNetwork::new();
    let (_holder, _) = holder(&network, "holder").await;
    let puller = TestNode::start(&network, "puller").await;
    network.disconnect(&PeerName::new("holder"));
    // The probe goes out at once (a connection may close for being idle)
    // and finds the registry answering.
    eventually("the holder is probed back in", || status_of(&puller, "holder").is_some_and(|s| s.state == "healthy"))
        .await;
    let status = status_of(&puller, "holder").unwrap();
    // Probation starts at 0.5 and recovers with a 30 s half-life.
    assert!(status.reliability < 0.6, "back on probation: {status:?}");
    assert_eq!(puller.metric(r#"shoal_peer_probes_total{result="ok"}"#), 1);
}

#[tokio::test]
async fn a_reconnected_peer_is_back_at_once() {
    let network = MemoryNetwork::new();
    let (_holder, image) = holder(&network, "holder").await;
    let puller = TestNode::start(&network, "puller").await;
    let name = PeerName::new("holder");
    network.disconnect(&name);
    network.reconnect(&name);
    assert!(!puller.mirror.scores().is_excluded(&name));
    let reply = get(&puller.url(&blob_path(&image.layers[0].0))).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn unanswered_pings_exclude_and_a_good_ping_restores() {
    let network = MemoryNetwork::new();
    let (_holder, _) = holder(&network, "holder").await;
    let puller = TestNode::start(&network, "puller").await;
    let name = PeerName::new("holder");
    network.ping(&name, Some(Duration::from_millis(4)));
    assert_eq!(status_of(&puller, "holder").unwrap().rtt_ms, Some(4.0));
    network.ping(&name, None);
    assert!(!puller.mirror.scores().is_excluded(&name), "one lost ping is not enough");
    network.ping(&name, None);
    let status = status_of(&puller, "holder").unwrap();
    assert_eq!(status.reason, Some(ExclusionReason::Unresponsive));
    network.ping(&name, Some(Duration::from_millis(4)));
    assert!(!puller.mirror.scores().is_excluded(&name));
}

#[tokio::test]
async fn health_metrics_have_no_per_peer_labels() {
    let network = MemoryNetwork::new();
    let (_holder, image) = holder(&network, "holder").await;
    advertise(&network, "dead-peer-name", dead_endpoint().await, &[Key::Digest(image.layers[0].0)]).await;
    let puller = TestNode::start(&network, "puller").await;
    for _ in 0..4 {
        get(&puller.url(&blob_path(&image.layers[0].0))).await;
    }
    let text = puller.metrics.encode().unwrap();
    assert!(!text.contains("dead-peer-name") && !text.contains("holder"), "{text}");
    let json = serde_json::to_string(&puller.mirror.scores().snapshot()).unwrap();
    assert!(json.contains("\"peer\":\"holder\""), "the status page names peers: {json}");
}
