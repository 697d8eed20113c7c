//! `shoal-e2e`: runs end-to-end scenarios against real containerd daemons, a
//! real registry and Shoal nodes on loopback. Needs root.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};
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
    }
}
