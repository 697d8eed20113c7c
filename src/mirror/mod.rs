//! Fetching content from peers.
//!
//! Owns: asking the router for providers, choosing among the healthy ones
//! by weighted random choice (`select`, `health`), racing attempts with
//! hedging (`race`, `hedge`) under per-attempt timeouts (`client`),
//! verifying manifests against their digest, receiving blobs into a
//! verified spool with resume across peers (`spool`), passing large blobs
//! from trusted peers straight through while hashing them (`passthrough`),
//! and probing excluded peers back in (`prober`). Returns typed results; never knows HTTP status
//! codes of its own clients' responses or OCI error JSON (that is
//! `registry`'s job).
//!
//! Invariant: only talks to endpoints the router returned (Shoal is not an
//! open proxy), never hands out a byte that was not verified unless it comes
//! from a trusted peer, and never completes a response whose bytes fail
//! their digest.

mod attempts;
mod candidates;
pub mod client;
mod fetch;
mod hasher;
pub mod health;
pub mod hedge;
mod passthrough;
mod prober;
mod race;
pub mod select;
pub mod spool;
mod stale;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use tokio_util::sync::CancellationToken;

use crate::content::BlobStream;
use crate::metrics::Metrics;
use crate::oci::{Digest, Key, MediaType, Reference, Registry, Repository};
use crate::routing::Router;
pub use client::{FetchError, MIRRORED_HEADER, PeerClient, PeerTimeouts};
pub use health::{ExclusionReason, Outcome};
pub use hedge::HedgePolicy;
use hedge::HedgeTimer;
pub use select::{PeerScores, PeerStatus};
pub use spool::VerifiedBlob;

/// How the mirror behaves.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    pub timeouts: PeerTimeouts,
    /// Peers tried for one request, hedges included, before giving up with a miss.
    pub max_attempts: usize,
    /// Most providers asked of the router for one key.
    pub lookup_limit: usize,
    /// Once every provider found is tried or excluded, how long to wait for
    /// another before giving up (the router may still be searching).
    pub lookup_patience: Duration,
    /// Where blobs are spooled while they are verified.
    pub spool_dir: PathBuf,
    /// When a second peer is asked while the first has not answered.
    pub hedge: HedgePolicy,
    /// A whole blob from a peer with at least this many verified blob
    /// transfers (and never a corrupt one) passes straight through, hashed
    /// on the way, instead of being verified before the first byte goes
    /// out (`passthrough`). 0 turns pass-through off.
    pub stream_after_verified: u32,
}

/// A manifest fetched from a peer and verified against its digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: MediaType,
    pub body: Bytes,
}

/// A blob from peers, ready to be sent.
pub enum PeerBlob {
    /// Received whole and verified before the first byte goes out.
    Verified(VerifiedBlob),
    /// Passed through from a trusted peer as it arrives: the body ends with
    /// an error instead of completing if the bytes fail their digest.
    Streamed { size: u64, body: BlobStream },
}

/// No peer could serve the request.
#[derive(Debug, thiserror::Error)]
#[error("no peer could serve {key} ({attempts} tried)")]
pub struct Miss {
    pub key: Key,
    pub attempts: usize,
}

/// Fetches from peers. Cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

struct Inner {
    router: Arc<dyn Router>,
    client: PeerClient,
    scores: Arc<PeerScores>,
    hedge: HedgeTimer,
    /// Peers that answered 404 for a key they are advertised for.
    stale: Arc<stale::StaleRecords>,
    metrics: Metrics,
    config: MirrorConfig,
}

/// What a manifest request asks for.
pub struct ManifestRequest<'a> {
    /// The digest, or for a tag the `registry/repository:tag` key.
    pub key: Key,
    pub registry: Option<&'a Registry>,
    pub repository: &'a Repository,
    pub reference: &'a Reference,
    pub accept: Option<&'a HeaderValue>,
}

impl Mirror {
    /// Builds the mirror and subscribes `scores` to the router's connection
    /// changes, so a peer whose connection closes is excluded at once.
    pub fn new(router: Arc<dyn Router>, scores: Arc<PeerScores>, metrics: Metrics, config: MirrorConfig) -> Self {
        let client = PeerClient::new(config.timeouts);
        let hedge =
            HedgeTimer::new(config.hedge, config.timeouts.headers).with_header_floor(config.timeouts.headers_floor);
        let weak: Weak<PeerScores> = Arc::downgrade(&scores);
        router.links().observe(move |event, link| {
            if let Some(scores) = weak.upgrade() {
                scores.on_link(event, link);
            }
        });
        let stale = Arc::new(stale::StaleRecords::default());
        Self { inner: Arc::new(Inner { router, client, scores, hedge, stale, metrics, config }) }
    }

    pub fn scores(&self) -> &Arc<PeerScores> {
        &self.inner.scores
    }

    /// Probes excluded peers with backoff until `token` is cancelled; spawn
    /// it on the node's task tracker.
    pub fn probe_excluded(&self, token: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        let inner = &self.inner;
        prober::run(inner.scores.clone(), inner.client.clone(), inner.router.clone(), inner.metrics.clone(), token)
    }
}
