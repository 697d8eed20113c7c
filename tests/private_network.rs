//! A private peer network: real libp2p nodes on 127.0.7.N with a pre-shared
//! key, the registry's peer-only access policy, and private registries.
//! Each test uses its own block of addresses (127.0.7.B1..B9), so tests can
//! run in parallel and a "stranger" address is never another test's node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/images.rs"]
mod images;
#[path = "support/node.rs"]
mod node;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::{Method, StatusCode};
use images::{TestImage, add_image, layer_bytes};
use node::{NodeOptions, Reply, TestNode, get, request_from};
use shoal::oci::{Digest, Key};
use shoal::registry::AccessPolicy;
use shoal::routing::Router;
use shoal::routing::p2p::{self, Identity, P2pConfig, P2pRouter, SwarmKey};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(20);
const KEY: &str = "5d9a1e2c7b3f40a8e6d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6978877665544ff";
const OTHER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn swarm_key(hex: &str) -> SwarmKey {
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n").parse().unwrap()
}

/// The ports every node of one test shares, and the test's address block.
struct Net {
    block: u8,
    registry_port: u16,
    router_port: u16,
}

impl Net {
    async fn new(block: u8) -> Self {
        let registry_port = free_on_every_node(block, None);
        let router_port = free_on_every_node(block, Some(registry_port));
        Self { block, registry_port, router_port }
    }

    fn ip(&self, i: u8) -> Ipv4Addr {
        ip_in(self.block, i)
    }

    /// Node `i`, with `key`, bootstrapping from node 1 unless it is node 1.
    async fn node(&self, i: u8, key: Option<&str>, options: NodeOptions) -> Node {
        let ip = self.ip(i);
        let listener = TcpListener::bind((ip, self.registry_port)).await.unwrap();
        let mut config =
            P2pConfig::new(SocketAddr::from((ip, self.router_port)), self.registry_port, Identity::generate());
        config.resolve_timeout = Duration::from_secs(2);
        config.swarm_key = key.map(swarm_key);
        if i > 1 {
            config.bootstrap = vec![format!("/ip4/{}/tcp/{}", self.ip(1), self.router_port).parse().unwrap()];
        }
        let token = CancellationToken::new();
        let router = p2p::start(config, token.clone(), &TaskTracker::new()).await.unwrap();
        let options = if key.is_some() {
            let peers = router.clone();
            NodeOptions { access: AccessPolicy::peers_only(move |ip| peers.is_connected_ip(ip)), ..options }
        } else {
            options
        };
        let node = TestNode::serve(listener, Arc::new(router.clone()), options);
        Node { node, router, ip: IpAddr::V4(ip), token }
    }
}

/// Nodes per block.
const NODES: u8 = 4;

/// A port free on every node's address of `block` (a port free on one
/// address may be taken on another), other than `taken`.
fn free_on_every_node(block: u8, taken: Option<u16>) -> u16 {
    for _ in 0..100 {
        let port = std::net::TcpListener::bind((ip_in(block, 1), 0)).unwrap().local_addr().unwrap().port();
        let free = (1..=NODES).all(|i| std::net::TcpListener::bind((ip_in(block, i), port)).is_ok());
        if free && Some(port) != taken {
            return port;
        }
    }
    panic!("no port free on every address of block {block}");
}

fn ip_in(block: u8, i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 7, block * 10 + i)
}

struct Node {
    node: TestNode,
    router: P2pRouter,
    ip: IpAddr,
    token: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within {WAIT:?}"));
}

/// How long outsiders are watched for a connection that must never come.
const OUTSIDER_WINDOW: Duration = Duration::from_secs(2);

