//! The behaviour every [`Router`] must show, as one async function that any
//! set of at least two connected routers can be run through (the in-memory
//! fake and the libp2p DHT alike).
//!
//! The DHT converges over time (records travel, withdrawn records expire with
//! their TTL), so every expectation about what a node finds is polled until it
//! holds or `settle` runs out. `settle` must exceed the provider TTL for the
//! withdrawal step. Failures panic with the expected and observed peers: this
//! module exists for tests only.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use tokio::time::{Instant, sleep, timeout};

use super::{Peer, Router};
use crate::oci::{Digest, Key};

/// Pause between two polls of a condition that has not settled yet.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A router under test and the peer that other nodes must see for it.
pub struct ContractNode<R> {
    pub peer: Peer,
    pub router: R,
}

/// Runs the router contract against `nodes` (at least two, all ready and
/// connected to each other).
pub async fn router_contract<R: Router>(nodes: &[ContractNode<R>], settle: Duration) {
    assert!(nodes.len() >= 2, "the router contract needs at least two nodes");
    for node in nodes {
        assert!(node.router.is_ready(), "{} is not ready", node.peer.name);
    }
    let nonce: u64 = rand::random();
    let key = |label: &str| Key::Digest(Digest::of(format!("router-contract/{nonce}/{label}").as_bytes()));

    advertised_key_is_found_by_every_other_node(nodes, &key("one-provider"), settle).await;
    lookups_stop_at_the_limit(nodes, &key("several-providers"), settle).await;
    withdrawn_key_moves_to_a_new_provider(nodes, &key("moved"), settle).await;
}

async fn advertised_key_is_found_by_every_other_node<R: Router>(
    nodes: &[ContractNode<R>],
    key: &Key,
    settle: Duration,
) {
    let provider = &nodes[0];
    provide(provider, key).await;
    everyone_else_eventually_finds(nodes, key, std::slice::from_ref(&provider.peer), settle).await;
    let own = lookup(&provider.router, key, 10, settle).await;
    assert!(own.is_empty(), "{} found itself or a stranger for {key}: {own:?}", provider.peer.name);
}

async fn lookups_stop_at_the_limit<R: Router>(nodes: &[ContractNode<R>], key: &Key, settle: Duration) {
    let providers = &nodes[..(nodes.len() - 1).min(3)];
    let looker = &nodes[nodes.len() - 1];
    for node in providers {
        provide(node, key).await;
    }
    let expected: Vec<Peer> = providers.iter().map(|n| n.peer.clone()).collect();
    eventually_finds(looker, key, &expected, settle).await;
    for limit in 0..expected.len() {
        let found = lookup(&looker.router, key, limit, settle).await;
        assert_eq!(found.len(), limit, "{} asked for {limit} providers of {key}: {found:?}", looker.peer.name);
        assert!(found.iter().all(|p| expected.contains(p)), "unexpected provider of {key}: {found:?}");
    }
}

async fn withdrawn_key_moves_to_a_new_provider<R: Router>(nodes: &[ContractNode<R>], key: &Key, settle: Duration) {
    let (first, second) = (&nodes[0], &nodes[1]);
    provide(first, key).await;
    everyone_else_eventually_finds(nodes, key, std::slice::from_ref(&first.peer), settle).await;

    first.router.withdraw(key).await.unwrap_or_else(|e| panic!("{} withdraw {key}: {e}", first.peer.name));
    provide(second, key).await;
    everyone_else_eventually_finds(nodes, key, std::slice::from_ref(&second.peer), settle).await;
}

async fn provide<R: Router>(node: &ContractNode<R>, key: &Key) {
    node.router.provide(key).await.unwrap_or_else(|e| panic!("{} provide {key}: {e}", node.peer.name));
}

/// Every node but the providers themselves ends up finding exactly `expected`.
async fn everyone_else_eventually_finds<R: Router>(
    nodes: &[ContractNode<R>],
    key: &Key,
    expected: &[Peer],
    settle: Duration,
) {
    let lookers = nodes.iter().filter(|n| !expected.contains(&n.peer));
    join_all(lookers.map(|looker| eventually_finds(looker, key, expected, settle))).await;
}

/// Polls `looker` until a lookup of `key` returns exactly `expected` (in any order).
async fn eventually_finds<R: Router>(looker: &ContractNode<R>, key: &Key, expected: &[Peer], settle: Duration) {
    let want: HashSet<&Peer> = expected.iter().collect();
    let deadline = Instant::now() + settle;
    loop {
        let found = lookup(&looker.router, key, expected.len() + 5, settle).await;
        assert!(!found.contains(&looker.peer), "{} found itself for {key}", looker.peer.name);
        if found.iter().collect::<HashSet<_>>() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not settle on the providers of {key} within {settle:?}: want {expected:?}, found {found:?}",
            looker.peer.name
        );
        sleep(POLL_INTERVAL).await;
    }
}

/// Collects one lookup, checking that the stream ends on its own and repeats no peer.
async fn lookup<R: Router>(router: &R, key: &Key, limit: usize, settle: Duration) -> Vec<Peer> {
    let found: Vec<Peer> = timeout(settle, router.lookup(key, limit).collect())
        .await
        .unwrap_or_else(|_| panic!("lookup of {key} did not end within {settle:?}"));
    assert!(found.len() <= limit, "lookup of {key} with limit {limit} returned {found:?}");
    let names: HashSet<_> = found.iter().map(|p| &p.name).collect();
    assert_eq!(names.len(), found.len(), "lookup of {key} repeated a peer: {found:?}");
    found
}
