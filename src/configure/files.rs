//! Atomic file replacement: write a temporary file in the same directory,
//! flush it to disk, then rename it over the target, so containerd (which
//! re-reads hosts.toml on every pull) never sees a half-written file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::Error;

/// Attaches the action and path to an I/O error.
pub fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { action, path, source }
}

/// Replaces `path` with `contents` atomically.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let tmp = temp_sibling(path)?;
    let written = File::create_new(&tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .map_err(io_error("write", &tmp));
    finish(written, &tmp, path)
}

/// Replaces `path` with a copy of `source` (contents and permissions) atomically.
pub fn copy_atomic(source: &Path, path: &Path) -> Result<(), Error> {
    let tmp = temp_sibling(path)?;
    let copied =
        fs::copy(source, &tmp).and_then(|_| File::open(&tmp)?.sync_all()).map_err(io_error("copy the backup to", &tmp));
    finish(copied, &tmp, path)
}

/// Removes `path` if it exists.
pub fn remove_if_present(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(err)),
        _ => Ok(()),
    }
}

fn finish(result: Result<(), Error>, tmp: &Path, path: &Path) -> Result<(), Error> {
    let renamed = result.and_then(|()| fs::rename(tmp, path).map_err(io_error("replace", path)));
    if renamed.is_err() {
        // Best effort: the temporary file is ours and useless now.
        let _ = fs::remove_file(tmp);
    }
    renamed
}

/// `.<name>.shoal-tmp.<pid>` beside `path`.
fn temp_sibling(path: &Path) -> Result<PathBuf, Error> {
    let name = path.file_name().ok_or_else(|| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let tmp_name = format!(".{}.shoal-tmp.{}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(tmp_name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.toml");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_atomic_into_a_missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("hosts.toml");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