/// Checks `condition` every 20 ms for `window` and fails if it ever holds.
async fn never_within(window: Duration, condition: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < end {
        assert!(!condition(), "an outsider got connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn blob_path(repository: &str, digest: &Digest, registry: &str) -> String {
    format!("/v2/{repository}/blobs/{digest}?ns={registry}")
}

/// A GET of `path` on `node` over a connection from `source`.
async fn get_from(source: IpAddr, node: &Node, path: &str, headers: &[(&str, &str)]) -> Reply {
    request_from(Some(source), Method::GET, &node.node.url(path), headers).await
}

async fn providers(router: &P2pRouter, digest: &Digest) -> usize {
    router.lookup(&Key::Digest(*digest), 20).count().await
}

fn holder_image(node: &Node, name: &str, seed: u8) -> TestImage {
    add_image(&node.node.store, name, &[layer_bytes(seed, 40_000)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_the_same_key_share_content_and_others_cannot_join() {
    let net = Net::new(0).await;
    let holder = net.node(1, Some(KEY), NodeOptions::default()).await;
    // The outsiders start dialling the holder before the member does.
    let wrong_key = net.node(3, Some(OTHER_KEY), NodeOptions::default()).await;
    let no_key = net.node(4, None, NodeOptions::default()).await;
    let member = net.node(2, Some(KEY), NodeOptions::default()).await;
    let image = holder_image(&holder, "registry.test/team/app:v1", 1);
    until("the member connects", || member.router.connected_peers() > 0 && holder.router.is_connected_ip(member.ip))
        .await;
    holder.node.sync().await;

    let (digest, bytes) = &image.layers[0];
    let pulled = get(&member.node.url(&blob_path("team/app", digest, "registry.test"))).await;
    assert_eq!(pulled.status, StatusCode::OK);
    assert_eq!(&pulled.body, bytes);
    assert_eq!(providers(&member.router, digest).await, 1);

    // A negative needs a window: the outsiders keep re-dialling through it.
    let connected_outsider = || [&wrong_key, &no_key].iter().any(|o| holder.router.is_connected_ip(o.ip));
    never_within(OUTSIDER_WINDOW, || connected_outsider() || no_key.router.connected_peers() > 0).await;
    for outsider in [&wrong_key, &no_key] {
        // The lookup runs for the whole resolve timeout while bootstrap dials keep failing.
        assert_eq!(providers(&outsider.router, digest).await, 0, "{} finds no provider", outsider.ip);
        let pulled = get(&outsider.node.url(&blob_path("team/app", digest, "registry.test"))).await;
        assert_eq!(pulled.status, StatusCode::NOT_FOUND, "{} cannot pull through the DHT", outsider.ip);
        assert_eq!(outsider.router.connected_peers(), 0, "{} has no connection", outsider.ip);
        assert!(!holder.router.is_connected_ip(outsider.ip));
    }
    assert_eq!(holder.router.connected_peers(), 1, "only the member is connected to the holder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_serves_this_host_and_connected_peers_and_refuses_others() {
    let net = Net::new(1).await;
    let holder = net.node(1, Some(KEY), NodeOptions::default()).await;
    let member = net.node(2, Some(KEY), NodeOptions::default()).await;
    let image = holder_image(&holder, "registry.test/team/app:v1", 2);
    holder.node.sync().await;
    until("the member connects", || holder.router.is_connected_ip(member.ip)).await;
    let (digest, bytes) = &image.layers[0];
    let path = blob_path("team/app", digest, "registry.test");

    let from_peer = get_from(member.ip, &holder, &path, &[("shoal-mirrored", "true")]).await;
    assert_eq!(from_peer.status, StatusCode::OK, "a connected peer is served");
    assert_eq!(&from_peer.body, bytes);
    let from_this_host = get(&holder.node.url(&path)).await;
    assert_eq!(from_this_host.status, StatusCode::OK, "a client on this host (127.0.0.1) is served");

    let stranger = IpAddr::V4(net.ip(9));
    for path in [path.as_str(), "/v2/", "/v2/team/app/manifests/v1?ns=registry.test"] {
        let refused = get_from(stranger, &holder, path, &[]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(refused.error_code(), "DENIED");
    }
    let forbidden = r#"shoal_requests_rejected_total{listener="registry",reason="forbidden"}"#;
    assert_eq!(holder.node.metric(forbidden), 3, "each refusal is counted");
    let probe = get_from(stranger, &holder, "/healthz", &[]).await;
    assert_eq!(probe.status, StatusCode::OK, "health probes stay open");

    // Once the peer is gone, its address is a stranger's.
    drop(member);
    until("the holder sees the member leave", || !holder.router.is_connected_ip(IpAddr::V4(net.ip(2)))).await;
    let after = get_from(IpAddr::V4(net.ip(2)), &holder, &path, &[("shoal-mirrored", "true")]).await;
    assert_eq!(after.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_registry_content_is_neither_advertised_nor_served_to_peers() {
    let net = Net::new(2).await;
    let private = NodeOptions { private: vec!["private.test".parse().unwrap()], ..NodeOptions::default() };
    let holder = net.node(1, Some(KEY), private).await;
    let member = net.node(2, Some(KEY), NodeOptions::default()).await;
    let secret = holder_image(&holder, "private.test/team/secret:v1", 3);
    let public = holder_image(&holder, "registry.test/team/app:v1", 4);
    until("the member connects", || holder.router.is_connected_ip(member.ip)).await;
    holder.node.sync().await;

    let (secret_layer, secret_bytes) = &secret.layers[0];
    let (public_layer, _) = &public.layers[0];
    assert_eq!(providers(&member.router, public_layer).await, 1, "public content is advertised");
    assert_eq!(providers(&member.router, secret_layer).await, 0, "private content is not");
    assert_eq!(providers(&member.router, &secret.manifest).await, 0);
    let keys = holder.node.index.keys();
    assert!(keys.iter().all(|key| !key.to_string().contains("private.test")), "no private tag: {keys:?}");

    let secret_path = blob_path("team/secret", secret_layer, "private.test");
    let pulled = get(&member.node.url(&secret_path)).await;
    assert_eq!(pulled.status, StatusCode::NOT_FOUND, "a peer cannot pull it through the DHT");
    let forwarded = get_from(member.ip, &holder, &secret_path, &[("shoal-mirrored", "true")]).await;
    assert_eq!(forwarded.status, StatusCode::NOT_FOUND, "nor ask the holder for it directly");
    assert_eq!(forwarded.error_code(), "BLOB_UNKNOWN");
    let tag = get_from(member.ip, &holder, "/v2/team/secret/manifests/v1?ns=private.test", &[]).await;
    assert_eq!(tag.status, StatusCode::NOT_FOUND, "nor resolve its tag, even without the mirrored header");

    let local = get(&holder.node.url(&secret_path)).await;
    assert_eq!(local.status, StatusCode::OK, "this host's containerd is served");
    assert_eq!(&local.body, secret_bytes);
    let local_tag = get(&holder.node.url("/v2/team/secret/manifests/v1?ns=private.test")).await;
    assert_eq!(local_tag.status, StatusCode::OK);
    assert_eq!(local_tag.body, secret.manifest_bytes);
}

#[tokio::test]
async fn a_bad_key_file_stops_the_node_at_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("swarm.key");
    std::fs::write(&bad, "/key/swarm/psk/1.0.0/\n/base16/\nnot-hex\n").unwrap();
    let missing = dir.path().join("absent.key");
    for key_file in [&bad, &missing] {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["run", "--registry-addr=127.0.7.41:0", "--router-addr=127.0.7.41:0", "--metrics-addr=127.0.7.41:0"])
            .arg(format!("--p2p-psk-file={}", key_file.display()))
            .arg(format!("--containerd-sock={}", dir.path().join("no-containerd.sock").display()))
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(WAIT, run).await.expect("shoal exits").unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(&key_file.display().to_string()), "the error names the file: {stderr}");
        assert!(stderr.contains("pre-shared key"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
