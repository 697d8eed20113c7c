//! A simulated Shoal cluster in one process, for `benches/sim_cluster.rs`,
//! `benches/dht_lookup.rs` and `tests/sim_smoke.rs`: real P2P routers (over
//! libp2p's memory transport, or TCP on loopback), each advertising a
//! realistic key set, then provider lookups from many nodes, measured.
//!
//! Key sets: `base` layers every node holds, `shared` keys each held by one
//! node in `shared_every`, and `unique` keys per node. Node N is named by
//! 127.S.x.y (S the subnet byte) with one port: over the memory transport the
//! address only names the node (no socket is opened); over TCP it is a real
//! loopback listener. Every wait has a deadline.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal::oci::{Digest, Key};
use shoal::routing::Router;
use shoal::routing::p2p::{
    self, BootstrapPeer, ConnectionConfig, Identity, P2pConfig, P2pRouter, RouterStats, TransportKind,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const REGISTRY_PORT: u16 = 5999;
/// Port of every simulated node (memory transport: a label only).
const MEMORY_PORT: u16 = 4001;
/// Providers a lookup asks for: the mirror's limit.
pub const LOOKUP_LIMIT: usize = 20;
/// How long the cluster may take to connect, and the advertisement to finish.
const SETTLE: Duration = Duration::from_secs(600);
/// Tries per key before the advertisement counts as failed.
const ADVERTISE_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub transport: TransportKind,
    /// Node n is 127.a.b.(n + 1) (`b` counts up past 250 nodes).
    pub subnet: [u8; 2],
    pub base: usize,
    pub shared: usize,
    /// Each shared key is held by one node in this many.
    pub shared_every: usize,
    pub unique: usize,
    /// Lookups measured, and how many run at once.
    pub lookups: usize,
    pub concurrency: usize,
    pub seed: u64,
    /// How long one lookup may run (the router's resolve timeout).
    pub resolve_timeout: Duration,
    /// How long provider records live (`SIM_PROVIDER_TTL`).
    pub provider_ttl: Duration,
    /// Pings and idle connections: one process carries every node's
    /// connections, so a simulation pings rarely (`SIM_CONNECTIONS`).
    pub connections: ConnectionConfig,
    /// How often each node refreshes its routing table (`SIM_TABLE_REFRESH`).
    pub table_refresh: Duration,
    /// Whether batches may be placed from a routing table that holds the
    /// whole network (false: every batch is a sweep).
    pub place_from_table: bool,
    /// Nodes advertising at once: one process does every node's work, so a
    /// large cluster needs fewer at once than a real one would.
    pub advertising_at_once: usize,
    /// Print a line each time another tenth of the nodes has advertised.
    pub progress: bool,
}

/// Every node's connections share this process's CPU and memory: pinging
/// each of them every 2 s, as a real node does, would swamp a 1,000-node
/// run. Lookups and advertisements do not depend on pings.
pub const SIM_CONNECTIONS: ConnectionConfig =
    ConnectionConfig { ping_interval: Duration::from_secs(60), idle_timeout: Duration::from_secs(30) };

/// A real node re-advertises its keys before their records expire (10
/// minutes by default); a simulation advertises once, and a 1,000-node run
/// takes over half an hour to do it, so its records must outlive the run.
pub const SIM_PROVIDER_TTL: Duration = Duration::from_secs(4 * 3600);

/// A bootstrap walk is a dozen closest-peers queries: every node of a
/// 1,000-node simulation walking every 5 minutes, as a real node does, is
/// 40 queries a second, more than one 2-core process keeps up with besides
/// the work measured. A simulation refreshes once an hour.
pub const SIM_TABLE_REFRESH: Duration = Duration::from_secs(3600);

impl SimConfig {
    pub fn memory(nodes: usize) -> Self {
        Self {
            nodes,
            transport: TransportKind::Memory,
            subnet: [1, 0],
            base: 5,
            shared: 20,
            shared_every: 10,
            unique: 50,
            lookups: 2000,
            concurrency: 8,
            seed: 7,
            resolve_timeout: P2pConfig::DEFAULT_RESOLVE_TIMEOUT,
            connections: SIM_CONNECTIONS,
            provider_ttl: SIM_PROVIDER_TTL,
            table_refresh: SIM_TABLE_REFRESH,
            place_from_table: true,
            advertising_at_once: 32,
            progress: false,
        }
    }
}

