//! The advertiser keeps the router in step with containerd's content:
//! in-memory store and network, the real advertiser task.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/images.rs"]
mod images;
#[path = "support/wait.rs"]
mod wait;

use std::sync::Arc;
use std::time::Duration;
use wait::eventually;

use images::{add_image, layer_bytes};
use shoal::advertiser::{Advertiser, AdvertiserConfig};
use shoal::content::memory::MemoryStore;
use shoal::content::{ContentIndex, ContentStore};
use shoal::health::Health;
use shoal::metrics::Metrics;
use shoal::oci::Key;
use shoal::routing::memory::{MemoryNetwork, MemoryRouter};
use shoal::routing::{Peer, PeerName, Router};
use shoal::state::State;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Running {
    store: MemoryStore,
    network: MemoryNetwork,
    router: MemoryRouter,
    health: Health,
    token: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn start(store: MemoryStore, readvertise_interval: Duration) -> Running {
    let network = MemoryNetwork::new();
    let router = network.router(Peer { name: PeerName::new("node"), endpoint: ([127, 0, 0, 1], 5000).into() });
    let shared: Arc<dyn Router> = Arc::new(router.clone());
    let health = Health::new(shared.clone());
    let index = ContentIndex::new(Arc::new(store.clone()));
    let config = AdvertiserConfig { readvertise_interval, concurrency: 4, batch_size: 16 };
    let metrics = Metrics::new().unwrap();
    let state = State::disabled(&metrics);
    let advertiser = Advertiser::new(index, shared, state, metrics, health.clone(), config);
    let token = CancellationToken::new();
    let (tx, rx) = mpsc::channel(64);
    let watched = store.clone();
    tokio::spawn(async move { watched.watch(tx).await });
    tokio::spawn(advertiser.run(rx, token.clone()));
    Running { store, network, router, health, token }
}

fn provided(network: &MemoryNetwork, key: &Key) -> bool {
    !network.providers(key).is_empty()
}

#[tokio::test]
async fn existing_new_and_deleted_images_are_advertised_and_withdrawn() {
    let store = MemoryStore::new();
    let old = add_image(&store, "registry.test/old:v1", &[layer_bytes(1, 1000)]);
    let running = start(store, Duration::from_secs(3600));
    let old_tag: Key = Key::Tag("registry.test/old:v1".parse().unwrap());
    eventually("the existing image is advertised", || provided(&running.network, &old_tag)).await;
    assert!(running.health.is_ready(), "indexed once and the router is ready");
    assert!(provided(&running.network, &Key::Digest(old.layers[0].0)));

    let new = add_image(&running.store, "registry.test/new:v1", &[layer_bytes(2, 1000)]);
    eventually("a new image is advertised", || provided(&running.network, &Key::Digest(new.layers[0].0))).await;

    running.store.delete_image("registry.test/old:v1");
    eventually("a deleted image is withdrawn", || !provided(&running.network, &old_tag)).await;
    assert!(!provided(&running.network, &Key::Digest(old.manifest)));
    assert!(provided(&running.network, &Key::Digest(new.manifest)), "other images stay advertised");
}

#[tokio::test]
async fn a_deleted_blob_is_withdrawn() {
    let store = MemoryStore::new();
    let image = add_image(&store, "registry.test/app:v1", &[layer_bytes(1, 1000), layer_bytes(2, 1000)]);
    let running = start(store, Duration::from_secs(3600));
    let layer = Key::Digest(image.layers[1].0);
    eventually("the layer is advertised", || provided(&running.network, &layer)).await;
    running.store.delete_blob(&image.layers[1].0);
    eventually("the deleted layer is withdrawn", || !provided(&running.network, &layer)).await;
    assert!(provided(&running.network, &Key::Digest(image.layers[0].0)));
}

#[tokio::test]
async fn changes_missed_while_disconnected_are_caught_up_on_reconnect() {
    let store = MemoryStore::new();
    let image = add_image(&store, "registry.test/app:v1", &[layer_bytes(1, 1000)]);
    let running = start(store, Duration::from_secs(3600));
    let tag = Key::Tag("registry.test/app:v1".parse().unwrap());
    eventually("advertised", || provided(&running.network, &tag)).await;
    running.store.disconnect();
    // No event reaches the advertiser while containerd is away.
    running.store.delete_image("registry.test/app:v1");
    let added = add_image(&running.store, "registry.test/added:v1", &[layer_bytes(7, 1000)]);
    running.store.reconnect();
    eventually("the deletion is seen after reconnecting", || !provided(&running.network, &tag)).await;
    assert!(!provided(&running.network, &Key::Digest(image.manifest)));
    eventually("the addition too", || provided(&running.network, &Key::Digest(added.manifest))).await;
}

#[tokio::test]
async fn keys_are_advertised_again_every_interval() {
    let store = MemoryStore::new();
    let image = add_image(&store, "registry.test/app:v1", &[layer_bytes(1, 1000)]);
    let running = start(store, Duration::from_secs(1));
    let manifest = Key::Digest(image.manifest);
    eventually("advertised", || provided(&running.network, &manifest)).await;
    // Withdraw behind the advertiser's back, as an expired record would vanish.
    running.router.withdraw(&manifest).await.unwrap();
    assert!(!provided(&running.network, &manifest));
    eventually("re-advertised by the periodic sweep", || provided(&running.network, &manifest)).await;
}
