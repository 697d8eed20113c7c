//! Active replication across in-process nodes on loopback. Each node's
//! "runtime" pulls like containerd does, through its own Shoal registry
//! (tag, then config and layers by digest), so replicas can only come from
//! peers: there is no upstream. Rounds are driven by the test, node by node
//! or all at once, so every outcome is deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/images.rs"]
mod images;
#[path = "support/node.rs"]
mod node;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, StatusCode};
use images::{add_image, layer_bytes};
use node::{TestNode, get, request};
use shoal::content::Descriptor;
use shoal::metrics::Metrics;
use shoal::mirror::MIRRORED_HEADER;
use shoal::oci::{MediaType, TagRef};
use shoal::replication::{HotList, ImagePuller, PinnedImage, PullError, ReplicationConfig, Replicator, RoundReport};
use shoal::routing::PeerName;
use shoal::routing::memory::MemoryNetwork;

const IMAGE: &str = "registry.test/team/app:v1";

/// A node's container runtime, pulling through the node's own registry.
struct RuntimeFake {
    node: Arc<TestNode>,
    pinned: Mutex<Vec<TagRef>>,
}

#[async_trait]
impl ImagePuller for RuntimeFake {
    async fn pull(&self, image: &TagRef) -> Result<(), PullError> {
        let failed = |reason: String| PullError::Pull { image: image.to_string(), reason };
        let base = format!("/v2/{}", image.repository);
        let ns = format!("ns={}", image.registry);
        let manifest = get(&self.node.url(&format!("{base}/manifests/{}?{ns}", image.tag))).await;
        if manifest.status != StatusCode::OK {
            return Err(failed(format!("manifest: {}", manifest.status)));
        }
        let json: serde_json::Value = serde_json::from_slice(&manifest.body).unwrap();
        let mut blobs = vec![json["config"]["digest"].as_str().unwrap().to_owned()];
        blobs.extend(json["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()));
        for digest in blobs {
            let blob = get(&self.node.url(&format!("{base}/blobs/{digest}?{ns}"))).await;
            if blob.status != StatusCode::OK {
                return Err(failed(format!("blob {digest}: {}", blob.status)));
            }
            self.node.store.add_blob(blob.body);
        }
        let digest = self.node.store.add_blob(manifest.body.clone());
        let target = Descriptor {
            digest,
            media_type: MediaType::from_static(MediaType::OCI_MANIFEST),
            size: manifest.body.len() as u64,
        };
        self.node.store.put_image(&image.to_string(), target);
        self.node.sync().await;
        Ok(())
    }

    async fn pin(&self, images: &[TagRef]) -> Result<(), PullError> {
        *self.pinned.lock().unwrap() = images.to_vec();
        Ok(())
    }
}

struct Cluster {
    network: MemoryNetwork,
    nodes: Vec<Arc<TestNode>>,
    runtimes: Vec<Arc<RuntimeFake>>,
    replicators: Vec<Replicator>,
}

fn config(pinned: &[&str], replicas: Option<usize>) -> ReplicationConfig {
    ReplicationConfig {
        pinned: pinned.iter().map(|p| p.parse::<PinnedImage>().unwrap()).collect(),
        pinned_file: None,
        replicas,
        interval: Duration::from_secs(60),
        popular_replicas: 0,
        budget_bytes_per_hour: 10 << 30,
        gossip_fanout: 3,
    }
}

impl Cluster {
    /// `count` nodes; node 0 holds IMAGE; each runs replication with `config`.
    async fn start(count: usize, config: ReplicationConfig) -> Self {
        let network = MemoryNetwork::new();
        let mut nodes = Vec::new();
        for i in 0..count {
            nodes.push(Arc::new(TestNode::start(&network, &format!("node-{i}")).await));
        }
        add_image(&nodes[0].store, IMAGE, &[layer_bytes(1, 200_000), layer_bytes(2, 50_000)]);
        nodes[0].sync().await;
        let mut runtimes = Vec::new();
        let mut replicators = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let runtime = Arc::new(RuntimeFake { node: node.clone(), pinned: Mutex::default() });
            let replicator = Replicator::new(
                PeerName::new(format!("node-{i}")),
                node.router.clone(),
                node.index.clone(),
                runtime.clone(),
                Metrics::new().unwrap(),
                config.clone(),
            );
            runtimes.push(runtime);
            replicators.push(replicator);
        }
        Self { network, nodes, runtimes, replicators }
    }

    /// One round on every node, one node after the other.
    async fn sweep(&self) -> Vec<RoundReport> {
        let mut reports = Vec::new();
        for replicator in &self.replicators {
            reports.push(replicator.round().await);
        }
        reports
    }

    /// One round on every node at once.
    async fn concurrent_sweep(&self) -> Vec<RoundReport> {
        futures::future::join_all(self.replicators.iter().map(Replicator::round)).await
    }

    fn holders(&self, image: &str) -> Vec<usize> {
        let tag: TagRef = image.parse().unwrap();
        (0..self.nodes.len()).filter(|i| self.nodes[*i].index.tag(&tag).is_some()).collect()
    }
}

fn pulls(reports: &[RoundReport]) -> usize {
    reports.iter().map(|r| r.pulled.len()).sum()
}

#[tokio::test]
async fn replication_reaches_r_copies_through_peers_and_stops() {
    let cluster = Cluster::start(6, config(&[IMAGE], Some(3))).await;
    let first = cluster.sweep().await;
    assert_eq!(pulls(&first), 2, "{first:?}");
    assert_eq!(cluster.holders(IMAGE).len(), 3);
    for _ in 0..3 {
        let again = cluster.sweep().await;
        assert_eq!(pulls(&again), 0, "{again:?}");
    }
    assert_eq!(cluster.holders(IMAGE).len(), 3, "stopped at R");
    for i in cluster.holders(IMAGE).into_iter().filter(|i| *i != 0) {
        let peer_blobs =
            cluster.nodes[i].metric(r#"shoal_requests_total{kind="blob",registry="registry.test",source="peer"}"#);
        assert_eq!(peer_blobs, 3, "node {i} got config and layers from peers");
    }
}

#[tokio::test]
async fn nodes_deciding_at_the_same_moment_still_pull_exactly_the_deficit() {
    let cluster = Cluster::start(8, config(&[IMAGE], Some(4))).await;
    let reports = cluster.concurrent_sweep().await;
    assert_eq!(pulls(&reports), 3, "{reports:?}");
    assert_eq!(cluster.holders(IMAGE).len(), 4);
    assert_eq!(pulls(&cluster.concurrent_sweep().await), 0);
}

#[tokio::test]
async fn without_r_every_node_pulls_and_pinned_images_are_pinned() {
    let cluster = Cluster::start(4, config(&[IMAGE], None)).await;
    cluster.sweep().await;
    assert_eq!(cluster.holders(IMAGE), [0, 1, 2, 3]);
    let tag: TagRef = IMAGE.parse().unwrap();
    for runtime in &cluster.runtimes {
        assert_eq!(*runtime.pinned.lock().unwrap(), vec![tag.clone()]);
    }
}

#[tokio::test]
async fn a_holder_that_dies_is_replaced_to_restore_r() {
    let cluster = Cluster::start(6, config(&[IMAGE], Some(3))).await;
    cluster.sweep().await;
    let holders = cluster.holders(IMAGE);
    assert_eq!(holders.len(), 3);
    let dead = holders[1];
    cluster.network.disconnect(&PeerName::new(format!("node-{dead}")));
    let reports = cluster.sweep().await;
    assert_eq!(pulls(&reports), 1, "{reports:?}");
    let live: Vec<usize> = cluster.holders(IMAGE).into_iter().filter(|i| *i != dead).collect();
    assert_eq!(live.len(), 3, "R live holders again: {live:?}");
}

#[tokio::test]
async fn the_pinned_list_is_re_read_from_its_file_every_round() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pinned-images");
    std::fs::write(&file, "# none yet\n").unwrap();
    let mut config = config(&[], Some(2));
    config.pinned_file = Some(file.clone());
    let cluster = Cluster::start(3, config).await;
    assert_eq!(pulls(&cluster.sweep().await), 0);
    std::fs::write(&file, format!("{IMAGE} 3\n")).unwrap();
    assert_eq!(pulls(&cluster.sweep().await), 2, "its own replica count (3) wins over --replicas");
    std::fs::write(&file, "").unwrap();
    cluster.sweep().await;
    assert!(cluster.runtimes.iter().all(|r| r.pinned.lock().unwrap().is_empty()), "pins released");
}

/// Peers pulling the image's tag from node 0 `times` times make it popular there.
async fn make_popular(node: &TestNode, times: usize) {
    for _ in 0..times {
        let url = node.url("/v2/team/app/manifests/v1?ns=registry.test");
        let reply = request(Method::GET, &url, &[(MIRRORED_HEADER, "true")]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn popular_images_spread_to_more_nodes_within_the_budget() {
    let mut config = config(&[], None);
    config.popular_replicas = 3;
    config.gossip_fanout = 10; // ask every peer: which three are asked is random otherwise
    let cluster = Cluster::start(5, config).await;
    assert_eq!(pulls(&cluster.sweep().await), 0, "nothing is popular yet");
    make_popular(&cluster.nodes[0], 10).await;

    let hot = get(&cluster.nodes[0].url("/shoal/v1/popular")).await;
    let list: HotList = serde_json::from_slice(&hot.body).unwrap();
    assert_eq!(list.images.len(), 1);
    assert_eq!((list.images[0].image.as_str(), list.images[0].requests), (IMAGE, 10));
    assert!(list.images[0].bytes.unwrap() > 250_000, "{list:?}");

    cluster.sweep().await;
    assert_eq!(cluster.holders(IMAGE).len(), 3);
    assert_eq!(pulls(&cluster.sweep().await), 0);
}

#[tokio::test]
async fn popular_images_over_the_budget_are_not_pulled() {
    let mut config = config(&[], None);
    config.popular_replicas = 3;
    config.budget_bytes_per_hour = 100_000;
    config.gossip_fanout = 10;
    let cluster = Cluster::start(4, config).await;
    make_popular(&cluster.nodes[0], 10).await;
    let reports = cluster.sweep().await;
    assert_eq!(pulls(&reports), 0);
    assert!(reports.iter().any(|r| !r.over_budget.is_empty()), "{reports:?}");
    assert_eq!(cluster.holders(IMAGE), [0]);
}

fn failed(reports: &[RoundReport]) -> usize {
    reports.iter().map(|r| r.failed.len()).sum()
}

#[tokio::test]
async fn an_image_no_node_holds_is_seeded_by_one_node_and_a_failed_pull_is_retried() {
    let cluster = Cluster::start(3, config(&["registry.test/team/missing:v1"], Some(3))).await;
    let reports = cluster.sweep().await;
    assert_eq!(failed(&reports), 1, "one node seeds it: {reports:?}");
    assert_eq!(reports.iter().map(|r| r.waiting.len()).sum::<usize>(), 2, "{reports:?}");
    let again = cluster.sweep().await;
    assert!(failed(&again) >= 1, "tried again: {again:?}");
}
