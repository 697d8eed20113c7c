//! Persistent node state in `--data-dir`: the node's identity, so its
//! PeerId is stable across restarts.
//!
//! Owns: the files under the data directory. A missing or unreadable state
//! never stops the node: a corrupt identity is moved aside with a warning
//! and a new one is made.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::routing::p2p::Identity;

const IDENTITY_FILE: &str = "identity.key";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot use data directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode the node identity: {0}")]
    Encode(String),
}

/// The node identity stored in `data_dir`, created on first use. Without a
/// data directory the node gets a fresh identity each start.
pub fn load_or_create_identity(data_dir: Option<&Path>) -> Result<Identity, Error> {
    let Some(dir) = data_dir else {
        return Ok(Identity::generate());
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::Dir { path: dir.to_path_buf(), source })?;
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => match Identity::from_bytes(&bytes) {
            Ok(identity) => return Ok(identity),
            Err(error) => {
                let aside = path.with_extension("corrupt");
                tracing::warn!(path = %path.display(), %error, aside = %aside.display(), "node identity is unreadable; moving it aside and making a new one");
                if let Err(error) = std::fs::rename(&path, &aside) {
                    tracing::warn!(%error, "cannot move the unreadable identity aside");
                }
            }
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "cannot read the node identity; making a new one"),
    }
    let identity = Identity::generate();
    let bytes = identity.to_bytes().map_err(|e| Error::Encode(e.to_string()))?;
    write_atomic(&path, &bytes)?;
    Ok(identity)
}

/// Writes through a temporary file and a rename, so a crash leaves either
/// the old file or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let write_error = |source| Error::Write { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
    file.write_all(bytes).map_err(write_error)?;
    file.as_file().sync_all().map_err(write_error)?;
    file.persist(path).map_err(|e| write_error(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_identity(Some(dir.path())).unwrap();
        let second = load_or_create_identity(Some(dir.path())).unwrap();
        assert_eq!(first.name(), second.name());
    }

    #[test]
    fn a_corrupt_identity_is_set_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), b"garbage").unwrap();
        let identity = load_or_create_identity(Some(dir.path())).unwrap();
        assert!(dir.path().join("identity.corrupt").exists());
        assert_eq!(load_or_create_identity(Some(dir.path())).unwrap().name(), identity.name());
    }
}
