//! `ctr` against one node's containerd, in the `k8s.io` namespace: pulls with
//! `--hosts-dir` (fetched in the `ctr` process, not the daemon), imports of an
//! image archive without any registry, listing and removal. Every command is
//! bounded by a timeout and killed when it runs over.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

const NAMESPACE: &str = "k8s.io";
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);

/// `ctr` bound to one containerd socket, run as that node's group.
#[derive(Debug, Clone)]
pub struct Ctr {
    socket: PathBuf,
    gid: u32,
}

impl Ctr {
    pub fn new(socket: &Path, gid: u32) -> Self {
        Self { socket: socket.to_path_buf(), gid }
    }

    /// `ctr images pull --hosts-dir DIR IMAGE`; returns how long it took.
    pub async fn pull(&self, image: &str, hosts_dir: &Path, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let hosts_dir = hosts_dir.to_string_lossy();
        self.run(&["images", "pull", "--hosts-dir", &hosts_dir, image], timeout).await?;
        Ok(start.elapsed())
    }

    /// `ctr images import ARCHIVE`: the image is named by the archive's
    /// `io.containerd.image.name` annotation. Fails if nothing was imported
    /// (ctr itself exits 0 in that case).
    pub async fn import(&self, archive: &Path, expected_name: &str, timeout: Duration) -> Result<()> {
        let archive = archive.to_string_lossy();
        self.run(&["images", "import", &archive], timeout).await?;
        if !self.image_names().await?.iter().any(|name| name == expected_name) {
            bail!("ctr import of {archive} did not create {expected_name}");
        }
        Ok(())
    }

    /// `ctr images import --no-unpack ARCHIVE`: content and image records
    /// only, no snapshots (for many small images that are never run).
    pub async fn import_without_unpack(&self, archive: &Path, timeout: Duration) -> Result<()> {
        let archive = archive.to_string_lossy();
        self.run(&["images", "import", "--no-unpack", &archive], timeout).await.map(drop)
    }

    /// Names of all images in the namespace.
    pub async fn image_names(&self) -> Result<Vec<String>> {
        let out = self.run(&["images", "ls", "--quiet"], SHORT_TIMEOUT).await?;
        Ok(out.lines().map(str::to_owned).filter(|line| !line.is_empty()).collect())
    }

    /// `ctr images rm IMAGE...`
    pub async fn remove(&self, images: &[&str]) -> Result<()> {
        let mut args = vec!["images", "rm"];
        args.extend_from_slice(images);
        self.run(&args, SHORT_TIMEOUT).await.map(drop)
    }

    /// Digests of all blobs in the content store.
    pub async fn content_digests(&self) -> Result<Vec<String>> {
        let out = self.run(&["content", "ls", "--quiet"], SHORT_TIMEOUT).await?;
        Ok(out.lines().map(str::to_owned).filter(|line| !line.is_empty()).collect())
    }

    async fn run(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE])
            .args(args)
            .gid(self.gid)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let what = format!("ctr {}", args.join(" "));
        let output = tokio::time::timeout(timeout, command.output())
            .await
            .with_context(|| format!("{what} did not finish within {timeout:?}"))?
            .with_context(|| format!("run {what}"))?;
        if !output.status.success() {
            bail!("{what} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}
