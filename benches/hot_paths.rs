//! Micro-benchmarks of the hot paths: parsing requests, choosing a peer,
//! hashing while streaming, and serving a blob over loopback from local
//! content and through one peer hop. `cargo bench --bench hot_paths`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/images.rs"]
mod images;
#[path = "../tests/support/node.rs"]
mod node;

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::{Digest as _, Sha256};
use shoal::mirror::{Outcome, PeerScores};
use shoal::oci::{ByteRange, Digest, DistributionPath};
use shoal::routing::memory::MemoryNetwork;
use shoal::routing::{Peer, PeerName};

const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    let path = format!("/v2/library/nginx/blobs/{DIGEST}");
    group.bench_function("blob_path", |b| b.iter(|| DistributionPath::parse(black_box(&path))));
    group.bench_function("manifest_tag_path", |b| {
        b.iter(|| DistributionPath::parse(black_box("/v2/team/platform/app/manifests/v1.2.3")))
    });
    group.bench_function("digest", |b| b.iter(|| black_box(DIGEST).parse::<Digest>()));
    group.bench_function("range_header", |b| b.iter(|| ByteRange::parse_header(black_box("bytes=1048576-"))));
    group.finish();
}

fn peer_choice(c: &mut Criterion) {
    let scores = PeerScores::new();
    let peers: Vec<Peer> = (0..20u8)
        .map(|i| Peer { name: PeerName::new(format!("peer-{i}")), endpoint: ([127, 0, 0, i], 5000).into() })
        .collect();
    for (i, peer) in peers.iter().enumerate() {
        scores.record_success(peer, (i as u64 + 1) << 20, Duration::from_millis(10), None);
        if i % 5 == 0 {
            scores.record(peer, Outcome::Failed);
        }
    }
    let mut rng = StdRng::seed_from_u64(1);
    c.bench_function("select/choose_of_20", |b| b.iter(|| scores.choose(black_box(&peers), &mut rng)));
}

fn hashing(c: &mut Criterion) {
    let chunk = vec![7u8; 1 << 20];
    let mut group = c.benchmark_group("hash");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("sha256_1mib_chunk", |b| {
        let mut hasher = Sha256::new();
        b.iter(|| hasher.update(black_box(&chunk)))
    });
    group.finish();
}

/// Downloads `url` whole and returns the bytes received.
async fn download(client: &Client<HttpConnector, Empty<Bytes>>, url: &str) -> usize {
    let response = client.get(url.parse().unwrap()).await.unwrap();
    assert!(response.status().is_success());
    let mut body = response.into_body();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().into_data().map_or(0, |d| d.len());
    }
    total
}

fn serving(c: &mut Criterion) {
    const SIZE: usize = 64 << 20;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let network = MemoryNetwork::new();
    let (holder, puller, digest) = runtime.block_on(async {
        let holder = node::TestNode::start(&network, "holder").await;
        let image = images::add_image(&holder.store, "registry.test/bench/app:v1", &[images::layer_bytes(1, SIZE)]);
        holder.sync().await;
        let puller = node::TestNode::start(&network, "puller").await;
        (holder, puller, image.layers[0].0)
    });
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let path = format!("/v2/bench/app/blobs/{digest}?ns=registry.test");
    let mut group = c.benchmark_group("serve");
    group.throughput(Throughput::Bytes(SIZE as u64)).sample_size(10);
    let local = holder.url(&path);
    group.bench_function("local_blob_64mib", |b| {
        b.to_async(&runtime).iter(|| async { assert_eq!(download(&client, &local).await, SIZE) })
    });
    let via_peer = puller.url(&path);
    group.bench_function("peer_hop_blob_64mib", |b| {
        b.to_async(&runtime).iter(|| async { assert_eq!(download(&client, &via_peer).await, SIZE) })
    });
    group.finish();
    drop((holder, puller));
}

criterion_group!(benches, parsing, peer_choice, hashing, serving);
criterion_main!(benches);
