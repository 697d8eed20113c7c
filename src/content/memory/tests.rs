#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::TryStreamExt;

use super::*;
use crate::oci::MediaType;

const WAIT: Duration = Duration::from_secs(5);

fn target(digest: Digest) -> Descriptor {
    Descriptor { digest, media_type: MediaType::from_static(MediaType::OCI_MANIFEST), size: 1 }
}

/// Starts a watcher and waits until it is subscribed (and its `Connected`, if
/// any, has been sent).
async fn watching(store: &MemoryStore) -> (mpsc::Receiver<ContentEvent>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let watcher = store.clone();
    let before = store.watchers();
    let task = tokio::spawn(async move { watcher.watch(tx).await });
    tokio::time::timeout(WAIT, async {
        while store.watchers() == before {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("watcher subscribed");
    (rx, task)
}

async fn next(rx: &mut mpsc::Receiver<ContentEvent>) -> ContentEvent {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("event in time").expect("watch still running")
}

#[tokio::test]
async fn a_restart_is_reported_and_changes_while_down_send_nothing() {
    let store = MemoryStore::new();
    let (mut rx, _task) = watching(&store).await;
    assert_eq!(next(&mut rx).await, ContentEvent::Connected);

    store.disconnect();
    assert_eq!(next(&mut rx).await, ContentEvent::Disconnected);
    assert!(matches!(store.images().await, Err(Error::Unavailable(_))));
    assert!(matches!(store.size(&Digest::of(b"x")).await, Err(Error::Unavailable(_))));
    store.put_image("registry.test/missed:v1", target(Digest::of(b"m")));

    store.reconnect();
    assert_eq!(next(&mut rx).await, ContentEvent::Connected);
    assert_eq!(store.images().await.unwrap().len(), 1, "the change made while down is there after a rescan");
    store.delete_image("registry.test/missed:v1");
    assert_eq!(next(&mut rx).await, ContentEvent::ImageDeleted { name: "registry.test/missed:v1".to_owned() });
}

#[tokio::test]
async fn a_watcher_started_while_down_connects_on_reconnect() {
    let store = MemoryStore::new();
    store.disconnect();
    let (mut rx, _task) = watching(&store).await;
    store.reconnect();
    assert_eq!(next(&mut rx).await, ContentEvent::Connected);
}

#[tokio::test]
async fn deleting_what_is_absent_sends_nothing() {
    let store = MemoryStore::new();
    let (mut rx, _task) = watching(&store).await;
    assert_eq!(next(&mut rx).await, ContentEvent::Connected);
    assert!(!store.delete_image("registry.test/none:v1"));
    assert!(!store.delete_blob(&Digest::of(b"none")));
    let digest = store.add_blob(&b"blob"[..]);
    assert!(store.delete_blob(&digest));
    assert_eq!(next(&mut rx).await, ContentEvent::ContentDeleted { digest });
}

#[tokio::test]
async fn watch_returns_when_the_receiver_is_dropped() {
    let store = MemoryStore::new();
    let (rx, task) = watching(&store).await;
    drop(rx);
    tokio::time::timeout(WAIT, task).await.expect("watch returned").unwrap();
}

#[tokio::test]
async fn reads_come_in_chunks_and_a_range_past_the_end_fails() {
    let store = MemoryStore::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let digest = store.add_blob(data.clone());
    let chunks: Vec<Bytes> =
        store.read(&digest, ResolvedRange { start: 1, end: 199_998 }).await.unwrap().try_collect().await.unwrap();
    assert!(chunks.len() > 1);
    assert_eq!(chunks.concat(), &data[1..199_999]);

    let past_end: Vec<io::Result<Bytes>> =
        store.read(&digest, ResolvedRange { start: 199_990, end: 200_009 }).await.unwrap().collect().await;
    assert_eq!(past_end.len(), 2);
    assert_eq!(past_end[0].as_ref().unwrap().len(), 10);
    assert_eq!(past_end[1].as_ref().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_told_to_rescan() {
    let store = MemoryStore::new();
    let (tx, mut rx) = mpsc::channel(1);
    let watcher = store.clone();
    let _task = tokio::spawn(async move { watcher.watch(tx).await });
    assert_eq!(next(&mut rx).await, ContentEvent::Connected);
    for i in 0..EVENT_BACKLOG + 10 {
        store.put_image(&format!("registry.test/app:{i}"), target(Digest::of(b"m")));
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&ContentEvent::Connected) {
        seen.push(next(&mut rx).await);
    }
    assert_eq!(seen[seen.len() - 2], ContentEvent::Disconnected, "a rescan is announced as a reconnect");
}
