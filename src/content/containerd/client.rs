//! The gRPC connection to containerd.
//!
//! Owns: the lazily created tonic channel over the unix socket, the namespace
//! header, per-call timeouts and the mapping of gRPC statuses to
//! [`content::Error`](crate::content::Error). Does not interpret responses.
//!
//! The channel connects on first use and reconnects by itself after the
//! connection breaks (containerd restarted): a call while containerd is down
//! fails at once with `Unavailable` and the next call tries again. Unix socket
//! connects either succeed or fail immediately, so the bound that matters is
//! the per-call timeout, which also covers a daemon that accepts but hangs.

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::content::Error;

/// Bound on one unary call, or on the start of a streaming call (until the
/// response headers). Streams themselves are not bounded: a blob read or an
/// event subscription may legitimately last long.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The gRPC header containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// A lazily connecting client for one containerd socket and namespace.
pub(super) struct Client {
    endpoint: Result<Endpoint, String>,
    namespace: String,
    /// Created on first use: building a channel spawns its worker task, which
    /// needs a runtime, and `ContainerdStore::new` must work without one. The
    /// channel then lives on the runtime that first used it.
    channel: OnceLock<Channel>,
}

impl Client {
    pub(super) fn new(socket: &Path, namespace: String) -> Self {
        let endpoint = Endpoint::from_shared(format!("unix://{}", socket.display()))
            .map_err(|error| format!("bad containerd socket path {}: {error}", socket.display()));
        Self { endpoint, namespace, channel: OnceLock::new() }
    }

    pub(super) fn namespace(&self) -> &str {
        &self.namespace
    }

    fn channel(&self) -> Result<Channel, Error> {
        let endpoint = self.endpoint.as_ref().map_err(|error| Error::Unavailable(error.clone()))?;
        Ok(self.channel.get_or_init(|| endpoint.connect_lazy()).clone())
    }

    pub(super) fn images(&self) -> Result<ImagesClient<Channel>, Error> {
        Ok(ImagesClient::new(self.channel()?))
    }

    pub(super) fn content(&self) -> Result<ContentClient<Channel>, Error> {
        Ok(ContentClient::new(self.channel()?))
    }

    pub(super) fn events(&self) -> Result<EventsClient<Channel>, Error> {
        Ok(EventsClient::new(self.channel()?))
    }

    /// Wraps `message` in a request carrying the namespace header.
    pub(super) fn request<T>(&self, message: T) -> Result<Request<T>, Error> {
        let namespace = MetadataValue::try_from(self.namespace.as_str())
            .map_err(|_| Error::Request(format!("invalid containerd namespace {:?}", self.namespace)))?;
        let mut request = Request::new(message);
        request.metadata_mut().insert(NAMESPACE_HEADER, namespace);
        Ok(request)
    }
}

/// Awaits one call with [`CALL_TIMEOUT`]. `Ok(None)` means containerd
/// answered NotFound; other statuses become errors.
pub(super) async fn call<T>(
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<Option<T>, Error> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_elapsed) => Err(Error::Unavailable(format!("{what}: no answer within {CALL_TIMEOUT:?}"))),
        Ok(Ok(response)) => Ok(Some(response.into_inner())),
        Ok(Err(status)) if status.code() == Code::NotFound => Ok(None),
        Ok(Err(status)) => Err(status_error(what, &status)),
    }
}

/// Maps a failed call to our error: connection trouble is `Unavailable`,
/// anything else a failed request.
pub(super) fn status_error(what: &str, status: &Status) -> Error {
    let message = format!("{what}: {}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => Error::Unavailable(message),
        _ => Error::Request(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_unavailable() {
        let error = status_error("list images", &Status::unavailable("connection refused"));
        assert!(matches!(error, Error::Unavailable(m) if m.contains("list images") && m.contains("refused")));
        assert!(matches!(status_error("x", &Status::internal("boom")), Error::Request(_)));
    }

    #[test]
    fn requests_carry_the_namespace_header() {
        let client = Client::new(Path::new("/nonexistent.sock"), "k8s.io".to_owned());
        let header = client.request(()).ok().and_then(|r| r.metadata().get(NAMESPACE_HEADER).cloned());
        assert_eq!(header.as_ref().map(|v| v.to_str().ok()), Some(Some("k8s.io")));
    }

    #[test]
    fn rejects_a_namespace_that_is_not_a_header_value() {
        let client = Client::new(Path::new("/nonexistent.sock"), "bad\nname".to_owned());
        assert!(matches!(client.request(()), Err(Error::Request(_))));
    }
}
