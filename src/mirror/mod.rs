//! Fetching content from peers.
//!
//! Owns: asking the router for providers, choosing among them by weighted
//! random choice (`select`), per-attempt timeouts and fall-through to the
//! next peer (`client`), verifying manifests against their digest, and
//! receiving blobs into a verified spool with resume across peers (`spool`).
//! Returns typed results; never knows HTTP status codes of its own clients'
//! responses or OCI error JSON (that is `registry`'s job).

mod candidates;
pub mod client;
pub mod select;
pub mod spool;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};

use crate::content::MAX_MANIFEST_SIZE;
use crate::metrics::Metrics;
use crate::oci::{ByteRange, Digest, DistributionPath, Key, MediaType, PathKind, Reference, Registry, Repository};
use crate::routing::{Peer, Router};
use candidates::Candidates;
pub use client::{FetchError, MIRRORED_HEADER, PeerClient, PeerTimeouts};
pub use select::PeerScores;
use spool::Spool;
pub use spool::VerifiedBlob;

/// How the mirror behaves.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    pub timeouts: PeerTimeouts,
    /// Peers tried for one request before giving up with a miss.
    pub max_attempts: usize,
    /// Most providers asked of the router for one key.
    pub lookup_limit: usize,
    /// Where blobs are spooled while they are verified.
    pub spool_dir: PathBuf,
}

