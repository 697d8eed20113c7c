//! How long one node takes to advertise 10,000 digests in a 20-node loopback
//! cluster of real libp2p routers: serial (one DHT query per key, one at a
//! time), parallel DHT queries, and the real advertisement pipeline (an
//! `Advertiser` over an in-memory containerd, batched).
//!
//! A plain `harness = false` binary: `cargo bench --bench advertise_cluster`.
//! Nodes listen on 127.0.4.1 ..= 127.0.4.20 (loopback only). Environment:
//! `SHOAL_BENCH_NODES`, `SHOAL_BENCH_KEYS`, `SHOAL_BENCH_SERIAL_KEYS` and
//! `SHOAL_BENCH_QUERY_KEYS` (those runs advertise that many keys and are scaled
//! up), `SHOAL_BENCH_CONCURRENCY` (the pipeline's batches in flight).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/images.rs"]
mod images;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use images::add_image;
use shoal::advertiser::{Advertiser, AdvertiserConfig};
use shoal::content::memory::MemoryStore;
use shoal::content::{ContentEvent, ContentIndex};
use shoal::health::Health;
use shoal::metrics::Metrics;
use shoal::oci::{Digest, Key};
use shoal::routing::Router;
use shoal::routing::p2p::{self, BootstrapPeer, Identity, P2pConfig, P2pRouter};
use shoal::state::State;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const SUBNET: [u8; 3] = [127, 0, 4];
const REGISTRY_PORT: u16 = 5999;
const SETTLE: Duration = Duration::from_secs(60);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Cluster {
    routers: Vec<P2pRouter>,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Cluster {
    async fn start(count: u8) -> Result<Self> {
        let port = TcpListener::bind((Ipv4Addr::from([SUBNET[0], SUBNET[1], SUBNET[2], 1]), 0))?.local_addr()?.port();
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut routers = Vec::new();
        for n in 1..=count {
            let listen = SocketAddr::from((Ipv4Addr::from([SUBNET[0], SUBNET[1], SUBNET[2], n]), port));
            let mut config = P2pConfig::new(listen, REGISTRY_PORT, Identity::generate());
            if n > 1 {
                let seed: BootstrapPeer = format!("/ip4/127.0.4.1/tcp/{port}").parse()?;
                config.bootstrap.push(seed);
            }
            routers.push(p2p::start(config, token.clone(), &tracker).await?);
        }
        let cluster = Self { routers, token, tracker };
        let deadline = Instant::now() + SETTLE;
        let wanted = usize::from(count) - 1;
        while !cluster.routers.iter().all(|r| r.connected_peers() >= wanted.min(8)) {
            if Instant::now() > deadline {
                let counts: Vec<usize> = cluster.routers.iter().map(Router::connected_peers).collect();
                bail!("the cluster did not connect: {counts:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(cluster)
    }

    /// Every node provides a few keys, so that every pair of nodes is
    /// connected and every routing table is full before anything is timed.
    async fn warm_up(&self) -> Result<()> {
        let warm = futures::future::join_all(
            self.routers
                .iter()
                .enumerate()
                .map(|(i, router)| async move { advertise(router, &keys(&format!("warm-up/{i}"), 10), 10).await }),
        );
        warm.await.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tracker.wait()).await;
    }
}

/// CPU time this process has used (user + system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<i64> = after_name.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // utime and stime are fields 14 and 15 of stat; after the name and the state, positions 10 and 11.
    let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    Duration::from_millis(u64::try_from(ticks).unwrap_or(0) * 10)
}

fn keys(label: &str, count: usize) -> Vec<Key> {
    (0..count).map(|i| Key::Digest(Digest::of(format!("{label}/{i}").as_bytes()))).collect()
}

/// Provides every key with `concurrency` provides in flight; returns the elapsed time.
async fn advertise(router: &P2pRouter, keys: &[Key], concurrency: usize) -> Result<Duration> {
    let started = Instant::now();
    let failed = futures::stream::iter(keys)
        .map(|key| router.provide(key))
        .buffer_unordered(concurrency)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    if failed > 0 {
        bail!("{failed} provides failed");
    }
    Ok(started.elapsed())
}

/// Looks up a sample of keys from another node; returns how many were found.
async fn findable(router: &P2pRouter, keys: &[Key]) -> usize {
    futures::stream::iter(keys)
        .map(|key| async move { router.lookup(key, 1).count().await })
        .buffer_unordered(32)
        .filter(|found| std::future::ready(*found > 0))
        .count()
        .await
}

/// The real pipeline: an [`Advertiser`] over an in-memory containerd holding
/// `images` images of `per_image` digests each, advertising through `router`.
/// Returns the time until every digest and tag was advertised.
async fn pipeline(
    router: &P2pRouter,
    images: usize,
    per_image: usize,
    concurrency: usize,
) -> Result<(Duration, Vec<Key>)> {
    let store = MemoryStore::new();
    for image in 0..images {
        // Each image: a manifest, a config, and `per_image - 2` layers, all distinct.
        let layers: Vec<Bytes> = (0..per_image - 2).map(|l| Bytes::from(format!("bench {image}/{l}"))).collect();
        add_image(&store, &format!("bench.test/image-{image}:v1"), &layers);
    }
    let index = ContentIndex::new(Arc::new(store.clone()));
    let shared: Arc<dyn Router> = Arc::new(router.clone());
    let metrics = Metrics::new()?;
    let config = AdvertiserConfig {
        readvertise_interval: Duration::from_secs(300),
        concurrency,
        batch_size: AdvertiserConfig::DEFAULT_BATCH_SIZE,
    };
    let health = Health::new(shared.clone());
    let advertiser = Advertiser::new(index.clone(), shared, State::disabled(&metrics), metrics.clone(), health, config);
    let token = CancellationToken::new();
    let (events, inbox) = tokio::sync::mpsc::channel(16);
    let started = Instant::now();
    let running = tokio::spawn(advertiser.run(inbox, token.clone()));
    events.send(ContentEvent::Connected).await?;
    let expected = images * (per_image + 1);
    let deadline = started + Duration::from_secs(600);
    while advertised(&metrics) < expected {
        if Instant::now() > deadline {
            bail!("only {} of {expected} keys advertised", advertised(&metrics));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let keys = index.keys();
    token.cancel();
    running.await?;
    Ok((elapsed, keys))
}

/// The `shoal_advertisements_total` counter.
fn advertised(metrics: &Metrics) -> usize {
    let text = metrics.encode().unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("shoal_advertisements_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as usize)
}

async fn run() -> Result<()> {
    let nodes = u8::try_from(env_or("SHOAL_BENCH_NODES", 20)).context("SHOAL_BENCH_NODES")?;
    let total = env_or("SHOAL_BENCH_KEYS", 10_000);
    let serial_keys = env_or("SHOAL_BENCH_SERIAL_KEYS", 500);
    let query_keys = env_or("SHOAL_BENCH_QUERY_KEYS", 2_000);
    let concurrency = env_or("SHOAL_BENCH_CONCURRENCY", AdvertiserConfig::default_concurrency());
    let cluster = Cluster::start(nodes).await?;
    let (provider, looker) = (&cluster.routers[nodes as usize / 2], &cluster.routers[0]);
    cluster.warm_up().await?;
    println!("advertise {total} digests from one node of {nodes} loopback nodes (release build):");

    let serial = keys("serial", serial_keys);
    let cpu = cpu_time();
    let serial_time = advertise(provider, &serial, 1).await?;
    let serial_per_key = serial_time / serial_keys.max(1) as u32;
    let serial_estimate = serial_per_key * total as u32;
    println!(
        "  serial, one DHT query per key:      {serial_keys} keys in {serial_time:.2?} ({serial_per_key:.2?}/key, cluster cpu {:.2?}/key) => {total} keys ~ {serial_estimate:.2?}",
        (cpu_time() - cpu) / serial_keys.max(1) as u32
    );

    let queries = keys("queries", query_keys);
    let cpu = cpu_time();
    let query_time = advertise(provider, &queries, 32).await?;
    println!(
        "  parallel DHT queries (32 in flight): {query_keys} keys in {query_time:.2?} (cluster cpu {:.2?}/key) => {total} keys ~ {:.2?}",
        (cpu_time() - cpu) / query_keys.max(1) as u32,
        query_time / query_keys.max(1) as u32 * total as u32
    );

    let per_image = 100;
    let images = total.div_ceil(per_image);
    let cpu = cpu_time();
    let (pipeline_time, advertised_keys) = pipeline(provider, images, per_image, concurrency).await?;
    let digests = images * per_image;
    println!(
        "  pipeline ({concurrency} batches of {} in flight): {digests} digests + {images} tags in {pipeline_time:.2?} (cluster cpu {:.2?})",
        AdvertiserConfig::DEFAULT_BATCH_SIZE,
        cpu_time() - cpu
    );
    println!("  ratio serial / pipeline: {:.0}x", serial_estimate.as_secs_f64() / pipeline_time.as_secs_f64());

    let sample: Vec<Key> = advertised_keys.iter().step_by((advertised_keys.len() / 200).max(1)).cloned().collect();
    let found = findable(looker, &sample).await;
    println!("  findable from another node: {found}/{} sampled keys", sample.len());
    cluster.stop().await;
    if found < sample.len() {
        bail!("{} sampled keys were not found", sample.len() - found);
    }
    Ok(())
}

fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}
