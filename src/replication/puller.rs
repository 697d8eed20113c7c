//! The node's container runtime, as replication needs it: pull an image
//! through the normal path, and keep pinned images from being collected.
//!
//! A trait because there are two: the CRI/containerd one (`cri`) and the
//! in-memory one tests use.

use std::time::Duration;

use async_trait::async_trait;

use crate::oci::TagRef;

/// Why a pull or a pin failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PullError {
    #[error("the container runtime is unavailable: {0}")]
    Unavailable(String),
    #[error("pulling {image} failed: {reason}")]
    Pull { image: String, reason: String },
    #[error("pulling {image} did not finish within {limit:?}")]
    Timeout { image: String, limit: Duration },
    #[error("pinning failed: {0}")]
    Pin(String),
}

#[async_trait]
pub trait ImagePuller: Send + Sync + 'static {
    /// Has the runtime pull `image` the way the kubelet would, so that its
    /// registry configuration (hosts.toml) sends it to Shoal first and to
    /// the upstream registry last. Returns once the image is present.
    async fn pull(&self, image: &TagRef) -> Result<(), PullError>;

    /// Protects exactly `images` (those present) from garbage collection,
    /// and releases images pinned earlier that are no longer listed.
    async fn pin(&self, images: &[TagRef]) -> Result<(), PullError>;
}
