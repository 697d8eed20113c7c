//! `shoal-e2e`: runs end-to-end scenarios against real containerd daemons, a
//! real registry and Shoal nodes on loopback. Needs root.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};
use shoal_e2e::bench::{self, BenchOptions, Section};
use shoal_e2e::demo::{self, DemoOptions};

#[derive(Parser)]
#[command(about = "End-to-end scenarios for Shoal (needs root; loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N nodes: node 1 pulls from the upstream, the upstream stops, the others pull through peers.
    Demo {
        /// Number of nodes (2 to 10).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=10))]
        nodes: u8,
        /// Layer sizes, comma-separated (suffixes K, M, G).
        #[arg(long, value_delimiter = ',', default_value = "4K,1M,32M,256M", value_parser = demo::parse_size)]
        layers: Vec<u64>,
        /// Bound on each pull, in seconds.
        #[arg(long, default_value_t = 300)]
        pull_timeout_secs: u64,
    },
    /// Measures Shoal beside nginx and the upstream registry; writes bench.json and PNG charts.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Sections to run, comma-separated: blob, concurrent, pull, memory.
    #[arg(long, env = "SHOAL_BENCH_ONLY", value_delimiter = ',', default_value = "blob,concurrent,pull,memory")]
    only: Vec<Section>,
    /// Small sizes, one repetition, few clients (under about two minutes).
    #[arg(long, env = "SHOAL_BENCH_SHORT")]
    short: bool,
    /// Repetitions of every measurement (default 3; 1 with --short).
    #[arg(long, env = "SHOAL_BENCH_REPS", value_parser = clap::value_parser!(u16).range(1..=100))]
    reps: Option<u16>,
    /// Where bench.json and the charts go.
    #[arg(long, env = "SHOAL_BENCH_OUT", default_value = "target/bench")]
    out: std::path::PathBuf,
    /// Blob size for section a (suffixes K, M, G; default 1G).
    #[arg(long, env = "SHOAL_BENCH_BLOB_SIZE", value_parser = demo::parse_size)]
    blob_size: Option<u64>,
    /// Concurrent clients in section b (default 64).
    #[arg(long, env = "SHOAL_BENCH_CLIENTS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    clients: Option<u16>,
    /// Blob size each client of section b fetches (default 16M).
    #[arg(long, env = "SHOAL_BENCH_CLIENT_BLOB_SIZE", value_parser = demo::parse_size)]
    client_blob_size: Option<u64>,
    /// Image sizes in section c, comma-separated decimal bytes (default 10000000,100000000,1000000000).
    #[arg(long, env = "SHOAL_BENCH_PULL_SIZES", value_delimiter = ',')]
    pull_sizes: Option<Vec<u64>>,
    /// The upstream's bandwidth in section c, as a tc rate.
    #[arg(long, env = "SHOAL_BENCH_UPSTREAM_RATE")]
    upstream_rate: Option<String>,
    /// Keys the idle node advertises in section e (default 10000).
    #[arg(long, env = "SHOAL_BENCH_KEYS")]
    keys: Option<usize>,
    /// An earlier run's bench.json: sections not selected with --only are taken from it.
    #[arg(long, env = "SHOAL_BENCH_MERGE")]
    merge: Option<std::path::PathBuf>,
}

impl BenchArgs {
    fn options(self) -> BenchOptions {
        let mut options = if self.short { BenchOptions::short() } else { BenchOptions::full(3) };
        if let Some(reps) = self.reps {
            let reps = usize::from(reps);
            options.reps = reps;
            options.blob.reps = reps;
            options.concurrent.reps = reps;
            options.pull.reps = reps;
        }
        options.sections = self.only;
        options.out_dir = self.out;
        options.blob.size = self.blob_size.unwrap_or(options.blob.size);
        options.concurrent.clients = self.clients.map_or(options.concurrent.clients, usize::from);
        options.concurrent.blob_size = self.client_blob_size.unwrap_or(options.concurrent.blob_size);
        options.pull.sizes = self.pull_sizes.unwrap_or(options.pull.sizes);
        options.pull.rate = self.upstream_rate.unwrap_or(options.pull.rate);
        options.memory.keys = self.keys.unwrap_or(options.memory.keys);
        options.merge = self.merge;
        options
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo { nodes, layers, pull_timeout_secs } => {
            let options = DemoOptions {
                nodes: usize::from(nodes),
                layer_sizes: layers,
                pull_timeout: Duration::from_secs(pull_timeout_secs),
            };
            println!("Shoal demo: {} nodes on 127.0.0.1..{}, upstream registry on 127.0.0.200:5000", nodes, nodes);
            let start = Instant::now();
            let report = demo::run(&options).await?;
            println!("{report}");
            println!("demo finished in {:.1} s; everything torn down", start.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Bench(args) => {
            let options = args.options();
            // Ctrl-C drops the run, and with it every guard: processes, the qdisc, directories.
            let report = tokio::select! {
                report = bench::run(&options) => report?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; everything torn down"),
            };
            println!("{}", report.summary());
            println!("results in {}", options.out_dir.display());
            Ok(())
        }
    }
}
