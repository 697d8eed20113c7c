//! The result of a run: every section's numbers, the machine and the binary
//! measured, written as `bench.json`, and a plain-text summary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::blob::BlobResult;
use super::concurrent::ConcurrentResult;
use super::memory::MemoryResult;
use super::procfs::Machine;
use super::pull::PullResult;
use crate::demo::bytes;

/// Everything one `shoal-e2e bench` run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    pub short: bool,
    pub reps: usize,
    pub machine: Machine,
    pub shoal_binary: PathBuf,
    /// Whether the measured `shoal` is a release build (by its path).
    pub shoal_release_build: bool,
    pub blob: Option<BlobResult>,
    pub concurrent: Option<ConcurrentResult>,
    pub pull: Option<PullResult>,
    pub memory: Option<MemoryResult>,
    /// The earlier run's `bench.json` that sections not run this time come from.
    #[serde(default)]
    pub merged_from: Option<PathBuf>,
}

impl BenchReport {
    /// Writes `bench.json` into `dir` and returns its path.
    pub fn write_json(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join("bench.json");
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Takes every section of the report at `path` (an earlier run); the
    /// sections this run measures replace them.
    pub fn merge_from(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let earlier: BenchReport =
            serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))?;
        self.blob = earlier.blob;
        self.concurrent = earlier.concurrent;
        self.pull = earlier.pull;
        self.memory = earlier.memory;
        self.merged_from = Some(path.to_path_buf());
        Ok(())
    }

    /// A plain-text summary of every section that ran.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "machine: {} x {}, kernel {}, {} MiB", m.cpus, m.cpu_model, m.kernel, m.memory_mib);
        let _ = writeln!(out, "load average: {} at start, {} at end", m.loadavg_start, m.loadavg_end);
        let _ = writeln!(out, "shoal: {} (release build: {})", self.shoal_binary.display(), self.shoal_release_build);
        if let Some(path) = &self.merged_from {
            let _ = writeln!(out, "sections not run this time come from {}", path.display());
        }
        if let Some(blob) = &self.blob {
            let _ = writeln!(out, "\na. {} blob, median of {} reps", bytes(blob.blob_bytes as f64), blob.reps);
            for t in &blob.targets {
                let goal = t.target_ratio.map_or(String::new(), |r| format!(" (goal >= {r}x)"));
                let first = super::stats::median(&t.first_byte_seconds);
                let _ = writeln!(
                    out,
                    "  {:<19} {:>8.0} MB/s  {:>5.2}x nginx{goal}; first byte {:.3} s; Shoal CPU {:.2} s",
                    t.name, t.mb_per_s, t.ratio_vs_nginx, first, t.shoal_cpu_seconds
                );
            }
            let _ = writeln!(out, "  node 2 passed {} measured fetch(es) through", blob.peer_passthroughs);
        }
        if let Some(c) = &self.concurrent {
            let _ = writeln!(out, "\nb. {} clients x {} blobs, {} reps", c.clients, bytes(c.blob_bytes as f64), c.reps);
            for mode in &c.modes {
                let _ = writeln!(
                    out,
                    "  {:<22} {:>7.0} MB/s  p50 {:>7.1} ms  p99 {:>7.1} ms  failed {}  peak RSS node1 {:.1} MiB node2 {:.1} MiB",
                    mode.name,
                    mode.aggregate_mb_per_s,
                    mode.p50_ms,
                    mode.p99_ms,
                    mode.failed_requests,
                    mode.peak_rss_mib[0],
                    mode.peak_rss_mib[1]
                );
            }
        }
        if let Some(p) = &self.pull {
            let _ = writeln!(out, "\nc. pulls, upstream shaped to {}, median of {} reps", p.upstream_rate, p.reps);
            for image in &p.images {
                let goal = image.reference_speedup.map_or(String::new(), |r| format!(" (reference {r}x)"));
                let _ = writeln!(
                    out,
                    "  {:<22} upstream {:>6.2} s  peer {:>6.2} s  speed-up {:>5.1}x{goal}",
                    image.name, image.upstream_median_seconds, image.peer_median_seconds, image.speedup
                );
            }
        }
        if let Some(mem) = &self.memory {
            let _ = writeln!(
                out,
                "\ne. idle with {} keys: RSS {:.1} MiB (max sampled {:.1}, HWM {:.1}; target {} MiB); other node {:.1} MiB",
                mem.keys_advertised,
                mem.idle_rss_mib,
                mem.idle_max_sampled_rss_mib,
                mem.idle_hwm_mib,
                mem.idle_target_mib,
                mem.other_node_rss_mib
            );
            if let Some(peak) = mem.peak_under_load_mib {
                let _ = writeln!(out, "   peak under load b: {peak:.1} MiB (target {} MiB)", mem.load_target_mib);
            }
        }
        out
    }
}