/// Which keys a node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyClass {
    Base,
    Shared,
    Unique,
}

pub struct Cluster {
    pub config: SimConfig,
    pub routers: Vec<P2pRouter>,
    /// Node index by peer name.
    index: HashMap<String, usize>,
    token: CancellationToken,
    tracker: TaskTracker,
}

fn base_key(i: usize) -> Key {
    Key::Digest(Digest::of(format!("base/{i}").as_bytes()))
}

fn shared_key(i: usize) -> Key {
    Key::Digest(Digest::of(format!("shared/{i}").as_bytes()))
}

fn unique_key(node: usize, i: usize) -> Key {
    Key::Digest(Digest::of(format!("node/{node}/{i}").as_bytes()))
}

impl Cluster {
    /// Starts the nodes; node i bootstraps from up to three earlier nodes.
    pub async fn start(config: SimConfig) -> Result<Self> {
        ensure!((2..=50_000).contains(&config.nodes), "2 to 50,000 nodes");
        let port = match config.transport {
            TransportKind::Memory => MEMORY_PORT,
            TransportKind::Tcp => TcpListener::bind((node_ip(config.subnet, 0), 0))?.local_addr()?.port(),
        };
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut routers = Vec::with_capacity(config.nodes);
        let mut index = HashMap::new();
        for n in 0..config.nodes {
            let listen = SocketAddr::new(node_ip(config.subnet, n).into(), port);
            let mut p2p_config = P2pConfig::new(listen, REGISTRY_PORT, Identity::generate());
            p2p_config.transport = config.transport;
            p2p_config.resolve_timeout = config.resolve_timeout;
            p2p_config.provider_ttl = config.provider_ttl;
            p2p_config.connections = config.connections;
            p2p_config.table_refresh = config.table_refresh;
            p2p_config.place_from_table = config.place_from_table;
            let mut seeds = vec![0, n / 2, n.saturating_sub(1)];
            seeds.dedup();
            for seed in seeds.into_iter().filter(|s| *s < n) {
                let addr: BootstrapPeer = format!("/ip4/{}/tcp/{port}", node_ip(config.subnet, seed)).parse()?;
                p2p_config.bootstrap.push(addr);
            }
            let router = p2p::start(p2p_config, token.clone(), &tracker).await?;
            index.insert(router.local_name().to_string(), n);
            routers.push(router);
        }
        let cluster = Self { config, routers, index, token, tracker };
        cluster.wait_connected().await?;
        Ok(cluster)
    }

