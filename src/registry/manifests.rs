//! `GET|HEAD /v2/<name>/manifests/<reference>`: local content first, then peers.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::response::{self, Body};
use super::{PullRequest, RegistryHandler};
use crate::content::MAX_MANIFEST_SIZE;
use crate::metrics::Source;
use crate::mirror::ManifestRequest;
use crate::oci::{Digest, DistributionPath, Key, MediaType, PathKind, Reference, TagRef};

/// A manifest ready to be sent.
struct Manifest {
    digest: Digest,
    media_type: MediaType,
    body: Bytes,
    /// Of a private registry: this node's own clients only.
    private: bool,
}

impl RegistryHandler {
    pub(super) async fn manifest(&self, request: &PullRequest<'_>) -> Response<Body> {
        let DistributionPath::Manifest { repository, reference } = &request.path else {
            return response::fallback(StatusCode::INTERNAL_SERVER_ERROR);
        };
        let key = match reference {
            Reference::Digest(digest) => Key::Digest(*digest),
            Reference::Tag(tag) => match &request.registry {
                Some(registry) => {
                    Key::Tag(TagRef { registry: registry.clone(), repository: repository.clone(), tag: tag.clone() })
                }
                None => return self.miss(request, PathKind::Manifest, "a tag needs the ns query parameter"),
            },
        };
        if let Some(manifest) = self.local_manifest(&key).await {
            if manifest.private && request.peer_facing {
                return self.miss(request, PathKind::Manifest, "not held by this node");
            }
            if request.forwarded
                && let Key::Tag(tag) = &key
            {
                // A peer resolving a tag here is a peer pulling the image.
                self.inner.popularity.record(tag);
            }
            return self.send_manifest(request, Source::Local, manifest);
        }
        if request.forwarded {
            return self.miss(request, PathKind::Manifest, "not held by this node");
        }
        let fetch = ManifestRequest {
            key,
            registry: request.registry.as_ref(),
            repository,
            reference,
            accept: request.headers.get(ACCEPT),
        };
        match self.inner.mirror.manifest(&fetch).await {
            Ok(fetched) => {
                let manifest = Manifest {
                    digest: fetched.digest,
                    media_type: fetched.media_type,
                    body: fetched.body,
                    private: false,
                };
                self.send_manifest(request, Source::Peer, manifest)
            }
            Err(miss) => self.miss(request, PathKind::Manifest, &miss.to_string()),
        }
    }

    async fn local_manifest(&self, key: &Key) -> Option<Manifest> {
        let (digest, blob) = match key {
            Key::Digest(digest) => (*digest, self.inner.index.blob(digest)?),
            Key::Tag(tag) => self.inner.index.tag(tag)?,
        };
        let private = blob.private;
        let media_type = blob.manifest_type?;
        match self.inner.index.store().read_all(&digest, MAX_MANIFEST_SIZE).await {
            Ok(body) if Digest::of(&body) == digest => Some(Manifest { digest, media_type, body, private }),
            Ok(_) => {
                tracing::error!(%digest, "local manifest does not match its digest");
                None
            }
            Err(error) => {
                tracing::warn!(%digest, %error, "cannot read a local manifest");
                None
            }
        }
    }

    fn send_manifest(&self, request: &PullRequest<'_>, source: Source, manifest: Manifest) -> Response<Body> {
        let counter = self.served(request, source, PathKind::Manifest);
        let length = manifest.body.len();
        let body = if request.head {
            response::empty()
        } else {
            counter.inc_by(length as u64);
            response::full(manifest.body)
        };
        Response::builder()
            .header(CONTENT_TYPE, manifest.media_type.as_str())
            .header(CONTENT_LENGTH, length)
            .header("docker-content-digest", manifest.digest.to_string())
            .body(body)
            .unwrap_or_else(|_| response::fallback(StatusCode::INTERNAL_SERVER_ERROR))
    }
}
