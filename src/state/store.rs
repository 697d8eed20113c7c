//! The state file itself: opening it with every page verified, the schema
//! check, reading tables whole, and setting an unusable file aside.
//!
//! Owns: the redb `Database` settings. Knows nothing of what the values mean
//! beyond the schema version.

use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageError, TableDefinition,
};

use super::Error;
use super::records::{IMAGES, Invalid, META, PEERS, SCHEMA_KEY, SCHEMA_VERSION, decode_u64};

/// The state file's name inside `--data-dir`.
pub const STATE_FILE: &str = "state.redb";
/// Page cache for the state. The state is read whole once, at start, and
/// then only written (when images or peers change), so a cache buys little;
/// whatever it holds stays resident (8 MiB kept 3.1 MiB of pages at idle
/// with 10,000 keys).
const CACHE_BYTES: usize = 1 << 20;

/// Whether the file was just created or written by an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Opened {
    Fresh,
    Existing,
}

pub(super) fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Where an unusable file is moved: `state.redb.corrupt`.
pub(super) fn aside_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".corrupt");
    path.with_file_name(name)
}

/// Opens (or creates) the database at `path`, verifying the checksum of
/// every page: a file changed behind redb's back is an error, not a panic.
pub(super) fn open(path: &Path) -> Result<Database, Error> {
    let opened = Database::builder().set_cache_size(CACHE_BYTES).set_check_integrity_on_open(true).create(path);
    opened.map_err(|error| match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            Error::InUse { path: path.to_path_buf() }
        }
        DatabaseError::Storage(StorageError::Io(source)) => Error::Io { path: path.to_path_buf(), source },
        other => Error::Corrupt(other.to_string()),
    })
}

/// Checks the schema version, writing it into a fresh file.
pub(super) fn check_schema(db: &Database) -> Result<Opened, Error> {
    let txn = db.begin_write()?;
    let opened = {
        let mut meta = txn.open_table(META)?;
        let found = meta.get(SCHEMA_KEY)?.map(|v| decode_u64(SCHEMA_KEY, v.value())).transpose()?;
        match found {
            Some(version) if version == u64::from(SCHEMA_VERSION) => Opened::Existing,
            Some(found) => return Err(Error::Incompatible { found }),
            None => {
                let peers = txn.open_table(PEERS)?;
                let images = txn.open_table(IMAGES)?;
                if !peers.is_empty()? || !images.is_empty()? {
                    return Err(Error::Corrupt("data without a schema version".into()));
                }
                meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())?;
                Opened::Fresh
            }
        }
    };
    txn.commit()?;
    Ok(opened)
}

/// Reads a whole table, decoding every value; the first bad value fails it.
pub(super) fn read_all<T>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    mut decode: impl FnMut(&str, &[u8]) -> Result<T, Invalid>,
) -> Result<Vec<T>, Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(table)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        out.push(decode(key.value(), value.value())?);
    }
    Ok(out)
}

/// Reads one value of the meta table.
pub(super) fn read_meta(db: &Database, key: &str) -> Result<Option<Vec<u8>>, Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    Ok(meta.get(key)?.map(|v| v.value().to_vec()))
}

/// Moves the file at `path` to [`aside_path`], replacing an earlier one; if
/// it cannot be moved, deletes it.
pub(super) fn set_aside(path: &Path, why: &Error) -> Result<(), Error> {
    let aside = aside_path(path);
    tracing::warn!(path = %path.display(), aside = %aside.display(), reason = %why,
        "the state file cannot be used; setting it aside and rebuilding the state from containerd");
    if let Err(error) = std::fs::rename(path, &aside) {
        tracing::warn!(%error, "cannot move the state file aside; deleting it");
        std::fs::remove_file(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    }
    Ok(())
}
