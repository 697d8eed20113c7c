//! The three fetches the registry asks of the mirror: a manifest (verified
//! in memory), a blob's size (HEAD), and a blob (verified in a spool,
//! resumed across peers, or passed through from a trusted peer, see
//! `passthrough`). Each runs header races (`race`) until a peer delivers,
//! and runs another race when a body breaks or fails verification, all
//! within the request's one attempt budget.

use bytes::BytesMut;
use http::header::{CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};

use super::attempts::Attempts;
use super::client::{FetchError, PeerRequest, PeerResponse};
use super::passthrough::{MIN_PASSTHROUGH_SIZE, PassThrough};
use super::race::{AttemptSource, Won, race};
use super::spool::{Spool, VerifiedBlob};
use super::{FetchedManifest, ManifestRequest, Mirror, Miss, PeerBlob};
use crate::content::MAX_MANIFEST_SIZE;
use crate::oci::{ByteRange, Digest, DistributionPath, Key, MediaType, PathKind, Reference, Registry, Repository};
use crate::routing::Peer;

/// One request as it is sent to whichever peer is asked.
pub(super) struct Ask<'a> {
    pub method: Method,
    pub path: &'a DistributionPath,
    pub registry: Option<&'a Registry>,
    pub accept: Option<&'a HeaderValue>,
    pub range: Option<ByteRange>,
}

impl Mirror {
    /// Races peers for the response headers of `ask`.
    pub(super) async fn ask(&self, attempts: &mut Attempts, ask: &Ask<'_>) -> Option<Won<PeerResponse>> {
        let hedge = attempts.hedge_after();
        let header_timeout = attempts.header_timeout();
        let won = race(attempts, hedge, |peer: Peer| async move {
            let request = PeerRequest {
                peer: &peer,
                method: ask.method.clone(),
                path: ask.path,
                registry: ask.registry,
                accept: ask.accept,
                range: ask.range,
            };
            self.inner.client.send(&request, header_timeout).await
        })
        .await?;
        attempts.won(&won.winner);
        Some(won)
    }

    /// Fetches a manifest by tag or digest from a peer, verified.
    pub async fn manifest(&self, req: &ManifestRequest<'_>) -> Result<FetchedManifest, Miss> {
        let path = DistributionPath::Manifest { repository: req.repository.clone(), reference: req.reference.clone() };
        let ask = Ask { method: Method::GET, path: &path, registry: req.registry, accept: req.accept, range: None };
        let mut attempts = Attempts::new(self.inner.clone(), req.key.clone(), PathKind::Manifest);
        while let Some(Won { winner, value: response }) = self.ask(&mut attempts, &ask).await {
            match read_manifest(response, req.reference).await {
                Ok(manifest) => {
                    attempts.succeeded(&winner, manifest.body.len() as u64);
                    return Ok(manifest);
                }
                Err(error) => attempts.failed(&winner.peer, &error),
            }
        }
        Err(attempts.miss())
    }

