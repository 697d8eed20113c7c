//! The demo scenario (`shoal-e2e demo`), also run by the mirror tests:
//! N nodes with Shoal; node 1 pulls from the upstream (Shoal misses, containerd
//! falls back); the upstream is stopped; nodes 2..N pull through their peers.
//! The report says where every byte came from: the registry's access log per
//! node address, and each node's Shoal metrics.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::cluster::{Cluster, ClusterOptions};
use crate::image::{self, ImageSpec};
use crate::metrics::Metrics;
use crate::node::Node;

const PUSH_TIMEOUT: Duration = Duration::from_secs(300);
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// 2 ..= 10 nodes.
    pub nodes: usize,
    /// Bytes in each layer.
    pub layer_sizes: Vec<u64>,
    /// Bound on every single pull.
    pub pull_timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            layer_sizes: vec![4 << 10, 1 << 20, 32 << 20, 256 << 20],
            pull_timeout: Duration::from_secs(300),
        }
    }
}

/// One node's pull and what its Shoal served.
#[derive(Debug, Clone)]
pub struct NodePull {
    pub node: usize,
    pub ip: IpAddr,
    pub elapsed: Duration,
    /// Blob bytes the upstream registry sent to this node's address.
    pub upstream_bytes: u64,
    /// Blob bytes this node's Shoal fetched from peers and gave its containerd.
    pub peer_bytes: f64,
    /// Blob bytes this node's Shoal sent to other nodes.
    pub uploaded_bytes: f64,
    /// Requests this node's Shoal answered with a 404 (containerd then asked the upstream).
    pub miss_requests: f64,
}

/// The outcome of a demo run.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub image: String,
    /// Bytes of the blobs one pull of the host platform fetches (config + layers).
    pub pull_bytes: u64,
    pub pull_blobs: usize,
    pub pulls: Vec<NodePull>,
    /// Blob GETs the upstream served, per client address.
    pub upstream_gets: BTreeMap<IpAddr, usize>,
}

impl DemoReport {
    /// Peer bytes served on nodes 2..N over the bytes their pulls needed.
    pub fn peer_hit_rate(&self) -> f64 {
        let later = &self.pulls[1.min(self.pulls.len())..];
        let needed = self.pull_bytes as f64 * later.len() as f64;
        let from_peers: f64 = later.iter().map(|p| p.peer_bytes).sum();
        if needed == 0.0 { 0.0 } else { (from_peers / needed).min(1.0) }
    }
}

/// Runs the whole scenario and tears the cluster down.
pub async fn run(options: &DemoOptions) -> Result<DemoReport> {
    ensure!(options.nodes >= 2, "the demo needs at least 2 nodes");
    let mut cluster = Cluster::start(&ClusterOptions::with_shoal(options.nodes)).await?;
    let layout = tempfile::tempdir()?;
    let spec = ImageSpec::multi_arch("demo/app", "v1", &options.layer_sizes);
    let built = image::build(&spec, layout.path())?;
    built.push(cluster.registry_host(), PUSH_TIMEOUT).await?;
    let reference = built.reference(cluster.registry_host());

    let mut elapsed = vec![pull(cluster.node(1)?, &reference, options.pull_timeout).await?];
    for node in &cluster.nodes()[1..] {
        node.wait_until_servable(&built, DISCOVERY_TIMEOUT).await?;
    }
    let upstream = cluster.registry()?.access_log()?;
    cluster.registry_mut()?.stop();
    for node in &cluster.nodes()[1..] {
        elapsed.push(pull(node, &reference, options.pull_timeout).await?);
    }

    let mut pulls = Vec::new();
    let upstream_bytes = upstream.blob_bytes_by_client();
    for (node, elapsed) in cluster.nodes().iter().zip(elapsed) {
        let metrics: Metrics = node.metrics().await?;
        let ip = IpAddr::V4(node.ip);
        pulls.push(NodePull {
            node: node.index,
            ip,
            elapsed,
            upstream_bytes: upstream_bytes.get(&ip).copied().unwrap_or(0),
            peer_bytes: metrics.sum("shoal_bytes_served_total", &[("source", "peer"), ("kind", "blob")]),
            uploaded_bytes: metrics.blob_upload_bytes(),
            miss_requests: metrics.sum("shoal_requests_total", &[("source", "miss")]),
        });
    }
    let mut upstream_gets = BTreeMap::new();
    for ((_, client), count) in upstream.blob_gets() {
        *upstream_gets.entry(client).or_default() += count;
    }
    let platform = built.host_platform()?;
    let report = DemoReport {
        image: reference,
        pull_bytes: platform.blob_bytes(),
        pull_blobs: platform.blobs().len(),
        pulls,
        upstream_gets,
    };
    cluster.shutdown().await?.ensure_clean()?;
    Ok(report)
}

