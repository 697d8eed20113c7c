//! Peer health over real libp2p routers on loopback (127.0.5.N): when a
//! node stops, the others see its connection close and exclude it from
//! selection at once, long before its provider records expire; pings report
//! round trips for the peers that stay. Every wait is a polled condition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/wait.rs"]
mod wait;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use wait::{eventually_async, eventually_within};

use shoal::metrics::Metrics;
use shoal::mirror::{ExclusionReason, HedgePolicy, Mirror, MirrorConfig, PeerScores, PeerTimeouts};
use shoal::routing::p2p::{self, BootstrapPeer, Identity, KnownPeer, P2pConfig, P2pRouter};
use shoal::routing::{PeerName, Router};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const SETTLE: Duration = Duration::from_secs(20);

struct Node {
    name: PeerName,
    router: P2pRouter,
    token: CancellationToken,
    tracker: TaskTracker,
}

async fn start(n: u8, port: u16, registry_port: u16, bootstrap: Option<u16>) -> Node {
    let listen = SocketAddr::from((Ipv4Addr::new(127, 0, 5, n), port));
    let identity = Identity::generate();
    let mut config = P2pConfig::new(listen, registry_port, identity.clone());
    if let Some(port) = bootstrap {
        config.bootstrap.push(format!("/ip4/127.0.5.1/tcp/{port}").parse::<BootstrapPeer>().unwrap());
    }
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let router = p2p::start(config, token.clone(), &tracker).await.unwrap();
    Node { name: identity.name(), router, token, tracker }
}

fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_excluded_by_the_others_as_its_connection_closes() {
    let port = free_port(Ipv4Addr::new(127, 0, 5, 1));
    let registry_port = free_port(Ipv4Addr::new(127, 0, 5, 1));
    let a = start(1, port, registry_port, None).await;
    let b = start(2, port, registry_port, Some(port)).await;
    let c = start(3, port, registry_port, Some(port)).await;

    let spool = tempfile::tempdir().unwrap();
    let config = MirrorConfig {
        timeouts: PeerTimeouts::default(),
        max_attempts: 4,
        lookup_limit: 20,
        lookup_patience: Duration::from_millis(300),
        spool_dir: spool.path().to_path_buf(),
        hedge: HedgePolicy::default(),
        stream_after_verified: 0,
    };
    let scores = Arc::new(PeerScores::new());
    let mirror = Mirror::new(Arc::new(a.router.clone()), scores.clone(), Metrics::new().unwrap(), config);
    tokio::spawn(mirror.probe_excluded(a.token.clone()));
    let links = a.router.links();
    eventually_within("A is connected to B and C, with their endpoints", SETTLE, || {
        [&b.name, &c.name].iter().all(|name| links.get(name).is_some_and(|l| l.connected && l.endpoint.is_some()))
    })
    .await;
    let c_link = links.get(&c.name).unwrap();
    assert_eq!(c_link.endpoint, Some(SocketAddr::from((Ipv4Addr::new(127, 0, 5, 3), registry_port))));
    eventually_within("pings report B's round trip", SETTLE, || links.get(&b.name).is_some_and(|l| l.rtt.is_some()))
        .await;

    c.token.cancel();
    let stopped = Instant::now();
    eventually_within("A excludes C", SETTLE, || scores.is_excluded(&c.name)).await;
    let excluded_after = stopped.elapsed();
    c.tracker.close();
    c.tracker.wait().await;

    let status = mirror.scores().snapshot().into_iter().find(|s| s.peer == c.name.to_string()).unwrap();
    assert_eq!(status.reason, Some(ExclusionReason::Disconnected));
    assert!(!scores.is_excluded(&b.name), "B stays in selection");
    eventually_within("C's probes fail: nothing answers at its registry", SETTLE, || {
        mirror.scores().snapshot().iter().any(|s| s.peer == c.name.to_string() && s.failed_probes >= 1)
    })
    .await;
    println!("a stopped node was excluded by its peers {excluded_after:?} after it stopped");
    for node in [&a, &b] {
        node.token.cancel();
    }
}

