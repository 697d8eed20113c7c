//! Liveness and readiness: whether this node should receive traffic.
//!
//! Ready means: the local content was indexed once, the router is ready
//! (connected to a peer, or a single node), and shutdown has not begun.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Response, StatusCode};

use crate::registry::response::{Body, text};
use crate::routing::Router;

/// Whether this node should receive traffic. Cheap to clone.
#[derive(Clone)]
pub struct Health {
    router: Arc<dyn Router>,
    content_indexed: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
}

impl Health {
    pub fn new(router: Arc<dyn Router>) -> Self {
        Self { router, content_indexed: Arc::default(), draining: Arc::default() }
    }

    /// The local content was indexed once: local hits can be served.
    pub fn set_content_indexed(&self) {
        self.content_indexed.store(true, Ordering::Release);
    }

    /// Shutdown began: fail readiness so no new work arrives.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.content_indexed.load(Ordering::Acquire) && self.router.is_ready()
    }

    pub fn readyz(&self) -> Response<Body> {
        if self.is_ready() {
            text(StatusCode::OK, "text/plain", "ready\n")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
        }
    }
}

pub fn healthz() -> Response<Body> {
    text(StatusCode::OK, "text/plain", "ok\n")
}
