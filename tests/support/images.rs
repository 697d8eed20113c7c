//! Test images in an in-memory content store: a config, layers and an OCI
//! manifest (optionally under an index), all with real digests.
#![allow(dead_code)]

use bytes::Bytes;
use shoal::content::Descriptor;
use shoal::content::memory::MemoryStore;
use shoal::oci::{Digest, MediaType};

/// What was stored for one image.
pub struct TestImage {
    pub name: String,
    pub manifest: Digest,
    pub manifest_bytes: Bytes,
    pub config: Digest,
    pub layers: Vec<(Digest, Bytes)>,
}

/// Deterministic bytes for a layer of `len` bytes.
pub fn layer_bytes(seed: u8, len: usize) -> Bytes {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(seed as u32) as u8 ^ seed).collect()
}

fn descriptor_json(media_type: &str, digest: &Digest, size: usize) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size })
}

/// Stores an image named `name` (e.g. `registry.test/team/app:v1`) with the given layers.
pub fn add_image(store: &MemoryStore, name: &str, layers: &[Bytes]) -> TestImage {
    let config_bytes = Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"name":"{name}"}}"#
    ));
    let config = store.add_blob(config_bytes.clone());
    let layers: Vec<(Digest, Bytes)> = layers.iter().map(|l| (store.add_blob(l.clone()), l.clone())).collect();
    let manifest_json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "config": descriptor_json("application/vnd.oci.image.config.v1+json", &config, config_bytes.len()),
        "layers": layers.iter().map(|(d, b)| descriptor_json("application/vnd.oci.image.layer.v1.tar", d, b.len())).collect::<Vec<_>>(),
    });
    let manifest_bytes = Bytes::from(manifest_json.to_string());
    let manifest = store.add_blob(manifest_bytes.clone());
    let target = Descriptor {
        digest: manifest,
        media_type: MediaType::from_static(MediaType::OCI_MANIFEST),
        size: manifest_bytes.len() as u64,
    };
    store.put_image(name, target);
    TestImage { name: name.to_owned(), manifest, manifest_bytes, config, layers }
}
