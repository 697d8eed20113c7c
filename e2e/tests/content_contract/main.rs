//! The content store contract, run against the in-memory fake and against a
//! real containerd daemon that each `real_containerd_*` test starts itself
//! (the harness's launcher, in a temporary directory of its own).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod seeder;

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use nix::sys::signal::Signal;
use seeder::{seeder, store};
use shoal::content::contract::{Seeder, content_store_contract, test_bytes};
use shoal::content::memory::MemoryStore;
use shoal::content::{ContainerdConfig, ContainerdStore, ContentEvent, ContentStore, Descriptor, Error};
use shoal::oci::{Digest, MediaType, ResolvedRange};
use shoal_e2e::containerd::Containerd;
use tokio::sync::mpsc;

/// Bound on any one expected event or call in these tests.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn memory_store_meets_the_contract() {
    let store = MemoryStore::new();
    content_store_contract(&store, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_containerd_store_meets_the_contract_over_grpc_and_from_the_content_dir() -> anyhow::Result<()> {
    let daemon = Containerd::start_temporary().await?;
    // One namespace per store: each run of the contract starts without images.
    content_store_contract(&store(&daemon, "contract-grpc", false), &seeder(&daemon, "contract-grpc").await?).await;
    content_store_contract(&store(&daemon, "contract-disk", true), &seeder(&daemon, "contract-disk").await?).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_containerd_blobs_are_read_from_the_content_dir_without_grpc() -> anyhow::Result<()> {
    let daemon = Containerd::start_temporary().await?;
    let data = test_bytes(300_000);
    let digest = seeder(&daemon, "disk").await?.add_blob(data.clone()).await.map_err(anyhow::Error::from_boxed)?;
    // The socket is wrong: only the content directory can answer.
    let store = ContainerdStore::new(ContainerdConfig {
        socket: daemon.content_dir().join("no-such.sock"),
        namespace: "disk".to_owned(),
        content_path: Some(daemon.content_dir()),
    });
    let range = ResolvedRange { start: 1000, end: 250_000 };
    let chunks: Vec<Bytes> = store.read(&digest, range).await?.try_collect().await?;
    assert_eq!(chunks.concat(), &data[1000..=250_000]);
    let absent = store.read(&Digest::of(b"absent"), range).await.err();
    assert!(matches!(absent, Some(Error::Unavailable(_))), "no file and no containerd: {absent:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_containerd_watch_reconnects_after_restart() -> anyhow::Result<()> {
    let mut daemon = Containerd::start_temporary().await?;
    let store = store(&daemon, "restart", false);
    let (tx, mut events) = mpsc::channel(16);
    let watcher = store.clone();
    let watch = tokio::spawn(async move { watcher.watch(tx).await });
    assert_eq!(next(&mut events).await, ContentEvent::Connected);

    daemon.kill();
    assert_eq!(next(&mut events).await, ContentEvent::Disconnected);
    assert!(matches!(store.images().await, Err(Error::Unavailable(_))));
    daemon.restart().await?;
    assert_eq!(next(&mut events).await, ContentEvent::Connected);

    let seeder = seeder(&daemon, "restart").await?;
    let manifest = test_bytes(1000);
    let digest = seeder.add_blob(manifest.clone()).await.map_err(anyhow::Error::from_boxed)?;
    let target = Descriptor { digest, media_type: MediaType::from_static(MediaType::OCI_MANIFEST), size: 1000 };
    seeder.put_image("registry.test/restart/app:v1", target).await.map_err(anyhow::Error::from_boxed)?;
    assert_eq!(next(&mut events).await, ContentEvent::ImageChanged { name: "registry.test/restart/app:v1".to_owned() });

    let images = store.images().await?;
    assert_eq!(images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["registry.test/restart/app:v1"]);

    drop(events);
    tokio::time::timeout(WAIT, watch).await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_containerd_that_hangs_fails_calls_with_unavailable_until_it_answers_again() -> anyhow::Result<()> {
    let daemon = Containerd::start_temporary().await?;
    let store = store(&daemon, "hung", false);
    assert_eq!(store.images().await?, []);

    daemon.freeze().await?;
    let hung = tokio::time::timeout(WAIT, store.images()).await;
    daemon.signal(Signal::SIGCONT)?;
    assert!(matches!(hung, Ok(Err(Error::Unavailable(_)))), "a frozen daemon: {hung:?}");
    assert_eq!(tokio::time::timeout(WAIT, store.images()).await??, []);
    Ok(())
}

/// Needs no daemon: a store pointed at a missing socket answers at once.
#[test]
fn containerd_store_without_a_daemon_fails_fast_with_unavailable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Created outside any runtime: `new` must not connect or spawn.
    let store = ContainerdStore::new(ContainerdConfig {
        socket: dir.path().join("containerd.sock"),
        namespace: "k8s.io".to_owned(),
        content_path: Some(dir.path().to_owned()),
    });
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let digest = Digest::of(b"x");
        let fast = Duration::from_secs(3);
        let images = tokio::time::timeout(fast, store.images()).await?;
        assert!(matches!(images, Err(Error::Unavailable(_))), "{images:?}");
        let image = tokio::time::timeout(fast, store.image("registry.test/app:v1")).await?;
        assert!(matches!(image, Err(Error::Unavailable(_))), "{image:?}");
        let size = tokio::time::timeout(fast, store.size(&digest)).await?;
        assert!(matches!(size, Err(Error::Unavailable(_))), "{size:?}");
        let read = tokio::time::timeout(fast, store.read(&digest, ResolvedRange { start: 0, end: 0 })).await?;
        assert!(matches!(read, Err(Error::Unavailable(_))), "{:?}", read.err());

        // A watcher sends nothing while there is no daemon, and stops when told.
        let (tx, mut events) = mpsc::channel(4);
        let watcher = store.clone();
        let watch = tokio::spawn(async move { watcher.watch(tx).await });
        assert!(tokio::time::timeout(Duration::from_millis(300), events.recv()).await.is_err());
        drop(events);
        tokio::time::timeout(fast, watch).await??;
        anyhow::Ok(())
    })
}

async fn next(events: &mut mpsc::Receiver<ContentEvent>) -> ContentEvent {
    tokio::time::timeout(WAIT, events.recv()).await.expect("an event in time").expect("watch still running")
}
