#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::content::WalkedBlob;
use crate::oci::{Digest, MediaType};
use crate::routing::PeerName;

fn metrics() -> Metrics {
    Metrics::new().unwrap()
}

fn open(dir: &Path) -> (State, Loaded) {
    State::open(Some(dir), &TaskTracker::new(), &metrics()).unwrap()
}

fn image(name: &str, seed: u8) -> IndexedImage {
    let manifest = Digest::of(&[seed, 1]);
    IndexedImage {
        name: name.to_owned(),
        tag: Some(name.parse().unwrap()),
        target: manifest,
        blobs: vec![
            WalkedBlob {
                digest: manifest,
                size: 300,
                manifest_type: Some(MediaType::from_static(MediaType::OCI_MANIFEST)),
            },
            WalkedBlob { digest: Digest::of(&[seed, 2]), size: 1 << 20, manifest_type: None },
        ],
    }
}

fn peer(n: u8) -> PeerRecord {
    PeerRecord {
        name: PeerName::new(format!("peer-{n}")),
        addrs: vec![format!("127.0.4.{n}:5001").parse().unwrap()],
        reliability: Some(0.5),
        throughput: Some(1e6),
    }
}

/// A file with two images and two peers, closed again.
async fn populated(dir: &Path) -> PeerName {
    let (state, loaded) = open(dir);
    state.update_images(ImageUpdate::Put(image("registry.test/a:v1", 1))).await.unwrap();
    state.update_images(ImageUpdate::Put(image("registry.test/b:v1", 2))).await.unwrap();
    state.save_peers(vec![peer(1), peer(2)]).await.unwrap();
    loaded.identity.name()
}

#[tokio::test]
async fn without_a_data_dir_the_node_starts_cold_and_writes_are_no_ops() {
    let (state, loaded) = State::open(None, &TaskTracker::new(), &metrics()).unwrap();
    assert_eq!(loaded.mode, StartMode::Cold);
    assert!(!state.is_persistent());
    state.update_images(ImageUpdate::Put(image("registry.test/a:v1", 1))).await.unwrap();
}

#[tokio::test]
async fn identity_images_and_peers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let name = populated(dir.path()).await;
    let (_state, loaded) = open(dir.path());
    assert_eq!(loaded.mode, StartMode::Recovered);
    assert_eq!(loaded.identity.name(), name);
    let mut names: Vec<&str> = loaded.images.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["registry.test/a:v1", "registry.test/b:v1"]);
    assert!(loaded.images.contains(&image("registry.test/a:v1", 1)));
    assert_eq!(loaded.peers, vec![peer(1), peer(2)]);
    assert!(loaded.peers_age < Duration::from_secs(60), "{:?}", loaded.peers_age);
}

#[tokio::test]
async fn a_first_start_is_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let (state, loaded) = open(dir.path());
    assert_eq!(loaded.mode, StartMode::Fresh);
    assert!(state.is_persistent());
    assert!(loaded.images.is_empty() && loaded.peers.is_empty());
}

#[tokio::test]
async fn replace_and_remove_change_exactly_the_named_images() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    {
        let (state, _) = open(dir.path());
        let images = vec![image("registry.test/b:v1", 2), image("registry.test/c:v1", 3)];
        state.update_images(ImageUpdate::Replace(images)).await.unwrap();
        state.update_images(ImageUpdate::Remove("registry.test/b:v1".into())).await.unwrap();
    }
    let (_, loaded) = open(dir.path());
    assert_eq!(loaded.images, vec![image("registry.test/c:v1", 3)]);
}

#[tokio::test]
async fn the_old_identity_file_is_migrated_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let old = Identity::generate();
    std::fs::write(dir.path().join(identity::LEGACY_IDENTITY_FILE), old.to_bytes().unwrap()).unwrap();
    let (_, loaded) = open(dir.path());
    assert_eq!(loaded.identity.name(), old.name(), "the PeerId survives the upgrade");
    assert!(!dir.path().join(identity::LEGACY_IDENTITY_FILE).exists());
    drop(loaded);
    let (_, again) = open(dir.path());
    assert_eq!(again.identity.name(), old.name());
}

#[tokio::test]
async fn a_garbage_file_is_set_aside_and_the_state_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STATE_FILE);
    std::fs::write(&path, b"this is not a redb file at all, just some bytes").unwrap();
    let (state, loaded) = open(dir.path());
    assert_eq!(loaded.mode, StartMode::Rebuilt);
    assert!(state.is_persistent());
    assert_eq!(std::fs::read(store::aside_path(&path)).unwrap(), b"this is not a redb file at all, just some bytes");
    drop(state);
    assert_eq!(open(dir.path()).1.mode, StartMode::Recovered, "the rebuilt file is used from then on");
}

#[tokio::test]
async fn a_file_of_another_schema_version_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    {
        let db = redb::Database::create(dir.path().join(STATE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(records::SCHEMA_KEY, b"99".as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let (_, loaded) = open(dir.path());
    assert_eq!(loaded.mode, StartMode::Rebuilt);
    assert!(loaded.images.is_empty());
}

#[tokio::test]
async fn a_stored_value_that_does_not_decode_sets_the_file_aside() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    {
        let db = redb::Database::create(dir.path().join(STATE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(IMAGES).unwrap().insert("registry.test/x:v1", b"{not json".as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let (_, loaded) = open(dir.path());
    assert_eq!(loaded.mode, StartMode::Rebuilt);
}

#[tokio::test]
async fn damaged_bytes_anywhere_never_stop_the_node() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let path = dir.path().join(STATE_FILE);
    let pristine = std::fs::read(&path).unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    let mut modes = Vec::new();
    for _ in 0..40 {
        let mut bytes = pristine.clone();
        for _ in 0..rng.random_range(1..=8) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] ^= rng.random_range(1..=255u8);
        }
        std::fs::write(&path, &bytes).unwrap();
        let (state, loaded) = open(dir.path());
        assert!(state.is_persistent());
        assert!(matches!(loaded.mode, StartMode::Recovered | StartMode::Rebuilt), "{:?}", loaded.mode);
        modes.push(loaded.mode);
    }
    assert!(modes.contains(&StartMode::Rebuilt), "some damage is detected: {modes:?}");
}

#[tokio::test]
async fn a_truncated_file_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let path = dir.path().join(STATE_FILE);
    let bytes = std::fs::read(&path).unwrap();
    for len in [0, 1, 100, 4096, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let (state, loaded) = open(dir.path());
        assert!(state.is_persistent());
        assert!(matches!(loaded.mode, StartMode::Rebuilt | StartMode::Fresh), "{len}: {:?}", loaded.mode);
    }
}

#[tokio::test]
async fn a_file_in_use_by_another_handle_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_held, _) = open(dir.path());
    let err = State::open(Some(dir.path()), &TaskTracker::new(), &metrics()).err().unwrap();
    assert!(matches!(err, Error::InUse { .. }), "{err}");
    assert!(err.to_string().contains("--data-dir"), "{err}");
}

#[test]
fn every_start_mode_is_a_metric_label_value() {
    for mode in [StartMode::Cold, StartMode::Fresh, StartMode::Rebuilt, StartMode::Recovered] {
        assert!(crate::metrics::START_MODES.contains(&mode.as_str()), "{mode:?}");
    }
}
