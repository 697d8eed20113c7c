//! Reconcile on the real binary, seen from the DHT: an image deleted while
//! the node was down is withdrawn after it restarts (its records are no
//! longer found once they expire), one added while it was down is
//! advertised, and one that stayed is still found.
//!
//! A real containerd, `shoal` on 127.0.4.31 and an in-process router on
//! 127.0.4.32 that looks keys up; nothing leaves loopback.

use std::net::SocketAddr;
use std::time::Duration;

use crate::binary::{ShoalNode, eventually, free_port_on, ip};
use crate::seed::{SeededImage, layers, seed_image};
use crate::seeder::seeder;
use anyhow::Result;
use futures::StreamExt;
use shoal::content::contract::Seeder;
use shoal::oci::Key;
use shoal::routing::Router;
use shoal::routing::p2p::{self, BootstrapPeer, Identity, P2pConfig, P2pRouter};
use shoal_e2e::containerd::Containerd;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Short, so that records of withdrawn keys expire within the test.
const TTL: Duration = Duration::from_secs(6);
const READVERTISE: Duration = Duration::from_secs(3);

/// Whether `observer` finds `name` among the providers of every key (or of none).
async fn found_everywhere(observer: &P2pRouter, name: &str, keys: &[Key], want: bool) -> bool {
    for key in keys {
        let providers: Vec<_> = observer.lookup(key, 5).collect().await;
        if providers.iter().any(|p| p.name.as_str() == name) != want {
            return false;
        }
    }
    true
}

fn only_in(image: &SeededImage, other: &SeededImage) -> Vec<Key> {
    let kept = other.keys();
    image.keys().into_iter().filter(|k| !kept.contains(k)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_deleted_while_down_is_withdrawn_and_one_added_is_advertised() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("shoal-reconcile-").tempdir()?;
    let containerd = Containerd::start_temporary().await?;
    let seeder = seeder(&containerd, "k8s.io").await?;
    let deleted = seed_image(&seeder, "registry.test/deleted:v1", &layers("deleted", 2, 1000)).await?;
    let kept = seed_image(&seeder, "registry.test/kept:v1", &layers("kept", 1, 1000)).await?;

    let registry_port = free_port_on(&[ip(31), ip(32)])?;
    let mut node = ShoalNode::new(31, registry_port, dir.path())?;
    node.data_dir = Some(dir.path().join("data"));
    node.containerd = Some((containerd.socket(), containerd.content_dir()));
    let flags =
        [format!("--provider-ttl={}s", TTL.as_secs()), format!("--readvertise-interval={}s", READVERTISE.as_secs())];
    node.start(&flags)?;
    let (name, _) = node.identity_and_mode().await?;

    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut config =
        P2pConfig::new(SocketAddr::from((ip(32), free_port_on(&[ip(32)])?)), registry_port, Identity::generate());
    config.bootstrap.push(node.router_multiaddr().parse::<BootstrapPeer>()?);
    // Like every node of a cluster, the observer keeps records as long as the TTL says.
    config.provider_ttl = TTL;
    let observer = p2p::start(config, token.clone(), &tracker).await?;
    let _stop = token.clone().drop_guard();

    let both: Vec<Key> = deleted.keys().into_iter().chain(kept.keys()).collect();
    eventually("the observer finds every key", || found_everywhere(&observer, &name, &both, true)).await?;

    assert!(node.terminate().await?.success());
    seeder.delete_image(&deleted.name).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    for digest in deleted.digests() {
        seeder.delete_blob(&digest).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let added = seed_image(&seeder, "registry.test/added:v1", &layers("added", 2, 1000)).await?;
    node.start(&flags)?;
    assert_eq!(node.identity_and_mode().await?, (name.clone(), "recovered".to_owned()));

    let added_keys = added.keys();
    eventually("the added image is advertised", || found_everywhere(&observer, &name, &added_keys, true)).await?;
    let gone = only_in(&deleted, &kept);
    eventually("the deleted image is withdrawn", || found_everywhere(&observer, &name, &gone, false)).await?;
    assert!(found_everywhere(&observer, &name, &kept.keys(), true).await, "the kept image stays advertised");
    let advertised = kept.keys().len() + added.keys().len();
    eventually("the node advertises exactly the kept and added keys", || async {
        node.metric("shoal_advertised_keys").await == Some(advertised as f64)
    })
    .await?;
    Ok(())
}
