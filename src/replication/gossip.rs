//! Asking peers which images they see pulled a lot: `GET /shoal/v1/popular`
//! on a peer's registry endpoint (the one the router reported), with a
//! short time limit and a small body limit. A peer that does not answer
//! simply contributes nothing this round.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::popular::HotList;
use crate::mirror::MIRRORED_HEADER;

/// Where the hot list is served on every node's registry port.
pub const HOT_LIST_PATH: &str = "/shoal/v1/popular";
/// Longest a peer may take to send its whole hot list.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest hot list accepted.
const MAX_BODY: usize = 256 << 10;

/// Why a peer's hot list could not be had.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("no answer within {TIMEOUT:?}")]
    Timeout,
    #[error("request failed: {0}")]
    Request(String),
    #[error("the peer answered {0}")]
    Status(http::StatusCode),
    #[error("unreadable hot list: {0}")]
    Body(String),
}

/// A small HTTP client for hot lists. Cheap to clone.
#[derive(Clone)]
pub struct Gossip {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for Gossip {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(TIMEOUT));
        Self { client: Client::builder(TokioExecutor::new()).build(connector) }
    }
}

impl Gossip {
    pub async fn hot_list(&self, endpoint: SocketAddr) -> Result<HotList, GossipError> {
        tokio::time::timeout(TIMEOUT, self.fetch(endpoint)).await.map_err(|_| GossipError::Timeout)?
    }

    async fn fetch(&self, endpoint: SocketAddr) -> Result<HotList, GossipError> {
        let request = Request::get(format!("http://{endpoint}{HOT_LIST_PATH}"))
            .header(MIRRORED_HEADER, "true")
            .body(Empty::new())
            .map_err(|e| GossipError::Request(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| GossipError::Request(e.to_string()))?;
        if !response.status().is_success() {
            return Err(GossipError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| GossipError::Body(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| GossipError::Body(e.to_string()))
    }
}
