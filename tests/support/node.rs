//! A Shoal registry node in-process on loopback, with the in-memory content
//! store and router, and a small HTTP client to talk to it.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shoal::content::ContentIndex;
use shoal::content::memory::MemoryStore;
use shoal::health::Health;
use shoal::metrics::{Listener, Metrics};
use shoal::mirror::{HedgePolicy, Mirror, MirrorConfig, PeerScores, PeerTimeouts};
use shoal::oci::Registry;
use shoal::registry::server::{Server, ServerLimits};
use shoal::registry::{AccessPolicy, RegistryConfig, RegistryHandler, UploadLimits};
use shoal::routing::memory::{MemoryNetwork, MemoryRouter};
use shoal::routing::{Peer, PeerName, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Timeouts short enough that failure tests finish quickly, long enough for loopback.
pub fn test_timeouts() -> PeerTimeouts {
    PeerTimeouts {
        connect: Duration::from_millis(500),
        headers: Duration::from_millis(500),
        headers_floor: Duration::from_millis(500),
        stall: Duration::from_millis(500),
    }
}

pub struct NodeOptions {
    pub mirrored: Vec<Registry>,
    pub max_attempts: usize,
    pub hedge: HedgePolicy,
    pub timeouts: PeerTimeouts,
    pub uploads: UploadLimits,
    pub access: AccessPolicy,
    /// Registries whose content is never shared with peers.
    pub private: Vec<Registry>,
    /// Verified blob transfers after which a peer's blobs pass straight through (0: never).
    pub stream_after_verified: u32,
    pub server: ServerLimits,
    pub max_url_bytes: usize,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            mirrored: Vec::new(),
            max_attempts: 4,
            hedge: HedgePolicy::default(),
            timeouts: test_timeouts(),
            uploads: UploadLimits::default(),
            access: AccessPolicy::open(),
            private: Vec::new(),
            stream_after_verified: 0,
            server: ServerLimits::default(),
            max_url_bytes: RegistryConfig::DEFAULT_MAX_URL_BYTES,
        }
    }
}

pub struct TestNode {
    pub addr: SocketAddr,
    pub store: MemoryStore,
    pub router: Arc<dyn Router>,
    pub index: ContentIndex,
    pub metrics: Metrics,
    pub mirror: Mirror,
    token: CancellationToken,
    _spool: tempfile::TempDir,
}

impl TestNode {
    pub async fn start(network: &MemoryNetwork, name: &str) -> Self {
        Self::start_with(network, name, NodeOptions::default()).await
    }

    pub async fn start_with(network: &MemoryNetwork, name: &str, options: NodeOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router: MemoryRouter = network.router(Peer { name: PeerName::new(name), endpoint: addr });
        Self::serve(listener, Arc::new(router), options)
    }

    /// Serves a registry on `listener`, finding peers through `router`.
    pub fn serve(listener: TcpListener, router: Arc<dyn Router>, options: NodeOptions) -> Self {
        let addr = listener.local_addr().unwrap();
        let store = MemoryStore::new();
        let index = ContentIndex::new(Arc::new(store.clone())).with_private_registries(options.private);
        let metrics = Metrics::new().unwrap();
        let spool = tempfile::tempdir().unwrap();
        let shared_router = router.clone();
        let config = MirrorConfig {
            timeouts: options.timeouts,
            max_attempts: options.max_attempts,
            lookup_limit: 20,
            lookup_patience: Duration::from_millis(300),
            spool_dir: spool.path().to_path_buf(),
            hedge: options.hedge,
            stream_after_verified: options.stream_after_verified,
        };
        let mirror = Mirror::new(shared_router.clone(), Arc::new(PeerScores::new()), metrics.clone(), config);
        let token = CancellationToken::new();
        tokio::spawn(mirror.probe_excluded(token.clone()));
        let health = Health::new(shared_router);
        health.set_content_indexed();
        let handler = RegistryHandler::new(
            index.clone(),
            mirror.clone(),
            metrics.clone(),
            health,
            RegistryConfig {
                mirrored: options.mirrored,
                uploads: options.uploads,
                access: options.access,
                max_url_bytes: options.max_url_bytes,
                ..RegistryConfig::default()
            },
        );
        let serve = move |req| {
            let handler = handler.clone();
            async move { handler.handle(req).await }
        };
        let server = Server::new(options.server).with_metrics(metrics.listener(Listener::Registry));
        tokio::spawn(server.serve(listener, serve, token.clone(), TaskTracker::new()));
        Self { addr, store, router, index, metrics, mirror, token, _spool: spool }
    }

    /// Indexes the store and advertises every key, as the advertiser would.
    pub async fn sync(&self) {
        self.index.rescan().await.unwrap();
        for key in self.index.keys() {
            self.router.provide(&key).await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The value of one metric series, 0 when absent.
    pub fn metric(&self, series: &str) -> u64 {
        let text = self.metrics.encode().unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// The path of a blob of the test repository `team/app` on `registry.test`.
pub fn blob_path(digest: &shoal::oci::Digest) -> String {
    format!("/v2/team/app/blobs/{digest}?ns=registry.test")
}

/// A response read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn error_code(&self) -> String {
        let json: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        json["errors"][0]["code"].as_str().unwrap_or("").to_owned()
    }
}

pub async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    request_from(None, method, url, headers).await
}

/// A request whose connection comes from `source` (any local address when `None`).
pub async fn request_from(source: Option<IpAddr>, method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut connector = HttpConnector::new();
    connector.set_local_address(source);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(builder.body(Empty::new()).unwrap()))
        .await
        .expect("response within 30 s")
        .unwrap();
    let status = response.status();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(30), body.collect()).await.expect("body within 30 s");
    let body = body.map(|b| b.to_bytes()).unwrap_or_default();
    Reply { status, headers: parts.headers, body }
}

pub async fn get(url: &str) -> Reply {
    request(Method::GET, url, &[]).await
}
