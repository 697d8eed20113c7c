//! Images written into a real containerd through its API (`ContainerdSeeder`):
//! a config, distinct layers and an OCI manifest, with the keys a node
//! holding them advertises.
#![allow(dead_code)]

use anyhow::Result;
use bytes::Bytes;
use shoal::content::Descriptor;
use shoal::content::contract::Seeder;
use shoal::oci::{Digest, Key, MediaType};

pub struct SeededImage {
    pub name: String,
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Digest>,
}

impl SeededImage {
    pub fn digests(&self) -> Vec<Digest> {
        let mut digests = vec![self.manifest, self.config];
        digests.extend(&self.layers);
        digests
    }

    /// Every key a node holding this image advertises: its digests and its tag.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.digests().into_iter().map(Key::Digest).collect();
        keys.push(Key::Tag(self.name.parse().expect("a tag reference")));
        keys
    }
}

fn descriptor(media_type: &str, digest: &Digest, size: usize) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size })
}

/// Stores an image named `name` (e.g. `registry.test/app:v1`) with `layers`.
pub async fn seed_image(seeder: &impl Seeder, name: &str, layers: &[Bytes]) -> Result<SeededImage> {
    let config_bytes = Bytes::from(format!(r#"{{"architecture":"amd64","os":"linux","name":"{name}"}}"#));
    let config = seeder.add_blob(config_bytes.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut layer_digests = Vec::new();
    let mut layer_descriptors = Vec::new();
    for layer in layers {
        let digest = seeder.add_blob(layer.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        layer_descriptors.push(descriptor("application/vnd.oci.image.layer.v1.tar", &digest, layer.len()));
        layer_digests.push(digest);
    }
    let manifest_json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config, config_bytes.len()),
        "layers": layer_descriptors,
    });
    let manifest_bytes = Bytes::from(manifest_json.to_string());
    let manifest = seeder.add_blob(manifest_bytes.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let target = Descriptor {
        digest: manifest,
        media_type: MediaType::from_static(MediaType::OCI_MANIFEST),
        size: manifest_bytes.len() as u64,
    };
    seeder.put_image(name, target).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(SeededImage { name: name.to_owned(), manifest, config, layers: layer_digests })
}

/// `count` distinct layers of `size` bytes, different for every `label`.
pub fn layers(label: &str, count: usize, size: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| {
            let stamp = format!("{label}/{i}/");
            stamp.bytes().cycle().take(size.max(stamp.len())).collect::<Vec<u8>>().into()
        })
        .collect()
}
