//! Registry component tests: real hyper servers on loopback, in-memory
//! content stores and router, and peers that misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fake_peer.rs"]
mod fake_peer;
#[path = "support/images.rs"]
mod images;
#[path = "support/node.rs"]
mod node;

use bytes::Bytes;
use fake_peer::{Behaviour, advertise, dead_endpoint, hung_endpoint, misbehaving_endpoint};
use http::{Method, StatusCode};
use images::{TestImage, add_image, layer_bytes};
use node::{NodeOptions, TestNode, blob_path, get, request};
use shoal::mirror::MIRRORED_HEADER;
use shoal::oci::{Digest, Key, MediaType};
use shoal::routing::memory::MemoryNetwork;

const NS: &str = "ns=registry.test";
const IMAGE: &str = "registry.test/team/app:v1";

fn manifest_path(reference: &str) -> String {
    format!("/v2/team/app/manifests/{reference}?{NS}")
}

/// A node holding a two-layer image, synced into the network.
async fn seeded_node(network: &MemoryNetwork, name: &str) -> (TestNode, TestImage) {
    let node = TestNode::start(network, name).await;
    let image = add_image(&node.store, IMAGE, &[layer_bytes(1, 100_000), layer_bytes(2, 3_000_000)]);
    node.sync().await;
    (node, image)
}

