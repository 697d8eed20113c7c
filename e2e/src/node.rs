//! One node: a containerd (and optionally a Shoal) on its own loopback
//! address 127.0.0.i, with its hosts.toml written by `shoal::configure`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::http::Method;
use anyhow::{Context, Result};
use shoal::configure::{ConfigureConfig, MirrorTarget, Upstream, configure};

use crate::containerd::Containerd;
use crate::cri::Cri;
use crate::ctr::Ctr;
use crate::http;
use crate::image::{BuiltImage, OCI_INDEX, OCI_MANIFEST};
use crate::metrics::Metrics;
use crate::registry::REGISTRY_ADDR;
use crate::shoal::{Shoal, ShoalOptions, ShoalTuning, mirror_url};
use crate::wait::poll_until;

/// First group id of node containerds; node i runs as `NODE_GID_BASE + i`.
pub const NODE_GID_BASE: u32 = 47_300;

/// A node. Shoal is declared before containerd so that it stops first.
pub struct Node {
    pub index: usize,
    pub ip: Ipv4Addr,
    dir: PathBuf,
    shoal: Option<Shoal>,
    /// How Shoal was last started, for restarts.
    shoal_options: Option<ShoalOptions>,
    containerd: Containerd,
    cri: Cri,
}

impl Node {
    /// Starts node `index` (1-based) under `dir`: containerd, and a CRI client.
    pub async fn start(index: usize, dir: &Path) -> Result<Self> {
        let octet = u8::try_from(index).context("node index must fit in one address octet")?;
        let ip = Ipv4Addr::new(127, 0, 0, octet);
        let gid = NODE_GID_BASE + u32::from(octet);
        let containerd = Containerd::start(&dir.join("containerd"), gid)
            .await
            .with_context(|| format!("start containerd of node {index}"))?;
        let cri = Cri::connect(&containerd.socket()).await?;
        Ok(Self { index, ip, dir: dir.to_path_buf(), shoal: None, shoal_options: None, containerd, cri })
    }

    /// Writes this node's hosts.toml: its own Shoal as the mirror of `upstreams`.
    pub fn configure_mirror(&self, upstreams: &[&str]) -> Result<Vec<PathBuf>> {
        self.configure_mirror_at(&self.mirror_url(), upstreams)
    }

    /// Writes this node's hosts.toml with `mirror` (a URL) as the mirror of
    /// `upstreams` (CRI reads it again on every pull).
    pub fn configure_mirror_at(&self, mirror: &str, upstreams: &[&str]) -> Result<Vec<PathBuf>> {
        let config = ConfigureConfig {
            config_path: self.containerd.certs_dir(),
            mirror_targets: vec![mirror.parse::<MirrorTarget>()?],
            upstreams: upstreams.iter().map(|u| u.parse::<Upstream>()).collect::<Result<_, _>>()?,
            prepend_existing: false,
        };
        Ok(configure(&config)?)
    }

    /// Starts `shoal run` for this node.
    pub async fn start_shoal(
        &mut self,
        bootstrap: Option<Ipv4Addr>,
        mirrored_registries: &[&str],
        tuning: ShoalTuning,
    ) -> Result<()> {
        let options = ShoalOptions {
            ip: self.ip,
            data_dir: self.dir.join("shoal"),
            bootstrap,
            mirrored_registries: mirrored_registries.iter().map(|r| (*r).to_owned()).collect(),
            tuning,
        };
        self.shoal = None;
        let shoal =
            Shoal::start(&options, &self.containerd).await.with_context(|| format!("start Shoal on {}", self.ip))?;
        self.shoal = Some(shoal);
        self.shoal_options = Some(options);
        Ok(())
    }

    /// Stops this node's Shoal (SIGTERM), if running.
    pub fn stop_shoal(&mut self) {
        self.shoal = None;
    }

