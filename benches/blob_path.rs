//! The blob serving path end to end on loopback: one large blob (1 GiB by
//! default, `SHOAL_BENCH_BLOB_MIB` to change it) served by a node from its
//! own content, by a second node through one peer hop (first from a peer it
//! has no history with, then from one it trusts), against a plain tokio
//! file-to-socket copy as the baseline. `cargo bench --bench blob_path`.
//!
//! Prints the best and median of a few runs of each; every loop is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/images.rs"]
mod images;
#[path = "../tests/support/node.rs"]
mod node;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use images::add_image;
use node::{NodeOptions, TestNode, blob_path};
use shoal::mirror::PeerTimeouts;
use shoal::oci::Digest;
use shoal::routing::memory::MemoryNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RUNS: usize = 3;

fn blob_size() -> usize {
    let mib: usize = std::env::var("SHOAL_BENCH_BLOB_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    mib << 20
}

/// Cheap, non-repeating-looking bytes (hashing cost does not depend on them).
fn blob(len: usize) -> Bytes {
    let mut data = vec![0u8; len];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for word in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
    Bytes::from(data)
}

/// GETs `url` and counts the body without keeping it.
async fn fetch(client: &Client<HttpConnector, Empty<Bytes>>, url: &str) -> (Duration, u64) {
    let started = Instant::now();
    let response = client.request(Request::get(url).body(Empty::new()).unwrap()).await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    (started.elapsed(), received)
}

/// A minimal HTTP server that copies one file to each connection with tokio.
async fn file_server(path: std::path::PathBuf, len: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let path = path.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                let header = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n");
                stream.write_all(header.as_bytes()).await.unwrap();
                let mut file = tokio::fs::File::open(&path).await.unwrap();
                let mut buffer = vec![0u8; 1 << 20];
                loop {
                    let n = file.read(&mut buffer).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    stream.write_all(&buffer[..n]).await.unwrap();
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

fn report(what: &str, mut times: Vec<Duration>, len: usize, baseline: Option<Duration>) -> Duration {
    times.sort();
    let best = times[0];
    let median = times[times.len() / 2];
    let rate = |d: Duration| len as f64 / d.as_secs_f64() / 1e9;
    let versus =
        baseline.map_or(String::new(), |b| format!("  {:.2}x baseline", b.as_secs_f64() / median.as_secs_f64()));
    println!(
        "{what:<38} best {:>6.3} s  median {:>6.3} s  ({:.2} GB/s){versus}",
        best.as_secs_f64(),
        median.as_secs_f64(),
        rate(median)
    );
    median
}

/// The node's defaults: production timeouts, pass-through after 3 verified blobs from a peer.
fn passthrough() -> NodeOptions {
    NodeOptions { stream_after_verified: 3, timeouts: PeerTimeouts::default(), ..NodeOptions::default() }
}

async fn run() {
    let len = blob_size();
    let data = blob(len);
    let digest = Digest::of(&data);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    std::fs::File::create(&file).unwrap().write_all(&data).unwrap();
    let baseline = file_server(file, len).await;
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let (took, received) = fetch(&client, &format!("http://{baseline}/")).await;
        assert_eq!(received, len as u64);
        times.push(took);
    }
    let baseline = report("baseline: tokio file -> socket", times, len, None);

    let network = MemoryNetwork::new();
    let holder = TestNode::start(&network, "holder").await;
    add_image(&holder.store, "registry.test/team/app:big", std::slice::from_ref(&data));
    holder.sync().await;
    drop(data);
    let path = blob_path(&digest);

    let mut times = Vec::new();
    for _ in 0..RUNS {
        let (took, received) = fetch(&client, &holder.url(&path)).await;
        assert_eq!(received, len as u64);
        times.push(took);
    }
    report("shoal local content (memory store)", times, len, Some(baseline));

    // A fresh puller each run: the holder is a peer it has no history with.
    let mut times = Vec::new();
    for i in 0..RUNS {
        let puller = TestNode::start_with(&network, &format!("new-puller-{i}"), passthrough()).await;
        let (took, received) = fetch(&client, &puller.url(&path)).await;
        assert_eq!(received, len as u64);
        times.push(took);
    }
    report("shoal peer hop, new peer", times, len, Some(baseline));

    // One puller: after its first verified transfers the holder is trusted.
    let puller = TestNode::start_with(&network, "puller", passthrough()).await;
    let mut times = Vec::new();
    for _ in 0..RUNS + 3 {
        let (took, received) = fetch(&client, &puller.url(&path)).await;
        assert_eq!(received, len as u64);
        times.push(took);
    }
    let trusted = times.split_off(3);
    report("shoal peer hop, same peer (runs 1-3)", times, len, Some(baseline));
    report("shoal peer hop, same peer (runs 4-6)", trusted, len, Some(baseline));
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then
    // only check that the harness builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run());
}
