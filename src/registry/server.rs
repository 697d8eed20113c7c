//! The HTTP/1.1 accept loop shared by the registry and metrics listeners,
//! and the limits that keep hostile or broken clients from exhausting it.
//!
//! Takes a bound listener and a cancellation token (the caller binds, so
//! tests can use port 0). On cancel it stops accepting and lets in-flight
//! requests finish; the caller bounds that wait with its drain deadline.
//!
//! Limits (see [`ServerLimits`] and docs/hardening.md): request heads must
//! arrive within the header read timeout (slowloris) and fit in the header
//! byte limit (431 otherwise); a connection whose client takes no response
//! byte for the send stall timeout is closed (see `stall`), freeing the
//! slots it held; a listener at its connection limit accepts and
//! closes new connections at once; a listener at its in-flight limit answers
//! 503 `TOOMANYREQUESTS` at once and never queues. Each refusal is fast, so
//! containerd moves on to its next host (the upstream) without waiting.
//! Does not look at paths or bodies: URL length is the handler's business.
//! Every request carries its connection's addresses as a [`ClientAddr`]
//! extension.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::access::ClientAddr;
use super::response::{Body, ErrorCode, oci_error};
use super::stall::StallGuard;
use crate::metrics::{ListenerMetrics, OpenConnection, Rejection};

/// What one listener accepts at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest a client may take to send a request head, counted from the
    /// connection's start or the end of its previous response: it also
    /// closes idle keep-alive connections.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// Longest a response may wait for its client to take a byte; the
    /// connection is closed then.
    pub send_stall_timeout: Duration,
    /// Connections open at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Requests being answered at once, each until its response body ends;
    /// more are answered 503 at once.
    pub max_in_flight: usize,
}

impl ServerLimits {
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 << 10;
    pub const DEFAULT_SEND_STALL_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
            send_stall_timeout: Self::DEFAULT_SEND_STALL_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// How long a 503 asks the client to stay away.
const RETRY_AFTER_SECONDS: &str = "1";

/// Paths that bypass the in-flight limit: the kubelet's probes must not fail
/// (and restart the pod) because the node is busy serving.
const PROBE_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Serves `handler` on `listener` with the default limits and no metrics.
pub async fn serve<H, F>(listener: TcpListener, handler: H, token: CancellationToken, tracker: TaskTracker)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    Server::new(ServerLimits::default()).serve(listener, handler, token, tracker).await;
}

/// One listener's limits and metrics.
#[derive(Clone)]
pub struct Server {
    limits: ServerLimits,
    metrics: Option<ListenerMetrics>,
}

impl Server {
    pub fn new(limits: ServerLimits) -> Self {
        Self { limits, metrics: None }
    }

    /// Records open and refused connections and requests in `metrics`.
    pub fn with_metrics(self, metrics: ListenerMetrics) -> Self {
        Self { metrics: Some(metrics), ..self }
    }

    /// Serves `handler` on `listener` until `token` is cancelled, then waits
    /// for open connections to finish their current request.
    pub async fn serve<H, F>(self, listener: TcpListener, handler: H, token: CancellationToken, tracker: TaskTracker)
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let graceful = GracefulShutdown::new();
        let builder = self.connection_builder();
        let connections = Arc::new(Semaphore::new(self.limits.max_connections));
        let admission =
            Admission { slots: Arc::new(Semaphore::new(self.limits.max_in_flight)), metrics: self.metrics.clone() };
        loop {
            let (stream, remote) = tokio::select! {
                () = token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some((stream, slot)) = self.connection_slot(&connections, stream) else { continue };
            let Ok(local) = stream.local_addr() else { continue };
            let client = ClientAddr { remote, local };
            let handler = handler.clone();
            let admission = admission.clone();
            let service = service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(client);
                let (handler, admission) = (handler.clone(), admission.clone());
                async move { Ok::<_, Infallible>(admission.answer(handler, req).await) }
            });
            let (stream, stall) = StallGuard::new(stream);
            let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            let (stall_limit, metrics) = (self.limits.send_stall_timeout, self.metrics.clone());
            tracker.spawn(async move {
                let _slot = slot;
                tokio::select! {
                    ended = connection => if let Err(error) = ended {
                        tracing::debug!(%error, "connection ended with an error");
                    },
                    () = stall.stalled(stall_limit) => {
                        tracing::debug!(%remote, "the client took no response byte for {stall_limit:?}; connection closed");
                        if let Some(metrics) = metrics {
                            metrics.connection_stalled();
                        }
                    }
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
    }

    fn connection_builder(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_header_size(self.limits.max_header_bytes)
            .keep_alive(true);
        builder
    }

    /// A slot for `stream`, or `None` (the stream closed and counted) when
    /// every slot is taken. Closing at once, rather than not accepting, lets
    /// the client fail fast and fall back instead of waiting in the backlog.
    fn connection_slot(&self, connections: &Arc<Semaphore>, stream: TcpStream) -> Option<(TcpStream, ConnectionSlot)> {
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some(metrics) = &self.metrics {
                metrics.connection_rejected();
            }
            tracing::debug!("connection limit reached; closing a new connection");
            return None;
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let open = self.metrics.as_ref().map(ListenerMetrics::connection_opened);
        Some((stream, ConnectionSlot { _permit: permit, _open: open }))
    }
}

/// A held connection slot; frees (and updates the gauge) when dropped.
struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    _open: Option<OpenConnection>,
}

/// The in-flight request slots of one listener. Cheap to clone.
#[derive(Clone)]
struct Admission {
    slots: Arc<Semaphore>,
    metrics: Option<ListenerMetrics>,
}

impl Admission {
    /// Answers `req` with `handler` if a slot is free, else 503 at once. The
    /// slot is held until the response body ends or is dropped.
    async fn answer<H, F>(&self, handler: H, req: Request<Incoming>) -> Response<Body>
    where
        H: Fn(Request<Incoming>) -> F,
        F: Future<Output = Response<Body>>,
    {
        if PROBE_PATHS.contains(&req.uri().path()) {
            return handler(req).await;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            if let Some(metrics) = &self.metrics {
                metrics.request_rejected(Rejection::InFlightLimit);
            }
            return too_many_requests(req.method() == Method::HEAD);
        };
        handler(req).await.map(|body| {
            body.map_frame(move |frame| {
                let _held = &slot;
                frame
            })
            .boxed_unsync()
        })
    }
}

/// 503 `TOOMANYREQUESTS` with `Retry-After`.
fn too_many_requests(head: bool) -> Response<Body> {
    let mut response =
        oci_error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::TooManyRequests, "too many requests in flight", head);
    response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static(RETRY_AFTER_SECONDS));
    response
}
