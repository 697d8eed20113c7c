//! The behaviour every [`ContentStore`] must show, as one async function run
//! against the in-memory fake and against a real containerd.
//!
//! Owns: the contract and the [`Seeder`] trait through which it changes the
//! store behind the implementation under test. Test support only: it panics
//! with a message on the first broken promise.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use tokio::sync::mpsc;

use crate::content::{ContentEvent, ContentStore, Descriptor, Error, ImageRecord};
use crate::oci::{Digest, MediaType, ResolvedRange};

/// What a seeder may fail with (test code: any error will do).
pub type SeedError = Box<dyn std::error::Error + Send + Sync>;

/// Changes the content behind a store the way a pull or `ctr` would.
#[async_trait]
pub trait Seeder: Send + Sync {
    /// Stores a blob so that it stays (not garbage collected) until deleted.
    async fn add_blob(&self, data: Bytes) -> Result<Digest, SeedError>;
    /// Creates the image record, or updates it if it exists.
    async fn put_image(&self, name: &str, target: Descriptor) -> Result<(), SeedError>;
    async fn delete_image(&self, name: &str) -> Result<(), SeedError>;
    async fn delete_blob(&self, digest: &Digest) -> Result<(), SeedError>;
    /// Leaves an unfinished write: `prefix` of a blob expected to hash to
    /// `expected`, under ingest reference `reference` (as a pull in progress).
    async fn start_ingest(&self, reference: &str, prefix: Bytes, expected: Digest) -> Result<(), SeedError>;
    /// The references of the unfinished writes.
    async fn ingests(&self) -> Result<Vec<String>, SeedError>;
}

/// Unfinished writes of one digest are discarded; others stay.
async fn discarding_ingests(store: &impl ContentStore, seeder: &impl Seeder) {
    let (bad, other) = (test_bytes(70_000), Bytes::from_static(b"another blob, also half written"));
    let (bad_digest, other_digest) = (Digest::of(&bad), Digest::of(&other));
    let bad_ref = format!("layer-{bad_digest}");
    let other_ref = format!("layer-{other_digest}");
    seeder.start_ingest(&bad_ref, bad.slice(..30_000), bad_digest).await.expect("start an ingest");
    seeder.start_ingest(&other_ref, other.slice(..7), other_digest).await.expect("start another ingest");
    let mut ingests = seeder.ingests().await.expect("list ingests");
    ingests.sort();
    let mut both = vec![bad_ref.clone(), other_ref.clone()];
    both.sort();
    assert_eq!(ingests, both, "both unfinished writes are listed");
    assert_eq!(store.discard_ingests(&bad_digest).await.expect("discard"), 1);
    assert_eq!(seeder.ingests().await.expect("list ingests"), [other_ref], "only the bad digest's ingest goes");
    assert_eq!(store.discard_ingests(&bad_digest).await.expect("discard again"), 0, "nothing left to discard");
    assert_eq!(store.discard_ingests(&other_digest).await.expect("discard the other"), 1);
    assert_eq!(seeder.ingests().await.expect("list ingests"), Vec::<String>::new());
}

/// How long any single expected event may take to arrive.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Large enough for several read chunks (1 MiB each in containerd), odd-sized.
const LAYER_SIZE: usize = 3 * 1024 * 1024 + 12_345;

/// Runs the whole contract: watching, listing, sizes, reads and events.
/// `store` and `seeder` must start out empty (no images in the namespace).
pub async fn content_store_contract(store: &impl ContentStore, seeder: &impl Seeder) {
    let (events_tx, events) = mpsc::channel(64);
    let watch = async {
        store.watch(events_tx).await;
    };
    let scenario = scenario(store, seeder, events);
    // The scenario drops the receiver at its end: the join only finishes if
    // `watch` then returns by itself.
    tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(watch, scenario) })
        .await
        .expect("contract did not finish in time (does watch return once its receiver is dropped?)");
}