async fn knows(router: &P2pRouter, peer: &PeerName) -> bool {
    router.known_peers().await.unwrap().iter().any(|known| known.name == *peer)
}

/// Nodes A (127.0.5.1) and B (127.0.5.2) on the same free port, neither
/// bootstrapped from the other; and that port.
async fn unconnected_pair() -> (Node, Node, u16) {
    let port = free_port(Ipv4Addr::new(127, 0, 5, 1));
    let registry_port = free_port(Ipv4Addr::new(127, 0, 5, 1));
    let a = start(1, port, registry_port, None).await;
    let b = start(2, port, registry_port, None).await;
    (a, b, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_peer_leaves_routing_until_it_recovers() {
    // No bootstrap on either side: A dials B once, so nothing but recovery redials it.
    let (a, b, port) = unconnected_pair().await;
    let b_addr = SocketAddr::from((Ipv4Addr::new(127, 0, 5, 2), port));
    a.router.dial_known(vec![KnownPeer { name: b.name.clone(), addrs: vec![b_addr] }]).await.unwrap();
    let links = a.router.links();
    eventually_within("A is connected to B and knows it", SETTLE, || {
        links.get(&b.name).is_some_and(|l| l.connected && l.endpoint.is_some())
    })
    .await;
    assert!(knows(&a.router, &b.name).await);

    a.router.peer_unresponsive(&b.name);
    eventually_within("A drops its connection to B", SETTLE, || links.get(&b.name).is_some_and(|l| !l.connected)).await;
    assert!(!knows(&a.router, &b.name).await, "B left A's routing table: no query waits on it");

    a.router.peer_recovered(&b.name);
    eventually_within("A reconnects to B", SETTLE, || links.get(&b.name).is_some_and(|l| l.connected)).await;
    eventually_async("B is back in A's routing table", SETTLE, || knows(&a.router, &b.name)).await;
    for node in [&a, &b] {
        node.token.cancel();
    }
}

/// A connection that a shunned peer opens is denied. The denial must leave
/// no trace in the other protocols: before `blocked` came first among the
/// behaviours, request-response kept a phantom of the denied connection,
/// and the close of the peer's next real connection then failed its
/// consistency check, panicking the swarm task (in debug builds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_connection_leaves_no_phantom_behind() {
    let (a, b, port) = unconnected_pair().await;
    let a_addr = SocketAddr::from((Ipv4Addr::new(127, 0, 5, 1), port));
    let b_addr = SocketAddr::from((Ipv4Addr::new(127, 0, 5, 2), port));
    let to_a = vec![KnownPeer { name: a.name.clone(), addrs: vec![a_addr] }];
    let a_links = a.router.links();
    let b_links = b.router.links();
    let closed_at_b = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = closed_at_b.clone();
    let a_name = a.name.clone();
    b_links.observe(move |event, _| {
        if matches!(event, shoal::routing::LinkEvent::Down { peer } if *peer == a_name) {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });

    a.router.peer_unresponsive(&b.name);
    b.router.dial_known(to_a.clone()).await.unwrap();
    eventually_within("A denies B's connection and B sees it close", SETTLE, || {
        closed_at_b.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;

    a.router.peer_recovered(&b.name);
    a.router.dial_known(vec![KnownPeer { name: b.name.clone(), addrs: vec![b_addr] }]).await.unwrap();
    eventually_within("A connects to B for real", SETTLE, || a_links.get(&b.name).is_some_and(|l| l.connected)).await;
    b.token.cancel();
    b.tracker.close();
    b.tracker.wait().await;
    eventually_within("A sees B's connection close", SETTLE, || a_links.get(&b.name).is_some_and(|l| !l.connected))
        .await;
    assert!(a.router.known_peers().await.is_ok(), "A's swarm task must survive the close");
    a.token.cancel();
}
