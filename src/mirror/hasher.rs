//! SHA-256 of a blob computed beside its transfer, off the async runtime.
//!
//! Owns: one blocking-pool task per blob that hashes the chunks it is sent,
//! in order. Hashing a large blob costs about as much CPU as moving it;
//! done inline it would add to the transfer's time, done here it overlaps
//! with it (the next chunk is received and sent while this one is hashed).
//! The queue is bounded, so a hasher that falls behind slows the transfer
//! instead of buffering it.
//!
//! Must not: reorder chunks, or outlive its owner (dropping the hasher
//! closes the queue and ends the task).

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::oci::Digest;

/// Chunks queued for hashing at most (with 256 KiB to 1 MiB chunks: a few MiB).
const QUEUE: usize = 8;

/// Hashes chunks on the blocking pool while the caller goes on.
pub struct BackgroundHasher {
    chunks: mpsc::Sender<Bytes>,
    task: JoinHandle<Sha256>,
}

/// The hashing task ended before the blob did (it panicked or the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the hashing task ended early")]
pub struct HasherGone;

impl BackgroundHasher {
    pub fn start() -> Self {
        let (chunks, mut queue) = mpsc::channel::<Bytes>(QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(chunk) = queue.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher
        });
        Self { chunks, task }
    }

    /// Queues `chunk` (a cheap reference-counted clone of what is sent on),
    /// waiting only while the queue is full.
    pub async fn update(&self, chunk: Bytes) -> Result<(), HasherGone> {
        self.chunks.send(chunk).await.map_err(|_| HasherGone)
    }

    /// The digest of every chunk queued, once all are hashed.
    pub async fn finish(self) -> Result<Digest, HasherGone> {
        drop(self.chunks);
        let hasher = self.task.await.map_err(|_| HasherGone)?;
        Ok(Digest::from_sha256(hasher.finalize().into()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_chunks_in_order() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let hasher = BackgroundHasher::start();
        for chunk in data.chunks(77_777) {
            hasher.update(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        assert_eq!(hasher.finish().await.unwrap(), Digest::of(&data));
    }

    #[tokio::test]
    async fn nothing_hashed_is_the_empty_digest() {
        assert_eq!(BackgroundHasher::start().finish().await.unwrap(), Digest::of(b""));
    }
}
