//! SHA-256 of a blob computed beside its transfer, off the async runtime.
//!
//! Owns: hashing chunks in order, in batches of [`BATCH`] bytes, each batch
//! on tokio's blocking pool while the caller goes on receiving and sending
//! the next. Hashing a large blob costs about as much CPU as moving it;
//! done inline it would add to the transfer's time, done here it overlaps
//! with it. At most one batch per blob is being hashed at a time, so a
//! hasher that falls behind slows its transfer instead of buffering it.
//!
//! Must not: reorder chunks, or hold a blocking thread between batches (a
//! thread parked waiting for chunks could starve the blocking pool that
//! file reads and spool writes need).

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

use crate::oci::Digest;

/// Bytes gathered before a batch goes to the blocking pool.
const BATCH: usize = 1 << 20;

/// Hashes chunks on the blocking pool while the caller goes on.
pub struct BackgroundHasher {
    pending: Vec<Bytes>,
    pending_bytes: usize,
    state: State,
}

enum State {
    Idle(Box<Sha256>),
    Hashing(JoinHandle<Box<Sha256>>),
    /// A batch's task failed (it panicked, or the runtime is shutting down).
    Gone,
}

/// The hashing task ended before the blob did (it panicked or the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the hashing task ended early")]
pub struct HasherGone;

impl BackgroundHasher {
    pub fn start() -> Self {
        Self { pending: Vec::new(), pending_bytes: 0, state: State::Idle(Box::new(Sha256::new())) }
    }

    /// Adds `chunk` (a cheap reference-counted clone of what is sent on);
    /// waits only when a full batch is ready and the previous one is still
    /// being hashed.
    pub async fn update(&mut self, chunk: Bytes) -> Result<(), HasherGone> {
        self.pending_bytes += chunk.len();
        self.pending.push(chunk);
        if self.pending_bytes >= BATCH {
            let hasher = self.idle().await?;
            self.state = State::Hashing(hash_batch(hasher, self.take_pending()));
        }
        Ok(())
    }

    /// The digest of every chunk added, once all are hashed.
    pub async fn finish(mut self) -> Result<Digest, HasherGone> {
        let hasher = self.idle().await?;
        let hasher = hash_batch(hasher, self.take_pending()).await.map_err(|_| HasherGone)?;
        Ok(Digest::from_sha256(hasher.finalize().into()))
    }

    /// The hasher, once the batch in flight (if any) is done.
    async fn idle(&mut self) -> Result<Box<Sha256>, HasherGone> {
        match std::mem::replace(&mut self.state, State::Gone) {
            State::Idle(hasher) => Ok(hasher),
            State::Hashing(task) => task.await.map_err(|_| HasherGone),
            State::Gone => Err(HasherGone),
        }
    }

    fn take_pending(&mut self) -> Vec<Bytes> {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }
}

fn hash_batch(mut hasher: Box<Sha256>, batch: Vec<Bytes>) -> JoinHandle<Box<Sha256>> {
    tokio::task::spawn_blocking(move || {
        for chunk in &batch {
            hasher.update(chunk);
        }
        hasher
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_chunks_in_order() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut hasher = BackgroundHasher::start();
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
