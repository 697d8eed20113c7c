//! Deterministic test images, built as OCI image layouts without Docker:
//! seeded random layer contents, fixed mtimes and owners, exact sizes and
//! sha256 digests. The same [`ImageSpec`] always gives the same digests.
//! Images are pushed with `skopeo` or archived for `ctr images import`.

mod layout;
mod random;
pub(crate) mod tar;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flate2::write::GzEncoder;
use serde_json::json;

pub use layout::{Descriptor, Layout, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST};
use random::SeededBytes;
use tar::TarWriter;

/// A CPU architecture of a linux image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// How layer tars are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar. Valid OCI and fine for `ctr images import`, but skopeo
    /// compresses such layers when pushing, which changes every digest.
    Tar,
    /// Gzip with stored (level 0) blocks: a real gzip stream that skopeo pushes
    /// as is, at copying speed (random layer data does not compress anyway).
    GzipStored,
    /// Gzip at the fastest real compression level.
    Gzip,
}

/// What to build. Layer sizes are the sizes of the one file in each layer.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Repository, e.g. `e2e/app`.
    pub repository: String,
    pub tag: String,
    /// One layer per entry; each holds one file of exactly this many bytes.
    pub layer_sizes: Vec<u64>,
    /// One platform gives a plain manifest; more give an image index.
    pub arches: Vec<Arch>,
    /// How layers are stored.
    pub compression: Compression,
    pub seed: u64,
}

impl ImageSpec {
    /// A multi-arch (linux/amd64 + linux/arm64) image with uncompressed layers.
    pub fn multi_arch(repository: &str, tag: &str, layer_sizes: &[u64]) -> Self {
        Self {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            layer_sizes: layer_sizes.to_vec(),
            arches: vec![Arch::Amd64, Arch::Arm64],
            compression: Compression::GzipStored,
            seed: 1,
        }
    }
}

/// One platform's manifest and the blobs it references.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub arch: Arch,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl PlatformImage {
    /// The config and layers: what a pull of this platform GETs as blobs.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }

    /// Bytes of all blobs of this platform.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs().iter().map(|d| d.size).sum()
    }
}

/// A built image: its layout on disk and every descriptor in it.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub spec: ImageSpec,
    pub layout_dir: PathBuf,
    /// The index (multi-arch) or the manifest (one platform).
    pub top: Descriptor,
    pub platforms: Vec<PlatformImage>,
}

/// Builds `spec` as an OCI image layout in `dir`.
pub fn build(spec: &ImageSpec, dir: &Path) -> Result<BuiltImage> {
    if spec.arches.is_empty() {
        bail!("an image needs at least one platform");
    }
    let layout = Layout::create(dir)?;
    let mut platforms = Vec::new();
    for (index, arch) in spec.arches.iter().enumerate() {
        platforms.push(build_platform(&layout, spec, *arch, index as u64)?);
    }
    let top = match platforms.as_slice() {
        [single] => single.manifest.clone(),
        _ => write_image_index(&layout, &platforms)?,
    };
    layout.write_index_json(&top, &[("org.opencontainers.image.ref.name", &spec.tag)])?;
    Ok(BuiltImage { spec: spec.clone(), layout_dir: dir.to_path_buf(), top, platforms })
}

