//! One containerd daemon per node: its own config, root, state, sockets and
//! `certs.d`, all under the node's directory, with the CRI plugin on.
//! The daemon runs with the node's group id so that the firewall can give its
//! traffic to the upstream registry the node's source address (see `iptables`).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::ChildGuard;
use crate::wait::poll_until;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running containerd; stopped when dropped.
pub struct Containerd {
    dir: PathBuf,
    gid: u32,
    process: ChildGuard,
    /// The directory of a daemon made by [`Containerd::start_temporary`];
    /// declared after `process` so that the daemon stops before it goes.
    _temporary: Option<tempfile::TempDir>,
}

impl Containerd {
    /// Writes the config under `dir` and starts the daemon as group `gid`.
    pub async fn start(dir: &Path, gid: u32) -> Result<Self> {
        for sub in ["root", "state", "opt", "cni", "certs.d"] {
            fs::create_dir_all(dir.join(sub)).with_context(|| format!("create {}", dir.join(sub).display()))?;
        }
        fs::write(dir.join("config.toml"), config_toml(dir))?;
        let process = spawn(dir, gid)?;
        let mut containerd = Self { dir: dir.to_path_buf(), gid, process, _temporary: None };
        containerd.wait_ready().await?;
        Ok(containerd)
    }

    /// A daemon of its own, outside any cluster, in a fresh temporary
    /// directory that goes away with it (for tests of Shoal's containerd client).
    pub async fn start_temporary() -> Result<Self> {
        let temporary = tempfile::Builder::new().prefix("shoal-ctrd-").tempdir()?;
        let mut containerd = Self::start(temporary.path(), 0).await?;
        containerd._temporary = Some(temporary);
        Ok(containerd)
    }

    /// Sends `signal` to the daemon (SIGSTOP freezes it: it still accepts
    /// connections but answers nothing until SIGCONT).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        self.process.signal(signal)
    }

    /// Freezes the daemon (SIGSTOP) and returns once every thread has stopped.
    pub async fn freeze(&self) -> Result<()> {
        self.process.freeze().await
    }

    /// Kills the daemon at once (SIGKILL): its clients see the socket go away.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the daemon again on the same config, root, state and sockets
    /// (after [`kill`](Self::kill), or stopping it first with SIGTERM).
    pub async fn restart(&mut self) -> Result<()> {
        self.process.stop();
        self.process = spawn(&self.dir, self.gid)?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket();
        let process = &mut self.process;
        poll_until("containerd to answer `ctr version`", READY_TIMEOUT, || {
            let running = process.ensure_running();
            let socket = socket.clone();
            async move {
                running?;
                let status = tokio::process::Command::new("ctr")
                    .arg("--address")
                    .arg(&socket)
                    .arg("version")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await?;
                Ok(status.success().then_some(()))
            }
        })
        .await
    }

    /// The gRPC socket (CRI, ctr, Shoal).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// containerd's `config_path`: where `hosts.toml` files go.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs.d")
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The content store directory Shoal reads blobs from.
    pub fn content_dir(&self) -> PathBuf {
        self.root().join("io.containerd.content.v1.content")
    }

    /// The group id the daemon (and `ctr` for this node) runs as.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }

    pub fn process(&mut self) -> &mut ChildGuard {
        &mut self.process
    }
}

fn spawn(dir: &Path, gid: u32) -> Result<ChildGuard> {
    let mut command = Command::new("containerd");
    command.arg("--config").arg(dir.join("config.toml")).gid(gid);
    ChildGuard::spawn("containerd", command, &dir.join("containerd.log")).map_err(|err| {
        if which_containerd_missing() {
            err.context("this test needs a real containerd (apt-get install containerd; scripts/install-deps.sh does)")
        } else {
            err
        }
    })
}

fn which_containerd_missing() -> bool {
    std::env::var_os("PATH")
        .is_none_or(|path| std::env::split_paths(&path).all(|dir| !dir.join("containerd").is_file()))
}

fn config_toml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    discard_unpacked_layers = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#
    )
}
