//! An in-memory [`ContentStore`] for tests: blobs, image records and the
//! events containerd would send for them.
//!
//! Owns: a fake that behaves like containerd as seen through the trait,
//! including a simulated restart (`disconnect`/`reconnect`). Not for
//! production: everything lives in memory and nothing is verified.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use tokio::sync::{broadcast, mpsc};

use crate::content::contract::{SeedError, Seeder};
use crate::content::{BlobStream, ContentEvent, ContentStore, Descriptor, Error, ImageRecord};
use crate::oci::{Digest, ResolvedRange};

/// Read chunk size: small, so readers see several chunks.
const CHUNK_SIZE: usize = 64 * 1024;
/// Events a slow watcher may fall behind by before it is told to rescan.
const EVENT_BACKLOG: usize = 1024;

/// The fake store. Clones share the same contents.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// A std mutex: it is never held across an `.await`.
    state: Mutex<State>,
    /// Events go out while `state` is locked, so every watcher sees them in
    /// the order the changes were made.
    events: broadcast::Sender<ContentEvent>,
}

#[derive(Default)]
struct State {
    blobs: HashMap<Digest, Bytes>,
    images: BTreeMap<String, Descriptor>,
    /// Unfinished writes: ingest reference → the digest they are expected to have.
    ingests: BTreeMap<String, Digest>,
    disconnected: bool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty, connected store.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        Self { inner: Arc::new(Inner { state: Mutex::new(State::default()), events }) }
    }

    /// Records an unfinished write of a blob expected to hash to `expected`,
    /// as a pull in progress leaves one.
    pub fn start_ingest(&self, reference: &str, expected: Digest) {
        self.state().ingests.insert(reference.to_owned(), expected);
    }

    /// The references of the unfinished writes.
    pub fn ingests(&self) -> Vec<String> {
        self.state().ingests.keys().cloned().collect()
    }

    /// Stores a blob (no event, as containerd sends none) and returns its digest.
    pub fn add_blob(&self, data: impl Into<Bytes>) -> Digest {
        let data = data.into();
        let digest = Digest::of(&data);
        self.state().blobs.insert(digest, data);
        digest
    }

    /// Creates or updates an image record; watchers see `ImageChanged`.
    pub fn put_image(&self, name: &str, target: Descriptor) {
        let mut state = self.state();
        state.images.insert(name.to_owned(), target);
        self.emit(&state, ContentEvent::ImageChanged { name: name.to_owned() });
    }

    /// Deletes an image record; watchers see `ImageDeleted` if it existed.
    pub fn delete_image(&self, name: &str) -> bool {
        let mut state = self.state();
        let existed = state.images.remove(name).is_some();
        if existed {
            self.emit(&state, ContentEvent::ImageDeleted { name: name.to_owned() });
        }
        existed
    }

    /// Deletes a blob; watchers see `ContentDeleted` if it existed.
    pub fn delete_blob(&self, digest: &Digest) -> bool {
        let mut state = self.state();
        let existed = state.blobs.remove(digest).is_some();
        if existed {
            self.emit(&state, ContentEvent::ContentDeleted { digest: *digest });
        }
        existed
    }

    /// Simulates containerd going down: watchers see `Disconnected`, calls
    /// fail with `Unavailable`, and changes made meanwhile send no events.
    pub fn disconnect(&self) {
        let mut state = self.state();
        if !state.disconnected {
            let _ = self.inner.events.send(ContentEvent::Disconnected);
            state.disconnected = true;
        }
    }

    /// Simulates containerd coming back: watchers see `Connected` and rescan.
    pub fn reconnect(&self) {
        let mut state = self.state();
        if state.disconnected {
            state.disconnected = false;
            let _ = self.inner.events.send(ContentEvent::Connected);
        }
    }

    /// The number of watchers currently subscribed.
    pub fn watchers(&self) -> usize {
        self.inner.events.receiver_count()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `event` to watchers unless disconnected. Takes the guard to prove
    /// the lock is held.
    fn emit(&self, state: &State, event: ContentEvent) {
        if !state.disconnected {
            // No receivers is fine: nobody is watching.
            let _ = self.inner.events.send(event);
        }
    }

    /// The state, or `Unavailable` while disconnected.
    fn connected_state(&self) -> Result<MutexGuard<'_, State>, Error> {
        let state = self.state();
        if state.disconnected {
            return Err(Error::Unavailable("memory store is disconnected".to_owned()));
        }
        Ok(state)
    }
}