fn build_platform(layout: &Layout, spec: &ImageSpec, arch: Arch, platform_index: u64) -> Result<PlatformImage> {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, size) in spec.layer_sizes.iter().enumerate() {
        let seed = spec.seed.wrapping_mul(1_000_003).wrapping_add(platform_index * 1000 + i as u64);
        let file_name = format!("data/{}-layer-{i}.bin", arch.as_str());
        let (layer, diff_id) = write_layer(layout, &file_name, *size, seed, spec.compression)?;
        layers.push(layer);
        diff_ids.push(diff_id);
    }
    let config = json!({
        "architecture": arch.as_str(),
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": { "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/data"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = layout.write_blob(OCI_CONFIG, config.to_string().as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    let manifest = layout.write_blob(OCI_MANIFEST, manifest.to_string().as_bytes())?;
    Ok(PlatformImage { arch, manifest, config, layers })
}

/// Writes one layer: a `data/` directory and one file of `size` seeded bytes.
/// Returns the layer descriptor and its diff id (digest of the uncompressed tar).
fn write_layer(
    layout: &Layout,
    file_name: &str,
    size: u64,
    seed: u64,
    compression: Compression,
) -> Result<(Descriptor, String)> {
    let write_tar = |out: &mut dyn Write| -> io::Result<(String, u64)> {
        let mut tar = TarWriter::new(layout::Hashing::new(out));
        tar.append_dir("data/")?;
        tar.append_file(file_name, size, &mut SeededBytes::new(seed))?;
        let (diff_id, len, _) = tar.finish()?.finish();
        Ok((diff_id, len))
    };
    let level = match compression {
        Compression::Tar => None,
        Compression::GzipStored => Some(flate2::Compression::none()),
        Compression::Gzip => Some(flate2::Compression::fast()),
    };
    if let Some(level) = level {
        let (descriptor, (diff_id, _)) = layout.write_blob_with(OCI_LAYER_GZIP, |out| {
            let mut encoder = GzEncoder::new(out, level);
            let result = write_tar(&mut encoder)?;
            encoder.finish()?;
            Ok(result)
        })?;
        Ok((descriptor, diff_id))
    } else {
        let (descriptor, (diff_id, len)) = layout.write_blob_with(OCI_LAYER_TAR, write_tar)?;
        debug_assert_eq!(len, tar::DIR_ENTRY_LEN + tar::file_entry_len(size) + tar::END_LEN);
        Ok((descriptor, diff_id))
    }
}

fn write_image_index(layout: &Layout, platforms: &[PlatformImage]) -> Result<Descriptor> {
    let manifests: Vec<_> = platforms
        .iter()
        .map(|p| {
            json!({
                "mediaType": p.manifest.media_type,
                "digest": p.manifest.digest,
                "size": p.manifest.size,
                "platform": { "architecture": p.arch.as_str(), "os": "linux" },
            })
        })
        .collect();
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    layout.write_blob(OCI_INDEX, index.to_string().as_bytes())
}

impl BuiltImage {
    /// `<registry>/<repository>:<tag>`, e.g. `127.0.0.200:5000/e2e/app:v1`.
    pub fn reference(&self, registry: &str) -> String {
        format!("{registry}/{}:{}", self.spec.repository, self.spec.tag)
    }

    /// The platform a pull on this machine selects (linux/amd64).
    pub fn host_platform(&self) -> Result<&PlatformImage> {
        let arch = if cfg!(target_arch = "aarch64") { Arch::Arm64 } else { Arch::Amd64 };
        self.platforms.iter().find(|p| p.arch == arch).with_context(|| format!("image has no {arch:?} platform"))
    }

    /// Every blob a pull of the host platform fetches: index (if any),
    /// manifest, config and layers.
    pub fn pulled_digests(&self) -> Result<Vec<String>> {
        let platform = self.host_platform()?;
        let mut digests = vec![self.top.digest.clone()];
        if self.top != platform.manifest {
            digests.push(platform.manifest.digest.clone());
        }
        digests.extend(platform.blobs().iter().map(|d| d.digest.clone()));
        Ok(digests)
    }

    /// Pushes to `registry` (host:port, plain HTTP) with skopeo, all platforms.
    pub async fn push(&self, registry: &str, timeout: Duration) -> Result<()> {
        let source = format!("oci:{}:{}", self.layout_dir.display(), self.spec.tag);
        let dest = format!("docker://{}", self.reference(registry));
        let mut command = tokio::process::Command::new("skopeo");
        command.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if self.platforms.len() > 1 {
            command.arg("--all");
        }
        command.arg(&source).arg(&dest).stdin(std::process::Stdio::null()).kill_on_drop(true);
        let output = tokio::time::timeout(timeout, command.output())
            .await
            .with_context(|| format!("skopeo copy to {dest} did not finish within {timeout:?}"))??;
        if !output.status.success() {
            bail!("skopeo copy {source} {dest} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        self.check_pushed(registry).await
    }

    /// Fails unless the registry serves the tag with the digest built here
    /// (skopeo rewrites images it decides to convert or compress).
    async fn check_pushed(&self, registry: &str) -> Result<()> {
        let url = format!("http://{registry}/v2/{}/manifests/{}", self.spec.repository, self.spec.tag);
        let accept = [OCI_INDEX, OCI_MANIFEST].join(", ");
        let response =
            crate::http::request(http::Method::HEAD, &url, &[("Accept", &accept)], Duration::from_secs(10)).await?;
        let served = response.headers.get("docker-content-digest").and_then(|v| v.to_str().ok()).unwrap_or("none");
        if !response.status.is_success() || served != self.top.digest {
            bail!("after the push, {url} answers {} with digest {served}, not {}", response.status, self.top.digest);
        }
        Ok(())
    }

    /// Writes a tar of the layout for `ctr images import`, naming the image
    /// `name` (a full reference) through the `io.containerd.image.name` annotation.
    pub fn write_import_archive(&self, name: &str, path: &Path) -> Result<()> {
        let layout = Layout::create(&self.layout_dir)?;
        let index = layout::index_json(
            &self.top,
            &[("io.containerd.image.name", name), ("org.opencontainers.image.ref.name", &self.spec.tag)],
        );
        let mut tar = TarWriter::new(BufWriter::with_capacity(1 << 20, File::create(path)?));
        tar.append_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        tar.append_bytes("index.json", index.to_string().as_bytes())?;
        tar.append_dir("blobs/")?;
        tar.append_dir("blobs/sha256/")?;
        for descriptor in self.all_blobs() {
            let blob_path = layout.blob_path(descriptor);
            let mut file = File::open(&blob_path).with_context(|| format!("open {}", blob_path.display()))?;
            tar.append_file(&format!("blobs/sha256/{}", descriptor.hex()), descriptor.size, &mut file)?;
        }
        tar.finish()?.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
        Ok(())
    }

    /// Every blob in the image, each once.
    pub fn all_blobs(&self) -> Vec<&Descriptor> {
        let mut blobs = vec![&self.top];
        for platform in &self.platforms {
            blobs.push(&platform.manifest);
            blobs.extend(platform.blobs());
        }
        let mut seen = std::collections::HashSet::new();
        blobs.retain(|d| seen.insert(d.digest.clone()));
        blobs
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sha256_file(path: &Path) -> String {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap())))
    }

    #[test]
    fn same_spec_gives_same_digests() {
        let spec = ImageSpec::multi_arch("e2e/app", "v1", &[3000, 70_000]);
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = build(&spec, a.path()).unwrap();
        let second = build(&spec, b.path()).unwrap();
        assert_eq!(first.top, second.top);
        assert_eq!(first.all_blobs(), second.all_blobs());
        let other = build(&ImageSpec { seed: 2, ..spec }, tempfile::tempdir().unwrap().path()).unwrap();
        assert_ne!(other.top, first.top);
    }

    #[test]
    fn blobs_on_disk_match_their_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let spec =
            ImageSpec { compression: Compression::Tar, ..ImageSpec::multi_arch("e2e/app", "v1", &[512, 10_000]) };
        let image = build(&spec, dir.path()).unwrap();
        assert_eq!(image.top.media_type, OCI_INDEX);
        assert_eq!(image.all_blobs().len(), 1 + 2 * (1 + 1 + 2));
        for descriptor in image.all_blobs() {
            let path = dir.path().join("blobs/sha256").join(descriptor.hex());
            assert_eq!(std::fs::metadata(&path).unwrap().len(), descriptor.size);
            assert_eq!(sha256_file(&path), descriptor.digest);
        }
        let layer = &image.platforms[0].layers[1];
        assert_eq!(layer.size, tar::DIR_ENTRY_LEN + tar::file_entry_len(10_000) + tar::END_LEN);
    }

    #[test]
    fn gzip_layers_have_distinct_diff_ids() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ImageSpec {
            compression: Compression::Gzip,
            arches: vec![Arch::Amd64],
            ..ImageSpec::multi_arch("e2e/gz", "v1", &[4096])
        };
        let image = build(&spec, dir.path()).unwrap();
        assert_eq!(image.top.media_type, OCI_MANIFEST);
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("blobs/sha256").join(image.platforms[0].config.hex())).unwrap(),
        )
        .unwrap();
        let diff_id = config["rootfs"]["diff_ids"][0].as_str().unwrap();
        assert_ne!(diff_id, image.platforms[0].layers[0].digest);
        assert_eq!(image.platforms[0].layers[0].media_type, OCI_LAYER_GZIP);
    }

    #[test]
    fn import_archive_holds_every_blob() {
        let dir = tempfile::tempdir().unwrap();
        let image = build(&ImageSpec::multi_arch("e2e/app", "v1", &[100]), &dir.path().join("layout")).unwrap();
        let archive = dir.path().join("image.tar");
        image.write_import_archive("127.0.0.200:5000/e2e/app:v1", &archive).unwrap();
        let size = std::fs::metadata(&archive).unwrap().len();
        let expected: u64 = image.all_blobs().iter().map(|d| tar::file_entry_len(d.size)).sum();
        assert!(size > expected, "{size} <= {expected}");
    }
}
