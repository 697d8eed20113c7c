use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::content::Descriptor;
use crate::content::memory::MemoryStore;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn descriptor(media_type: &str, digest: &Digest, size: usize) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size })
}

/// Stores a manifest over `layers` (each stored only if `present`) and returns its descriptor.
fn manifest(store: &MemoryStore, seed: &str, layers: &[(&str, bool)]) -> Descriptor {
    let config = Bytes::from(format!("{{\"seed\":\"{seed}\"}}"));
    let config_digest = store.add_blob(config.clone());
    let layer_descriptors: Vec<_> = layers
        .iter()
        .map(|(content, present)| {
            let digest =
                if *present { store.add_blob(content.as_bytes().to_vec()) } else { Digest::of(content.as_bytes()) };
            descriptor(LAYER, &digest, content.len())
        })
        .collect();
    let json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config_digest, config.len()),
        "layers": layer_descriptors,
    })
    .to_string();
    let digest = store.add_blob(json.clone());
    Descriptor { digest, media_type: MediaType::from_static(MediaType::OCI_MANIFEST), size: json.len() as u64 }
}

fn digest_keys(changes: &[Key]) -> usize {
    changes.iter().filter(|k| !k.is_tag()).count()
}

fn tag(name: &str) -> TagRef {
    name.parse().unwrap()
}

#[tokio::test]
async fn rescan_advertises_tags_and_every_present_blob() {
    let store = MemoryStore::new();
    let target = manifest(&store, "a", &[("layer-1", true), ("layer-2", true)]);
    store.put_image("registry.test/app:v1", target.clone());
    let index = ContentIndex::new(Arc::new(store));
    let changes = index.rescan().await.unwrap();
    assert_eq!(digest_keys(&changes.added), 4, "manifest, config and two layers");
    assert!(changes.added.contains(&Key::Tag(tag("registry.test/app:v1"))));
    assert!(changes.removed.is_empty());
    let (digest, blob) = index.tag(&tag("registry.test/app:v1")).unwrap();
    assert_eq!(digest, target.digest);
    assert_eq!(blob.manifest_type, Some(MediaType::from_static(MediaType::OCI_MANIFEST)));
    assert_eq!(index.blob(&Digest::of(b"layer-1")).map(|b| b.size), Some(7));
    assert!(index.rescan().await.unwrap().is_empty(), "a second rescan changes nothing");
}

#[tokio::test]
async fn missing_blobs_and_platforms_are_skipped() {
    let store = MemoryStore::new();
    let present = manifest(&store, "amd64", &[("present", true), ("absent", false)]);
    let absent_manifest = Digest::of(b"arm64 manifest never pulled");
    let index_json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_INDEX,
        "manifests": [
            descriptor(MediaType::OCI_MANIFEST, &present.digest, present.size as usize),
            descriptor(MediaType::OCI_MANIFEST, &absent_manifest, 100),
        ],
    })
    .to_string();
    let index_digest = store.add_blob(index_json.clone());
    let media_type = MediaType::from_static(MediaType::OCI_INDEX);
    store.put_image(
        "registry.test/multi:v1",
        Descriptor { digest: index_digest, media_type, size: index_json.len() as u64 },
    );
    let index = ContentIndex::new(Arc::new(store));
    let changes = index.rescan().await.unwrap();
    assert_eq!(digest_keys(&changes.added), 4, "index, amd64 manifest, config, one layer");
    assert!(index.blob(&absent_manifest).is_none());
    assert!(index.blob(&Digest::of(b"absent")).is_none());
    assert!(index.blob(&present.digest).unwrap().manifest_type.is_some());
}

#[tokio::test]
async fn digest_only_names_add_no_tag() {
    let store = MemoryStore::new();
    let target = manifest(&store, "a", &[("l", true)]);
    store.put_image(&format!("registry.test/app@{}", target.digest), target.clone());
    store.put_image(&target.digest.to_string(), target);
    let index = ContentIndex::new(Arc::new(store));
    let changes = index.rescan().await.unwrap();
    assert!(changes.added.iter().all(|k| !k.is_tag()));
    assert_eq!(changes.added.len(), 3);
}

#[tokio::test]
async fn deleting_an_image_keeps_blobs_other_images_share() {
    let store = MemoryStore::new();
    let one = manifest(&store, "one", &[("shared", true), ("only-one", true)]);
    let two = manifest(&store, "two", &[("shared", true)]);
    store.put_image("registry.test/one:v1", one.clone());
    store.put_image("registry.test/two:v1", two);
    let index = ContentIndex::new(Arc::new(store));
    index.rescan().await.unwrap();
    let changes = index.remove_image("registry.test/one:v1");
    let removed: Vec<String> = changes.removed.iter().map(ToString::to_string).collect();
    assert_eq!(changes.removed.len(), 4, "{removed:?}");
    assert!(changes.removed.contains(&Key::Tag(tag("registry.test/one:v1"))));
    assert!(changes.removed.contains(&Key::Digest(Digest::of(b"only-one"))));
    assert!(!changes.removed.contains(&Key::Digest(Digest::of(b"shared"))));
    assert!(index.blob(&Digest::of(b"shared")).is_some());
}

