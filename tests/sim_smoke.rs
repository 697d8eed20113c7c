//! The simulation harness of `benches/sim_cluster.rs` on 50 nodes over the
//! memory transport: every node advertises base, shared and unique keys;
//! lookups from other nodes find only true providers, every time.
//! No socket is opened; every wait has a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/sim.rs"]
#[allow(dead_code)]
mod sim;

use std::time::Duration;

use anyhow::{Result, ensure};
use sim::{Cluster, KeyClass, LOOKUP_LIMIT, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_memory_nodes_find_every_key_from_every_class() -> Result<()> {
    sim::init_tracing();
    // A debug build on a loaded machine is slow: lookups get more time than in production.
    let config =
        SimConfig { unique: 10, lookups: 150, resolve_timeout: Duration::from_secs(30), ..SimConfig::memory(50) };
    let cluster = Cluster::start(config).await?;
    let advertised = cluster.advertise().await?;
    println!("advertised in {advertised:?}");
    let probes = cluster.plan(150, &[KeyClass::Base, KeyClass::Shared, KeyClass::Unique]);
    let outcomes = cluster.run(&probes).await;
    sim::print_latency(&outcomes);
    sim::print_load(&cluster, &cluster.stats().await?, &outcomes);
    let summary = sim::summarize(&outcomes);
    ensure!(summary.found == summary.lookups, "{} of {} lookups found a provider", summary.found, summary.lookups);
    ensure!(summary.wrong == 0, "{} providers returned do not hold the key", summary.wrong);
    for outcome in outcomes.iter().filter(|o| o.class == KeyClass::Base) {
        let everyone_else = LOOKUP_LIMIT.min(cluster.routers.len() - 1);
        ensure!(outcome.providers.len() == everyone_else, "a base layer lookup found {:?}", outcome.providers);
    }
    for outcome in outcomes.iter().filter(|o| o.class == KeyClass::Unique) {
        ensure!(outcome.providers.len() == 1, "a unique key has one provider: {:?}", outcome.providers);
    }

    let stats = cluster.stats().await?;
    for (n, stat) in stats.iter().enumerate() {
        let own = cluster.keys_of(n).len();
        ensure!(stat.store.provided == own, "node {n} provides {} of its {own} keys", stat.store.provided);
        ensure!(stat.store.provider_records >= own, "node {n}: {:?}", stat.store);
    }
    let queries: u64 = stats.iter().map(|s| s.lookup_queries).sum();
    ensure!(queries > 0, "lookup queries are counted");
    cluster.stop().await;
    Ok(())
}
