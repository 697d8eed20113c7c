//! Recovery and reconcile in-process: a real state file, the real
//! advertiser, the in-memory containerd and a router that counts what it is
//! asked to announce. Keys persisted by one run are announced at once by the
//! next, exactly once; images deleted while the node was down are withdrawn,
//! new ones advertised; a run interrupted before or during its reconcile
//! leaves a state the next run finishes from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/images.rs"]
mod images;
#[path = "support/wait.rs"]
mod wait;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use images::{TestImage, add_image, layer_bytes};
use shoal::advertiser::{Advertiser, AdvertiserConfig};
use shoal::content::memory::MemoryStore;
use shoal::content::{ContentEvent, ContentIndex};
use shoal::health::Health;
use shoal::metrics::Metrics;
use shoal::oci::Key;
use shoal::routing::memory::{MemoryNetwork, MemoryRouter};
use shoal::routing::{Error, Links, Peer, PeerName, Router};
use shoal::state::{StartMode, State};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wait::eventually_within;

const WAIT: Duration = Duration::from_secs(10);

/// A memory router that counts provides per key and can hold them back.
#[derive(Clone)]
struct CountingRouter {
    inner: MemoryRouter,
    /// Provide calls per key, whether or not the gate let them through.
    attempts: Arc<Mutex<HashMap<Key, usize>>>,
    /// Provides that went through, per key.
    provides: Arc<Mutex<HashMap<Key, usize>>>,
    /// Provides wait for a permit; closed, they never complete.
    gate: Arc<Semaphore>,
}

impl CountingRouter {
    fn new(network: &MemoryNetwork) -> Self {
        let peer = Peer { name: PeerName::new("node"), endpoint: ([127, 0, 4, 200], 5000).into() };
        let gate = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        Self { inner: network.router(peer), attempts: Arc::default(), provides: Arc::default(), gate }
    }

    fn attempted(&self, key: &Key) -> bool {
        self.attempts.lock().unwrap().contains_key(key)
    }

    fn counts(&self) -> HashMap<Key, usize> {
        self.provides.lock().unwrap().clone()
    }

    fn provided(&self) -> BTreeSet<Key> {
        self.inner.provided_keys().into_iter().collect()
    }
}

#[async_trait]
impl Router for CountingRouter {
    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn lookup(&self, key: &Key, limit: usize) -> BoxStream<'static, Peer> {
        self.inner.lookup(key, limit)
    }

    async fn provide(&self, key: &Key) -> Result<(), Error> {
        *self.attempts.lock().unwrap().entry(key.clone()).or_default() += 1;
        let _permit = self.gate.acquire().await.map_err(|_| Error::Closed)?;
        *self.provides.lock().unwrap().entry(key.clone()).or_default() += 1;
        self.inner.provide(key).await
    }

    async fn withdraw(&self, key: &Key) -> Result<(), Error> {
        self.inner.withdraw(key).await
    }

    fn connected_peers(&self) -> usize {
        self.inner.connected_peers()
    }

    fn links(&self) -> Links {
        self.inner.links()
    }
}

fn keys_of(images: &[&TestImage]) -> BTreeSet<Key> {
    let mut keys = BTreeSet::new();
    for image in images {
        keys.insert(Key::Tag(image.name.parse().unwrap()));
        keys.insert(Key::Digest(image.manifest));
        keys.insert(Key::Digest(image.config));
        keys.extend(image.layers.iter().map(|(d, _)| Key::Digest(*d)));
    }
    keys
}

/// One run of a node: the state opened from `dir`, an advertiser recovering from it.
struct Run {
    mode: StartMode,
    metrics: Metrics,
    events: mpsc::Sender<ContentEvent>,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    tracker: TaskTracker,
}

impl Run {
    fn start(dir: &std::path::Path, store: &MemoryStore, router: &CountingRouter) -> Self {
        let tracker = TaskTracker::new();
        let metrics = Metrics::new().unwrap();
        let (state, loaded) = State::open(Some(dir), &tracker, &metrics).unwrap();
        let shared: Arc<dyn Router> = Arc::new(router.clone());
        let index = ContentIndex::new(Arc::new(store.clone()));
        let config =
            AdvertiserConfig { readvertise_interval: Duration::from_secs(3600), concurrency: 2, batch_size: 3 };
        let health = Health::new(shared.clone());
        let mut advertiser = Advertiser::new(index, shared, state, metrics.clone(), health, config);
        advertiser.recover(loaded.images);
        let (events, inbox) = mpsc::channel(16);
        let token = CancellationToken::new();
        let task = tokio::spawn(advertiser.run(inbox, token.clone()));
        Self { mode: loaded.mode, metrics, events, token, task, tracker }
    }

