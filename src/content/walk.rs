//! Walks an image from its target: index → manifests → config and layers.
//!
//! Only what the content store actually holds is reported: a multi-arch
//! index usually has one platform's manifests locally, and layers may be
//! missing. Nothing here takes locks; the index applies the result.

use std::collections::HashSet;

use oci_spec::image::{Descriptor as OciDescriptor, ImageIndex, ImageManifest};

use super::{ContentStore, Descriptor, Error};
use crate::oci::{Digest, MediaType};

/// Largest manifest or index Shoal reads (the distribution default limit).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Bound on blobs visited for one image, so a hostile index cannot run away.
const MAX_BLOBS_PER_IMAGE: usize = 10_000;

/// A blob found by the walk, present in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedBlob {
    pub digest: Digest,
    pub size: u64,
    /// Set for manifests and indexes: what they are served as.
    pub manifest_type: Option<MediaType>,
}

/// Every present blob reachable from `target`, the target first if present.
pub async fn walk_image(store: &dyn ContentStore, target: &Descriptor) -> Result<Vec<WalkedBlob>, Error> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut pending = vec![target.clone()];
    while let Some(desc) = pending.pop() {
        if !seen.insert(desc.digest) || seen.len() > MAX_BLOBS_PER_IMAGE {
            continue;
        }
        let Some(size) = store.size(&desc.digest).await? else {
            continue;
        };
        let manifest_type = desc.media_type.is_manifest().then(|| desc.media_type.clone());
        if manifest_type.is_some() {
            match children(store, &desc).await {
                Ok(mut more) => {
                    more.reverse(); // keep document order when popping
                    pending.extend(more);
                }
                Err(WalkError::Store(e)) => return Err(e),
                Err(WalkError::Parse(reason)) => {
                    tracing::warn!(digest = %desc.digest, %reason, "skipping unreadable manifest");
                    continue;
                }
            }
        }
        found.push(WalkedBlob { digest: desc.digest, size, manifest_type });
    }
    Ok(found)
}

enum WalkError {
    Store(Error),
    Parse(String),
}

/// The descriptors a manifest or index names.
async fn children(store: &dyn ContentStore, desc: &Descriptor) -> Result<Vec<Descriptor>, WalkError> {
    let bytes = store.read_all(&desc.digest, MAX_MANIFEST_SIZE).await.map_err(|e| match e {
        Error::TooLarge { .. } => WalkError::Parse(e.to_string()),
        other => WalkError::Store(other),
    })?;
    let described: Vec<OciDescriptor> = if desc.media_type.is_index() {
        let index = ImageIndex::from_reader(&bytes[..]).map_err(|e| WalkError::Parse(e.to_string()))?;
        index.manifests().clone()
    } else {
        let manifest = ImageManifest::from_reader(&bytes[..]).map_err(|e| WalkError::Parse(e.to_string()))?;
        std::iter::once(manifest.config().clone()).chain(manifest.layers().iter().cloned()).collect()
    };
    Ok(described.iter().filter_map(convert).collect())
}

/// Converts an oci-spec descriptor, dropping ones with digests Shoal does not serve.
fn convert(desc: &OciDescriptor) -> Option<Descriptor> {
    let digest = desc.digest().to_string().parse().ok()?;
    let media_type =
        MediaType::parse(desc.media_type().as_ref()).unwrap_or_else(|| MediaType::from_static(MediaType::OCTET_STREAM));
    Some(Descriptor { digest, media_type, size: desc.size() })
}
