//! The node's libp2p key in the state file, so its PeerId is stable across
//! restarts.
//!
//! Owns: reading the key, creating it on first use, and migrating the
//! `identity.key` file that earlier versions wrote (imported in the same
//! transaction that stores it, then deleted). The state file wins over a
//! leftover `identity.key`.

use std::path::Path;

use redb::Database;

use super::Error;
use super::records::{IDENTITY_KEY, META};
use super::store::read_meta;
use crate::routing::p2p::Identity;

/// The file earlier versions kept the key in.
pub(super) const LEGACY_IDENTITY_FILE: &str = "identity.key";

/// The stored identity, else the legacy file's, else a new one; stored.
pub(super) fn load_or_create(db: &Database, dir: &Path) -> Result<Identity, Error> {
    let legacy = dir.join(LEGACY_IDENTITY_FILE);
    if let Some(bytes) = read_meta(db, IDENTITY_KEY)? {
        let identity = Identity::from_bytes(&bytes).map_err(|e| Error::Corrupt(format!("stored identity: {e}")))?;
        remove_legacy(&legacy);
        return Ok(identity);
    }
    let identity = read_legacy(&legacy).unwrap_or_else(Identity::generate);
    let bytes = identity.to_bytes().map_err(Error::Identity)?;
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert(IDENTITY_KEY, bytes.as_slice())?;
    txn.commit()?;
    remove_legacy(&legacy);
    Ok(identity)
}

fn read_legacy(path: &Path) -> Option<Identity> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the old identity file; making a new identity");
            return None;
        }
    };
    match Identity::from_bytes(&bytes) {
        Ok(identity) => {
            tracing::info!(path = %path.display(), name = %identity.name(), "moving the node identity into the state file");
            Some(identity)
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "the old identity file is unreadable; making a new identity");
            None
        }
    }
}

fn remove_legacy(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed the migrated identity file"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "cannot remove the migrated identity file"),
    }
}
