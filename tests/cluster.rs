//! Several nodes in one process, each a real registry server with a real
//! libp2p router on its own 127.0.3.N, finding each other through the DHT.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/images.rs"]
mod images;
#[path = "support/node.rs"]
mod node;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use images::{add_image, layer_bytes};
use node::{NodeOptions, TestNode, get};
use shoal::oci::Digest;
use shoal::routing::p2p::{self, Identity, P2pConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(20);

fn ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 3, i)
}

/// A free port on 127.0.3.1 (every node of the cluster uses the same ports).
/// Two free ports on the first node's address, distinct: both are held
/// while the second is picked (one at a time, the kernel may hand out the
/// same port twice, and the router then cannot listen beside the registry).
async fn free_ports() -> (u16, u16) {
    let first = TcpListener::bind((ip(1), 0)).await.unwrap();
    let second = TcpListener::bind((ip(1), 0)).await.unwrap();
    (first.local_addr().unwrap().port(), second.local_addr().unwrap().port())
}

struct ClusterNode {
    node: TestNode,
    token: CancellationToken,
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn start_cluster(size: u8) -> Vec<ClusterNode> {
    let (registry_port, router_port) = free_ports().await;
    let mut nodes = Vec::new();
    for i in 1..=size {
        let listener = TcpListener::bind((ip(i), registry_port)).await.unwrap();
        let mut config = P2pConfig::new(SocketAddr::from((ip(i), router_port)), registry_port, Identity::generate());
        config.resolve_timeout = Duration::from_secs(2);
        if i > 1 {
            config.bootstrap = vec![format!("/ip4/{}/tcp/{router_port}", ip(1)).parse().unwrap()];
        }
        let token = CancellationToken::new();
        let router = p2p::start(config, token.clone(), &TaskTracker::new()).await.unwrap();
        let node = TestNode::serve(listener, Arc::new(router), NodeOptions::default());
        nodes.push(ClusterNode { node, token });
    }
    tokio::time::timeout(WAIT, async {
        while !nodes.iter().all(|n| n.node.router.is_ready()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every node connects to a peer");
    nodes
}

fn blob_url(node: &TestNode, digest: &Digest) -> String {
    node.url(&format!("/v2/team/app/blobs/{digest}?ns=registry.test"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pulls_through_the_dht_from_the_node_that_holds_the_image() {
    let cluster = start_cluster(5).await;
    let holder = &cluster[1].node;
    let image =
        add_image(&holder.store, "registry.test/team/app:v1", &[layer_bytes(1, 50_000), layer_bytes(2, 2_000_000)]);
    holder.sync().await;

    let puller = &cluster[4].node;
    let manifest = get(&puller.url("/v2/team/app/manifests/v1?ns=registry.test")).await;
    assert_eq!(manifest.status, StatusCode::OK);
    assert_eq!(manifest.body, image.manifest_bytes);
    for (digest, bytes) in &image.layers {
        let reply = get(&blob_url(puller, digest)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(&reply.body, bytes);
    }
    let from_peers = puller.metric(r#"shoal_bytes_served_total{kind="blob",registry="registry.test",source="peer"}"#);
    assert_eq!(from_peers, 2_050_000);
    assert_eq!(holder.metric(r#"shoal_peer_requests_total{kind="blob",result="served"}"#), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_holder_costs_one_attempt_and_another_holder_serves() {
    let mut cluster = start_cluster(4).await;
    let bytes = layer_bytes(5, 1_000_000);
    let mut digest = Digest::of(b"");
    for holder in &cluster[1..3] {
        let image = add_image(&holder.node.store, "registry.test/team/app:v1", std::slice::from_ref(&bytes));
        digest = image.layers[0].0;
        holder.node.sync().await;
    }
    // Node 2 dies: its records stay in the DHT until they expire.
    drop(cluster.remove(1));
    let puller = &cluster[2].node;
    for _ in 0..3 {
        let reply = get(&blob_url(puller, &digest)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_nobody_holds_is_a_404_within_the_resolve_timeout() {
    let cluster = start_cluster(3).await;
    let reply = get(&blob_url(&cluster[2].node, &Digest::of(b"nobody"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
