//! Upload limits: a node at its limit answers other nodes at once with 429
//! and Retry-After, and the asking node takes another peer without counting
//! the busy one as unhealthy. Real registry nodes on loopback.
//!
//! An upload is held open deterministically by pacing the holder at one
//! byte per second: its first chunks go out, the rest waits until the
//! client goes away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fake_peer.rs"]
mod fake_peer;
#[path = "support/images.rs"]
mod images;
#[path = "support/node.rs"]
mod node;
#[path = "support/wait.rs"]
mod wait;

use wait::eventually;

use http::StatusCode;
use images::{TestImage, add_image, layer_bytes};
use node::{NodeOptions, TestNode, blob_path, get, request};
use shoal::mirror::MIRRORED_HEADER;
use shoal::oci::Digest;
use shoal::registry::UploadLimits;
use shoal::routing::memory::MemoryNetwork;
use tokio::task::JoinHandle;

const IMAGE: &str = "registry.test/team/app:v1";

/// A node holding the image that uploads to one peer at a time, at 1 B/s.
async fn saturable_holder(network: &MemoryNetwork, name: &str) -> (TestNode, TestImage) {
    let uploads = UploadLimits { max_concurrent: Some(1), bytes_per_second: Some(1) };
    let node = TestNode::start_with(network, name, NodeOptions { uploads, ..NodeOptions::default() }).await;
    let image = add_image(&node.store, IMAGE, &[layer_bytes(1, 1_000_000)]);
    node.sync().await;
    (node, image)
}

/// Starts a peer's upload of `digest` from `node` and keeps it open.
async fn hold_an_upload(node: &TestNode, digest: &Digest) -> JoinHandle<()> {
    let url = node.url(&blob_path(digest));
    let holder = tokio::spawn(async move {
        request(http::Method::GET, &url, &[(MIRRORED_HEADER, "true")]).await;
    });
    eventually("the upload is in flight", || node.metric("shoal_uploads_in_flight") == 1).await;
    holder
}

#[tokio::test]
async fn a_saturated_node_answers_429_at_once_and_frees_the_slot_when_the_upload_ends() {
    let network = MemoryNetwork::new();
    let (holder, image) = saturable_holder(&network, "holder").await;
    let (digest, _) = image.layers[0].clone();
    let upload = hold_an_upload(&holder, &digest).await;

    let turned_away = request(http::Method::GET, &holder.url(&blob_path(&digest)), &[(MIRRORED_HEADER, "true")]).await;
    assert_eq!(turned_away.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(turned_away.header("retry-after"), "1");
    assert_eq!(turned_away.error_code(), "TOOMANYREQUESTS");
    assert_eq!(holder.metric(r#"shoal_peer_requests_total{kind="blob",result="busy"}"#), 1);

    let own = get(&holder.url(&blob_path(&image.config))).await;
    assert_eq!(own.status, StatusCode::OK, "this node's own containerd is never limited");

    upload.abort();
    eventually("the slot is freed", || holder.metric("shoal_uploads_in_flight") == 0).await;
    let admitted = hold_an_upload(&holder, &image.config).await;
    admitted.abort();
}

#[tokio::test]
async fn a_busy_peer_is_skipped_for_another_without_being_marked_unhealthy() {
    let network = MemoryNetwork::new();
    let (busy, image) = saturable_holder(&network, "busy").await;
    let other = TestNode::start(&network, "other").await;
    add_image(&other.store, IMAGE, &[layer_bytes(1, 1_000_000)]);
    other.sync().await;
    let (digest, bytes) = image.layers[0].clone();
    let _upload = hold_an_upload(&busy, &digest).await;

    // Peer choice is random: new pullers until one asks the busy peer first
    // (about two; 64 without it would take odds of 2^-64).
    let mut asked_busy = None;
    for i in 0..64 {
        let puller = TestNode::start(&network, &format!("puller-{i}")).await;
        let reply = get(&puller.url(&blob_path(&digest))).await;
        assert_eq!((reply.status, &reply.body), (StatusCode::OK, &bytes));
        if puller.metric(r#"shoal_peer_fetch_failures_total{reason="busy"}"#) == 1 {
            asked_busy = Some(puller);
            break;
        }
    }
    let puller = asked_busy.expect("some puller asked the busy peer");
    let status = puller.mirror.scores().snapshot().into_iter().find(|s| s.peer == "busy").unwrap();
    assert_eq!((status.state, status.reason, status.consecutive_failures), ("busy", None, 0));
    assert!((status.reliability - 1.0).abs() < 1e-9, "busy is not a failure: {status:?}");
    assert_eq!(busy.metric(r#"shoal_peer_requests_total{kind="blob",result="served"}"#), 1, "only the held upload");
    assert!(other.metric(r#"shoal_peer_requests_total{kind="blob",result="served"}"#) >= 1);
}
