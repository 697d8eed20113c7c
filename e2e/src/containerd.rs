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
}

impl Containerd {
    /// Writes the config under `dir` and starts the daemon as group `gid`.
    pub async fn start(dir: &Path, gid: u32) -> Result<Self> {
        for sub in ["root", "state", "opt", "cni", "certs.d"] {
            fs::create_dir_all(dir.join(sub)).with_context(|| format!("create {}", dir.join(sub).display()))?;
        }
        fs::write(dir.join("config.toml"), config_toml(dir))?;
        let mut command = Command::new("containerd");
        command.arg("--config").arg(dir.join("config.toml")).gid(gid);
        let process = ChildGuard::spawn("containerd", command, &dir.join("containerd.log"))?;
        let mut containerd = Self { dir: dir.to_path_buf(), gid, process };
        containerd.wait_ready().await?;
        Ok(containerd)
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
