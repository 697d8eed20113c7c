//! The backup of what was in `certs.d` before Shoal wrote there.
//!
//! Layout: `<config_path>/.shoal-backup/<registry dir>/` holds an `origin`
//! file (`file`, `no-file` or `no-dir`) and, for `file`, a copy of the original
//! `hosts.toml`. An entry is made once, before Shoal first writes that
//! registry's file, and is built in a temporary directory then renamed, so it
//! is either complete or absent. It is never overwritten: running `configure`
//! again keeps the operator's original, not Shoal's own file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Error;
use super::files::{copy_atomic, io_error, remove_if_present, write_atomic};
use super::hosts_toml::is_shoal_file;

/// Name of the backup directory inside the containerd config path. containerd
/// never looks there: no registry host starts with a dot.
pub const BACKUP_DIR: &str = ".shoal-backup";
const HOSTS_TOML: &str = "hosts.toml";
const ORIGIN: &str = "origin";
const TMP_PREFIX: &str = ".tmp-";

/// What the registry directory held before Shoal's first write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An operator's hosts.toml, copied into the entry.
    File,
    /// The directory existed without a hosts.toml (or with Shoal's own).
    NoFile,
    /// Shoal created the directory.
    NoDir,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::NoFile => "no-file",
            Origin::NoDir => "no-dir",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "file" => Some(Origin::File),
            "no-file" => Some(Origin::NoFile),
            "no-dir" => Some(Origin::NoDir),
            _ => None,
        }
    }
}

/// The backup directory of one containerd config path.
pub struct Backup {
    config_path: PathBuf,
    root: PathBuf,
}

impl Backup {
    pub fn new(config_path: &Path) -> Self {
        Self { config_path: config_path.to_path_buf(), root: config_path.join(BACKUP_DIR) }
    }

    /// Whether any backup directory exists.
    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// Names of the registry directories with a backup entry.
    pub fn entries(&self) -> Result<Vec<String>, Error> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        for dir_entry in fs::read_dir(&self.root).map_err(io_error("list", &self.root))? {
            let dir_entry = dir_entry.map_err(io_error("list", &self.root))?;
            let name = dir_entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(TMP_PREFIX) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The origin of `name`, making its backup entry first if there is none.
    pub fn ensure(&self, name: &str) -> Result<Origin, Error> {
        let entry = self.root.join(name);
        if entry.is_dir() {
            return self.origin(name);
        }
        fs::create_dir_all(&self.root).map_err(io_error("create", &self.root))?;
        let registry_dir = self.config_path.join(name);
        let original = registry_dir.join(HOSTS_TOML);
        let origin = if !registry_dir.exists() {
            Origin::NoDir
        } else if original.is_file() && !is_shoal_file(&read(&original)?) {
            Origin::File
        } else {
            Origin::NoFile
        };
        let tmp = self.root.join(format!("{TMP_PREFIX}{name}.{}", std::process::id()));
        remove_dir_if_present(&tmp)?;
        fs::create_dir(&tmp).map_err(io_error("create", &tmp))?;
        if origin == Origin::File {
            copy_atomic(&original, &tmp.join(HOSTS_TOML))?;
        }
        write_atomic(&tmp.join(ORIGIN), origin.as_str().as_bytes())?;
        fs::rename(&tmp, &entry).map_err(io_error("create", &entry))?;
        Ok(origin)
    }

    /// The operator's original hosts.toml for `name`, if there was one.
    pub fn original_text(&self, name: &str) -> Result<Option<(PathBuf, String)>, Error> {
        match self.origin(name)? {
            Origin::File => {
                let path = self.root.join(name).join(HOSTS_TOML);
                let text = read(&path)?;
                Ok(Some((path, text)))
            }
            Origin::NoFile | Origin::NoDir => Ok(None),
        }
    }

    /// Puts back what `name` held before Shoal, then drops its entry.
    pub fn restore(&self, name: &str) -> Result<(), Error> {
        let registry_dir = self.config_path.join(name);
        let target = registry_dir.join(HOSTS_TOML);
        match self.origin(name)? {
            Origin::File => copy_atomic(&self.root.join(name).join(HOSTS_TOML), &target)?,
            Origin::NoFile => remove_if_present(&target)?,
            Origin::NoDir => {
                remove_if_present(&target)?;
                remove_dir_if_empty(&registry_dir)?;
            }
        }
        remove_dir_if_present(&self.root.join(name))
    }

    /// Removes half-made entries left by an interrupted run.
    pub fn remove_temporaries(&self) -> Result<(), Error> {
        if !self.exists() {
            return Ok(());
        }
        for dir_entry in fs::read_dir(&self.root).map_err(io_error("list", &self.root))? {
            let dir_entry = dir_entry.map_err(io_error("list", &self.root))?;
            if dir_entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                remove_dir_if_present(&dir_entry.path())?;
            }
        }
        Ok(())
    }

    /// Removes the backup directory once it holds no entry.
    pub fn remove_if_empty(&self) -> Result<(), Error> {
        remove_dir_if_empty(&self.root)
    }

    fn origin(&self, name: &str) -> Result<Origin, Error> {
        let path = self.root.join(name).join(ORIGIN);
        Origin::parse(&read(&path)?).ok_or(Error::DamagedBackup(path))
    }
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(io_error("read", path))
}

fn remove_dir_if_present(path: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(err)),
        _ => Ok(()),
    }
}

/// Removes `path` if it is an empty directory; leaves anything else alone.
fn remove_dir_if_empty(path: &Path) -> Result<(), Error> {
    match fs::read_dir(path).map(|mut entries| entries.next().is_none()) {
        Ok(true) => fs::remove_dir(path).map_err(io_error("remove", path)),
        Ok(false) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("list", path)(err)),
    }
}