    /// Writes committed to the state file so far.
    fn state_writes(&self) -> u64 {
        let text = self.metrics.encode().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("shoal_state_write_duration_seconds_count "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// containerd is reachable: rescan and reconcile.
    async fn connect(&self) {
        self.events.send(ContentEvent::Connected).await.unwrap();
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.task).await.unwrap().unwrap();
        self.tracker.close();
        tokio::time::timeout(WAIT, self.tracker.wait()).await.unwrap();
    }
}

/// A store with images X and Y, advertised and persisted by a first run.
async fn first_run(dir: &std::path::Path) -> (MemoryStore, TestImage, TestImage) {
    let store = MemoryStore::new();
    let x = add_image(&store, "registry.test/x:v1", &[layer_bytes(1, 500), layer_bytes(2, 500)]);
    let y = add_image(&store, "registry.test/y:v1", &[layer_bytes(3, 500)]);
    let router = CountingRouter::new(&MemoryNetwork::new());
    let run = Run::start(dir, &store, &router);
    assert_eq!(run.mode, StartMode::Fresh);
    run.connect().await;
    let want = keys_of(&[&x, &y]);
    eventually_within("the first run advertises X and Y", WAIT, || router.provided() == want).await;
    run.stop().await;
    (store, x, y)
}

#[tokio::test]
async fn persisted_keys_are_announced_once_and_changes_made_while_down_are_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let (store, x, y) = first_run(dir.path()).await;
    // While the node is down: X is deleted, Z is pulled.
    store.delete_image(&x.name);
    let z = add_image(&store, "registry.test/z:v1", &[layer_bytes(4, 500)]);

    let router = CountingRouter::new(&MemoryNetwork::new());
    let run = Run::start(dir.path(), &store, &router);
    assert_eq!(run.mode, StartMode::Recovered);
    let persisted = keys_of(&[&x, &y]);
    eventually_within("the persisted keys are re-advertised before any rescan", WAIT, || {
        router.provided() == persisted
    })
    .await;

    run.connect().await;
    let want = keys_of(&[&y, &z]);
    eventually_within("X is withdrawn and Z advertised", WAIT, || router.provided() == want).await;
    let counts = router.counts();
    assert!(counts.values().all(|n| *n == 1), "nothing is announced twice: {counts:?}");
    let announced: BTreeSet<Key> = counts.into_keys().collect();
    assert_eq!(announced, persisted.union(&keys_of(&[&z])).cloned().collect());
    run.stop().await;

    let reconciled = BTreeSet::from([y.name.clone(), z.name.clone()]);
    assert_eq!(persisted_names(dir.path()), reconciled, "the state holds the reconciled index");
}

#[tokio::test]
async fn an_interrupted_reconcile_is_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (store, x, y) = first_run(dir.path()).await;
    store.delete_image(&x.name);
    let z = add_image(&store, "registry.test/z:v1", &[layer_bytes(4, 500)]);

    // Interrupted before the rescan: nothing changed in the state.
    let router = CountingRouter::new(&MemoryNetwork::new());
    Run::start(dir.path(), &store, &router).stop().await;

    // Interrupted during it: the rescan is persisted, but no provide completes.
    let stuck = CountingRouter::new(&MemoryNetwork::new());
    stuck.gate.close();
    let run = Run::start(dir.path(), &store, &stuck);
    run.connect().await;
    let reconciled = [y.name.clone(), z.name.clone()];
    // The index is persisted before keys reach the pipeline: once a key of Z
    // was offered to the router, the reconcile is in the state file.
    let z_manifest = Key::Digest(z.manifest);
    eventually_within("the interrupted run reached the reconcile", WAIT, || stuck.attempted(&z_manifest)).await;
    run.stop().await;
    assert!(stuck.provided().is_empty(), "nothing was announced by the interrupted run");
    assert_eq!(persisted_names(dir.path()), BTreeSet::from(reconciled.clone()), "but its reconcile was persisted");

    // The next run recovers whatever was persisted and finishes the job.
    let router = CountingRouter::new(&MemoryNetwork::new());
    let run = Run::start(dir.path(), &store, &router);
    let want = keys_of(&[&y, &z]);
    eventually_within("the next run re-advertises Y and Z from the state", WAIT, || router.provided() == want).await;
    run.connect().await;
    eventually_within("its rescan is persisted", WAIT, || run.state_writes() >= 1).await;
    assert_eq!(router.provided(), want, "and changed nothing");
    run.stop().await;
    let counts = router.counts();
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert!(keys_of(&[&x]).difference(&keys_of(&[&y])).all(|k| !counts.contains_key(k)), "X is never announced again");
    assert_eq!(persisted_names(dir.path()), BTreeSet::from(reconciled));
}

fn persisted_names(dir: &std::path::Path) -> BTreeSet<String> {
    let (_state, loaded) = State::open(Some(dir), &TaskTracker::new(), &Metrics::new().unwrap()).unwrap();
    loaded.images.iter().map(|i| i.name.clone()).collect()
}
