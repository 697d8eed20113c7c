//! A real containerd daemon per test, and a seeder that changes its content
//! through containerd's own gRPC API (content Write, images Create/Update/
//! Delete), so no `ctr` or image tarballs are needed.
//!
//! Each daemon gets a fresh temp root, state and socket; it is killed by PID
//! when the guard drops, also when the test fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use bytes::Bytes;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    CreateImageRequest, DeleteContentRequest, DeleteImageRequest, Image, UpdateImageRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::types::Descriptor as RawDescriptor;
use shoal::content::contract::{SeedError, Seeder};
use shoal::content::{ContainerdConfig, ContainerdStore, Descriptor};
use shoal::oci::Digest;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// How long a fresh daemon may take to answer (it usually takes ~0.1 s).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Write chunk size, well under containerd's 16 MiB message limit.
const WRITE_CHUNK: usize = 1024 * 1024;

/// A containerd daemon owned by one test.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Containerd {
    /// Starts a daemon on a fresh root and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("shoal-ctrd-").tempdir()?;
        std::fs::write(dir.path().join("config.toml"), config(dir.path()))?;
        let mut daemon = Self { dir, child: None };
        daemon.spawn().await?;
        Ok(daemon)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The content directory blobs are read from.
    pub fn content_path(&self) -> PathBuf {
        self.dir.path().join("root/io.containerd.content.v1.content")
    }

    /// A store in `namespace`, reading blobs from disk if `from_disk`.
    pub fn store(&self, namespace: &str, from_disk: bool) -> ContainerdStore {
        ContainerdStore::new(ContainerdConfig {
            socket: self.socket(),
            namespace: namespace.to_owned(),
            content_path: from_disk.then(|| self.content_path()),
        })
    }

    pub async fn seeder(&self, namespace: &str) -> anyhow::Result<ContainerdSeeder> {
        let channel = containerd_client::connect(self.socket()).await?;
        Ok(ContainerdSeeder { channel, namespace: namespace.to_owned() })
    }

    /// Kills the daemon (SIGKILL, by PID) and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the daemon, by PID: it keeps
    /// accepting connections but answers nothing while frozen.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().map(Child::id).context("containerd is not running")?;
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed: {status}");
        Ok(())
    }

    /// Starts the daemon again on the same config, root and socket.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
                "this test needs a real containerd, and `containerd` is not installed \
                 (apt-get install containerd; CI installs it)"
            ),
            Err(error) => return Err(error).context("starting containerd"),
        };
        self.child = Some(child);
        self.wait_ready().await
    }

    /// Polls the Version API until the daemon answers, or fails with its log.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!("containerd exited with {status}:\n{}", self.log_tail());
            }
            if self.answers().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("containerd did not answer within {READY_TIMEOUT:?}:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers(&self) -> bool {
        let Ok(channel) = containerd_client::connect(self.socket()).await else {
            return false;
        };
        VersionClient::new(channel).version(()).await.is_ok()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The daemon config from `real-components.md`, rooted in `dir`.
fn config(dir: &Path) -> String {
    let run = dir.display();
    format!(
        r#"version = 2
root = "{run}/root"
state = "{run}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{run}/containerd.sock"
[ttrpc]
  address = "{run}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{run}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{run}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{run}/certs.d"
"#
    )
}

/// Changes a daemon's content in one namespace through containerd's API.
pub struct ContainerdSeeder {
    channel: Channel,
    namespace: String,
}

impl ContainerdSeeder {
    fn request<T>(&self, message: T) -> Result<Request<T>, SeedError> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("containerd-namespace", self.namespace.parse()?);
        Ok(request)
    }

    fn image(name: &str, target: &Descriptor) -> Image {
        Image {
            name: name.to_owned(),
            labels: HashMap::new(),
            target: Some(RawDescriptor {
                media_type: target.media_type.to_string(),
                digest: target.digest.to_string(),
                size: target.size as i64,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        }
    }
}

/// The write messages for `data`: chunks, then a commit that labels the blob
/// as a GC root so containerd keeps it although no image references it.
fn write_requests(data: &Bytes, digest: &Digest) -> Vec<WriteContentRequest> {
    let base = WriteContentRequest {
        action: WriteAction::Write as i32,
        r#ref: format!("shoal-test-{}", digest.hex()),
        total: data.len() as i64,
        expected: digest.to_string(),
        ..Default::default()
    };
    let mut requests: Vec<WriteContentRequest> = data
        .chunks(WRITE_CHUNK)
        .enumerate()
        .map(|(i, chunk)| WriteContentRequest {
            offset: (i * WRITE_CHUNK) as i64,
            data: chunk.to_vec(),
            ..base.clone()
        })
        .collect();
    let labels = HashMap::from([("containerd.io/gc.root".to_owned(), "2024-01-01T00:00:00Z".to_owned())]);
    requests.push(WriteContentRequest {
        action: WriteAction::Commit as i32,
        offset: data.len() as i64,
        labels,
        ..base
    });
    requests
}

#[async_trait]
impl Seeder for ContainerdSeeder {
    async fn add_blob(&self, data: Bytes) -> Result<Digest, SeedError> {
        let digest = Digest::of(&data);
        let requests = tokio_stream::iter(write_requests(&data, &digest));
        let mut responses = match ContentClient::new(self.channel.clone()).write(self.request(requests)?).await {
            Ok(responses) => responses.into_inner(),
            Err(status) if status.code() == Code::AlreadyExists => return Ok(digest),
            Err(status) => return Err(status.into()),
        };
        let mut committed = None;
        loop {
            match responses.message().await {
                Ok(Some(response)) => committed = Some(response.digest),
                Ok(None) => break,
                Err(status) if status.code() == Code::AlreadyExists => return Ok(digest),
                Err(status) => return Err(status.into()),
            }
        }
        match committed {
            Some(committed) if committed == digest.to_string() => Ok(digest),
            other => Err(format!("containerd committed {other:?}, expected {digest}").into()),
        }
    }

    async fn put_image(&self, name: &str, target: Descriptor) -> Result<(), SeedError> {
        let image = Self::image(name, &target);
        let mut images = ImagesClient::new(self.channel.clone());
        let create = CreateImageRequest { image: Some(image.clone()), source_date_epoch: None };
        match images.create(self.request(create)?).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                let update = UpdateImageRequest { image: Some(image), update_mask: None, source_date_epoch: None };
                images.update(self.request(update)?).await?;
                Ok(())
            }
            Err(status) => Err(status.into()),
        }
    }

    async fn delete_image(&self, name: &str) -> Result<(), SeedError> {
        let request = DeleteImageRequest { name: name.to_owned(), sync: false, target: None };
        ImagesClient::new(self.channel.clone()).delete(self.request(request)?).await?;
        Ok(())
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), SeedError> {
        let request = DeleteContentRequest { digest: digest.to_string() };
        ContentClient::new(self.channel.clone()).delete(self.request(request)?).await?;
        Ok(())
    }
}