    /// The size of a blob, as a peer that holds it reports (for HEAD).
    pub async fn blob_size(
        &self,
        registry: Option<&Registry>,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<u64, Miss> {
        let path = DistributionPath::Blob { repository: repository.clone(), digest: *digest };
        let ask = Ask { method: Method::HEAD, path: &path, registry, accept: None, range: None };
        let mut attempts = Attempts::new(self.inner.clone(), Key::Digest(*digest), PathKind::Blob);
        while let Some(Won { winner, value: response }) = self.ask(&mut attempts, &ask).await {
            match response.content_length() {
                Some(size) => {
                    attempts.succeeded(&winner, 0);
                    return Ok(size);
                }
                None => attempts.failed(&winner.peer, &FetchError::Body("no Content-Length".into())),
            }
        }
        Err(attempts.miss())
    }

    /// Fetches a blob from peers. A whole blob (`whole`: containerd asked
    /// without `Range`) of at least [`MIN_PASSTHROUGH_SIZE`] from a trusted
    /// peer passes straight through; anything else is received into a
    /// verified spool first. A stream that breaks is resumed from another
    /// peer with a `Range` request; content that fails verification is
    /// discarded and fetched again elsewhere.
    pub async fn blob(
        &self,
        registry: Option<&Registry>,
        repository: &Repository,
        digest: &Digest,
        whole: bool,
    ) -> Result<PeerBlob, Miss> {
        let path = DistributionPath::Blob { repository: repository.clone(), digest: *digest };
        let mut attempts = Attempts::new(self.inner.clone(), Key::Digest(*digest), PathKind::Blob);
        let trust = self.inner.config.stream_after_verified;
        let mut first = None;
        if whole && trust > 0 {
            let ask = Ask { method: Method::GET, path: &path, registry, accept: None, range: None };
            let Some(won) = self.ask(&mut attempts, &ask).await else { return Err(attempts.miss()) };
            let size = won.value.content_length().unwrap_or(0);
            if size >= MIN_PASSTHROUGH_SIZE && self.inner.scores.is_trusted(&won.winner.peer.name, trust) {
                tracing::debug!(peer = %won.winner.peer.name, %digest, size, "passing a blob through");
                self.inner.metrics.peer_blob_passed_through();
                let registry = registry.cloned();
                let pass = PassThrough::new(self.clone(), attempts, path, registry, *digest, size, won);
                return Ok(PeerBlob::Streamed { size, body: pass.into_stream() });
            }
            tracing::debug!(peer = %won.winner.peer.name, %digest, size, "spooling a blob: too small or peer not trusted yet");
            first = Some(won);
        }
        self.spooled_blob(attempts, &path, registry, digest, first).await.map(PeerBlob::Verified)
    }

    /// Receives a whole blob into a verified spool, starting with `first`
    /// (an answer already won) if given.
    async fn spooled_blob(
        &self,
        mut attempts: Attempts,
        path: &DistributionPath,
        registry: Option<&Registry>,
        digest: &Digest,
        mut first: Option<Won<PeerResponse>>,
    ) -> Result<VerifiedBlob, Miss> {
        let mut spool = match Spool::create(&self.inner.config.spool_dir) {
            Ok(spool) => spool,
            Err(error) => {
                tracing::error!(dir = %self.inner.config.spool_dir.display(), %error, "cannot create a spool file");
                return Err(Miss { key: Key::Digest(*digest), attempts: 0 });
            }
        };
        loop {
            let start = spool.written();
            let won = match first.take() {
                Some(won) => Some(won),
                None => {
                    let range = (start > 0).then_some(ByteRange::From(start));
                    let ask = Ask { method: Method::GET, path, registry, accept: None, range };
                    self.ask(&mut attempts, &ask).await
                }
            };
            let Some(Won { winner, value: response }) = won else { break };
            let outcome = match receive(response, &mut spool).await {
                Ok(()) => match spool.matches(digest).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(FetchError::DigestMismatch),
                    Err(error) => {
                        tracing::error!(%error, "cannot hash a spooled blob");
                        break;
                    }
                },
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => {
                    attempts.succeeded(&winner, spool.written() - start);
                    attempts.verified(&winner.peer);
                    return spool.into_verified().await.map_err(|error| {
                        tracing::error!(%error, "cannot seal a spool file");
                        attempts.miss()
                    });
                }
                Err(error) => {
                    attempts.failed(&winner.peer, &error);
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
}

/// Reads and verifies a manifest body: against the digest asked for, or for
/// a tag against the `Docker-Content-Digest` the peer claims.
async fn read_manifest(mut response: PeerResponse, reference: &Reference) -> Result<FetchedManifest, FetchError> {
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

/// Streams one peer's response into the spool, from where it stands.
async fn receive(mut response: PeerResponse, spool: &mut Spool) -> Result<(), FetchError> {
    let total = expected_total(&response, spool.written())?;
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

/// The blob's full size from a response, checking that a resumed request
/// got the range it asked for.
pub(super) fn expected_total(response: &PeerResponse, start: u64) -> Result<u64, FetchError> {
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
