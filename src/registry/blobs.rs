//! `GET|HEAD /v2/<name>/blobs/<digest>`: local content first, then peers.
//! Single byte ranges are honoured with 206. A blob passed through from a
//! trusted peer is sent as it arrives; its body ends with an error (the
//! connection is cut) rather than complete with bytes that fail the digest,
//! and containerd's ingest of those bytes is then discarded.

use std::io;

use futures::{StreamExt, TryStreamExt};
use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::{Response, StatusCode};
use prometheus::IntCounter;

use super::response::{self, Body, ErrorCode, oci_error};
use super::{PullRequest, RegistryHandler, range_header};
use crate::content::BlobStream;
use crate::metrics::Source;
use crate::mirror::PeerBlob;
use crate::oci::{ByteRange, Digest, DistributionPath, MediaType, PathKind, RangeError, ResolvedRange};

impl RegistryHandler {
    pub(super) async fn blob(&self, request: &PullRequest<'_>) -> Response<Body> {
        let DistributionPath::Blob { repository, digest } = &request.path else {
            return response::fallback(StatusCode::INTERNAL_SERVER_ERROR);
        };
        let range = match range_header(request.headers) {
            Ok(range) => range,
            Err(RangeError::MultipleRanges) => return range_error(None, request.head),
            Err(error) => {
                return oci_error(StatusCode::BAD_REQUEST, ErrorCode::RangeInvalid, &error.to_string(), request.head);
            }
        };
        if let Some(blob) = self.inner.index.blob(digest) {
            if blob.private && request.peer_facing {
                // The same answer as for content this node does not hold.
                return self.miss(request, PathKind::Blob, "not held by this node");
            }
            return self.send_local_blob(request, digest, blob.size, range).await;
        }
        if request.forwarded {
            return self.miss(request, PathKind::Blob, "not held by this node");
        }
        let registry = request.registry.as_ref();
        if request.head {
            return match self.inner.mirror.blob_size(registry, repository, digest).await {
                Ok(size) => self.send_blob_head(request, Source::Peer, digest, size, range),
                Err(miss) => self.miss(request, PathKind::Blob, &miss.to_string()),
            };
        }
        match self.inner.mirror.blob(registry, repository, digest, range.is_none()).await {
            Ok(PeerBlob::Streamed { size, body }) => {
                let body = self.discarding_ingests_on_mismatch(*digest, body);
                self.send_blob(request, Source::Peer, digest, size, ResolvedRange::full(size), body)
            }
            Ok(PeerBlob::Verified(verified)) => {
                let size = verified.size;
                let Ok(resolved) = resolve(range, size) else { return range_error(Some(size), false) };
                let stream = match resolved {
                    Some(resolved) => verified.stream(resolved).await,
                    None => Ok(empty_stream()),
                };
                match stream {
                    Ok(stream) => self.send_blob(request, Source::Peer, digest, size, resolved, stream),
                    Err(error) => unavailable(&error.to_string()),
                }
            }
            Err(miss) => self.miss(request, PathKind::Blob, &miss.to_string()),
        }
    }

    /// A passed-through body that fails its digest has put bad bytes into
    /// containerd's ingest, which a retry would resume from (and fail again
    /// at commit). When the body is cut for that, the ingests of the digest
    /// are discarded, so that the retry starts clean.
    fn discarding_ingests_on_mismatch(&self, digest: Digest, body: BlobStream) -> BlobStream {
        let store = self.inner.index.store().clone();
        body.inspect_err(move |error| {
            if error.kind() != io::ErrorKind::InvalidData {
                return;
            }
            let store = store.clone();
            tokio::spawn(async move {
                match store.discard_ingests(&digest).await {
                    Ok(discarded) => {
                        tracing::info!(%digest, discarded, "discarded containerd's ingest of a corrupt blob")
                    }
                    Err(error) => {
                        tracing::warn!(%digest, %error, "cannot discard containerd's ingest of a corrupt blob")
                    }
                }
            });
        })
        .boxed()
    }

    async fn send_local_blob(
        &self,
        request: &PullRequest<'_>,
        digest: &Digest,
        size: u64,
        range: Option<ByteRange>,
    ) -> Response<Body> {
        if request.head {
            return self.send_blob_head(request, Source::Local, digest, size, range);
        }
        let permit = if request.forwarded {
            match self.inner.uploads.try_start() {
                Some(permit) => Some(permit),
                None => {
                    self.inner.metrics.upload_busy(PathKind::Blob);
                    return busy();
                }
            }
        } else {
            None
        };
        let Ok(resolved) = resolve(range, size) else { return range_error(Some(size), false) };
        let stream = match resolved {
            Some(resolved) => self.inner.index.store().read(digest, resolved).await,
            None => Ok(empty_stream()),
        };
        match stream {
            Ok(stream) => {
                let stream = match permit {
                    Some(permit) => self.inner.uploads.body(stream, permit, self.inner.metrics.uploading()),
                    None => stream,
                };
                self.send_blob(request, Source::Local, digest, size, resolved, stream)
            }
            Err(error) => {
                tracing::warn!(%digest, %error, "cannot read a local blob");
                unavailable(&error.to_string())
            }
        }
    }