    async fn wait_connected(&self) -> Result<()> {
        let deadline = Instant::now() + SETTLE;
        while !self.routers.iter().all(|r| r.connected_peers() > 0) {
            if Instant::now() > deadline {
                let lonely = self.routers.iter().filter(|r| r.connected_peers() == 0).count();
                bail!("{lonely} nodes did not connect");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Every key node `n` holds.
    pub fn keys_of(&self, n: usize) -> Vec<Key> {
        let c = &self.config;
        let base = (0..c.base).map(base_key);
        let shared = (0..c.shared).filter(|j| self.holds_shared(n, *j)).map(shared_key);
        base.chain(shared).chain((0..c.unique).map(|i| unique_key(n, i))).collect()
    }

    fn holds_shared(&self, n: usize, j: usize) -> bool {
        (n + j * 7).is_multiple_of(self.config.shared_every)
    }

    /// The nodes holding `key` of `class` number `i` (owner: the unique key's node).
    fn holders(&self, class: KeyClass, i: usize, owner: usize) -> Vec<usize> {
        match class {
            KeyClass::Base => (0..self.config.nodes).collect(),
            KeyClass::Shared => (0..self.config.nodes).filter(|n| self.holds_shared(*n, i)).collect(),
            KeyClass::Unique => vec![owner],
        }
    }

    /// Every node advertises its keys (a few nodes at a time), trying the
    /// keys that failed again as the advertiser would; returns the time
    /// taken. Fails if a key could not be advertised at all.
    pub async fn advertise(&self) -> Result<Duration> {
        let report = self.advertise_all().await;
        ensure!(report.failed == 0, "{} keys could not be advertised in {ADVERTISE_ATTEMPTS} attempts", report.failed);
        Ok(report.took)
    }

    /// Like [`Cluster::advertise`], but reports the keys that failed.
    pub async fn advertise_all(&self) -> Advertised {
        let started = Instant::now();
        let nodes = self.routers.len();
        let tenth = nodes.div_ceil(10);
        let mut done = 0;
        let (mut retried, mut failed) = (0, 0);
        let mut advertising = futures::stream::iter(0..nodes)
            .map(|n| self.advertise_node(n))
            .buffer_unordered(self.config.advertising_at_once.max(1));
        while let Some((r, f)) = advertising.next().await {
            (done, retried, failed) = (done + 1, retried + r, failed + f);
            if self.config.progress && (done % tenth == 0 || done == nodes) {
                println!(
                    "    {done} of {nodes} nodes advertised after {:.1?}: {retried} keys tried again, {failed} failed (rss {} MiB, load {})",
                    started.elapsed(),
                    rss_mib(),
                    loadavg()
                );
            }
        }
        Advertised { took: started.elapsed(), retried, failed }
    }

    /// Advertises node `n`'s keys; returns how many were tried again, and
    /// how many still failed after every attempt.
    async fn advertise_node(&self, n: usize) -> (usize, usize) {
        let mut keys = self.keys_of(n);
        let mut retried = 0;
        for attempt in 1..=ADVERTISE_ATTEMPTS {
            let mut results = self.routers[n].provide_many(&keys).await;
            // A router that answered for fewer keys than asked failed the rest.
            results.resize_with(keys.len(), || Err(shoal::routing::Error::Closed));
            keys = keys.into_iter().zip(results).filter(|(_, r)| r.is_err()).map(|(k, _)| k).collect();
            if keys.is_empty() || attempt == ADVERTISE_ATTEMPTS {
                break;
            }
            retried += keys.len();
        }
        (retried, keys.len())
    }

    /// The lookups to measure: random requesters, keys of every class.
    pub fn plan(&self, count: usize, classes: &[KeyClass]) -> Vec<Probe> {
        let c = &self.config;
        let mut rng = StdRng::seed_from_u64(c.seed);
        (0..count)
            .map(|i| {
                let class = classes[i % classes.len()];
                let (key, holders) = match class {
                    KeyClass::Base => {
                        let k = rng.random_range(0..c.base);
                        (base_key(k), self.holders(class, k, 0))
                    }
                    KeyClass::Shared => {
                        let k = rng.random_range(0..c.shared);
                        (shared_key(k), self.holders(class, k, 0))
                    }
                    KeyClass::Unique => {
                        let owner = rng.random_range(0..c.nodes);
                        (unique_key(owner, rng.random_range(0..c.unique)), self.holders(class, 0, owner))
                    }
                };
                let from = loop {
                    let from = rng.random_range(0..c.nodes);
                    if holders.len() == c.nodes || !holders.contains(&from) {
                        break from;
                    }
                };
                Probe { class, key, from, holders }
            })
            .collect()
    }

    /// Runs the probes, `concurrency` at a time.
    pub async fn run(&self, probes: &[Probe]) -> Vec<Outcome> {
        futures::stream::iter(probes)
            .map(|probe| self.probe(probe))
            .buffer_unordered(self.config.concurrency)
            .collect()
            .await
    }

    async fn probe(&self, probe: &Probe) -> Outcome {
        let started = Instant::now();
        let mut stream = self.routers[probe.from].lookup(&probe.key, LOOKUP_LIMIT);
        let mut first = None;
        let mut providers = Vec::new();
        while let Some(peer) = stream.next().await {
            first.get_or_insert_with(|| started.elapsed());
            providers.push(self.index.get(peer.name.as_str()).copied().unwrap_or(usize::MAX));
        }
        let wrong = providers.iter().filter(|p| !probe.holders.contains(p)).count();
        Outcome { class: probe.class, first, whole: started.elapsed(), providers, wrong }
    }

    pub async fn stats(&self) -> Result<Vec<RouterStats>> {
        let mut all = Vec::with_capacity(self.routers.len());
        for router in &self.routers {
            all.push(router.stats().await.context("router stats")?);
        }
        Ok(all)
    }

    pub fn connections(&self) -> Vec<usize> {
        self.routers.iter().map(Router::connected_peers).collect()
    }

    pub async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.tracker.wait()).await;
    }
}

/// 127.a.b.(n + 1) for node n, with b counting up every 250 nodes.
fn node_ip([a, b]: [u8; 2], n: usize) -> Ipv4Addr {
    let third = usize::from(b) + n / 250;
    Ipv4Addr::new(127, a, u8::try_from(third).unwrap_or(u8::MAX), u8::try_from(n % 250 + 1).unwrap_or(1))
}

/// How an advertisement went.
pub struct Advertised {
    pub took: Duration,
    /// Key advertisements tried again after a failure.
    pub retried: usize,
    /// Keys that failed every attempt.
    pub failed: usize,
}

/// One lookup to make: from which node, for which key, and who holds it.
pub struct Probe {
    pub class: KeyClass,
    pub key: Key,
    pub from: usize,
    holders: Vec<usize>,
}

/// What one lookup found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub class: KeyClass,
    /// Time to the first provider, if any was found.
    pub first: Option<Duration>,
    /// Time until the stream ended.
    pub whole: Duration,
    /// Node indexes of the providers streamed, in order.
    pub providers: Vec<usize>,
    /// Providers streamed that do not hold the key.
    pub wrong: usize,
}