/// A manifest fetched from a peer and verified against its digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: MediaType,
    pub body: Bytes,
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
    pub fn new(router: Arc<dyn Router>, scores: Arc<PeerScores>, metrics: Metrics, config: MirrorConfig) -> Self {
        let client = PeerClient::new(config.timeouts);
        Self { inner: Arc::new(Inner { router, client, scores, metrics, config }) }
    }

    pub fn scores(&self) -> &Arc<PeerScores> {
        &self.inner.scores
    }

    fn attempts(&self, key: Key, kind: PathKind) -> Attempts<'_> {
        let candidates =
            Candidates::new(self.inner.router.lookup(&key, self.inner.config.lookup_limit), &self.inner.scores);
        Attempts {
            inner: &self.inner,
            candidates,
            key,
            kind,
            tried: 0,
            resolve_recorded: false,
            started: Instant::now(),
        }
    }

    /// Fetches a manifest by tag or digest from a peer, verified.
    pub async fn manifest(&self, req: &ManifestRequest<'_>) -> Result<FetchedManifest, Miss> {
        let path = DistributionPath::Manifest { repository: req.repository.clone(), reference: req.reference.clone() };
        let mut attempts = self.attempts(req.key.clone(), PathKind::Manifest);
        while let Some(peer) = attempts.next().await {
            let request = client::PeerRequest {
                peer: &peer,
                method: Method::GET,
                path: &path,
                registry: req.registry,
                accept: req.accept,
                range: None,
            };
            match self.fetch_manifest(&request, req.reference).await {
                Ok(manifest) => {
                    attempts.succeeded(&peer, manifest.body.len() as u64);
                    return Ok(manifest);
                }
                Err(error) => attempts.failed(&peer, &error),
            }
        }
        Err(attempts.miss())
    }

    async fn fetch_manifest(
        &self,
        request: &client::PeerRequest<'_>,
        reference: &Reference,
    ) -> Result<FetchedManifest, FetchError> {
        let mut response = self.inner.client.send(request).await?;
        let media_type = response
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(MediaType::parse)
            .filter(MediaType::is_manifest)
            .ok_or_else(|| FetchError::Body("missing or non-manifest Content-Type".into()))?;
        let mut body = BytesMut::new();
        while let Some(chunk) = response.next_chunk().await? {
            if (body.len() + chunk.len()) as u64 > MAX_MANIFEST_SIZE {
                return Err(FetchError::Body("manifest larger than the limit".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let digest = Digest::of(&body);
        let claimed = match reference {
            Reference::Digest(expected) => Some(*expected),
            Reference::Tag(_) => {
                response.headers.get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
            }
        };
        if claimed.is_some_and(|c| c != digest) {
            return Err(FetchError::DigestMismatch);
        }
        Ok(FetchedManifest { digest, media_type, body: body.freeze() })
    }

    /// The size of a blob, as a peer that holds it reports (for HEAD).
    pub async fn blob_size(
        &self,
        registry: Option<&Registry>,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<u64, Miss> {
        let path = DistributionPath::Blob { repository: repository.clone(), digest: *digest };
        let mut attempts = self.attempts(Key::Digest(*digest), PathKind::Blob);
        while let Some(peer) = attempts.next().await {
            let request = client::PeerRequest {
                peer: &peer,
                method: Method::HEAD,
                path: &path,
                registry,
                accept: None,
                range: None,
            };
            let size = self.inner.client.send(&request).await.and_then(|response| {
                response.content_length().ok_or_else(|| FetchError::Body("no Content-Length".into()))
            });
            match size {
                Ok(size) => {
                    attempts.succeeded(&peer, 0);
                    return Ok(size);
                }
                Err(error) => attempts.failed(&peer, &error),
            }
        }
        Err(attempts.miss())
    }

    /// Receives a whole blob from peers into a verified spool. A stream that
    /// breaks is resumed from another peer with a `Range` request; content
    /// that fails verification is discarded and fetched again elsewhere.
    pub async fn blob(
        &self,
        registry: Option<&Registry>,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<VerifiedBlob, Miss> {
        let mut spool = match Spool::create(&self.inner.config.spool_dir) {
            Ok(spool) => spool,
            Err(error) => {
                tracing::error!(dir = %self.inner.config.spool_dir.display(), %error, "cannot create a spool file");
                return Err(Miss { key: Key::Digest(*digest), attempts: 0 });
            }
        };
        let path = DistributionPath::Blob { repository: repository.clone(), digest: *digest };
        let mut attempts = self.attempts(Key::Digest(*digest), PathKind::Blob);
        while let Some(peer) = attempts.next().await {
            let start = spool.written();
            let request = client::PeerRequest {
                peer: &peer,
                method: Method::GET,
                path: &path,
                registry,
                accept: None,
                range: (start > 0).then_some(ByteRange::From(start)),
            };
            let outcome = match self.receive(&request, &mut spool).await {
                Ok(()) if spool.matches(digest) => Ok(()),
                Ok(()) => Err(FetchError::DigestMismatch),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => {
                    attempts.succeeded(&peer, spool.written() - start);
                    return spool.into_verified().await.map_err(|error| {
                        tracing::error!(%error, "cannot seal a spool file");
                        attempts.miss()
                    });
                }
                Err(error) => {
                    attempts.failed(&peer, &error);
                    if matches!(error, FetchError::DigestMismatch)
                        && let Err(error) = spool.reset().await
                    {
                        tracing::error!(%error, "cannot reset a spool file");
                        break;
                    }
                }
            }
        }
        Err(attempts.miss())
    }

    /// Streams one peer's response into the spool, from where it stands.
    async fn receive(&self, request: &client::PeerRequest<'_>, spool: &mut Spool) -> Result<(), FetchError> {
        let mut response = self.inner.client.send(request).await?;
        let start = spool.written();
        let total = expected_total(&response, start)?;
        while let Some(chunk) = response.next_chunk().await? {
            if spool.written() + chunk.len() as u64 > total {
                return Err(FetchError::DigestMismatch);
            }
            spool.append(&chunk).await?;
        }
        if spool.written() != total {
            return Err(FetchError::Body(format!("body ended at {} of {total} bytes", spool.written())));
        }
        Ok(())
    }
}

/// The blob's full size from a response, checking that a resumed request
/// got the range it asked for.
fn expected_total(response: &client::PeerResponse, start: u64) -> Result<u64, FetchError> {
    if start == 0 {
        return response.content_length().ok_or_else(|| FetchError::Body("no Content-Length".into()));
    }
    if response.status != StatusCode::PARTIAL_CONTENT {
        return Err(FetchError::Status(response.status));
    }
    let content_range = response.headers.get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let parsed = content_range.strip_prefix("bytes ").and_then(|r| {
        let (span, total) = r.split_once('/')?;
        let (first, _) = span.split_once('-')?;
        Some((first.parse::<u64>().ok()?, total.parse::<u64>().ok()?))
    });
    match parsed {
        Some((first, total)) if first == start => Ok(total),
        _ => Err(FetchError::Body(format!("unexpected Content-Range {content_range:?}"))),
    }
}

/// The bookkeeping of one request's attempts: which peer next, the cap on
/// attempts, and recording each outcome in the scores and metrics.
struct Attempts<'a> {
    inner: &'a Inner,
    candidates: Candidates<'a>,
    key: Key,
    kind: PathKind,
    tried: usize,
    resolve_recorded: bool,
    started: Instant,
}

impl Attempts<'_> {
    async fn next(&mut self) -> Option<Peer> {
        if self.tried >= self.inner.config.max_attempts {
            return None;
        }
        let peer = self.candidates.next().await?;
        if !self.resolve_recorded
            && let Some(elapsed) = self.candidates.first_found
        {
            self.inner.metrics.observe_resolve(elapsed);
            self.resolve_recorded = true;
        }
        self.tried += 1;
        self.started = Instant::now();
        Some(peer)
    }

    fn succeeded(&self, peer: &Peer, bytes: u64) {
        let elapsed = self.started.elapsed();
        self.inner.scores.record_success(&peer.name, bytes, elapsed);
        self.inner.metrics.observe_peer_fetch(self.kind, elapsed);
    }

    fn failed(&self, peer: &Peer, error: &FetchError) {
        tracing::debug!(peer = %peer.name, endpoint = %peer.endpoint, key = %self.key, %error, "peer attempt failed");
        self.inner.metrics.peer_fetch_failed(error.reason());
        if error.blames_peer() {
            self.inner.scores.record_failure(&peer.name);
        }
    }

    fn miss(&self) -> Miss {
        Miss { key: self.key.clone(), attempts: self.tried }
    }
}
