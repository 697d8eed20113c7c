//! The index of what this node holds and advertises: images by name, the
//! blobs they reference that are present, and tags.
//!
//! Owns: the mapping from containerd images to keys, and the key changes
//! that each update causes. Updates walk the store first (async, no lock)
//! and then swap state under a short lock, so readers are never blocked by
//! containerd I/O.
//!
//! Private registries: every blob reachable from an image of a private
//! registry is private, even when a public image references it too, and a
//! tag whose manifest is private is private. Private keys are never among
//! [`ContentIndex::keys`] (so never advertised); readers see the mark on
//! [`IndexedBlob::private`] and must not serve such blobs to peers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use futures::{StreamExt, TryStreamExt};

use super::walk::{WalkedBlob, walk_image};
use super::{ContentStore, Error, ImageRecord};
use crate::oci::{Digest, Key, MediaType, Registry, TagRef};

/// Images walked at once during a full rescan.
const RESCAN_CONCURRENCY: usize = 8;

/// A blob this node can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedBlob {
    pub size: u64,
    /// Set for manifests and indexes.
    pub manifest_type: Option<MediaType>,
    /// Referenced by an image of a private registry: never advertised, and
    /// served to this node's own clients only.
    pub private: bool,
}

/// Keys to advertise and to withdraw after an update.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyChanges {
    pub added: Vec<Key>,
    pub removed: Vec<Key>,
}

impl KeyChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Clone)]
struct ImageEntry {
    tag: Option<TagRef>,
    target: Digest,
    blobs: Vec<WalkedBlob>,
}

/// One indexed image as a plain value: what `state` persists, so a restarted
/// node can serve and advertise before containerd is rescanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedImage {
    pub name: String,
    pub tag: Option<TagRef>,
    pub target: Digest,
    /// Present blobs reachable from the target, the target first if present.
    pub blobs: Vec<WalkedBlob>,
}

impl IndexedImage {
    fn from_entry(name: &str, entry: &ImageEntry) -> Self {
        Self { name: name.to_owned(), tag: entry.tag.clone(), target: entry.target, blobs: entry.blobs.clone() }
    }
}

#[derive(Debug, Default)]
struct State {
    images: HashMap<String, ImageEntry>,
    blobs: HashMap<Digest, IndexedBlob>,
    tags: HashMap<TagRef, Digest>,
}

impl State {
    /// The keys to advertise: everything held that is not private.
    fn keys(&self) -> BTreeSet<Key> {
        let is_public = |digest: &Digest| self.blobs.get(digest).is_some_and(|b| !b.private);
        let digests = self.blobs.keys().filter(|d| is_public(d)).map(|d| Key::Digest(*d));
        let tags = self.tags.iter().filter(|(_, target)| is_public(target)).map(|(t, _)| Key::Tag(t.clone()));
        digests.chain(tags).collect()
    }

    /// Recomputes the blob and tag maps from the images.
    fn rebuild(&mut self, private_registries: &[Registry]) {
        self.blobs.clear();
        self.tags.clear();
        for (name, image) in &self.images {
            let private = image_registry(name).is_some_and(|r| private_registries.contains(&r));
            for blob in &image.blobs {
                let entry = self.blobs.entry(blob.digest).or_insert_with(|| IndexedBlob {
                    size: blob.size,
                    manifest_type: blob.manifest_type.clone(),
                    private: false,
                });
                entry.private |= private;
            }
            if let Some(tag) = &image.tag
                && self.blobs.contains_key(&image.target)
            {
                self.tags.insert(tag.clone(), image.target);
            }
        }
    }
}

/// The registry an image name starts with (`docker.io/library/app:1` is
/// `docker.io`); `None` for names without one, such as image ids.
fn image_registry(name: &str) -> Option<Registry> {
    let (registry, _) = name.split_once('/')?;
    registry.parse().ok()
}

/// What this node holds. Cheap to clone.
#[derive(Clone)]
pub struct ContentIndex {
    store: Arc<dyn ContentStore>,
    /// Registries whose images' content is never shared with peers.
    private_registries: Arc<[Registry]>,
    /// A std lock: held only to read or swap maps, never across `.await`.
    state: Arc<RwLock<State>>,
}