async fn pull(node: &Node, reference: &str, timeout: Duration) -> Result<Duration> {
    let pulled = node.cri().pull(reference, timeout).await.with_context(|| format!("pull on node {}", node.index))?;
    Ok(pulled.elapsed)
}

/// Human-readable byte counts (`12.3 MiB`).
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{value:.0} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Parses a size such as `4K`, `1M`, `256M`, `1G` or `512` (bytes).
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&text[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&text[..i], 1 << 30),
        Some(_) => (text, 1),
        None => bail!("empty size"),
    };
    let number: u64 = digits.parse().with_context(|| format!("bad size {text:?} (use e.g. 4K, 32M, 1G)"))?;
    number.checked_mul(multiplier).with_context(|| format!("size {text:?} is too large"))
}

impl DemoReport {
    /// Blob bytes all pulls fetched, and how many of them the upstream and the peers served.
    fn totals(&self) -> (f64, f64, f64) {
        let pulled = self.pull_bytes as f64 * self.pulls.len() as f64;
        let upstream: f64 = self.pulls.iter().map(|p| p.upstream_bytes as f64).sum();
        let peers: f64 = self.pulls.iter().map(|p| p.peer_bytes).sum();
        (pulled, upstream, peers)
    }
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole == 0.0 { 0.0 } else { 100.0 * part / whole }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.pulls.len();
        writeln!(
            f,
            "image {}: one pull fetches {} blobs, {}",
            self.image,
            self.pull_blobs,
            bytes(self.pull_bytes as f64)
        )?;
        writeln!(
            f,
            "node 1 pulled with the upstream up; the upstream was then stopped; nodes 2..{n} pulled after it."
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<6}{:>11}{:>16}{:>14}{:>19}{:>15}",
            "node", "pull time", "from upstream", "from peers", "uploaded to peers", "Shoal misses"
        )?;
        for p in &self.pulls {
            writeln!(
                f,
                "{:<6}{:>9.2} s{:>16}{:>14}{:>19}{:>15}",
                p.node,
                p.elapsed.as_secs_f64(),
                bytes(p.upstream_bytes as f64),
                bytes(p.peer_bytes),
                bytes(p.uploaded_bytes),
                p.miss_requests
            )?;
        }
        writeln!(f, "  from upstream: blob bytes in the registry's access log for the node's address")?;
        writeln!(f, "  from peers / uploaded to peers: blob bytes in each node's Shoal metrics")?;
        writeln!(f, "  Shoal misses: requests Shoal answered 404 so that containerd asked the upstream itself")?;
        writeln!(f)?;
        let gets: Vec<String> = self.upstream_gets.iter().map(|(ip, c)| format!("{ip}: {c}")).collect();
        writeln!(f, "upstream registry access log, blob GETs by client: {}", gets.join(", "))?;
        let (pulled, upstream, peers) = self.totals();
        writeln!(
            f,
            "all {n} pulls: {} of blobs; the upstream served {} ({:.1}%), peers served {} ({:.1}%)",
            bytes(pulled),
            bytes(upstream),
            percent(upstream, pulled),
            bytes(peers),
            percent(peers, pulled)
        )?;
        writeln!(
            f,
            "peer hit rate on nodes 2..{n}: {:.1}% of the blob bytes they pulled",
            100.0 * self.peer_hit_rate()
        )?;
        if let Some(first) = self.pulls.first() {
            let later: Vec<f64> = self.pulls[1..].iter().map(|p| p.elapsed.as_secs_f64()).collect();
            let mean = later.iter().sum::<f64>() / later.len().max(1) as f64;
            write!(
                f,
                "pull time: {:.2} s from the upstream, {:.2} s on average through peers",
                first.elapsed.as_secs_f64(),
                mean
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("512").ok(), Some(512));
        assert_eq!(parse_size("4K").ok(), Some(4096));
        assert_eq!(parse_size("256M").ok(), Some(256 << 20));
        assert_eq!(parse_size("1g").ok(), Some(1 << 30));
        assert!(parse_size("x").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(256.0 * 1024.0 * 1024.0), "256.0 MiB");
    }
}