#[tokio::test]
async fn image_updates_and_blob_deletes_change_exactly_the_affected_keys() {
    let store = MemoryStore::new();
    let v1 = manifest(&store, "v1", &[("base", true), ("old", true)]);
    store.put_image("registry.test/app:latest", v1);
    let index = ContentIndex::new(Arc::new(store.clone()));
    index.rescan().await.unwrap();

    let v2 = manifest(&store, "v2", &[("base", true), ("new", true)]);
    store.put_image("registry.test/app:latest", v2.clone());
    let changes = index.refresh_image("registry.test/app:latest").await.unwrap();
    assert_eq!(digest_keys(&changes.added), 3, "manifest, config, new layer");
    assert_eq!(digest_keys(&changes.removed), 3);
    assert!(changes.added.iter().all(|k| !k.is_tag()), "the tag key itself stays");
    assert_eq!(index.tag(&tag("registry.test/app:latest")).map(|(d, _)| d), Some(v2.digest));

    let changes = index.remove_blob(&Digest::of(b"new"));
    assert_eq!(changes.removed, vec![Key::Digest(Digest::of(b"new"))]);
    store.delete_image("registry.test/app:latest");
    let changes = index.refresh_image("registry.test/app:latest").await.unwrap();
    assert!(changes.removed.contains(&Key::Tag(tag("registry.test/app:latest"))));
    assert!(index.keys().is_empty());
}

#[tokio::test]
async fn an_unreadable_manifest_is_skipped_not_fatal() {
    let store = MemoryStore::new();
    let garbage = store.add_blob(&b"not json"[..]);
    let media_type = MediaType::from_static(MediaType::OCI_MANIFEST);
    store.put_image("registry.test/bad:v1", Descriptor { digest: garbage, media_type, size: 8 });
    let good = manifest(&store, "good", &[("l", true)]);
    store.put_image("registry.test/good:v1", good);
    let index = ContentIndex::new(Arc::new(store));
    let changes = index.rescan().await.unwrap();
    assert!(changes.added.contains(&Key::Tag(tag("registry.test/good:v1"))));
    assert!(index.tag(&tag("registry.test/good:v1")).is_some());
}

fn private_index(store: &MemoryStore) -> ContentIndex {
    ContentIndex::new(Arc::new(store.clone())).with_private_registries(vec!["private.test".parse().unwrap()])
}

#[tokio::test]
async fn private_images_are_indexed_but_none_of_their_keys_is_advertised() {
    let store = MemoryStore::new();
    let secret = manifest(&store, "secret", &[("shared-base", true), ("secret-layer", true)]);
    let public = manifest(&store, "public", &[("shared-base", true), ("public-layer", true)]);
    store.put_image("private.test/team/app:v1", secret.clone());
    store.put_image(&format!("private.test/team/app@{}", secret.digest), secret.clone());
    store.put_image("registry.test/app:v1", public.clone());
    let index = private_index(&store);
    let changes = index.rescan().await.unwrap();

    let keys = index.keys();
    assert_eq!(changes.added, keys);
    assert!(!keys.contains(&Key::Tag(tag("private.test/team/app:v1"))));
    for private in [secret.digest, Digest::of(b"secret-layer"), Digest::of(b"shared-base")] {
        assert!(!keys.contains(&Key::Digest(private)), "{private} is referenced by a private image");
        assert!(index.blob(&private).unwrap().private, "still held, marked private");
    }
    assert!(keys.contains(&Key::Tag(tag("registry.test/app:v1"))));
    assert!(keys.contains(&Key::Digest(Digest::of(b"public-layer"))));
    assert!(!index.blob(&public.digest).unwrap().private);
    let (digest, blob) = index.tag(&tag("private.test/team/app:v1")).unwrap();
    assert_eq!((digest, blob.private), (secret.digest, true), "local clients still resolve the private tag");
}

#[tokio::test]
async fn a_shared_blob_is_withdrawn_when_a_private_image_arrives_and_returns_when_it_goes() {
    let store = MemoryStore::new();
    let public = manifest(&store, "public", &[("shared-base", true)]);
    store.put_image("registry.test/app:v1", public);
    let index = private_index(&store);
    index.rescan().await.unwrap();
    let shared = Key::Digest(Digest::of(b"shared-base"));
    assert!(index.keys().contains(&shared));

    let secret = manifest(&store, "secret", &[("shared-base", true)]);
    store.put_image("private.test/app:v1", secret);
    let changes = index.refresh_image("private.test/app:v1").await.unwrap();
    assert_eq!(changes.removed, vec![shared.clone()], "only the shared blob changes: nothing private is added");
    assert!(changes.added.is_empty());

    let changes = index.remove_image("private.test/app:v1");
    assert_eq!(changes.added, vec![shared]);
}
