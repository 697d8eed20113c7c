//! A 1,000-node Shoal cluster in one process over libp2p's memory transport:
//! every node advertises 5 base layers (held by all), the shared keys it
//! holds (20 keys, each on 10% of nodes) and 50 unique keys; then lookups of
//! every class from random nodes. Reports lookup success and latency, query
//! requests per lookup, provider records per node, and how the providers
//! returned for a base layer spread over the cluster.
//!
//! `cargo bench --bench sim_cluster -- --nodes 1000` (default 1000).
//! `SHOAL_SIM_SHORT=1`: 50 nodes, 10 unique keys, 300 lookups (a smoke run).
//! `SHOAL_SIM_LOOKUPS`, `SHOAL_SIM_UNIQUE` override those counts;
//! `SHOAL_SIM_ADVERTISING` (default 32) sets how many nodes advertise at once,
//! `SHOAL_SIM_IDLE_SECS` (default 30) how long an idle connection stays open;
//! `SHOAL_SIM_MAX_RSS_MIB` (default 12288) stops the run if memory grows past it;
//! `SHOAL_SIM_SWEEP_ONLY=1` sweeps every batch (no routing-table batches), so
//! that a cluster smaller than the routing table measures sweeps too.
//! No socket is opened: addresses 127.1.x.y only name the nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/sim.rs"]
#[allow(dead_code)]
mod sim;

use std::time::Duration;

use anyhow::{Context, Result};
use shoal::routing::p2p::ConnectionConfig;
use sim::{Cluster, KeyClass, SimConfig, loadavg, rss_mib};
use tokio::time::Instant;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `--nodes N` from the command line (cargo adds `--bench`, ignored).
fn nodes_arg(default: usize) -> Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--nodes") {
        Some(i) => args.get(i + 1).context("--nodes needs a number")?.parse().context("--nodes"),
        None => Ok(default),
    }
}

fn config() -> Result<SimConfig> {
    let short = std::env::var("SHOAL_SIM_SHORT").is_ok_and(|v| v == "1");
    let (nodes, unique, lookups) = if short { (50, 10, 300) } else { (1000, 50, 3000) };
    let idle = Duration::from_secs(env_or("SHOAL_SIM_IDLE_SECS", 30) as u64);
    Ok(SimConfig {
        unique: env_or("SHOAL_SIM_UNIQUE", unique),
        lookups: env_or("SHOAL_SIM_LOOKUPS", lookups),
        advertising_at_once: env_or("SHOAL_SIM_ADVERTISING", 32),
        connections: ConnectionConfig { idle_timeout: idle, ..sim::SIM_CONNECTIONS },
        progress: true,
        place_from_table: !std::env::var("SHOAL_SIM_SWEEP_ONLY").is_ok_and(|v| v == "1"),
        ..SimConfig::memory(nodes_arg(nodes)?)
    })
}

/// Ends the process if its memory passes the limit: the machine is shared.
fn watch_memory() {
    let limit = env_or("SHOAL_SIM_MAX_RSS_MIB", 12 * 1024) as u64;
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let rss = rss_mib();
            if rss > limit {
                eprintln!("simulation stopped: {rss} MiB resident, over the {limit} MiB limit");
                std::process::exit(2);
            }
        }
    });
}

async fn run() -> Result<()> {
    let config = config()?;
    println!(
        "simulated cluster: {} nodes over the memory transport, {} base + {} shared (1 node in {}) + {} unique keys per node",
        config.nodes, config.base, config.shared, config.shared_every, config.unique
    );
    let started = Instant::now();
    let lookups = config.lookups;
    let cluster = Cluster::start(config).await?;
    println!("  started and connected in {:.1?} (rss {} MiB, load {})", started.elapsed(), rss_mib(), loadavg());
    let advertised = cluster.advertise_all().await;
    println!(
        "  advertised in {:.1?}: {} keys tried again, {} failed every attempt (rss {} MiB, load {})",
        advertised.took,
        advertised.retried,
        advertised.failed,
        rss_mib(),
        loadavg()
    );

    let probes = cluster.plan(lookups, &[KeyClass::Base, KeyClass::Shared, KeyClass::Unique]);
    let started = Instant::now();
    let outcomes = cluster.run(&probes).await;
    println!(
        "  {lookups} lookups ({} at once) in {:.1?} (rss {} MiB, load {}):",
        cluster.config.concurrency,
        started.elapsed(),
        rss_mib(),
        loadavg()
    );
    sim::print_latency(&outcomes);
    let stats = cluster.stats().await?;
    sim::print_load(&cluster, &stats, &outcomes);
    cluster.stop().await;
    Ok(())
}

fn main() -> Result<()> {
    sim::init_tracing();
    watch_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}
