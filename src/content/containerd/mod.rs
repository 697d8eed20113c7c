//! The containerd implementation of [`ContentStore`].
//!
//! Owns: talking to one containerd daemon over its gRPC socket (images,
//! content Info and Read, events) in one namespace, and reading blobs from its
//! content directory when that is reachable. The only module that imports
//! containerd or tonic types. Does not walk manifests (`content::index` does).

mod client;
mod events;
mod reads;
mod records;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_client::services::v1::{
    AbortRequest, GetImageRequest, InfoRequest, ListImagesRequest, ListStatusesRequest,
};
use tokio::sync::mpsc;

use crate::content::{BlobStream, ContentEvent, ContentStore, Error, ImageRecord};
use crate::oci::{Digest, ResolvedRange};
use client::Client;
pub use events::decode_event_envelope;

/// Where and how to reach containerd.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// The containerd gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace whose images are advertised (`k8s.io` for CRI).
    pub namespace: String,
    /// containerd's content directory (`<root>/io.containerd.content.v1.content`);
    /// when set and readable, blobs are read from disk instead of over gRPC.
    pub content_path: Option<PathBuf>,
}

/// Content store backed by a containerd daemon. Cheap to clone.
///
/// Creating it never touches containerd: the connection is made on first use
/// and remade after containerd restarts. While containerd is down, calls fail
/// fast with [`Error::Unavailable`].
#[derive(Clone)]
pub struct ContainerdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    content_path: Option<PathBuf>,
}

impl ContainerdStore {
    pub fn new(config: ContainerdConfig) -> Self {
        let client = Client::new(&config.socket, config.namespace);
        Self { inner: Arc::new(Inner { client, content_path: config.content_path }) }
    }

    fn client(&self) -> &Client {
        &self.inner.client
    }
}

#[async_trait]
impl ContentStore for ContainerdStore {
    async fn images(&self) -> Result<Vec<ImageRecord>, Error> {
        let request = self.client().request(ListImagesRequest { filters: Vec::new() })?;
        let mut images = self.client().images()?;
        let response = client::call("list images", images.list(request)).await?.unwrap_or_default();
        Ok(response.images.into_iter().filter_map(records::image_record).collect())
    }

    async fn image(&self, name: &str) -> Result<Option<ImageRecord>, Error> {
        let request = self.client().request(GetImageRequest { name: name.to_owned() })?;
        let mut images = self.client().images()?;
        let response = client::call("get image", images.get(request)).await?;
        Ok(response.and_then(|response| response.image).and_then(records::image_record))
    }

    async fn size(&self, digest: &Digest) -> Result<Option<u64>, Error> {
        let request = self.client().request(InfoRequest { digest: digest.to_string() })?;
        let mut content = self.client().content()?;
        let Some(info) = client::call("content info", content.info(request)).await?.and_then(|r| r.info) else {
            return Ok(None);
        };
        let size = u64::try_from(info.size)
            .map_err(|_| Error::Request(format!("containerd reports size {} for {digest}", info.size)))?;
        Ok(Some(size))
    }

    async fn read(&self, digest: &Digest, range: ResolvedRange) -> Result<BlobStream, Error> {
        if let Some(content_path) = &self.inner.content_path
            && let Some(stream) = reads::read_local(content_path, digest, range).await
        {
            return Ok(stream);
        }
        reads::read_remote(self.client(), digest, range).await
    }

    async fn watch(&self, events: mpsc::Sender<ContentEvent>) {
        events::watch(self.client(), events).await;
    }

    async fn discard_ingests(&self, digest: &Digest) -> Result<usize, Error> {
        let request = self.client().request(ListStatusesRequest { filters: Vec::new() })?;
        let mut content = self.client().content()?;
        let statuses = client::call("list ingests", content.list_statuses(request)).await?.unwrap_or_default();
        let (expected, hex) = (digest.to_string(), digest.hex());
        let mut discarded = 0;
        // containerd names a pull's ingests `<kind>-sha256:<hex>` and records the expected digest.
        for status in statuses.statuses.iter().filter(|s| s.expected == expected || s.r#ref.ends_with(&hex)) {
            let request = self.client().request(AbortRequest { r#ref: status.r#ref.clone() })?;
            if client::call("abort ingest", content.abort(request)).await?.is_some() {
                discarded += 1;
            }
        }
        Ok(discarded)
    }
}
