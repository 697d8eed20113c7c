//! The HTTP face of a node: the pull-only subset of the OCI distribution API
//! that containerd uses as a mirror, plus `/healthz` and `/readyz`.
//!
//! Owns: parsing requests into domain types at the edge, local-first serving,
//! the loop-prevention rule (a request forwarded by a peer is served from
//! local content only), the access policy and private content (see
//! [`access`]), the `--mirrored-registries` filter, response headers,
//! and the one mapping from failures to HTTP status and OCI error JSON.
//! Never proxies anywhere but to peers the router returned (via `mirror`).

pub mod access;
mod blobs;
mod manifests;
pub mod response;
pub mod server;
mod stall;
pub mod uploads;

use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::content::ContentIndex;
use crate::health::{self, Health};
use crate::metrics::{Listener, Metrics, Rejection, Source};
use crate::mirror::{MIRRORED_HEADER, Mirror};
use crate::oci::{ByteRange, DistributionPath, PathError, PathKind, Registry};
use crate::replication::gossip::HOT_LIST_PATH;
use crate::replication::{HotImage, HotList, Popularity, PopularityConfig};
pub use access::{AccessPolicy, ClientAddr};
use response::{Body, ErrorCode, oci_error};
pub use uploads::UploadLimits;
use uploads::Uploads;

/// Which upstream registries this node serves, and what it uploads to peers.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registries (as containerd names them in `ns`) to serve; empty means all.
    pub mirrored: Vec<Registry>,
    pub uploads: UploadLimits,
    /// When peer requests make an image popular.
    pub popularity: PopularityConfig,
    /// Who is served at all.
    pub access: AccessPolicy,
    /// Longest request URL (path and query) served; longer gets 414.
    pub max_url_bytes: usize,
}

impl RegistryConfig {
    /// Room for the longest valid pull path (about 350 bytes) with its query,
    /// and little else.
    pub const DEFAULT_MAX_URL_BYTES: usize = 4096;
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            mirrored: Vec::new(),
            uploads: UploadLimits::default(),
            popularity: PopularityConfig::default(),
            access: AccessPolicy::open(),
            max_url_bytes: Self::DEFAULT_MAX_URL_BYTES,
        }
    }
}

/// The registry request handler. Cheap to clone.
#[derive(Clone)]
pub struct RegistryHandler {
    inner: Arc<Inner>,
}

struct Inner {
    index: ContentIndex,
    mirror: Mirror,
    metrics: Metrics,
    health: Health,
    uploads: Uploads,
    popularity: Popularity,
    config: RegistryConfig,
}

/// Entries in the hot list at most.
const MAX_HOT_LIST: usize = 64;

/// A parsed request for a manifest or blob.
struct PullRequest<'a> {
    path: DistributionPath,
    /// The upstream registry from `?ns=`, if given.
    registry: Option<Registry>,
    /// Forwarded by another node: serve local content only.
    forwarded: bool,
    /// Forwarded, or not from this host: private content is not served.
    peer_facing: bool,
    head: bool,
    headers: &'a HeaderMap,
}

impl PullRequest<'_> {
    fn registry_label(&self) -> &str {
        self.registry.as_ref().map_or("none", Registry::as_str)
    }
}

impl RegistryHandler {
    pub fn new(index: ContentIndex, mirror: Mirror, metrics: Metrics, health: Health, config: RegistryConfig) -> Self {
        let uploads = Uploads::new(config.uploads);
        let popularity = Popularity::new(config.popularity);
        Self { inner: Arc::new(Inner { index, mirror, metrics, health, uploads, popularity, config }) }
    }

    /// The peer request counts this handler records (replication reads them).
    pub fn popularity(&self) -> &Popularity {
        &self.inner.popularity
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        if url_len(req.uri()) > self.inner.config.max_url_bytes {
            self.inner.metrics.listener(Listener::Registry).request_rejected(Rejection::UrlTooLong);
            let message = format!("request URL is longer than {} bytes", self.inner.config.max_url_bytes);
            return oci_error(StatusCode::URI_TOO_LONG, ErrorCode::NameInvalid, &message, head);
        }
        if req.method() != Method::GET && !head {
            return oci_error(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Unsupported, "this mirror is pull-only", head);
        }
        match req.uri().path() {
            "/healthz" => return health::healthz(),
            "/readyz" => return self.inner.health.readyz(),
            _ => {}
        }
        let client = req.extensions().get::<ClientAddr>().copied();
        if !self.inner.config.access.admits(client.as_ref()).await {
            self.inner.metrics.listener(Listener::Registry).request_rejected(Rejection::Forbidden);
            let message = "this mirror serves its own node and connected peers only";
            return oci_error(StatusCode::FORBIDDEN, ErrorCode::Denied, message, head);
        }
        if req.uri().path() == HOT_LIST_PATH {
            return self.hot_list(head).await;
        }
        let path = match DistributionPath::parse(req.uri().path()) {
            Ok(path) => path,
            Err(error) => return path_error(&error, head),
        };
        let registry = match ns_param(req.uri().query()) {
            Ok(registry) => registry,
            Err(message) => return oci_error(StatusCode::BAD_REQUEST, ErrorCode::NameInvalid, &message, head),
        };
        let forwarded = req.headers().contains_key(MIRRORED_HEADER);
        let request = PullRequest {
            path,
            registry,
            forwarded,
            peer_facing: forwarded || !client.is_some_and(|c| c.is_local()),
            head,
            headers: req.headers(),
        };
        let Some(kind) = request.path.kind() else {
            return api_base(head);
        };
        let _in_flight = self.inner.metrics.in_flight(kind.as_str());
        if !self.serves(request.registry.as_ref()) {
            return self.miss(&request, kind, "registry is not mirrored by this node");
        }
        match kind {
            PathKind::Manifest => self.manifest(&request).await,
            PathKind::Blob => self.blob(&request).await,
        }
    }