#[tokio::test]
async fn local_manifest_by_tag_and_digest_with_headers() {
    let network = MemoryNetwork::new();
    let (node, image) = seeded_node(&network, "a").await;
    for reference in ["v1".to_owned(), image.manifest.to_string()] {
        let reply = get(&node.url(&manifest_path(&reference))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, image.manifest_bytes);
        assert_eq!(reply.header("content-type"), MediaType::OCI_MANIFEST);
        assert_eq!(reply.header("docker-content-digest"), image.manifest.to_string());
        assert_eq!(reply.header("content-length"), image.manifest_bytes.len().to_string());
    }
    let head = request(Method::HEAD, &node.url(&manifest_path("v1")), &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), image.manifest_bytes.len().to_string());
    assert_eq!(node.metric(r#"shoal_requests_total{kind="manifest",registry="registry.test",source="local"}"#), 3);
}

#[tokio::test]
async fn local_blob_full_head_and_ranges() {
    let network = MemoryNetwork::new();
    let (node, image) = seeded_node(&network, "a").await;
    let (digest, bytes) = &image.layers[1];
    let url = node.url(&blob_path(digest));
    let full = get(&url).await;
    assert_eq!(full.status, StatusCode::OK);
    assert_eq!(&full.body, bytes);
    assert_eq!(full.header("accept-ranges"), "bytes");
    assert_eq!(full.header("docker-content-digest"), digest.to_string());

    let partial = request(Method::GET, &url, &[("range", "bytes=10-19")]).await;
    assert_eq!(partial.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(partial.body, bytes.slice(10..20));
    assert_eq!(partial.header("content-range"), format!("bytes 10-19/{}", bytes.len()));

    let suffix = request(Method::GET, &url, &[("range", "bytes=-5")]).await;
    assert_eq!(suffix.body, bytes.slice(bytes.len() - 5..));
    let open = request(Method::GET, &url, &[("range", "bytes=2999990-")]).await;
    assert_eq!(open.body, bytes.slice(2_999_990..));

    let head = request(Method::HEAD, &url, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), bytes.len().to_string());
    assert!(head.body.is_empty());
    let served = node.metric(r#"shoal_bytes_served_total{kind="blob",registry="registry.test",source="local"}"#);
    assert_eq!(served, (bytes.len() + 10 + 5 + 10) as u64);
}

#[tokio::test]
async fn bad_ranges_get_416_or_400() {
    let network = MemoryNetwork::new();
    let (node, image) = seeded_node(&network, "a").await;
    let (digest, bytes) = &image.layers[0];
    let url = node.url(&blob_path(digest));
    let beyond = request(Method::GET, &url, &[("range", "bytes=100000-")]).await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.header("content-range"), format!("bytes */{}", bytes.len()));
    let multi = request(Method::GET, &url, &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!(multi.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let malformed = request(Method::GET, &url, &[("range", "bytes=x-y")]).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "RANGE_INVALID");
}

#[tokio::test]
async fn bad_names_digests_and_routes_get_clear_errors() {
    let network = MemoryNetwork::new();
    let node = TestNode::start(&network, "a").await;
    let cases = [
        ("/v2/Team/app/manifests/v1", StatusCode::BAD_REQUEST, "NAME_INVALID"),
        ("/v2/../etc/manifests/v1", StatusCode::BAD_REQUEST, "NAME_INVALID"),
        ("/v2/team/app/blobs/sha512:abcd", StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        ("/v2/team/app/blobs/sha256:xyz", StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        ("/v2/team/app/manifests/v1?ns=bad/host", StatusCode::BAD_REQUEST, "NAME_INVALID"),
        ("/v2/_catalog", StatusCode::NOT_FOUND, "UNSUPPORTED"),
        ("/v2/team/app/blobs/uploads/", StatusCode::NOT_FOUND, "UNSUPPORTED"),
    ];
    for (path, status, code) in cases {
        let reply = get(&node.url(path)).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (status, code), "{path}");
        assert_eq!(reply.header("content-type"), "application/json");
    }
    let post = request(Method::POST, &node.url("/v2/team/app/blobs/uploads/"), &[]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    let base = get(&node.url("/v2/")).await;
    assert_eq!(base.status, StatusCode::OK);
    assert_eq!(base.header("docker-distribution-api-version"), "registry/2.0");
    assert_eq!(get(&node.url("/healthz")).await.status, StatusCode::OK);
    assert_eq!(get(&node.url("/readyz")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_miss_is_a_fast_404_with_an_oci_error() {
    let network = MemoryNetwork::new();
    let node = TestNode::start(&network, "a").await;
    let missing = Digest::of(b"nobody has this");
    let blob = get(&node.url(&blob_path(&missing))).await;
    assert_eq!((blob.status, blob.error_code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
    let manifest = get(&node.url(&manifest_path("v9"))).await;
    assert_eq!((manifest.status, manifest.error_code().as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
    let head = request(Method::HEAD, &node.url(&manifest_path("v9")), &[]).await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    assert!(head.body.is_empty());
    assert_eq!(node.metric(r#"shoal_requests_total{kind="manifest",registry="registry.test",source="miss"}"#), 2);
}

#[tokio::test]
async fn content_is_fetched_from_a_peer_and_counted() {
    let network = MemoryNetwork::new();
    let (holder, image) = seeded_node(&network, "holder").await;
    let puller = TestNode::start(&network, "puller").await;
    let by_tag = get(&puller.url(&manifest_path("v1"))).await;
    assert_eq!(by_tag.status, StatusCode::OK);
    assert_eq!(by_tag.body, image.manifest_bytes);
    assert_eq!(by_tag.header("docker-content-digest"), image.manifest.to_string());
    assert_eq!(by_tag.header("content-type"), MediaType::OCI_MANIFEST);
    let (digest, bytes) = &image.layers[1];
    let blob = get(&puller.url(&blob_path(digest))).await;
    assert_eq!(blob.status, StatusCode::OK);
    assert_eq!(&blob.body, bytes);
    let head = request(Method::HEAD, &puller.url(&blob_path(digest)), &[]).await;
    assert_eq!(head.header("content-length"), bytes.len().to_string());
    let ranged = request(Method::GET, &puller.url(&blob_path(digest)), &[("range", "bytes=5-9")]).await;
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.body, bytes.slice(5..10));

    let peer_bytes = puller.metric(r#"shoal_bytes_served_total{kind="blob",registry="registry.test",source="peer"}"#);
    assert_eq!(peer_bytes, bytes.len() as u64 + 5);
    assert_eq!(puller.metric(r#"shoal_requests_total{kind="manifest",registry="registry.test",source="peer"}"#), 1);
    assert_eq!(holder.metric(r#"shoal_peer_requests_total{kind="blob",result="served"}"#), 3);
    assert_eq!(holder.metric(r#"shoal_requests_total{kind="blob",registry="registry.test",source="local"}"#), 0);
}

#[tokio::test]
async fn forwarded_requests_are_served_from_local_content_only() {
    let network = MemoryNetwork::new();
    let (_holder, image) = seeded_node(&network, "holder").await;
    let other = TestNode::start(&network, "other").await;
    let (digest, _) = &image.layers[0];
    let forwarded = request(Method::GET, &other.url(&blob_path(digest)), &[(MIRRORED_HEADER, "true")]).await;
    assert_eq!(forwarded.status, StatusCode::NOT_FOUND);
    assert_eq!(other.metric(r#"shoal_peer_requests_total{kind="blob",result="not_found"}"#), 1);
    assert_eq!(
        other.metric(r#"shoal_peer_fetch_duration_seconds_count{kind="blob"}"#),
        0,
        "must not have asked a peer"
    );
}

#[tokio::test]
async fn a_dead_or_hung_peer_costs_one_attempt_then_the_next_serves() {
    let network = MemoryNetwork::new();
    let (_holder, image) = seeded_node(&network, "holder").await;
    let (digest, bytes) = image.layers[0].clone();
    let keys = [Key::Digest(digest), Key::Digest(image.manifest)];
    advertise(&network, "dead", dead_endpoint().await, &keys).await;
    advertise(&network, "hung", hung_endpoint().await, &keys).await;
    let puller = TestNode::start(&network, "puller").await;
    for _ in 0..3 {
        let blob = get(&puller.url(&blob_path(&digest))).await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(blob.body, bytes);
        let manifest = get(&puller.url(&manifest_path(&image.manifest.to_string()))).await;
        assert_eq!(manifest.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn when_every_peer_fails_the_answer_is_404() {
    let network = MemoryNetwork::new();
    let digest = Digest::of(b"held only by broken peers");
    let keys = [Key::Digest(digest)];
    advertise(&network, "dead", dead_endpoint().await, &keys).await;
    advertise(&network, "hung", hung_endpoint().await, &keys).await;
    advertise(&network, "corrupt", misbehaving_endpoint(Behaviour::Corrupt(Bytes::from_static(b"x"))).await, &keys)
        .await;
    // Without hedging, so the hung peer runs into its header timeout instead
    // of being outrun (tests/hedge.rs covers that).
    let no_hedging = shoal::mirror::HedgePolicy { enabled: false, ..Default::default() };
    let puller =
        TestNode::start_with(&network, "puller", NodeOptions { hedge: no_hedging, ..NodeOptions::default() }).await;
    let reply = get(&puller.url(&blob_path(&digest))).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
    assert_eq!(puller.metric(r#"shoal_peer_fetch_failures_total{reason="connect"}"#), 1);
    assert_eq!(puller.metric(r#"shoal_peer_fetch_failures_total{reason="header_timeout"}"#), 1);
    assert_eq!(puller.metric(r#"shoal_peer_fetch_failures_total{reason="digest_mismatch"}"#), 1);
}

#[tokio::test]
async fn attempts_per_request_are_capped() {
    let network = MemoryNetwork::new();
    let digest = Digest::of(b"many dead providers");
    for i in 0..6 {
        advertise(&network, &format!("dead-{i}"), dead_endpoint().await, &[Key::Digest(digest)]).await;
    }
    let puller =
        TestNode::start_with(&network, "puller", NodeOptions { max_attempts: 2, ..NodeOptions::default() }).await;
    assert_eq!(get(&puller.url(&blob_path(&digest))).await.status, StatusCode::NOT_FOUND);
    assert_eq!(puller.metric(r#"shoal_peer_fetch_failures_total{reason="connect"}"#), 2);
}

#[tokio::test]
async fn a_corrupt_peer_is_detected_and_a_good_one_serves() {
    let network = MemoryNetwork::new();
    let (_holder, image) = seeded_node(&network, "holder").await;
    let (digest, bytes) = image.layers[1].clone();
    let corrupt = misbehaving_endpoint(Behaviour::Corrupt(bytes.clone())).await;
    advertise(&network, "corrupt", corrupt, &[Key::Digest(digest)]).await;
    let puller = TestNode::start(&network, "puller").await;
    for _ in 0..4 {
        let reply = get(&puller.url(&blob_path(&digest))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(Digest::of(&reply.body), digest, "never a corrupt byte");
    }
}

#[tokio::test]
async fn a_corrupt_manifest_is_never_returned() {
    let network = MemoryNetwork::new();
    let manifest = Bytes::from_static(br#"{"schemaVersion":2}"#);
    let digest = Digest::of(&manifest);
    let corrupt = misbehaving_endpoint(Behaviour::Corrupt(manifest)).await;
    advertise(&network, "corrupt", corrupt, &[Key::Digest(digest)]).await;
    let puller = TestNode::start(&network, "puller").await;
    let reply = get(&puller.url(&manifest_path(&digest.to_string()))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_stream_cut_midway_is_resumed_from_another_peer() {
    let network = MemoryNetwork::new();
    let bytes = layer_bytes(9, 2_000_000);
    let digest = Digest::of(&bytes);
    // Both peers cut a full request halfway but serve a ranged one: whichever
    // is tried first breaks off, and the other must be asked for the rest.
    for name in ["first", "second"] {
        let endpoint = misbehaving_endpoint(Behaviour::CutUnlessRanged(bytes.clone())).await;
        advertise(&network, name, endpoint, &[Key::Digest(digest)]).await;
    }
    let puller = TestNode::start(&network, "puller").await;
    let reply = get(&puller.url(&blob_path(&digest))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, bytes);
    assert_eq!(puller.metric(r#"shoal_peer_fetch_failures_total{reason="body"}"#), 1);
}

#[tokio::test]
async fn a_peer_that_breaks_off_with_no_one_to_resume_from_gives_404() {
    let network = MemoryNetwork::new();
    let bytes = layer_bytes(3, 500_000);
    let digest = Digest::of(&bytes);
    let cutter = misbehaving_endpoint(Behaviour::CutHalfway(bytes)).await;
    advertise(&network, "cutter", cutter, &[Key::Digest(digest)]).await;
    let puller = TestNode::start(&network, "puller").await;
    assert_eq!(get(&puller.url(&blob_path(&digest))).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unmirrored_registries_are_not_served() {
    let network = MemoryNetwork::new();
    let options = NodeOptions { mirrored: vec!["docker.io".parse().unwrap()], ..NodeOptions::default() };
    let node = TestNode::start_with(&network, "a", options).await;
    let image = add_image(&node.store, IMAGE, &[layer_bytes(1, 10)]);
    node.sync().await;
    let reply = get(&node.url(&blob_path(&image.layers[0].0))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let mirrored = get(&node.url(&format!("/v2/team/app/blobs/{}?ns=docker.io", image.layers[0].0))).await;
    assert_eq!(mirrored.status, StatusCode::OK);
}

#[tokio::test]
async fn a_peer_that_answered_404_for_a_key_is_not_asked_again_for_it() {
    let network = MemoryNetwork::new();
    let (_holder, image) = seeded_node(&network, "holder").await;
    // A node still advertised for the layer (its record outlives the content).
    let forgetful = TestNode::start(&network, "forgetful").await;
    let (digest, bytes) = &image.layers[0];
    advertise(&network, "forgetful", forgetful.addr, &[Key::Digest(*digest)]).await;
    let puller = TestNode::start(&network, "puller").await;

    let mut asked = 0;
    for _ in 0..8 {
        let blob = get(&puller.url(&blob_path(digest))).await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(&blob.body, bytes);
        let now = forgetful.metric(r#"shoal_peer_requests_total{kind="blob",result="not_found"}"#);
        assert!(now <= 1, "asked the forgetful peer {now} times");
        asked = now;
    }
    // Eight weighted random choices between two providers: it was asked once
    // unless chance always picked the holder first (1 in 256).
    println!("the forgetful peer was asked {asked} time(s) in 8 requests");
}
