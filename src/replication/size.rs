//! How big an image this node holds is: the manifest (or index and the
//! manifests under it that are present), its config and its layers, as the
//! descriptors state them. Used to price popular images against the
//! replication budget; an estimate, never a reason to fail.

use crate::content::{ContentIndex, MAX_MANIFEST_SIZE};
use crate::oci::{Digest, TagRef};

/// Index → manifest is the only nesting images use.
const MAX_DEPTH: usize = 2;

/// The bytes of `tag`'s image as held here; `None` if it is not held or its
/// manifests cannot be read.
pub async fn image_size(index: &ContentIndex, tag: &TagRef) -> Option<u64> {
    let (digest, _) = index.tag(tag)?;
    manifest_size(index, digest, 0).await
}

async fn manifest_size(index: &ContentIndex, digest: Digest, depth: usize) -> Option<u64> {
    let own = index.blob(&digest)?.size;
    let bytes = index.store().read_all(&digest, MAX_MANIFEST_SIZE).await.ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if let Some(children) = json.get("manifests").and_then(|m| m.as_array()) {
        if depth >= MAX_DEPTH {
            return Some(own);
        }
        let mut total = own;
        for child in children.iter().filter_map(descriptor_digest) {
            if index.blob(&child).is_some() {
                total = total.saturating_add(Box::pin(manifest_size(index, child, depth + 1)).await.unwrap_or(0));
            }
        }
        return Some(total);
    }
    let config = json.get("config").and_then(descriptor_size).unwrap_or(0);
    let layers: u64 =
        json.get("layers").and_then(|l| l.as_array()).map_or(0, |l| l.iter().filter_map(descriptor_size).sum());
    Some(own.saturating_add(config).saturating_add(layers))
}

fn descriptor_size(descriptor: &serde_json::Value) -> Option<u64> {
    descriptor.get("size")?.as_u64()
}

fn descriptor_digest(descriptor: &serde_json::Value) -> Option<Digest> {
    descriptor.get("digest")?.as_str()?.parse().ok()
}