    /// Stops Shoal gracefully and starts it again with the same options and
    /// data directory (so the same identity), waiting until it is ready.
    pub async fn restart_shoal(&mut self) -> Result<()> {
        let options = self.shoal_options.clone().with_context(|| format!("Shoal never ran on node {}", self.index))?;
        self.shoal = None;
        let shoal =
            Shoal::start(&options, &self.containerd).await.with_context(|| format!("restart Shoal on {}", self.ip))?;
        self.shoal = Some(shoal);
        Ok(())
    }

    /// This node's Shoal, if running.
    pub fn shoal(&mut self) -> Result<&mut Shoal> {
        self.shoal.as_mut().with_context(|| format!("no Shoal on node {}", self.index))
    }

    /// Scrapes this node's Shoal metrics.
    pub async fn metrics(&self) -> Result<Metrics> {
        self.shoal.as_ref().with_context(|| format!("no Shoal on node {}", self.index))?.metrics().await
    }

    /// `http://127.0.0.i:5000`, where this node's Shoal serves (or would serve).
    pub fn mirror_url(&self) -> String {
        mirror_url(self.ip)
    }

    pub fn cri(&self) -> &Cri {
        &self.cri
    }

    pub fn ctr(&self) -> Ctr {
        Ctr::new(&self.containerd.socket(), self.containerd.gid())
    }

    pub fn containerd(&mut self) -> &mut Containerd {
        &mut self.containerd
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.containerd.certs_dir()
    }

    /// containerd's content store directory (`blobs/sha256/<hex>` below it).
    pub fn content_dir(&self) -> PathBuf {
        self.containerd.content_dir()
    }

    /// Imports `image` into this node's containerd as `name`, with no registry.
    pub async fn import(&self, image: &BuiltImage, name: &str, timeout: Duration) -> Result<()> {
        let archive = self.dir.join("import.tar");
        image.write_import_archive(name, &archive)?;
        let imported = self.ctr().import(&archive, name, timeout).await;
        std::fs::remove_file(&archive)?;
        imported
    }

    /// Waits until this node's Shoal answers 200 for the image's tag and for
    /// every blob a pull of it fetches (HEADs as containerd sends them, with
    /// `ns`), i.e. until it can find all of it on peers; this keeps a pull
    /// from racing the DHT advertisement.
    pub async fn wait_until_servable(&self, image: &BuiltImage, timeout: Duration) -> Result<()> {
        let registry = self.shoal.as_ref().map_or_else(|| self.mirror_url(), Shoal::registry_url);
        let base = format!("{registry}/v2/{}", image.spec.repository);
        let mut urls = vec![format!("{base}/manifests/{}?ns={REGISTRY_ADDR}", image.spec.tag)];
        let platform = image.host_platform()?;
        for manifest in [&image.top, &platform.manifest] {
            urls.push(format!("{base}/manifests/{}?ns={REGISTRY_ADDR}", manifest.digest));
        }
        for blob in platform.blobs() {
            urls.push(format!("{base}/blobs/{}?ns={REGISTRY_ADDR}", blob.digest));
        }
        let accept = [OCI_INDEX, OCI_MANIFEST].join(", ");
        for url in urls {
            poll_until(&format!("node {} to serve {url}", self.index), timeout, || async {
                let headers = [("Accept", accept.as_str())];
                let response = http::request(Method::HEAD, &url, &headers, Duration::from_secs(5)).await?;
                Ok(response.status.is_success().then_some(()))
            })
            .await?;
        }
        Ok(())
    }

    /// PIDs of this node's processes.
    pub fn pids(&self) -> Vec<u32> {
        let shoal = self.shoal.as_ref().and_then(|s| s.pid());
        shoal.into_iter().chain(self.containerd.pid()).collect()
    }

    /// Paths of this node's logs.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        let shoal = self.shoal.as_ref().map(|s| s.log_path().to_path_buf());
        shoal.into_iter().chain(std::iter::once(self.containerd.log_path())).collect()
    }
}
