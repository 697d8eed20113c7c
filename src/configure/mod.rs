//! `shoal configure` and `shoal cleanup`: point containerd at Shoal through
//! `certs.d/<registry>/hosts.toml`, and undo it.
//!
//! Owns: the hosts.toml files Shoal writes, and the backup of what was there
//! before (`<config_path>/.shoal-backup`, see [`backup`]). Every file is
//! replaced atomically. A hosts.toml without a `[host]` table is never written
//! (containerd rejects it and silently falls back to `https://<registry>`).
//! Does not touch containerd's own config.toml, nor talk to containerd.

mod backup;
mod files;
pub mod hosts_toml;
mod target;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

pub use backup::BACKUP_DIR;
pub use target::{MirrorTarget, Upstream, UrlError};

use backup::Backup;
use files::{io_error, write_atomic};

/// The certs.d directory that applies to every registry without its own.
pub const DEFAULT_DIR: &str = "_default";

/// Why configuring or cleaning up failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("containerd config path {0} does not exist")]
    MissingConfigPath(PathBuf),
    #[error("containerd config path {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("no mirror targets given: containerd rejects a hosts.toml without a [host] table")]
    NoMirrorTargets,
    #[error("upstreams {0} and {1} name the same registry host")]
    ConflictingUpstreams(String, String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("existing {path} is not valid TOML, so its [host] tables cannot be kept: {source}")]
    ExistingNotToml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot render hosts.toml: {0}")]
    Render(#[from] toml::ser::Error),
    #[error("backup entry {0} is damaged; restore the original by hand and remove the entry")]
    DamagedBackup(PathBuf),
}

/// What `shoal configure` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigureConfig {
    /// containerd's `config_path`, usually `/etc/containerd/certs.d`.
    pub config_path: PathBuf,
    /// Shoal mirrors, tried by containerd in this order before the upstream.
    pub mirror_targets: Vec<MirrorTarget>,
    /// Registries to mirror; empty means every registry (`_default`).
    pub upstreams: Vec<Upstream>,
    /// Keep the original file's `[host]` tables after Shoal's.
    pub prepend_existing: bool,
}

/// One hosts.toml to write: its certs.d directory and its `server`.
struct Plan {
    dir_name: String,
    server: Option<String>,
}

/// Writes one hosts.toml per upstream (or `_default`), backing up what was
/// there the first time. Returns the files written. Running it again with the
/// same config gives the same files; registries dropped from the config get
/// their original back.
pub fn configure(config: &ConfigureConfig) -> Result<Vec<PathBuf>, Error> {
    check_config_path(&config.config_path)?;
    if config.mirror_targets.is_empty() {
        return Err(Error::NoMirrorTargets);
    }
    let plans = plan(&config.upstreams)?;
    let backup = Backup::new(&config.config_path);
    backup.remove_temporaries()?;
    for stale in backup.entries()? {
        if !plans.iter().any(|plan| plan.dir_name == stale) {
            backup.restore(&stale)?;
        }
    }
    let mut written = Vec::with_capacity(plans.len());
    for plan in &plans {
        written.push(write_hosts_file(config, &backup, plan)?);
    }
    Ok(written)
}

/// Restores every original Shoal backed up and removes the files Shoal wrote.
/// Does nothing when Shoal never configured this path.
pub fn cleanup(config_path: &Path) -> Result<(), Error> {
    check_config_path(config_path)?;
    let backup = Backup::new(config_path);
    if !backup.exists() {
        return Ok(());
    }
    backup.remove_temporaries()?;
    for name in backup.entries()? {
        backup.restore(&name)?;
    }
    backup.remove_if_empty()
}

fn check_config_path(path: &Path) -> Result<(), Error> {
    match path.metadata() {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::NotADirectory(path.to_path_buf())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(Error::MissingConfigPath(path.to_path_buf())),
        Err(err) => Err(io_error("inspect", path)(err)),
    }
}

fn plan(upstreams: &[Upstream]) -> Result<Vec<Plan>, Error> {
    if upstreams.is_empty() {
        return Ok(vec![Plan { dir_name: DEFAULT_DIR.to_owned(), server: None }]);
    }
    let mut seen: Vec<&Upstream> = Vec::new();
    for upstream in upstreams {
        match seen.iter().find(|other| other.host() == upstream.host()) {
            Some(other) if *other != upstream => {
                return Err(Error::ConflictingUpstreams(other.url(), upstream.url()));
            }
            Some(_) => {}
            None => seen.push(upstream),
        }
    }
    Ok(seen.iter().map(|u| Plan { dir_name: u.host().to_owned(), server: Some(u.server()) }).collect())
}

fn write_hosts_file(config: &ConfigureConfig, backup: &Backup, plan: &Plan) -> Result<PathBuf, Error> {
    let dir = config.config_path.join(&plan.dir_name);
    if dir.exists() && !dir.is_dir() {
        return Err(Error::NotADirectory(dir));
    }
    backup.ensure(&plan.dir_name)?;
    let kept = match backup.original_text(&plan.dir_name)? {
        Some((path, text)) if config.prepend_existing => {
            hosts_toml::parse_host_tables(&text).map_err(|source| Error::ExistingNotToml { path, source })?
        }
        _ => Vec::new(),
    };
    let text = hosts_toml::render(plan.server.as_deref(), &config.mirror_targets, &kept)?;
    std::fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
    let path = dir.join("hosts.toml");
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}