/// p50, p99 and max of some durations.
pub fn percentiles(mut values: Vec<Duration>) -> (Duration, Duration, Duration) {
    if values.is_empty() {
        return (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    values.sort();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), values[values.len() - 1])
}

/// min, median and max.
pub fn spread(mut values: Vec<usize>) -> (usize, usize, usize) {
    if values.is_empty() {
        return (0, 0, 0);
    }
    values.sort_unstable();
    (values[0], values[values.len() / 2], values[values.len() - 1])
}

/// How evenly `picks` (node indexes) fall on `nodes` nodes: distinct nodes
/// picked, the largest share one node took, and the Gini coefficient over
/// every node (0: perfectly even, 1: one node takes all).
pub fn concentration(picks: &[usize], nodes: usize) -> (usize, f64, f64) {
    let mut counts = vec![0u64; nodes];
    for p in picks.iter().filter(|p| **p < nodes) {
        counts[*p] += 1;
    }
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return (0, 0.0, 0.0);
    }
    let distinct = counts.iter().filter(|c| **c > 0).count();
    let max_share = *counts.iter().max().unwrap_or(&0) as f64 / total as f64;
    counts.sort_unstable();
    let n = nodes as f64;
    let weighted: f64 = counts.iter().enumerate().map(|(i, c)| (i as f64 + 1.0) * *c as f64).sum();
    let gini = (2.0 * weighted) / (n * total as f64) - (n + 1.0) / n;
    (distinct, max_share, gini)
}

/// This process's resident memory, in MiB (0 if unknown).
pub fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    kib / 1024
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a run measured, per class and overall.
pub struct Summary {
    pub lookups: usize,
    pub found: usize,
    pub wrong: usize,
    pub first: (Duration, Duration, Duration),
    pub whole: (Duration, Duration, Duration),
}

pub fn summarize(outcomes: &[Outcome]) -> Summary {
    Summary {
        lookups: outcomes.len(),
        found: outcomes.iter().filter(|o| o.first.is_some()).count(),
        wrong: outcomes.iter().map(|o| o.wrong).sum(),
        first: percentiles(outcomes.iter().filter_map(|o| o.first).collect()),
        whole: percentiles(outcomes.iter().map(|o| o.whole).collect()),
    }
}

