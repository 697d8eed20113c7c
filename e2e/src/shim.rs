//! A corrupting shim: a small HTTP proxy in front of one Shoal node's
//! registry that flips one byte in every blob body it passes on (`GET` of
//! `/v2/<name>/blobs/<digest>` answered 2xx), and counts each corruption.
//! Everything else (manifests, 404s, HEADs) passes through untouched.
//! [`CorruptingShim::corrupt_from`] turns the corruption off, or limits it to
//! bodies of at least a given size, so a peer can first earn trust and then turn bad
//! on large blobs only.
//!
//! It runs as a task in the test process, listens only where it is told (a
//! loopback address), and stops, with all its connections, when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

type ShimBody = BoxBody<Bytes, hyper::Error>;

/// A running shim; stopped when dropped.
pub struct CorruptingShim {
    listen: SocketAddr,
    corrupted: Arc<AtomicUsize>,
    /// Smallest body (`Content-Length`) to corrupt; `u64::MAX`: none.
    min_corrupt_size: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct Proxy {
    backend: SocketAddr,
    client: Client<HttpConnector, Empty<Bytes>>,
    corrupted: Arc<AtomicUsize>,
    /// Smallest body (`Content-Length`) to corrupt; `u64::MAX`: none.
    min_corrupt_size: Arc<AtomicU64>,
}

impl CorruptingShim {
    /// Listens on `listen` and forwards every request to `backend`,
    /// corrupting blob bodies from the start.
    pub async fn start(listen: SocketAddr, backend: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(listen).await.with_context(|| format!("shim: bind {listen}"))?;
        let corrupted = Arc::new(AtomicUsize::new(0));
        let min_corrupt_size = Arc::new(AtomicU64::new(0));
        let proxy = Proxy {
            backend,
            client: Client::builder(TokioExecutor::new()).build_http(),
            corrupted: corrupted.clone(),
            min_corrupt_size: min_corrupt_size.clone(),
        };
        let task = tokio::spawn(accept_loop(listener, proxy));
        Ok(Self { listen, corrupted, min_corrupt_size, task })
    }

    /// Which blob bodies of responses that start from now on get a byte
    /// flipped: those of at least `min_size` bytes; `None`: none.
    pub fn corrupt_from(&self, min_size: Option<u64>) {
        self.min_corrupt_size.store(min_size.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Blob bodies corrupted so far.
    pub fn corrupted(&self) -> usize {
        self.corrupted.load(Ordering::SeqCst)
    }

    pub fn addr(&self) -> SocketAddr {
        self.listen
    }
}

impl Drop for CorruptingShim {
    fn drop(&mut self) {
        // Dropping the loop's JoinSet aborts every connection task too.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, proxy: Proxy) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let proxy = proxy.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.forward(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

impl Proxy {
    async fn forward(&self, req: Request<Incoming>) -> Response<ShimBody> {
        let corrupt = req.method() == http::Method::GET && is_blob_path(req.uri().path());
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut builder = Request::builder().method(req.method().clone()).uri(format!("http://{}{path}", self.backend));
        for (name, value) in req.headers().iter().filter(|(name, _)| *name != http::header::HOST) {
            builder = builder.header(name, value);
        }
        let Ok(upstream) = builder.body(Empty::new()) else { return status(StatusCode::BAD_REQUEST) };
        let response = match self.client.request(upstream).await {
            Ok(response) => response,
            Err(_) => return status(StatusCode::BAD_GATEWAY),
        };
        let size = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let corrupt = corrupt && response.status().is_success() && size >= self.min_corrupt_size.load(Ordering::SeqCst);
        response.map(|body| if corrupt { self.flip_one_byte(body) } else { body.boxed() })
    }

    /// The body with one bit of its first non-empty chunk flipped.
    fn flip_one_byte(&self, body: Incoming) -> ShimBody {
        let counter = self.corrupted.clone();
        let mut done = false;
        body.map_frame(move |frame: Frame<Bytes>| {
            frame.map_data(|data| {
                if done || data.is_empty() {
                    return data;
                }
                done = true;
                counter.fetch_add(1, Ordering::SeqCst);
                let mut bytes = BytesMut::from(data);
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x01;
                bytes.freeze()
            })
        })
        .boxed()
    }
}

fn is_blob_path(path: &str) -> bool {
    path.strip_prefix("/v2/")
        .and_then(|rest| rest.rsplit_once("/blobs/"))
        .is_some_and(|(_, d)| d.starts_with("sha256:"))
}

fn status(code: StatusCode) -> Response<ShimBody> {
    let mut response = Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_blob_paths_are_corrupted() {
        assert!(is_blob_path("/v2/e2e/app/blobs/sha256:abc"));
        assert!(!is_blob_path("/v2/e2e/app/manifests/sha256:abc"));
        assert!(!is_blob_path("/v2/"));
        assert!(!is_blob_path("/readyz"));
    }

    #[tokio::test]
    async fn flips_a_byte_of_blob_bodies_and_passes_the_rest() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = backend.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"abcdef"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let shim = CorruptingShim::start(SocketAddr::from(([127, 0, 0, 1], port)), backend_addr).await.unwrap();
        let base = format!("http://{}", shim.addr());
        let timeout = Duration::from_secs(5);
        let blob = crate::http::get(&format!("{base}/v2/a/blobs/sha256:00"), timeout).await.unwrap();
        assert_eq!(&blob.body[..], b"abceef");
        let manifest = crate::http::get(&format!("{base}/v2/a/manifests/v1"), timeout).await.unwrap();
        assert_eq!(&manifest.body[..], b"abcdef");
        assert_eq!(shim.corrupted(), 1);
        shim.corrupt_from(Some(7));
        let small = crate::http::get(&format!("{base}/v2/a/blobs/sha256:00"), timeout).await.unwrap();
        assert_eq!(&small.body[..], b"abcdef");
        shim.corrupt_from(None);
        let honest = crate::http::get(&format!("{base}/v2/a/blobs/sha256:00"), timeout).await.unwrap();
        assert_eq!(&honest.body[..], b"abcdef");
        assert_eq!(shim.corrupted(), 1);
    }
}
