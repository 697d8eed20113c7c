//! containerd implementation of `ContentStore` (in progress).

use std::path::PathBuf;

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

/// Content store backed by a containerd daemon.
pub struct ContainerdStore {
    #[allow(dead_code)]
    config: ContainerdConfig,
}
