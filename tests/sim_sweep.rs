//! Swept batches, as in a cluster larger than the routing table, on 30
//! nodes over the memory transport with the routing-table path turned off:
//! each node holds many keys, the sweeps place them with far fewer
//! closest-peers queries than keys, and every key is found. A file of its
//! own, so that no other simulated cluster shares the CPU with it.
//! No socket is opened; every wait has a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/sim.rs"]
#[allow(dead_code)]
mod sim;

use std::time::Duration;

use anyhow::{Result, ensure};
use sim::{Cluster, KeyClass, LOOKUP_LIMIT, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swept_batches_place_every_key_with_fewer_queries_than_keys() -> Result<()> {
    sim::init_tracing();
    let config = SimConfig {
        subnet: [2, 0],
        base: 2,
        shared: 0,
        unique: 120,
        lookups: 100,
        resolve_timeout: Duration::from_secs(30),
        place_from_table: false,
        advertising_at_once: 8,
        ..SimConfig::memory(30)
    };
    let cluster = Cluster::start(config).await?;
    let advertised = cluster.advertise_all().await;
    ensure!(advertised.failed == 0, "{} keys could not be advertised", advertised.failed);
    let stats = cluster.stats().await?;
    let swept: u64 = stats.iter().map(|s| s.bulk.keys_swept).sum();
    let queries: u64 = stats.iter().map(|s| s.bulk.sweep_queries).sum();
    let from_table: u64 = stats.iter().map(|s| s.bulk.table_batches).sum();
    println!(
        "advertised in {:?}: {swept} keys swept ({} tried again) with {queries} closest-peers queries",
        advertised.took, advertised.retried
    );
    ensure!(from_table == 0, "{from_table} batches came from the routing table");
    ensure!(swept == (30 * 122 + advertised.retried) as u64, "{swept} keys swept");
    ensure!(queries * 4 < swept, "{queries} queries for {swept} keys");

    let probes = cluster.plan(100, &[KeyClass::Unique, KeyClass::Base]);
    let outcomes = cluster.run(&probes).await;
    sim::print_latency(&outcomes);
    let summary = sim::summarize(&outcomes);
    ensure!(summary.found == summary.lookups, "{} of {} lookups found a provider", summary.found, summary.lookups);
    ensure!(summary.wrong == 0, "{} providers returned do not hold the key", summary.wrong);
    for outcome in outcomes.iter().filter(|o| o.class == KeyClass::Base) {
        ensure!(outcome.providers.len() == LOOKUP_LIMIT, "a base layer lookup found {:?}", outcome.providers);
    }
    cluster.stop().await;
    Ok(())
}