/// Prints the latency table of `outcomes`, one row per class and one for all.
pub fn print_latency(outcomes: &[Outcome]) {
    println!(
        "  {:<8} {:>7} {:>7} {:>6}  first provider p50 / p99 / max   whole lookup p50 / p99 / max",
        "keys", "lookups", "found", "wrong"
    );
    let classes = [
        ("base", Some(KeyClass::Base)),
        ("shared", Some(KeyClass::Shared)),
        ("unique", Some(KeyClass::Unique)),
        ("all", None),
    ];
    for (label, class) in classes {
        let picked: Vec<Outcome> = outcomes.iter().filter(|o| class.is_none_or(|c| o.class == c)).cloned().collect();
        if picked.is_empty() {
            continue;
        }
        let s = summarize(&picked);
        println!(
            "  {label:<8} {:>7} {:>7} {:>6}  {:>8.2?} / {:>8.2?} / {:>8.2?}     {:>8.2?} / {:>8.2?} / {:>8.2?}",
            s.lookups, s.found, s.wrong, s.first.0, s.first.1, s.first.2, s.whole.0, s.whole.1, s.whole.2
        );
    }
}

/// Logs warnings from `RUST_LOG` (default: warnings, and Kademlia's and
/// yamux's own errors only: a simulation provokes many expected query
/// failures, and closes connections whose other end is already gone).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,libp2p_kad=error,yamux=error".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// Prints the record load per node, the lookups' query cost, and how the
/// providers returned for base layers (held by every node) spread.
pub fn print_load(cluster: &Cluster, stats: &[RouterStats], outcomes: &[Outcome]) {
    let nodes = cluster.routers.len();
    let (min, median, max) = spread(stats.iter().map(|s| s.store.provider_records).collect());
    println!("  provider records per node: min {min} / median {median} / max {max}");
    let (min, median, max) = spread(stats.iter().map(|s| s.store.keys).collect());
    println!("  keys with records per node: min {min} / median {median} / max {max}");
    let (min, median, max) = spread(cluster.connections());
    println!("  connected peers per node: min {min} / median {median} / max {max}");
    let sum = |f: fn(&RouterStats) -> u64| stats.iter().map(f).sum::<u64>();
    println!(
        "  advertising: {} batches from the routing table, {} swept ({} keys, {} closest-peers queries), {} key by key",
        sum(|s| s.bulk.table_batches),
        sum(|s| s.bulk.sweeps),
        sum(|s| s.bulk.keys_swept),
        sum(|s| s.bulk.sweep_queries),
        sum(|s| s.bulk.key_by_key),
    );
    println!(
        "  keys failed in batches: {} not placed in time (sweeps), {} stored by fewer than half of their peers",
        sum(|s| s.bulk.keys_unplaced),
        sum(|s| s.bulk.keys_understored),
    );
    let queries: u64 = stats.iter().map(|s| s.lookup_queries).sum();
    let requests: u64 = stats.iter().map(|s| s.lookup_requests).sum();
    let most = stats.iter().map(|s| s.lookup_max_requests).max().unwrap_or(0);
    println!(
        "  lookup queries: {queries}, requests per query: mean {:.1}, max {most}",
        requests as f64 / queries.max(1) as f64
    );
    let base: Vec<&Outcome> = outcomes.iter().filter(|o| o.class == KeyClass::Base).collect();
    if base.is_empty() {
        return;
    }
    let returned: Vec<usize> = base.iter().flat_map(|o| o.providers.iter().copied()).collect();
    let firsts: Vec<usize> = base.iter().filter_map(|o| o.providers.first().copied()).collect();
    let per_lookup = returned.len() as f64 / base.len() as f64;
    for (label, picks) in [("all returned", &returned), ("first returned", &firsts)] {
        let (distinct, max_share, gini) = concentration(picks, nodes);
        println!(
            "  base-layer providers, {label}: {distinct} distinct of {nodes} nodes, max share {:.1}%, gini {gini:.2} ({} lookups, {per_lookup:.1} providers each)",
            max_share * 100.0,
            base.len()
        );
    }
}