#[async_trait]
impl ContentStore for MemoryStore {
    async fn images(&self) -> Result<Vec<ImageRecord>, Error> {
        let state = self.connected_state()?;
        let records =
            state.images.iter().map(|(name, target)| ImageRecord { name: name.clone(), target: target.clone() });
        Ok(records.collect())
    }

    async fn image(&self, name: &str) -> Result<Option<ImageRecord>, Error> {
        let state = self.connected_state()?;
        Ok(state.images.get(name).map(|target| ImageRecord { name: name.to_owned(), target: target.clone() }))
    }

    async fn size(&self, digest: &Digest) -> Result<Option<u64>, Error> {
        Ok(self.connected_state()?.blobs.get(digest).map(|blob| blob.len() as u64))
    }

    async fn read(&self, digest: &Digest, range: ResolvedRange) -> Result<BlobStream, Error> {
        let blob = self.connected_state()?.blobs.get(digest).cloned().ok_or(Error::NotFound(*digest))?;
        Ok(chunked_range(&blob, range))
    }

    async fn discard_ingests(&self, digest: &Digest) -> Result<usize, Error> {
        let mut state = self.connected_state()?;
        let before = state.ingests.len();
        state.ingests.retain(|_, expected| expected != digest);
        Ok(before - state.ingests.len())
    }

    async fn watch(&self, events: mpsc::Sender<ContentEvent>) {
        let (mut subscription, connected) = {
            let state = self.state();
            (self.inner.events.subscribe(), !state.disconnected)
        };
        if connected && events.send(ContentEvent::Connected).await.is_err() {
            return;
        }
        loop {
            let event = tokio::select! {
                received = subscription.recv() => received,
                () = events.closed() => return,
            };
            let forwarded = match event {
                Ok(event) => events.send(event).await,
                Err(broadcast::error::RecvError::Lagged(_)) => self.restart_lagging_watcher(&events).await,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if forwarded.is_err() {
                return;
            }
        }
    }
}

impl MemoryStore {
    /// A watcher missed events: tell it to start over, as a reconnect would.
    /// (If the store is disconnected, `reconnect` will send `Connected`.)
    async fn restart_lagging_watcher(
        &self,
        events: &mpsc::Sender<ContentEvent>,
    ) -> Result<(), mpsc::error::SendError<ContentEvent>> {
        events.send(ContentEvent::Disconnected).await?;
        let connected = !self.state().disconnected;
        if connected {
            events.send(ContentEvent::Connected).await?;
        }
        Ok(())
    }
}

/// The bytes of `range` in `CHUNK_SIZE` slices; a range past the end of the
/// blob yields what exists, then `UnexpectedEof`, like a truncated file.
fn chunked_range(blob: &Bytes, range: ResolvedRange) -> BlobStream {
    let len = blob.len() as u64;
    let end = range.end.saturating_add(1).min(len);
    let start = range.start.min(end);
    let available = blob.slice(start as usize..end as usize);
    let mut items: Vec<io::Result<Bytes>> = (0..available.len())
        .step_by(CHUNK_SIZE)
        .map(|at| Ok(available.slice(at..(at + CHUNK_SIZE).min(available.len()))))
        .collect();
    if end - start < range.len() {
        let message = format!("blob has {len} bytes, range ends at {}", range.end);
        items.push(Err(io::Error::new(io::ErrorKind::UnexpectedEof, message)));
    }
    stream::iter(items).boxed()
}

#[async_trait]
impl Seeder for MemoryStore {
    async fn add_blob(&self, data: Bytes) -> Result<Digest, SeedError> {
        Ok(MemoryStore::add_blob(self, data))
    }

    async fn put_image(&self, name: &str, target: Descriptor) -> Result<(), SeedError> {
        MemoryStore::put_image(self, name, target);
        Ok(())
    }

    async fn delete_image(&self, name: &str) -> Result<(), SeedError> {
        MemoryStore::delete_image(self, name);
        Ok(())
    }

    async fn start_ingest(&self, reference: &str, _prefix: Bytes, expected: Digest) -> Result<(), SeedError> {
        MemoryStore::start_ingest(self, reference, expected);
        Ok(())
    }

    async fn ingests(&self) -> Result<Vec<String>, SeedError> {
        Ok(MemoryStore::ingests(self))
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), SeedError> {
        MemoryStore::delete_blob(self, digest);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
