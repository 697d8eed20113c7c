//! Hedged fetches and resume, end to end through a real registry node on
//! loopback: scripted peers decide what the Nth request gets, wherever the
//! weighted random choice sends it, so every scenario is deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fake_peer.rs"]
mod fake_peer;
#[path = "support/images.rs"]
mod images;
#[path = "support/node.rs"]
mod node;
#[path = "support/scripted_peer.rs"]
mod scripted_peer;
#[path = "support/wait.rs"]
mod wait;

use wait::eventually;

use bytes::Bytes;
use fake_peer::advertise;
use http::StatusCode;
use images::layer_bytes;
use node::{NodeOptions, TestNode, blob_path, get};
use scripted_peer::{Reply, Script, scripted_peer};
use shoal::mirror::HedgePolicy;
use shoal::oci::{Digest, Key};
use shoal::routing::memory::MemoryNetwork;

/// `names` as scripted peers of one blob, all following `replies`.
async fn scripted(network: &MemoryNetwork, names: &[&str], blob: &Bytes, replies: &[Reply]) -> std::sync::Arc<Script> {
    let script = Script::new(blob.clone(), replies);
    for name in names {
        let endpoint = scripted_peer(name, script.clone()).await;
        advertise(network, name, endpoint, &[Key::Digest(Digest::of(blob))]).await;
    }
    script
}

#[tokio::test]
async fn a_hedge_fires_when_the_first_peer_is_silent_and_wins() {
    let network = MemoryNetwork::new();
    let blob = layer_bytes(21, 1_500_000);
    let script = scripted(&network, &["a", "b"], &blob, &[Reply::Hang]).await;
    let puller = TestNode::start(&network, "puller").await;

    let reply = get(&puller.url(&blob_path(&Digest::of(&blob)))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, blob);

    let seen = script.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(seen[0].peer, seen[1].peer, "the hedge went to the other peer");
    assert_eq!(puller.metric("shoal_hedges_total"), 1);
    assert_eq!(puller.metric("shoal_hedge_wins_total"), 1);
    assert_eq!(
        puller.metric(r#"shoal_peer_fetch_failures_total{reason="header_timeout"}"#),
        0,
        "the silent peer was cancelled, not waited for"
    );
    eventually("the silent peer's connection is closed", || script.hung_closed() == 1).await;
}

#[tokio::test]
async fn without_hedging_the_silent_peer_costs_its_header_timeout() {
    let network = MemoryNetwork::new();
    let blob = layer_bytes(22, 200_000);
    let script = scripted(&network, &["a", "b"], &blob, &[Reply::Hang]).await;
    let options = NodeOptions { hedge: HedgePolicy { enabled: false, ..HedgePolicy::default() }, ..Default::default() };
    let puller = TestNode::start_with(&network, "puller", options).await;

    let reply = get(&puller.url(&blob_path(&Digest::of(&blob)))).await;
    assert_eq!((reply.status, reply.body), (StatusCode::OK, blob));
    assert_eq!(script.seen().len(), 2);
    assert_eq!(puller.metric("shoal_hedges_total"), 0);
    assert_eq!(puller.metric(r#"shoal_peer_fetch_failures_total{reason="header_timeout"}"#), 1);
}

#[tokio::test]
async fn a_hedge_winner_that_breaks_off_is_resumed_elsewhere_byte_identical() {
    let network = MemoryNetwork::new();
    let blob = layer_bytes(23, 2_000_000);
    let cut = 700_000;
    let script = scripted(&network, &["a", "b", "c"], &blob, &[Reply::Hang, Reply::CutAt(cut)]).await;
    let puller = TestNode::start(&network, "puller").await;

    let reply = get(&puller.url(&blob_path(&Digest::of(&blob)))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == blob, "the resumed blob differs from the original");

    let seen = script.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!((seen[0].reply, seen[0].range_start), (Reply::Hang, None));
    assert_eq!((seen[1].reply, seen[1].range_start), (Reply::CutAt(cut), None));
    assert_eq!((seen[2].reply, seen[2].range_start), (Reply::Serve, Some(cut)), "resumed where the cut left off");
    let peers: std::collections::HashSet<&str> = seen.iter().map(|s| s.peer.as_str()).collect();
    assert_eq!(peers.len(), 3, "each attempt went to another peer: {seen:?}");
    assert_eq!(puller.metric("shoal_hedges_total"), 1);
    assert_eq!(puller.metric(r#"shoal_peer_fetch_failures_total{reason="body"}"#), 1);
}

#[tokio::test]
async fn a_blob_cut_twice_is_resumed_twice_and_arrives_byte_identical() {
    let network = MemoryNetwork::new();
    let blob = layer_bytes(24, 3_000_000);
    let replies = [Reply::CutAt(1_000_000), Reply::CutAt(2_000_000)];
    let script = scripted(&network, &["a", "b", "c"], &blob, &replies).await;
    let puller = TestNode::start(&network, "puller").await;

    let reply = get(&puller.url(&blob_path(&Digest::of(&blob)))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == blob, "the resumed blob differs from the original");
    let ranges: Vec<Option<usize>> = script.seen().iter().map(|s| s.range_start).collect();
    assert_eq!(ranges, [None, Some(1_000_000), Some(2_000_000)]);
    assert_eq!(puller.metric(r#"shoal_peer_fetch_failures_total{reason="body"}"#), 2);
    assert_eq!(puller.metric("shoal_hedges_total"), 0, "answers came promptly: nothing to hedge");
}

#[tokio::test]
async fn a_ranged_request_from_containerd_is_served_from_the_resumed_blob() {
    let network = MemoryNetwork::new();
    let blob = layer_bytes(25, 1_000_000);
    scripted(&network, &["a", "b"], &blob, &[Reply::CutAt(400_000)]).await;
    let puller = TestNode::start(&network, "puller").await;
    let url = puller.url(&blob_path(&Digest::of(&blob)));
    let reply = node::request(http::Method::GET, &url, &[("range", "bytes=399990-400009")]).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.body, blob.slice(399_990..400_010));
}
