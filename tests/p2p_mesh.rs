//! Real libp2p routers over TCP on loopback (127.0.0.N): advertising, lookups
//! with registry endpoints, withdrawal, TTL expiry, 1,000 keys, shutdown.
//! Loopback only; every wait is a condition polled with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mesh.rs"]
mod mesh;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use futures::StreamExt;
use futures::stream;
use mesh::{Mesh, REGISTRY_PORT, eventually, free_port, start_node};
use shoal::oci::{Digest, Key};
use shoal::routing::contract::router_contract;
use shoal::routing::p2p::{self, P2pConfig};
use shoal::routing::{Error, Peer, Router};
use tokio::time::Instant;

/// Short enough for expiry tests to finish quickly, long enough to outlive a provide.
const SHORT_TTL: Duration = Duration::from_secs(2);
const LONG_TTL: Duration = P2pConfig::DEFAULT_PROVIDER_TTL;

fn key(label: &str) -> Key {
    Key::Digest(Digest::of(label.as_bytes()))
}

fn names(peers: &[Peer]) -> HashSet<String> {
    peers.iter().map(|p| p.name.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_real_routers_pass_the_router_contract() -> Result<()> {
    let mesh = Mesh::start(10, SHORT_TTL).await?;
    router_contract(&mesh.contract_nodes(), mesh::SETTLE).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_finds_exactly_the_providers_with_their_registry_endpoints() -> Result<()> {
    let mesh = Mesh::start(12, LONG_TTL).await?;
    let key = key("three providers");
    let providers = [3, 7, 11];
    for n in providers {
        mesh.node(n).router.provide(&key).await?;
    }
    let expected: Vec<Peer> = providers.iter().map(|n| mesh.node(*n).peer.clone()).collect();
    for (i, node) in mesh.nodes.iter().enumerate() {
        let want: HashSet<&Peer> = expected.iter().filter(|p| **p != node.peer).collect();
        eventually(&format!("node {} finds the providers", i + 1), || async {
            let found = node.lookup(&key, 10).await;
            found.len() == want.len() && found.iter().collect::<HashSet<_>>() == want
        })
        .await?;
    }
    for peer in &expected {
        let ip = peer.endpoint.ip().to_string();
        assert!(ip.starts_with("127.0.0."), "{peer:?}");
        assert_eq!(peer.endpoint.port(), REGISTRY_PORT);
    }

    let rounds = 24;
    let (mut first_peer, mut whole_query) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        let node = mesh.node(1 + round % 12);
        let started = Instant::now();
        let first = node.lookup(&key, 1).await;
        first_peer += started.elapsed();
        ensure!(first.len() == 1 && expected.contains(&first[0]), "lookup {round} found {first:?}");
        let started = Instant::now();
        let all = node.lookup(&key, 10).await;
        whole_query += started.elapsed();
        ensure!(all.len() >= 2, "lookup {round} found {all:?}");
    }
    println!(
        "lookup latency on 12 loopback nodes: first provider {:?}, whole query {:?} (means of {rounds})",
        first_peer / rounds as u32,
        whole_query / rounds as u32
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_key_leaves_its_node_once_records_expire_and_a_new_provider_is_found() -> Result<()> {
    let mesh = Mesh::start(10, SHORT_TTL).await?;
    let key = key("moving key");
    let (old, new, looker) = (mesh.node(4), mesh.node(8), mesh.node(10));
    old.router.provide(&key).await?;
    eventually("the first provider is found", || async { looker.lookup(&key, 5).await == vec![old.peer.clone()] })
        .await?;

    old.router.withdraw(&key).await?;
    new.router.provide(&key).await?;
    for node in mesh.nodes.iter().filter(|n| n.peer != new.peer) {
        eventually(&format!("{} sees only the new provider", node.peer.endpoint), || async {
            node.lookup(&key, 5).await == vec![new.peer.clone()]
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_records_expire_with_their_ttl() -> Result<()> {
    let mesh = Mesh::start(10, SHORT_TTL).await?;
    let key = key("dies");
    let doomed = mesh.node(5);
    doomed.router.provide(&key).await?;
    for node in mesh.nodes.iter().filter(|n| n.peer != doomed.peer) {
        eventually("the provider is found", || async { names(&node.lookup(&key, 5).await).len() == 1 }).await?;
    }
    doomed.stop().await?;
    for node in mesh.nodes.iter().filter(|n| n.peer != doomed.peer) {
        eventually("the dead provider's records expire", || async { node.lookup(&key, 5).await.is_empty() }).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_keys_from_one_node_are_all_findable() -> Result<()> {
    let mesh = Mesh::start(10, LONG_TTL).await?;
    let (provider, looker) = (mesh.node(1), mesh.node(10));
    let keys: Vec<Key> = (0..1000).map(|i| key(&format!("key {i}"))).collect();

    let started = Instant::now();
    let provided: Vec<Result<(), Error>> =
        stream::iter(&keys).map(|k| provider.router.provide(k)).buffer_unordered(32).collect().await;
    let provide_time = started.elapsed();
    ensure!(provided.iter().all(Result::is_ok), "a provide failed");

    let started = Instant::now();
    let deadline = started + mesh::SETTLE;
    let mut missing: Vec<&Key> = keys.iter().collect();
    let mut first_pass_misses = None;
    while !missing.is_empty() {
        ensure!(Instant::now() < deadline, "{} keys were never found", missing.len());
        missing = keys_not_found(looker, &provider.peer, missing).await;
        first_pass_misses.get_or_insert(missing.len());
    }
    println!(
        "1,000 provides: {provide_time:?}; 1,000 lookups: {:?} ({} missed on the first pass)",
        started.elapsed(),
        first_pass_misses.unwrap_or(0)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_router_ends_its_tasks_and_refuses_work() -> Result<()> {
    let mesh = Mesh::start(2, LONG_TTL).await?;
    let (survivor, stopped) = (mesh.node(1), mesh.node(2));
    stopped.stop().await?;
    assert!(!stopped.router.is_ready());
    assert_eq!(stopped.router.connected_peers(), 0);
    assert!(matches!(stopped.router.provide(&key("late")).await, Err(Error::Closed)));
    assert!(matches!(stopped.router.withdraw(&key("late")).await, Err(Error::Closed)));
    assert!(stopped.lookup(&key("late"), 5).await.is_empty());
    eventually("the survivor notices", || async { survivor.router.connected_peers() == 0 }).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_is_ready_at_once_and_finds_nobody() -> Result<()> {
    let node = start_node(1, free_port()?, LONG_TTL, |_| {}).await?;
    assert!(node.router.is_ready());
    node.router.provide(&key("alone")).await?;
    assert!(node.lookup(&key("alone"), 5).await.is_empty());
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_listen_address_is_a_clear_error() -> Result<()> {
    let port = free_port()?;
    let first = start_node(1, port, LONG_TTL, |_| {}).await?;
    let taken = start_node(1, port, LONG_TTL, |_| {}).await;
    let err = taken.err().expect("a second node on the same address must not start");
    let err = err.downcast::<p2p::Error>()?;
    assert!(matches!(err, p2p::Error::Listen { .. }), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    first.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_bootstraps_from_a_dns_name() -> Result<()> {
    let port = free_port()?;
    let seed = start_node(1, port, LONG_TTL, |_| {}).await?;
    let joiner = start_node(2, port, LONG_TTL, |c| c.bootstrap_dns = Some("localhost".into())).await?;
    assert!(!joiner.router.is_ready() || joiner.router.connected_peers() > 0);
    eventually("the joiner connects", || async { joiner.router.is_ready() && joiner.router.connected_peers() == 1 })
        .await?;
    let key = key("via dns");
    seed.router.provide(&key).await?;
    eventually("the joiner finds the seed", || async { joiner.lookup(&key, 5).await == vec![seed.peer.clone()] })
        .await?;
    let endpoint: SocketAddr = format!("127.0.0.1:{REGISTRY_PORT}").parse()?;
    assert_eq!(seed.peer.endpoint, endpoint);
    seed.stop().await?;
    joiner.stop().await
}

/// Looks every key up (32 at a time) and returns those nobody provides yet.
async fn keys_not_found<'k>(looker: &mesh::Node, provider: &Peer, keys: Vec<&'k Key>) -> Vec<&'k Key> {
    let results: Vec<(&Key, Vec<Peer>)> =
        stream::iter(keys).map(|k| async move { (k, looker.lookup(k, 1).await) }).buffer_unordered(32).collect().await;
    for (k, found) in &results {
        assert!(found.iter().all(|p| p == provider), "{k}: {found:?}");
    }
    results.into_iter().filter(|(_, found)| found.is_empty()).map(|(k, _)| k).collect()
}
