//! What this node holds: the containerd content store behind a trait, and the
//! index of images, manifests and blobs built from it.
//!
//! Owns: reading image records and blobs, watching for changes, and walking
//! index → manifests → config and layers. Does not know about the DHT or HTTP.
//! Only `content::containerd` imports containerd or tonic types.

mod containerd;
#[cfg(any(test, feature = "test-util"))]
pub mod contract;
pub mod file_range;
pub mod index;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
mod walk;

use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::oci::{Digest, MediaType, ResolvedRange};

pub use containerd::{ContainerdConfig, ContainerdStore, decode_event_envelope};
pub use index::{ContentIndex, IndexedBlob, IndexedImage, KeyChanges};
pub use walk::{MAX_MANIFEST_SIZE, WalkedBlob};

/// A content descriptor as containerd records it for an image target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub digest: Digest,
    pub media_type: MediaType,
    pub size: u64,
}

/// One containerd image record: its full name and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// The raw containerd name, e.g. `docker.io/library/nginx:1.25` or
    /// `sha256:<config digest>` (CRI adds such digest-only names).
    pub name: String,
    pub target: Descriptor,
}

/// A change in the content store, as the watcher reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentEvent {
    /// (Re)connected and subscribed: everything may have changed, rescan.
    Connected,
    /// The connection was lost; events may be missed until `Connected`.
    Disconnected,
    /// An image was created or updated.
    ImageChanged {
        name: String,
    },
    ImageDeleted {
        name: String,
    },
    ContentDeleted {
        digest: Digest,
    },
}

/// A blob's bytes, streamed in chunks.
pub type BlobStream = BoxStream<'static, io::Result<Bytes>>;

/// The content store's failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blob {0} is not in the content store")]
    NotFound(Digest),
    #[error("containerd is unavailable: {0}")]
    Unavailable(String),
    #[error("containerd request failed: {0}")]
    Request(String),
    #[error("blob {digest} is larger than {limit} bytes")]
    TooLarge { digest: Digest, limit: u64 },
    #[error("i/o error reading content: {0}")]
    Io(#[from] io::Error),
}

/// The I/O boundary to a content store (containerd, or the in-memory fake).
#[async_trait]
pub trait ContentStore: Send + Sync + 'static {
    /// Every image record in the configured namespace.
    async fn images(&self) -> Result<Vec<ImageRecord>, Error>;

    /// One image record by its full name, `None` if it does not exist.
    async fn image(&self, name: &str) -> Result<Option<ImageRecord>, Error>;

    /// The size of a blob, `None` if the store does not hold it.
    async fn size(&self, digest: &Digest) -> Result<Option<u64>, Error>;

    /// Streams `range` of a blob. Fails with `NotFound` if it is absent.
    async fn read(&self, digest: &Digest, range: ResolvedRange) -> Result<BlobStream, Error>;

    /// Watches the store until `events` is closed, sending `Connected` each
    /// time a subscription is (re)established and reconnecting on its own.
    async fn watch(&self, events: mpsc::Sender<ContentEvent>);

    /// Discards the unfinished writes (ingests) of `digest`: the bytes a pull
    /// received for it are known to be bad, and a retry must not resume from
    /// them. Returns how many were discarded.
    async fn discard_ingests(&self, digest: &Digest) -> Result<usize, Error>;

    /// Reads a whole blob of at most `limit` bytes (manifests, configs).
    async fn read_all(&self, digest: &Digest, limit: u64) -> Result<Bytes, Error> {
        let size = self.size(digest).await?.ok_or(Error::NotFound(*digest))?;
        if size > limit {
            return Err(Error::TooLarge { digest: *digest, limit });
        }
        let Some(range) = ResolvedRange::full(size) else {
            return Ok(Bytes::new());
        };
        let chunks: Vec<Bytes> = self.read(digest, range).await?.try_collect().await?;
        Ok(chunks.concat().into())
    }
}