    /// The images peers pulled from this node often lately, with sizes.
    async fn hot_list(&self, head: bool) -> Response<Body> {
        let mut list = HotList::default();
        for (tag, requests) in self.inner.popularity.hot().into_iter().take(MAX_HOT_LIST) {
            let bytes = crate::replication::size::image_size(&self.inner.index, &tag).await;
            list.images.push(HotImage { image: tag.to_string(), requests, bytes });
        }
        let body = serde_json::to_string(&list).unwrap_or_else(|_| "{\"images\":[]}".to_owned());
        let mut response = response::text(StatusCode::OK, "application/json", body);
        if head {
            *response.body_mut() = response::empty();
        }
        response
    }

    fn serves(&self, registry: Option<&Registry>) -> bool {
        let mirrored = &self.inner.config.mirrored;
        mirrored.is_empty() || registry.is_some_and(|r| mirrored.contains(r))
    }

    /// The fast 404 that sends containerd on to its next host or the upstream.
    fn miss(&self, request: &PullRequest<'_>, kind: PathKind, message: &str) -> Response<Body> {
        if request.forwarded {
            self.inner.metrics.upload_not_found(kind);
        } else {
            self.inner.metrics.served(Source::Miss, request.registry_label(), kind);
        }
        let code = match kind {
            PathKind::Manifest => ErrorCode::ManifestUnknown,
            PathKind::Blob => ErrorCode::BlobUnknown,
        };
        oci_error(StatusCode::NOT_FOUND, code, message, request.head)
    }
}

/// The length of the request target as sent: path and query, plus scheme
/// and authority for the absolute form.
fn url_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |scheme| scheme.len() + "://".len());
    let authority = uri.authority().map_or(0, |authority| authority.as_str().len());
    scheme + authority + uri.path_and_query().map_or(0, |pq| pq.as_str().len())
}

fn path_error(error: &PathError, head: bool) -> Response<Body> {
    let message = error.to_string();
    match error {
        PathError::NotFound => {
            oci_error(StatusCode::NOT_FOUND, ErrorCode::Unsupported, "not part of the pull API", head)
        }
        PathError::Name(_) => oci_error(StatusCode::BAD_REQUEST, ErrorCode::NameInvalid, &message, head),
        PathError::Digest(_) => oci_error(StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid, &message, head),
    }
}

fn api_base(head: bool) -> Response<Body> {
    let body = if head { response::empty() } else { response::full("{}") };
    Response::builder()
        .header("docker-distribution-api-version", "registry/2.0")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| response::fallback(StatusCode::OK))
}

/// The `ns` query parameter: which upstream registry containerd is pulling from.
fn ns_param(query: Option<&str>) -> Result<Option<Registry>, String> {
    let Some(query) = query else { return Ok(None) };
    let Some((_, value)) = form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "ns") else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|e: crate::oci::NameError| e.to_string())
}

/// The request's `Range` header, parsed; `Ok(None)` when absent.
fn range_header(headers: &HeaderMap) -> Result<Option<ByteRange>, crate::oci::RangeError> {
    let Some(value) = headers.get(http::header::RANGE) else { return Ok(None) };
    let text = value.to_str().map_err(|_| crate::oci::RangeError::Malformed("non-ASCII".into()))?;
    ByteRange::parse_header(text).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_is_parsed_and_validated() {
        assert_eq!(ns_param(Some("ns=docker.io")).ok().flatten().map(|r| r.to_string()).as_deref(), Some("docker.io"));
        assert_eq!(ns_param(Some("x=1")), Ok(None));
        let encoded = ns_param(Some("ns=127.0.0.200%3A5000")).ok().flatten().map(|r| r.to_string());
        assert_eq!(encoded.as_deref(), Some("127.0.0.200:5000"));
        assert_eq!(ns_param(None), Ok(None));
        assert!(ns_param(Some("ns=bad/host")).is_err());
    }

    #[test]
    fn url_length_counts_what_the_client_sent() {
        let len = |uri: &str| url_len(&uri.parse::<Uri>().unwrap_or_default());
        assert_eq!(len("/v2/"), 4);
        assert_eq!(len("/v2/a/manifests/b?ns=docker.io"), 30);
        assert_eq!(len("http://127.0.0.1:5000/v2/"), 25);
    }
}
