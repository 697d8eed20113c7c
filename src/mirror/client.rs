//! The HTTP client that talks to other Shoal nodes' registries, with a
//! timeout on every phase of an attempt: connect, response headers, and
//! each gap between body chunks (a stalled peer is abandoned, not waited on).
//!
//! Owns: building forwarded requests (marker header, `ns`, `Accept`,
//! `Range`), the health probe (`GET /v2/`), and turning transport outcomes
//! into `FetchError`s. Never talks to anything but a peer endpoint the
//! router returned.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, RANGE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::health::Outcome;
use crate::metrics::FetchFailure;
use crate::oci::{ByteRange, DistributionPath, Registry};
use crate::routing::Peer;

/// Marks a request forwarded by another Shoal node: it is served from local
/// content only, which is what keeps requests from looping between peers.
pub const MIRRORED_HEADER: &str = "shoal-mirrored";

/// Per-attempt deadlines for talking to a peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerTimeouts {
    pub connect: Duration,
    /// The longest wait for response headers.
    pub headers: Duration,
    /// The shortest: once peers have answered, the header timeout adapts
    /// to how fast they do (see `hedge`), down to this.
    pub headers_floor: Duration,
    pub stall: Duration,
}

impl Default for PeerTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_millis(250),
            headers: Duration::from_secs(2),
            headers_floor: Duration::from_millis(250),
            stall: Duration::from_secs(3),
        }
    }
}

/// Why one attempt against one peer failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("could not reach the peer: {0}")]
    Connect(String),
    #[error("the request failed before a response: {0}")]
    Transport(String),
    #[error("no response headers within {0:?}")]
    HeaderTimeout(Duration),
    #[error("the peer does not have it")]
    NotFound,
    #[error("the peer answered {0}")]
    Status(StatusCode),
    #[error("the peer is at its upload limit")]
    Busy { retry_after: Option<Duration> },
    #[error("no body data for {0:?}")]
    Stall(Duration),
    #[error("the body broke off: {0}")]
    Body(String),
    #[error("content does not match its digest")]
    DigestMismatch,
    #[error("spooling to disk failed: {0}")]
    Spool(#[from] std::io::Error),
}

impl FetchError {
    pub fn reason(&self) -> FetchFailure {
        match self {
            Self::Connect(_) => FetchFailure::Connect,
            Self::Transport(_) => FetchFailure::Transport,
            Self::HeaderTimeout(_) => FetchFailure::HeaderTimeout,
            Self::NotFound => FetchFailure::NotFound,
            Self::Status(_) => FetchFailure::Status,
            Self::Busy { .. } => FetchFailure::Busy,
            Self::Stall(_) => FetchFailure::Stall,
            Self::Body(_) => FetchFailure::Body,
            Self::DigestMismatch => FetchFailure::DigestMismatch,
            Self::Spool(_) => FetchFailure::Spool,
        }
    }

    /// What the failure says about the peer's health, if anything: a peer
    /// that lacks the content (a stale record) or is at its upload limit is
    /// healthy, and a spool error is this node's own problem.
    pub fn health_outcome(&self) -> Option<Outcome> {
        match self {
            Self::Connect(_) => Some(Outcome::Unreachable),
            Self::HeaderTimeout(_) | Self::Stall(_) => Some(Outcome::Silent),
            Self::Busy { retry_after } => Some(Outcome::Busy { retry_after: *retry_after }),
            Self::NotFound | Self::Spool(_) => None,
            Self::DigestMismatch => Some(Outcome::Corrupt),
            Self::Transport(_) | Self::Status(_) | Self::Body(_) => Some(Outcome::Failed),
        }
    }
}

/// One request to a peer.
#[derive(Debug, Clone)]
pub struct PeerRequest<'a> {
    pub peer: &'a Peer,
    pub method: Method,
    pub path: &'a DistributionPath,
    pub registry: Option<&'a Registry>,
    pub accept: Option<&'a HeaderValue>,
    pub range: Option<ByteRange>,
}

