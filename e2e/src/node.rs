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
use crate::shoal::{Shoal, ShoalOptions, mirror_url};
use crate::wait::poll_until;

/// First group id of node containerds; node i runs as `NODE_GID_BASE + i`.
pub const NODE_GID_BASE: u32 = 47_300;

/// A node. Shoal is declared before containerd so that it stops first.
pub struct Node {
    pub index: usize,
    pub ip: Ipv4Addr,
    dir: PathBuf,
    shoal: Option<Shoal>,
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
        Ok(Self { index, ip, dir: dir.to_path_buf(), shoal: None, containerd, cri })
    }

    /// Writes this node's hosts.toml: its own Shoal as the mirror of `upstreams`.
    pub fn configure_mirror(&self, upstreams: &[&str]) -> Result<Vec<PathBuf>> {
        let config = ConfigureConfig {
            config_path: self.containerd.certs_dir(),
            mirror_targets: vec![self.mirror_url().parse::<MirrorTarget>()?],
            upstreams: upstreams.iter().map(|u| u.parse::<Upstream>()).collect::<Result<_, _>>()?,
            prepend_existing: false,
        };
        Ok(configure(&config)?)
    }

    /// Starts `shoal run` for this node.
    pub async fn start_shoal(&mut self, bootstrap: Option<Ipv4Addr>, mirrored_registries: &[&str]) -> Result<()> {
        let options = ShoalOptions {
            ip: self.ip,
            data_dir: self.dir.join("shoal"),
            bootstrap,
            mirrored_registries: mirrored_registries.iter().map(|r| (*r).to_owned()).collect(),
        };
        let shoal =
            Shoal::start(&options, &self.containerd).await.with_context(|| format!("start Shoal on {}", self.ip))?;
        self.shoal = Some(shoal);
        Ok(())
    }

    /// Stops this node's Shoal, if running.
    pub fn stop_shoal(&mut self) {
        self.shoal = None;
    }

    pub fn shoal(&mut self) -> Option<&mut Shoal> {
        self.shoal.as_mut()
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

    /// Imports `image` into this node's containerd as `name`, with no registry.
    pub async fn import(&self, image: &BuiltImage, name: &str, timeout: Duration) -> Result<()> {
        let archive = self.dir.join("import.tar");
        image.write_import_archive(name, &archive)?;
        let imported = self.ctr().import(&archive, name, timeout).await;
        std::fs::remove_file(&archive)?;
        imported
    }

    /// Waits until this node's Shoal answers 200 for the image's tag (a HEAD
    /// as containerd sends it, with `ns`), i.e. until it can find the image on
    /// a peer; this keeps a pull from racing the DHT advertisement.
    pub async fn wait_until_servable(&self, image: &BuiltImage, timeout: Duration) -> Result<()> {
        let url = format!(
            "{}/v2/{}/manifests/{}?ns={REGISTRY_ADDR}",
            self.mirror_url(),
            image.spec.repository,
            image.spec.tag
        );
        let accept = [OCI_INDEX, OCI_MANIFEST].join(", ");
        poll_until(&format!("node {} to serve {url}", self.index), timeout, || async {
            let headers = [("Accept", accept.as_str())];
            let response = http::request(Method::HEAD, &url, &headers, Duration::from_secs(5)).await?;
            Ok(response.status.is_success().then_some(()))
        })
        .await
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
