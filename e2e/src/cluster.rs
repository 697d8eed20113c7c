//! A test cluster on loopback: N nodes (127.0.0.1 ..= 127.0.0.N), each with
//! its own containerd and optionally its own Shoal, one upstream registry on
//! 127.0.0.200:5000, and a firewall of our own. Everything lives in a per-run
//! temporary directory and is torn down on drop, also on panic.
//!
//! Only one cluster runs at a time on a machine (the addresses are fixed): a
//! file lock serialises clusters across threads and test binaries.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use nix::fcntl::{Flock, FlockArg};
use tempfile::TempDir;

use crate::iptables::{Firewall, chain_exists};
use crate::node::{NODE_GID_BASE, Node};
use crate::process::{log_tail, processes_mentioning};
use crate::registry::{REGISTRY_ADDR, UpstreamRegistry};
use crate::shoal::ShoalTuning;
use crate::wait::poll_until;

/// Most nodes a cluster may have.
pub const MAX_NODES: usize = 10;
const LOCK_PATH: &str = "/tmp/shoal-e2e.lock";
const LOCK_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const LOG_TAIL_LINES: usize = 30;
const REGISTRY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 200);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// 1 ..= 10 nodes.
    pub nodes: usize,
    /// Start the upstream registry.
    pub registry: bool,
    /// Start `shoal run` on every node.
    pub shoal: bool,
    /// Extra `shoal run` flags for every node.
    pub shoal_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self { nodes: 3, registry: true, shoal: false, shoal_args: Vec::new() }
    }
}

impl ClusterOptions {
    /// `nodes` nodes with an upstream registry and Shoal on every node.
    pub fn with_shoal(nodes: usize) -> Self {
        Self { nodes, registry: true, shoal: true, shoal_args: Vec::new() }
    }
}

/// A running cluster. Fields drop in order: nodes (Shoal, then containerd),
/// registry, firewall, the run directory, then the lock.
pub struct Cluster {
    nodes: Vec<Node>,
    registry: Option<UpstreamRegistry>,
    firewall: Firewall,
    run_dir: Option<TempDir>,
    _lock: Flock<File>,
    /// Cleared by [`Cluster::shutdown`]: a cluster dropped without it is on a
    /// failing path (a test returned an error), so its logs' tails are printed.
    print_logs_on_drop: bool,
}

/// What a run left behind after teardown; empty when all is clean.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub processes: Vec<(u32, String)>,
    pub chain_remains: bool,
}

impl Cluster {
    /// Starts a cluster. On error everything started so far is torn down.
    pub async fn start(options: &ClusterOptions) -> Result<Self> {
        ensure!((1..=MAX_NODES).contains(&options.nodes), "a cluster has 1 to {MAX_NODES} nodes");
        let lock = acquire_lock().await?;
        let run_dir = tempfile::Builder::new().prefix("shoal-e2e-").tempdir_in("/tmp")?;
        let firewall = Firewall::new()?;
        let mut cluster = Self {
            nodes: Vec::new(),
            registry: None,
            firewall,
            run_dir: Some(run_dir),
            _lock: lock,
            print_logs_on_drop: true,
        };
        if options.registry {
            cluster.registry = Some(UpstreamRegistry::start(&cluster.run_dir().join("registry")).await?);
        }
        for index in 1..=options.nodes {
            cluster.add_node(index).await?;
        }
        if options.shoal {
            cluster.start_shoal_everywhere(&options.shoal_args).await?;
        }
        Ok(cluster)
    }

    async fn add_node(&mut self, index: usize) -> Result<()> {
        let octet = u8::try_from(index)?;
        let gid = NODE_GID_BASE + u32::from(octet);
        self.firewall.source_address_for_group(gid, REGISTRY_IP, Ipv4Addr::new(127, 0, 0, octet))?;
        let node = Node::start(index, &self.run_dir().join(format!("n{index}"))).await?;
        node.configure_mirror(&[&self.registry_url()])?;
        self.nodes.push(node);
        Ok(())
    }

    /// Starts Shoal on every node, node 1 first; the others bootstrap from it.
    pub async fn start_shoal_everywhere(&mut self, args: &[String]) -> Result<()> {
        for index in 1..=self.nodes.len() {
            let tuning = ShoalTuning { registry_ip: None, args: args.to_vec() };
            self.start_shoal_on(index, tuning).await?;
        }
        Ok(())
    }