/// A response whose headers arrived; the body is read with `next_chunk`.
pub struct PeerResponse {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    body: Incoming,
    stall: Duration,
}

impl PeerResponse {
    /// The next chunk of body data, `None` at the end. Fails if the peer
    /// sends nothing for the stall timeout.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        loop {
            let frame =
                tokio::time::timeout(self.stall, self.body.frame()).await.map_err(|_| FetchError::Stall(self.stall))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(FetchError::Body(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    pub fn content_length(&self) -> Option<u64> {
        self.headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
    }
}

/// A pooled keep-alive HTTP client for peer registries. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeouts: PeerTimeouts,
}

impl PeerClient {
    pub fn new(timeouts: PeerTimeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(16)
            .build(connector);
        Self { client, timeouts }
    }

    pub fn timeouts(&self) -> PeerTimeouts {
        self.timeouts
    }

    /// Sends `req` and waits at most `header_timeout` (the adaptive one, see
    /// `hedge`) for response headers. 2xx answers come back; 404 and every
    /// other status are errors.
    pub async fn send(&self, req: &PeerRequest<'_>, header_timeout: Duration) -> Result<PeerResponse, FetchError> {
        let request = build_request(req)?;
        let response = tokio::time::timeout(header_timeout, self.client.request(request))
            .await
            .map_err(|_| FetchError::HeaderTimeout(header_timeout))?
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound);
        }
        // At its upload limit: 429, or 503 with Retry-After. A 503 without
        // it is a peer in trouble, not a busy one.
        let retry_after = retry_after(response.headers());
        if status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some())
        {
            return Err(FetchError::Busy { retry_after });
        }
        if !status.is_success() {
            return Err(FetchError::Status(status));
        }
        let (parts, body) = response.into_parts();
        Ok(PeerResponse { status, headers: parts.headers, body, stall: self.timeouts.stall })
    }
}

impl PeerClient {
    /// Whether the registry at `endpoint` answers `GET /v2/` with 200 within
    /// the connect and header timeouts: the probe that brings an excluded
    /// peer back. Upload limits do not apply to it.
    pub async fn probe(&self, endpoint: SocketAddr) -> bool {
        let request = Request::get(format!("http://{endpoint}/v2/")).header(MIRRORED_HEADER, "true").body(Empty::new());
        let Ok(request) = request else { return false };
        let limit = self.timeouts.connect + self.timeouts.headers;
        match tokio::time::timeout(limit, self.client.request(request)).await {
            Ok(Ok(response)) => response.status() == StatusCode::OK,
            Ok(Err(error)) => {
                tracing::debug!(%endpoint, error = %error_chain(&error), "probe failed");
                false
            }
            Err(_) => false,
        }
    }
}

/// A client error before any response: a failed connect is the peer being
/// unreachable; anything else (reset, closed) a failed request.
fn transport_error(error: &hyper_util::client::legacy::Error) -> FetchError {
    if error.is_connect() { FetchError::Connect(error_chain(error)) } else { FetchError::Transport(error_chain(error)) }
}

/// `Retry-After` in seconds, if the peer sent one.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

fn build_request(req: &PeerRequest<'_>) -> Result<Request<Empty<Bytes>>, FetchError> {
    let mut uri = format!("http://{}{}", req.peer.endpoint, req.path.to_uri_path());
    if let Some(registry) = req.registry {
        uri.push_str("?ns=");
        uri.push_str(registry.as_str());
    }
    let mut builder = Request::builder().method(req.method.clone()).uri(uri).header(MIRRORED_HEADER, "true");
    if let Some(accept) = req.accept {
        builder = builder.header(ACCEPT, accept);
    }
    if let Some(range) = req.range {
        builder = builder.header(RANGE, range.to_string());
    }
    builder.body(Empty::new()).map_err(|e| FetchError::Connect(e.to_string()))
}

/// The full cause chain of a client error, for logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