impl ContentIndex {
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Self { store, private_registries: Arc::new([]), state: Arc::default() }
    }

    /// Marks the content of these registries' images private (see the module docs).
    pub fn with_private_registries(mut self, registries: Vec<Registry>) -> Self {
        self.private_registries = registries.into();
        self
    }

    pub fn store(&self) -> &Arc<dyn ContentStore> {
        &self.store
    }

    /// Rebuilds the whole index from the store.
    pub async fn rescan(&self) -> Result<KeyChanges, Error> {
        let records = self.store.images().await?;
        let walked: Vec<Option<(String, ImageEntry)>> = futures::stream::iter(records)
            .map(|record| async move { self.walk(&record).await.map(|entry| entry.map(|e| (record.name, e))) })
            .buffer_unordered(RESCAN_CONCURRENCY)
            .try_collect()
            .await?;
        let images = walked.into_iter().flatten().collect();
        Ok(self.apply(|state| state.images = images))
    }

    /// Re-walks one image after containerd created or updated it.
    pub async fn refresh_image(&self, name: &str) -> Result<KeyChanges, Error> {
        let Some(record) = self.store.image(name).await? else {
            return Ok(self.remove_image(name));
        };
        let entry = self.walk(&record).await?;
        Ok(self.apply(|state| match entry {
            Some(entry) => {
                state.images.insert(record.name, entry);
            }
            None => {
                state.images.remove(name);
            }
        }))
    }

    pub fn remove_image(&self, name: &str) -> KeyChanges {
        self.apply(|state| {
            state.images.remove(name);
        })
    }

    /// Forgets a blob that was deleted from the store.
    pub fn remove_blob(&self, digest: &Digest) -> KeyChanges {
        self.apply(|state| {
            for image in state.images.values_mut() {
                image.blobs.retain(|b| b.digest != *digest);
            }
        })
    }

    async fn walk(&self, record: &ImageRecord) -> Result<Option<ImageEntry>, Error> {
        let tag = match TagRef::from_image_name(&record.name) {
            Ok(tag) => tag,
            Err(e) => {
                tracing::debug!(name = %record.name, error = %e, "image name is not a tag reference");
                None
            }
        };
        let blobs = walk_image(self.store.as_ref(), &record.target).await?;
        Ok((!blobs.is_empty()).then_some(ImageEntry { tag, target: record.target.digest, blobs }))
    }

    /// Applies `change` and reports which keys appeared and disappeared.
    fn apply(&self, change: impl FnOnce(&mut State)) -> KeyChanges {
        let Ok(mut state) = self.state.write() else {
            return KeyChanges::default();
        };
        let before = state.keys();
        change(&mut state);
        state.rebuild(&self.private_registries);
        let after = state.keys();
        KeyChanges {
            added: after.difference(&before).cloned().collect(),
            removed: before.difference(&after).cloned().collect(),
        }
    }

    /// The manifest a tag points at, if held locally.
    pub fn tag(&self, tag: &TagRef) -> Option<(Digest, IndexedBlob)> {
        let state = self.state.read().ok()?;
        let digest = *state.tags.get(tag)?;
        Some((digest, state.blobs.get(&digest)?.clone()))
    }

    pub fn blob(&self, digest: &Digest) -> Option<IndexedBlob> {
        self.state.read().ok()?.blobs.get(digest).cloned()
    }

    /// Replaces the whole index with `images` (persisted from an earlier run).
    /// The next rescan's changes are then relative to what was persisted.
    pub fn restore(&self, images: Vec<IndexedImage>) -> KeyChanges {
        let images = images
            .into_iter()
            .filter(|image| !image.blobs.is_empty())
            .map(|image| (image.name, ImageEntry { tag: image.tag, target: image.target, blobs: image.blobs }))
            .collect();
        self.apply(|state| state.images = images)
    }

    /// Every indexed image, sorted by name.
    pub fn images(&self) -> Vec<IndexedImage> {
        let Ok(state) = self.state.read() else { return Vec::new() };
        let mut images: Vec<IndexedImage> =
            state.images.iter().map(|(name, entry)| IndexedImage::from_entry(name, entry)).collect();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        images
    }

    /// One indexed image by its containerd name.
    pub fn image(&self, name: &str) -> Option<IndexedImage> {
        let state = self.state.read().ok()?;
        state.images.get(name).map(|entry| IndexedImage::from_entry(name, entry))
    }

    /// Every key this node should advertise.
    pub fn keys(&self) -> Vec<Key> {
        self.state.read().map(|s| s.keys().into_iter().collect()).unwrap_or_default()
    }

    pub fn image_count(&self) -> usize {
        self.state.read().map(|s| s.images.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