    /// Starts Shoal on node `index` (bootstrapping from node 1 unless it is node 1).
    pub async fn start_shoal_on(&mut self, index: usize, tuning: ShoalTuning) -> Result<()> {
        let registry = self.registry_url();
        let first = self.nodes.first().map(|n| n.ip).context("cluster has no node")?;
        let node = self.node_mut(index)?;
        let bootstrap = (node.ip != first).then_some(first);
        node.start_shoal(bootstrap, &[&registry], tuning).await
    }

    /// `http://127.0.0.200:5000`, whether or not the registry runs.
    pub fn registry_url(&self) -> String {
        format!("http://{REGISTRY_ADDR}")
    }

    /// `127.0.0.200:5000`, the registry part of image references.
    pub fn registry_host(&self) -> &'static str {
        REGISTRY_ADDR
    }

    pub fn registry(&self) -> Result<&UpstreamRegistry> {
        self.registry.as_ref().context("this cluster has no upstream registry")
    }

    pub fn registry_mut(&mut self) -> Result<&mut UpstreamRegistry> {
        self.registry.as_mut().context("this cluster has no upstream registry")
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index`, 1-based like its address.
    pub fn node(&self, index: usize) -> Result<&Node> {
        self.nodes.get(index.wrapping_sub(1)).with_context(|| format!("no node {index}"))
    }

    pub fn node_mut(&mut self, index: usize) -> Result<&mut Node> {
        self.nodes.get_mut(index.wrapping_sub(1)).with_context(|| format!("no node {index}"))
    }

    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    pub fn run_dir(&self) -> &Path {
        self.run_dir.as_ref().map_or(Path::new("/nonexistent"), TempDir::path)
    }

    /// Tears everything down and reports anything left behind.
    pub async fn shutdown(mut self) -> Result<Leftovers> {
        let run_dir = self.run_dir().to_string_lossy().into_owned();
        let chain = self.firewall.chain().to_owned();
        self.print_logs_on_drop = false;
        self.stop_processes();
        drop(self);
        let processes = poll_until("the run's processes to be gone", Duration::from_secs(10), || async {
            let left = processes_mentioning(&run_dir);
            Ok(left.is_empty().then_some(left))
        })
        .await
        .or_else(|_| anyhow::Ok(processes_mentioning(&run_dir)))?;
        Ok(Leftovers { processes, chain_remains: chain_exists(&chain) })
    }

    fn print_log_tails(&self) {
        let registry_log = self.registry.as_ref().map(UpstreamRegistry::log_path);
        for path in self.nodes.iter().flat_map(Node::log_paths).chain(registry_log) {
            eprintln!(
                "---- last {LOG_TAIL_LINES} lines of {} ----\n{}",
                path.display(),
                log_tail(&path, LOG_TAIL_LINES)
            );
        }
    }

    fn stop_processes(&mut self) {
        self.nodes.clear();
        self.registry = None;
        if let Some(dir) = &self.run_dir {
            unmount_under(dir.path());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // On a panic every process guard prints its own log's tail.
        if self.print_logs_on_drop && !std::thread::panicking() {
            self.print_log_tails();
        }
        self.stop_processes();
        if std::env::var_os("SHOAL_E2E_KEEP").is_some()
            && let Some(dir) = self.run_dir.take()
        {
            eprintln!("SHOAL_E2E_KEEP: keeping {}", dir.keep().display());
        }
    }
}

impl Leftovers {
    pub fn is_clean(&self) -> bool {
        self.processes.is_empty() && !self.chain_remains
    }

    /// Fails unless nothing was left behind.
    pub fn ensure_clean(&self) -> Result<()> {
        if !self.is_clean() {
            bail!("teardown left things behind: {self:?}");
        }
        Ok(())
    }
}

/// Takes the machine-wide cluster lock, waiting (bounded) for another cluster to finish.
async fn acquire_lock() -> Result<Flock<File>> {
    poll_until("the e2e cluster lock (another cluster is running)", LOCK_TIMEOUT, || async {
        let file = File::options().create(true).truncate(false).write(true).open(LOCK_PATH)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(errno).with_context(|| format!("lock {LOCK_PATH}")),
        }
    })
    .await
}

/// Detaches any mount left under `dir` (a snapshot mount of a killed daemon).
fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        if let Err(err) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("could not unmount {}: {err}", point.display());
        }
    }
}