    fn send_blob_head(
        &self,
        request: &PullRequest<'_>,
        source: Source,
        digest: &Digest,
        size: u64,
        range: Option<ByteRange>,
    ) -> Response<Body> {
        self.served(request, source, PathKind::Blob);
        match range {
            None => blob_response(StatusCode::OK, digest, size, None).body(response::empty()),
            Some(range) => match range.resolve(size) {
                Ok(resolved) => {
                    blob_response(StatusCode::PARTIAL_CONTENT, digest, resolved.len(), Some((resolved, size)))
                        .body(response::empty())
                }
                Err(_) => return range_error(Some(size), true),
            },
        }
        .unwrap_or_else(|_| response::fallback(StatusCode::INTERNAL_SERVER_ERROR))
    }

    fn send_blob(
        &self,
        request: &PullRequest<'_>,
        source: Source,
        digest: &Digest,
        size: u64,
        resolved: Option<ResolvedRange>,
        stream: BlobStream,
    ) -> Response<Body> {
        let counter = self.served(request, source, PathKind::Blob);
        let (status, length, content_range) = match resolved {
            Some(range) if range.len() != size => (StatusCode::PARTIAL_CONTENT, range.len(), Some((range, size))),
            _ => (StatusCode::OK, size, None),
        };
        blob_response(status, digest, length, content_range)
            .body(response::stream(count_bytes(stream, counter)))
            .unwrap_or_else(|_| response::fallback(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// Counts a request; requests from peers are uploads, not this node's hits.
    pub(super) fn served(&self, request: &PullRequest<'_>, source: Source, kind: PathKind) -> IntCounter {
        if request.forwarded {
            return self.inner.metrics.uploaded(kind);
        }
        self.inner.metrics.served(source, request.registry_label(), kind)
    }
}

fn count_bytes(stream: BlobStream, counter: IntCounter) -> BlobStream {
    use futures::TryStreamExt;
    Box::pin(stream.inspect_ok(move |chunk| counter.inc_by(chunk.len() as u64)))
}

/// The bytes to send: the whole blob without a Range header, `Ok(None)` for
/// an empty blob, `Err` when the range cannot be satisfied.
fn resolve(range: Option<ByteRange>, size: u64) -> Result<Option<ResolvedRange>, RangeError> {
    match range {
        Some(range) => range.resolve(size).map(Some),
        None => Ok(ResolvedRange::full(size)),
    }
}

fn empty_stream() -> BlobStream {
    Box::pin(futures::stream::empty())
}

fn blob_response(
    status: StatusCode,
    digest: &Digest,
    length: u64,
    content_range: Option<(ResolvedRange, u64)>,
) -> http::response::Builder {
    let mut builder = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, MediaType::OCTET_STREAM)
        .header(CONTENT_LENGTH, length)
        .header(ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", digest.to_string());
    if let Some((range, total)) = content_range {
        builder = builder.header(CONTENT_RANGE, range.content_range(total));
    }
    builder
}

/// 416, with `Content-Range: bytes */size` when the blob's size is known.
fn range_error(size: Option<u64>, head: bool) -> Response<Body> {
    let message = size.map_or(RangeError::MultipleRanges, RangeError::Unsatisfiable).to_string();
    let mut response = oci_error(StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::RangeInvalid, &message, head);
    if let Some(value) = size.and_then(|size| http::HeaderValue::from_str(&format!("bytes */{size}")).ok()) {
        response.headers_mut().insert(CONTENT_RANGE, value);
    }
    response
}

/// 429 with `Retry-After`: this node is at its upload limit. The asking
/// node takes another peer at once and does not count this as a failure.
fn busy() -> Response<Body> {
    let mut response =
        oci_error(StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests, "at the upload limit", false);
    let seconds = super::uploads::RETRY_AFTER.as_secs().to_string();
    if let Ok(value) = http::HeaderValue::from_str(&seconds) {
        response.headers_mut().insert(http::header::RETRY_AFTER, value);
    }
    response
}

fn unavailable(message: &str) -> Response<Body> {
    oci_error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, message, false)
}
