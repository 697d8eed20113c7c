//! Persistent node state in `--data-dir`, in one redb file (`state.redb`):
//! the node's libp2p key, the peers it knew (addresses, reliability and
//! speed), and the images it indexes and therefore advertises.
//!
//! Owns: opening the file at start-up and reading it whole, and the writes
//! that keep it current (one transaction per applied change, durable when
//! the call returns). A restarted node uses what was read to recover at once
//! (see `docs/ARCHITECTURE.md`, "Start-up, recovery and shutdown").
//!
//! Never refuses to start because of the file: a corrupt or incompatible file
//! is set aside with a warning and the state is rebuilt from containerd; if
//! no file can be written at all, the node runs without persistence. Without
//! a data directory the node runs cold. Does not decide what to advertise or
//! whom to dial: it only stores and returns what callers give it.

mod identity;
mod records;
mod store;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::Database;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::content::IndexedImage;
use crate::metrics::Metrics;
use crate::routing::p2p::Identity;
use records::{IMAGES, META, PEERS, PEERS_SAVED_AT_KEY, decode_image, decode_peer, decode_u64};
pub use records::{Invalid, PeerRecord};
pub use store::STATE_FILE;

/// The state's failures. Only [`Error::InUse`] and [`Error::Dir`] stop a
/// node from starting; the rest are handled by setting the file aside.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot use data directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("{path} is in use by another process (is another shoal running with this --data-dir?)")]
    InUse { path: PathBuf },
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the state file is corrupt: {0}")]
    Corrupt(String),
    #[error("the state file has schema version {found}; this shoal uses {}", records::SCHEMA_VERSION)]
    Incompatible { found: u64 },
    #[error("a stored value is invalid: {0}")]
    Invalid(#[from] Invalid),
    #[error("state store: {0}")]
    Store(#[from] redb::Error),
    #[error("cannot encode the node identity: {0}")]
    Identity(crate::routing::p2p::Error),
    #[error("the state writer stopped: {0}")]
    Writer(String),
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(error: $ty) -> Self {
                Self::Store(error.into())
            }
        }
    )*};
}
from_redb!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// How this run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// No data directory: nothing persists.
    Cold,
    /// A new state file (first start, or the directory was empty).
    Fresh,
    /// The old file was unusable and set aside; a new one was made.
    Rebuilt,
    /// State from an earlier run was read: the node recovers from it.
    Recovered,
}

impl StartMode {
    /// The `mode` label of `shoal_state_start_mode` (one of `metrics::START_MODES`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cold => "cold",
            Self::Fresh => "fresh",
            Self::Rebuilt => "rebuilt",
            Self::Recovered => "recovered",
        }
    }
}

/// What an earlier run left behind.
#[derive(Debug)]
pub struct Loaded {
    pub identity: Identity,
    pub peers: Vec<PeerRecord>,
    /// How long ago the peers were saved (zero if unknown).
    pub peers_age: Duration,
    pub images: Vec<IndexedImage>,
    pub mode: StartMode,
}

/// A change to the persisted image index, written in one transaction.
#[derive(Debug, Clone)]
pub enum ImageUpdate {
    /// An image was indexed or re-indexed.
    Put(IndexedImage),
    /// An image is gone.
    Remove(String),
    /// The whole index after a rescan: images not listed are removed.
    Replace(Vec<IndexedImage>),
}

/// Handle to the state file; a no-op when the node runs without one. Cheap to clone.
#[derive(Clone)]
pub struct State {
    db: Option<Arc<Database>>,
    /// Writes block on fsync, so they run on the blocking pool, tracked for the drain.
    tracker: TaskTracker,
    metrics: Metrics,
}

