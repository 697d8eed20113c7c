//! Many small images for the idle-memory measurement: one OCI archive with
//! `images` images, each a manifest, a config and tiny distinct layers, so
//! that a node holding them advertises `images * keys_per_image` keys (its
//! digests and its tag). Imported into a real containerd without unpacking.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::image::tar::TarWriter;
use crate::image::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST};

/// Keys an image advertises besides its layers: manifest, config, tag.
const OTHER_KEYS: usize = 3;

/// One blob of the archive.
struct Blob {
    digest_hex: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Self {
        Self { digest_hex: hex::encode(Sha256::digest(&bytes)), bytes }
    }

    fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": format!("sha256:{}", self.digest_hex), "size": self.bytes.len() })
    }
}

/// Writes the archive to `path`; images are named `<name_prefix>-<i>:v1`.
pub fn write_archive(path: &Path, name_prefix: &str, images: usize, keys_per_image: usize) -> Result<()> {
    ensure!(keys_per_image > OTHER_KEYS, "an image advertises at least {} keys", OTHER_KEYS + 1);
    let mut tar = TarWriter::new(BufWriter::with_capacity(1 << 20, File::create(path)?));
    tar.append_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.append_dir("blobs/")?;
    tar.append_dir("blobs/sha256/")?;
    let mut manifests = Vec::new();
    for i in 0..images {
        let name = format!("{name_prefix}-{i}:v1");
        let layers: Vec<Blob> = (0..keys_per_image - OTHER_KEYS)
            .map(|j| Blob::new(format!("shoal bench key image {i} layer {j}\n").into_bytes()))
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", l.digest_hex)).collect();
        let config = Blob::new(
            json!({ "architecture": host_arch(), "os": "linux", "rootfs": { "type": "layers", "diff_ids": diff_ids } })
                .to_string()
                .into_bytes(),
        );
        let layer_descriptors: Vec<Value> = layers.iter().map(|l| l.descriptor(OCI_LAYER_TAR)).collect();
        let manifest = Blob::new(
            json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(OCI_CONFIG),
                "layers": layer_descriptors,
            })
            .to_string()
            .into_bytes(),
        );
        for blob in layers.iter().chain([&config, &manifest]) {
            tar.append_bytes(&format!("blobs/sha256/{}", blob.digest_hex), &blob.bytes)?;
        }
        let mut entry = manifest.descriptor(OCI_MANIFEST);
        entry["annotations"] = json!({ "io.containerd.image.name": name, "org.opencontainers.image.ref.name": "v1" });
        manifests.push(entry);
    }
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    tar.append_bytes("index.json", index.to_string().as_bytes())?;
    tar.finish()?.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
    Ok(())
}

fn host_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" }
}
