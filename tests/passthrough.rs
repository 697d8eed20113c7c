//! Blobs passed straight through from trusted peers, end to end through a
//! real registry node on loopback: byte-identical streaming, a trusted peer
//! turning corrupt (the response is cut, never completed, and the peer loses
//! its trust), and resume across trusted peers while streaming.
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

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fake_peer::advertise;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use images::layer_bytes;
use node::{NodeOptions, TestNode, blob_path};
use scripted_peer::{Reply, Script, scripted_peer};
use shoal::oci::{Digest, Key};
use shoal::routing::PeerName;
use shoal::routing::memory::MemoryNetwork;

const TRUST_AFTER: u32 = 2;
const PASSED: &str = "shoal_peer_blob_passthroughs_total";

/// A response read as far as it goes: the body may end with an error.
struct Streamed {
    status: StatusCode,
    content_length: u64,
    body: Vec<u8>,
    error: Option<String>,
}

async fn fetch(url: &str, range_from: Option<usize>) -> Streamed {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut request = Request::get(url);
    if let Some(start) = range_from {
        request = request.header("range", format!("bytes={start}-"));
    }
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request.body(Empty::new()).unwrap()))
        .await
        .expect("headers within 30 s")
        .unwrap();
    let status = response.status();
    let content_length = response.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let mut body = response.into_body();
    let mut data = Vec::new();
    let mut error = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), body.frame()).await.expect("body progress within 30 s") {
            None => break,
            Some(Ok(frame)) => data.extend_from_slice(&frame.into_data().unwrap_or_default()),
            Some(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Streamed { status, content_length, body: data, error }
}

/// A puller that trusts a peer after `TRUST_AFTER` verified blobs.
async fn puller(network: &MemoryNetwork) -> TestNode {
    let options = NodeOptions { stream_after_verified: TRUST_AFTER, ..NodeOptions::default() };
    TestNode::start_with(network, "puller", options).await
}

/// Scripted peers `names` sharing one script for `blob`.
async fn peers(network: &MemoryNetwork, names: &[&str], blob: &Bytes, replies: &[Reply]) -> Arc<Script> {
    let script = Script::new(blob.clone(), replies);
    for name in names {
        let endpoint = scripted_peer(name, script.clone()).await;
        advertise(network, name, endpoint, &[Key::Digest(Digest::of(blob))]).await;
    }
    script
}

/// Gives `name` the history of verified transfers that makes it trusted.
fn trust(node: &TestNode, name: &str) {
    for _ in 0..TRUST_AFTER {
        node.mirror.scores().record_verified(&PeerName::new(name));
    }
}

#[tokio::test]
async fn trust_is_earned_by_verified_blobs_then_blobs_stream_byte_identical() {
    let network = MemoryNetwork::new();
    let blob = layer_bytes(31, 3_000_000);
    peers(&network, &["a"], &blob, &[]).await;
    let puller = puller(&network).await;
    let url = puller.url(&blob_path(&Digest::of(&blob)));

    for round in 1..=3u64 {
        let reply = fetch(&url, None).await;
        assert_eq!((reply.status, reply.error), (StatusCode::OK, None), "round {round}");
        assert!(reply.body == blob, "round {round}: the blob differs from the original");
        let expected_passed = u64::from(round > u64::from(TRUST_AFTER));
        assert_eq!(puller.metric(PASSED), expected_passed, "round {round}");
    }
    assert!(puller.mirror.scores().is_trusted(&PeerName::new("a"), TRUST_AFTER));
    let status = puller.mirror.scores().snapshot();
    assert_eq!((status[0].verified_transfers, status[0].corrupt), (3, false));
}

#[tokio::test]
async fn a_trusted_peer_turning_corrupt_cuts_the_response_and_loses_its_trust() {
    let network = MemoryNetwork::new();
    let blob = layer_bytes(32, 3_000_000);
    let digest = Digest::of(&blob);
    peers(&network, &["a"], &blob, &[Reply::Corrupt]).await;
    let puller = puller(&network).await;
    trust(&puller, "a");
    let url = puller.url(&blob_path(&digest));
    // containerd's write of this blob, and an unrelated one in progress.
    let layer_ref = format!("layer-{digest}");
    puller.store.start_ingest(&layer_ref, digest);
    puller.store.start_ingest("layer-other", Digest::of(b"other"));

    let reply = fetch(&url, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_length, blob.len() as u64);
    assert!(reply.error.is_some(), "the response must be cut, not completed");
    wait::eventually_within("the corrupt blob's ingest is discarded", Duration::from_secs(5), || {
        puller.store.ingests() == ["layer-other"]
    })
    .await;
    assert!(reply.body.len() < blob.len(), "never a complete body: {} bytes", reply.body.len());
    assert_eq!(puller.metric(PASSED), 1);
    assert_eq!(puller.metric(r#"shoal_peer_fetch_failures_total{reason="digest_mismatch"}"#), 1);
    let a = PeerName::new("a");
    assert!(!puller.mirror.scores().is_trusted(&a, TRUST_AFTER));
    assert!(puller.mirror.scores().is_excluded(&a), "a corrupt peer is excluded at once");

    // containerd's next attempt goes through the verified spool, from a
    // peer that now has to prove itself again.
    peers(&network, &["b"], &blob, &[]).await;
    let retry = fetch(&url, None).await;
    assert_eq!((retry.status, retry.error), (StatusCode::OK, None));
    assert!(retry.body == blob);
    assert_eq!(puller.metric(PASSED), 1, "an untrusted peer's blob is verified first");
    let status = puller.mirror.scores().snapshot();
    let a_status = status.iter().find(|s| s.peer == "a").unwrap();
    assert!(a_status.corrupt, "{a_status:?}");
}

#[tokio::test]
async fn a_stream_cut_while_passing_through_is_resumed_from_another_trusted_peer() {
    let network = MemoryNetwork::new();
    let blob = layer_bytes(33, 4_000_000);
    let cut = 1_500_000;
    let script = peers(&network, &["a", "b"], &blob, &[Reply::CutAt(cut)]).await;
    let puller = puller(&network).await;
    trust(&puller, "a");
    trust(&puller, "b");

    let reply = fetch(&puller.url(&blob_path(&Digest::of(&blob))), None).await;
    assert_eq!((reply.status, reply.error), (StatusCode::OK, None));
    assert!(reply.body == blob, "the resumed blob differs from the original");
    let seen = script.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].reply, seen[0].range_start), (Reply::CutAt(cut), None));
    assert_eq!((seen[1].reply, seen[1].range_start), (Reply::Serve, Some(cut)), "resumed where the cut left off");
    assert_ne!(seen[0].peer, seen[1].peer);
    assert_eq!(puller.metric(PASSED), 1);
    assert_eq!(puller.metric(r#"shoal_peer_fetch_failures_total{reason="body"}"#), 1);
}

#[tokio::test]
async fn with_no_trusted_peer_to_resume_from_the_cut_reaches_containerd_whose_range_retry_is_verified() {
    let network = MemoryNetwork::new();
    let blob = layer_bytes(34, 3_000_000);
    let script = peers(&network, &["a"], &blob, &[Reply::CutAt(2_000_000)]).await;
    let puller = puller(&network).await;
    trust(&puller, "a");
    let url = puller.url(&blob_path(&Digest::of(&blob)));

    let cut = fetch(&url, None).await;
    assert!(cut.error.is_some(), "no one to resume from: the body is cut");
    let received = cut.body.len();
    assert!(received <= 2_000_000, "{received}");
    assert!(cut.body[..] == blob[..received], "what was sent is right");

    // containerd resumes from the same mirror with a range: verified first.
    let resumed = fetch(&url, Some(received)).await;
    assert_eq!((resumed.status, resumed.error), (StatusCode::PARTIAL_CONTENT, None));
    assert!(resumed.body[..] == blob[received..]);
    assert_eq!(puller.metric(PASSED), 1, "a ranged request is never passed through");
    assert_eq!(script.seen().len(), 2);
}