impl State {
    /// Opens the state in `data_dir` and reads it whole. See the module
    /// documentation for what happens to an unusable file.
    pub fn open(data_dir: Option<&Path>, tracker: &TaskTracker, metrics: &Metrics) -> Result<(Self, Loaded), Error> {
        let (db, loaded) = match data_dir {
            None => (None, cold()),
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| Error::Dir { path: dir.to_path_buf(), source })?;
                match open_dir(dir) {
                    Ok((db, loaded)) => (Some(Arc::new(db)), loaded),
                    Err(error @ Error::InUse { .. }) => return Err(error),
                    Err(error) => {
                        tracing::warn!(%error, "cannot keep state in the data directory; running without persistence");
                        (None, cold())
                    }
                }
            }
        };
        metrics.set_state_start(loaded.mode.as_str());
        tracing::info!(mode = loaded.mode.as_str(), name = %loaded.identity.name(), peers = loaded.peers.len(),
            images = loaded.images.len(), "state loaded");
        Ok((Self { db, tracker: tracker.clone(), metrics: metrics.clone() }, loaded))
    }

    /// A state that persists nothing (for nodes and tests without a data directory).
    pub fn disabled(metrics: &Metrics) -> Self {
        Self { db: None, tracker: TaskTracker::new(), metrics: metrics.clone() }
    }

    pub fn is_persistent(&self) -> bool {
        self.db.is_some()
    }

    /// Applies one change to the persisted image index, durably.
    pub async fn update_images(&self, update: ImageUpdate) -> Result<(), Error> {
        self.write(move |db| write_images(db, &update)).await
    }

    /// Replaces the stored peers, durably, noting when they were saved.
    pub async fn save_peers(&self, peers: Vec<PeerRecord>) -> Result<(), Error> {
        let count = peers.len();
        self.write(move |db| write_peers(db, &peers)).await?;
        self.metrics.set_saved_peers(count);
        Ok(())
    }

    async fn write(&self, write: impl FnOnce(&Database) -> Result<(), Error> + Send + 'static) -> Result<(), Error> {
        let Some(db) = self.db.clone() else { return Ok(()) };
        let started = Instant::now();
        let result = match self.tracker.spawn_blocking(move || write(&db)).await {
            Ok(result) => result,
            Err(error) => Err(Error::Writer(error.to_string())),
        };
        match &result {
            Ok(()) => self.metrics.observe_state_write(started.elapsed()),
            Err(error) => {
                self.metrics.state_write_failed();
                tracing::warn!(%error, "cannot write the state file; it is rewritten at the next rescan");
            }
        }
        result
    }
}

fn cold() -> Loaded {
    Loaded {
        identity: Identity::generate(),
        peers: Vec::new(),
        peers_age: Duration::ZERO,
        images: Vec::new(),
        mode: StartMode::Cold,
    }
}

/// Opens the file in `dir`; an unusable one is set aside and replaced once.
fn open_dir(dir: &Path) -> Result<(Database, Loaded), Error> {
    let path = store::state_path(dir);
    match load(&path, dir) {
        Ok(found) => Ok(found),
        Err(error @ Error::InUse { .. }) => Err(error),
        Err(error) => {
            store::set_aside(&path, &error)?;
            let (db, mut loaded) = load(&path, dir)?;
            loaded.mode = StartMode::Rebuilt;
            Ok((db, loaded))
        }
    }
}

fn load(path: &Path, dir: &Path) -> Result<(Database, Loaded), Error> {
    let db = store::open(path)?;
    let opened = store::check_schema(&db)?;
    let identity = identity::load_or_create(&db, dir)?;
    let peers = store::read_all(&db, PEERS, decode_peer)?;
    let images = store::read_all(&db, IMAGES, decode_image)?;
    let saved_at =
        store::read_meta(&db, PEERS_SAVED_AT_KEY)?.map(|v| decode_u64(PEERS_SAVED_AT_KEY, &v)).transpose()?;
    let peers_age = saved_at.map_or(Duration::ZERO, |ms| unix_now().saturating_sub(Duration::from_millis(ms)));
    let mode = match opened {
        store::Opened::Fresh => StartMode::Fresh,
        store::Opened::Existing => StartMode::Recovered,
    };
    Ok((db, Loaded { identity, peers, peers_age, images, mode }))
}

fn write_images(db: &Database, update: &ImageUpdate) -> Result<(), Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(IMAGES)?;
        match update {
            ImageUpdate::Put(image) => {
                table.insert(image.name.as_str(), records::encode_image(image)?.as_slice())?;
            }
            ImageUpdate::Remove(name) => {
                table.remove(name.as_str())?;
            }
            ImageUpdate::Replace(images) => {
                let keep: std::collections::HashSet<&str> = images.iter().map(|i| i.name.as_str()).collect();
                table.retain(|name, _| keep.contains(name))?;
                for image in images {
                    table.insert(image.name.as_str(), records::encode_image(image)?.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn write_peers(db: &Database, peers: &[PeerRecord]) -> Result<(), Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(PEERS)?;
        table.retain(|_, _| false)?;
        for peer in peers {
            table.insert(peer.name.as_str(), records::encode_peer(peer)?.as_slice())?;
        }
        let saved_at = unix_now().as_millis().to_string();
        txn.open_table(META)?.insert(PEERS_SAVED_AT_KEY, saved_at.as_bytes())?;
    }
    txn.commit()?;
    Ok(())
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}