async fn scenario(store: &impl ContentStore, seeder: &impl Seeder, mut events: mpsc::Receiver<ContentEvent>) {
    expect_event(&mut events, ContentEvent::Connected).await;
    assert_eq!(store.images().await.expect("list images"), [], "the store must start without images");
    discarding_ingests(store, seeder).await;

    let layer = test_bytes(LAYER_SIZE);
    let layer_digest = seeder.add_blob(layer.clone()).await.expect("seed layer");
    assert_eq!(layer_digest, Digest::of(&layer));
    let manifest = Bytes::from(format!(r#"{{"schemaVersion":2,"layer":"{layer_digest}"}}"#));
    let manifest_digest = seeder.add_blob(manifest.clone()).await.expect("seed manifest");
    let name = "registry.test/contract/app:v1";
    let first = descriptor(manifest_digest, MediaType::OCI_MANIFEST, manifest.len());

    seeder.put_image(name, first.clone()).await.expect("create image");
    expect_event(&mut events, ContentEvent::ImageChanged { name: name.to_owned() }).await;
    let record = ImageRecord { name: name.to_owned(), target: first };
    assert_eq!(store.images().await.expect("list images"), std::slice::from_ref(&record));
    assert_eq!(store.image(name).await.expect("get image"), Some(record));
    assert_eq!(store.image("registry.test/contract/absent:v1").await.expect("get absent image"), None);

    let second = descriptor(layer_digest, MediaType::OCTET_STREAM, layer.len());
    seeder.put_image(name, second.clone()).await.expect("update image");
    expect_event(&mut events, ContentEvent::ImageChanged { name: name.to_owned() }).await;
    let updated = ImageRecord { name: name.to_owned(), target: second };
    assert_eq!(store.image(name).await.expect("get updated image"), Some(updated));

    check_sizes_and_reads(store, &layer, &manifest).await;

    seeder.delete_image(name).await.expect("delete image");
    expect_event(&mut events, ContentEvent::ImageDeleted { name: name.to_owned() }).await;
    assert_eq!(store.images().await.expect("list images"), []);
    assert_eq!(store.image(name).await.expect("get deleted image"), None);

    seeder.delete_blob(&manifest_digest).await.expect("delete blob");
    expect_event(&mut events, ContentEvent::ContentDeleted { digest: manifest_digest }).await;
    assert_eq!(store.size(&manifest_digest).await.expect("size of deleted blob"), None);
    drop(events);
}

async fn check_sizes_and_reads(store: &impl ContentStore, layer: &Bytes, manifest: &Bytes) {
    let layer_digest = Digest::of(layer);
    let absent = Digest::of(b"never written by the contract");
    assert_eq!(store.size(&layer_digest).await.expect("size"), Some(layer.len() as u64));
    assert_eq!(store.size(&Digest::of(manifest)).await.expect("size"), Some(manifest.len() as u64));
    assert_eq!(store.size(&absent).await.expect("size of absent blob"), None);

    let last = layer.len() as u64 - 1;
    let ranges = [(0, last), (0, 0), (last, last), (1_000_000, 2_100_000), (5, last - 5)];
    for (start, end) in ranges {
        let range = ResolvedRange { start, end };
        let read = read(store, &layer_digest, range).await;
        assert!(read == layer[start as usize..=end as usize], "bytes {start}-{end} differ from what was written");
    }
    let whole = store.read_all(&Digest::of(manifest), 1024 * 1024).await.expect("read_all manifest");
    assert_eq!(whole, manifest);
    assert!(matches!(store.read_all(&layer_digest, 1024).await, Err(Error::TooLarge { .. })));

    let missing = store.read(&absent, ResolvedRange { start: 0, end: 0 }).await.err();
    assert!(matches!(missing, Some(Error::NotFound(d)) if d == absent), "absent blob: {missing:?}");
}

async fn read(store: &impl ContentStore, digest: &Digest, range: ResolvedRange) -> Vec<u8> {
    let stream = store.read(digest, range).await.expect("open blob");
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("read blob");
    chunks.concat()
}

async fn expect_event(events: &mut mpsc::Receiver<ContentEvent>, expected: ContentEvent) {
    let received = tokio::time::timeout(EVENT_TIMEOUT, events.recv()).await;
    let received = received.unwrap_or_else(|_| panic!("no event within {EVENT_TIMEOUT:?}, expected {expected:?}"));
    assert_eq!(received, Some(expected), "unexpected watch event");
}

fn descriptor(digest: Digest, media_type: &'static str, size: usize) -> Descriptor {
    Descriptor { digest, media_type: MediaType::from_static(media_type), size: size as u64 }
}

/// Bytes that differ between runs (so blobs from earlier runs never collide)
/// and within a blob (so misplaced ranges are caught).
pub fn test_bytes(len: usize) -> Bytes {
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64: fast and good enough to make every offset distinct in practice.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}
