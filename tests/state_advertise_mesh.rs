//! Batched advertisement between real libp2p routers on loopback
//! (127.0.4.51 ..= 127.0.4.56): keys announced with `provide_many` are found
//! by every other node through plain Kademlia lookups, and a node with
//! nobody to announce to still succeeds (after falling back to queries).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use futures::StreamExt;
use shoal::oci::{Digest, Key};
use shoal::routing::Router;
use shoal::routing::p2p::{self, BootstrapPeer, Identity, P2pConfig, P2pRouter};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const REGISTRY_PORT: u16 = 5999;
const SETTLE: Duration = Duration::from_secs(30);

fn ip(n: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 4, n)
}

fn free_port(n: u8) -> Result<u16> {
    Ok(std::net::TcpListener::bind((ip(n), 0))?.local_addr()?.port())
}

async fn router(
    n: u8,
    bootstrap: Option<String>,
    token: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<P2pRouter> {
    let listen = SocketAddr::from((ip(n), free_port(n)?));
    let mut config = P2pConfig::new(listen, REGISTRY_PORT, Identity::generate());
    if let Some(seed) = bootstrap {
        config.bootstrap.push(seed.parse::<BootstrapPeer>()?);
    }
    Ok(p2p::start(config, token.clone(), tracker).await?)
}

fn keys(label: &str, count: usize) -> Vec<Key> {
    (0..count).map(|i| Key::Digest(Digest::of(format!("{label}/{i}").as_bytes()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_announced_in_batches_are_found_by_every_node() -> Result<()> {
    let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
    let _stop = token.clone().drop_guard();
    let seed_port = free_port(51)?;
    let seed = {
        let listen = SocketAddr::from((ip(51), seed_port));
        p2p::start(P2pConfig::new(listen, REGISTRY_PORT, Identity::generate()), token.clone(), &tracker).await?
    };
    let mut routers = vec![seed];
    for n in 52..=56 {
        routers.push(router(n, Some(format!("/ip4/127.0.4.51/tcp/{seed_port}")), &token, &tracker).await?);
    }
    let deadline = Instant::now() + SETTLE;
    while !routers.iter().all(|r| r.connected_peers() >= 1) {
        ensure!(Instant::now() < deadline, "the mesh did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let provider = &routers[2];
    let announced = keys("batched", 600);
    let started = Instant::now();
    let results = provider.provide_many(&announced).await;
    println!("600 keys announced in one batch across 6 nodes in {:?}", started.elapsed());
    ensure!(results.len() == announced.len() && results.iter().all(Result::is_ok), "{results:?}");

    let name = provider.local_name();
    let sample: Vec<&Key> = announced.iter().step_by(20).collect();
    for (i, looker) in routers.iter().enumerate().filter(|(i, _)| *i != 2) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut missing = 0;
            for key in &sample {
                let found: Vec<_> = looker.lookup(key, 3).collect().await;
                missing += usize::from(!found.iter().any(|p| p.name == name));
            }
            if missing == 0 {
                break;
            }
            ensure!(Instant::now() < deadline, "node {} misses {missing} of {} keys", i + 1, sample.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_still_advertises_its_keys() -> Result<()> {
    let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
    let _stop = token.clone().drop_guard();
    let alone = router(57, None, &token, &tracker).await?;
    let announced = keys("alone", 20);
    let results = tokio::time::timeout(SETTLE, alone.provide_many(&announced)).await?;
    ensure!(results.iter().all(Result::is_ok), "{results:?}");
    // Its own records are stored: withdrawing them works like after a single provide.
    for key in &announced {
        alone.withdraw(key).await?;
    }
    Ok(())
}
