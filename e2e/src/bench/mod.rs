//! `shoal-e2e bench`: Shoal measured side by side with nginx and the
//! upstream registry on this machine, in one run, several repetitions each,
//! medians reported. Sections (each selectable):
//! - [`blob`] (a): throughput of one large blob, local, one peer hop, nginx, registry;
//! - [`concurrent`] (b): many clients at once, throughput, latency, Shoal's memory;
//! - [`pull`] (c): containerd pull time through a peer against a shaped upstream;
//! - [`memory`] (e): an idle node advertising many keys, and the peak under (b).
//!
//! Writes `bench.json` and PNG charts into the output directory. Measures
//! only: it never changes Shoal. Everything runs on loopback inside the
//! harness's clusters (one at a time, under the cluster lock); every process,
//! qdisc and directory it creates is removed when it ends, also on failure.

mod blob;
mod client;
mod concurrent;
mod fixture;
mod keys;
mod memory;
mod nginx;
mod plot;
mod procfs;
mod progress;
mod pull;
mod report;
mod shaping;
mod stats;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};

pub use blob::{BlobOptions, BlobResult};
pub use concurrent::{ConcurrentOptions, ConcurrentResult};
pub use memory::{MemoryOptions, MemoryResult};
pub use pull::{PullOptions, PullResult};
pub use report::BenchReport;

use progress::Progress;

/// One part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Blob,
    Concurrent,
    Pull,
    Memory,
}

impl Section {
    pub const ALL: [Section; 4] = [Section::Blob, Section::Concurrent, Section::Pull, Section::Memory];
}

impl FromStr for Section {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim() {
            "blob" => Ok(Section::Blob),
            "concurrent" => Ok(Section::Concurrent),
            "pull" => Ok(Section::Pull),
            "memory" => Ok(Section::Memory),
            other => bail!("unknown section {other:?} (use blob, concurrent, pull, memory)"),
        }
    }
}

/// What a run measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub sections: Vec<Section>,
    pub short: bool,
    pub reps: usize,
    pub out_dir: PathBuf,
    pub blob: BlobOptions,
    pub concurrent: ConcurrentOptions,
    pub pull: PullOptions,
    pub memory: MemoryOptions,
    /// A `bench.json` of an earlier run: sections this run skips are taken from it.
    pub merge: Option<PathBuf>,
}

impl BenchOptions {
    /// The full benchmark: 1 GiB blob, 64 clients x 16 MiB, 10 MB / 100 MB / 1 GB
    /// images in 1 and 4 layers at 1 Gbit/s, 10,000 keys.
    pub fn full(reps: usize) -> Self {
        Self {
            sections: Section::ALL.to_vec(),
            short: false,
            reps,
            out_dir: PathBuf::from("target/bench"),
            blob: BlobOptions { size: 1 << 30, reps },
            concurrent: ConcurrentOptions { clients: 64, blob_size: 16 << 20, reps },
            pull: PullOptions {
                sizes: vec![10_000_000, 100_000_000, 1_000_000_000],
                layer_counts: vec![1, 4],
                reps,
                rate: "1gbit".to_owned(),
            },
            memory: MemoryOptions { keys: 10_000, window: Duration::from_secs(5) },
            merge: None,
        }
    }

    /// Small sizes, one repetition, few clients: well under two minutes.
    pub fn short() -> Self {
        let mut options = Self::full(1);
        options.short = true;
        options.blob.size = 32 << 20;
        options.concurrent.clients = 8;
        options.concurrent.blob_size = 1 << 20;
        options.pull.sizes = vec![10_000_000];
        options.memory = MemoryOptions { keys: 1_000, window: Duration::from_secs(1) };
        options
    }

    fn steps(&self) -> u64 {
        self.sections
            .iter()
            .map(|section| match section {
                Section::Blob => blob::steps(&self.blob),
                Section::Concurrent => concurrent::steps(&self.concurrent),
                Section::Pull => pull::steps(&self.pull),
                Section::Memory => memory::steps(&self.memory),
            })
            .sum()
    }
}

/// Runs the selected sections, writes `bench.json` and the charts into
/// `options.out_dir`, and returns the report.
pub async fn run(options: &BenchOptions) -> Result<BenchReport> {
    let shoal_binary = crate::shoal::shoal_binary()?;
    let mut report = BenchReport {
        started_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        short: options.short,
        reps: options.reps,
        machine: procfs::Machine::now(),
        shoal_release_build: shoal_binary.components().any(|c| c.as_os_str() == "release"),
        shoal_binary,
        blob: None,
        concurrent: None,
        pull: None,
        memory: None,
        merged_from: None,
    };
    if let Some(path) = &options.merge {
        report.merge_from(path)?;
    }
    let progress = Progress::new(options.steps());
    let mut sections = options.sections.clone();
    sections.sort();
    sections.dedup();
    for section in sections {
        match section {
            Section::Blob => report.blob = Some(blob::run(&options.blob, &progress).await?),
            Section::Concurrent => report.concurrent = Some(concurrent::run(&options.concurrent, &progress).await?),
            Section::Pull => report.pull = Some(pull::run(&options.pull, &progress).await?),
            Section::Memory => report.memory = Some(memory::run(&options.memory, &progress).await?),
        }
        // Written after every section, so that a later failure keeps what was measured.
        report.machine.loadavg_end = procfs::loadavg();
        report.write_json(&options.out_dir)?;
    }
    progress.finish();
    if let (Some(memory), Some(concurrent)) = (&mut report.memory, &report.concurrent) {
        let peak = concurrent.modes.iter().flat_map(|m| m.peak_rss_mib).fold(0.0, f64::max);
        memory.peak_under_load_mib = Some(peak);
    }
    report.write_json(&options.out_dir)?;
    plot::draw(&report, &options.out_dir)?;
    Ok(report)
}
