//! A blob received from peers, written to an anonymous temporary file while
//! it is hashed, and handed out only once its digest has been verified.
//!
//! Why spool instead of passing bytes straight through: containerd keeps
//! every byte it has received in its ingest and resumes with `Range`, so a
//! single corrupt byte that reaches it fails the pull. Blobs from peers not
//! trusted yet, and ranged requests, are spooled: only verified bytes leave
//! (`passthrough` handles trusted peers). The file is unlinked from the
//! start, so nothing is left behind even after a crash.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;

use super::hasher::BackgroundHasher;
use crate::content::{BlobStream, file_range};
use crate::oci::{Digest, ResolvedRange};

/// Bytes gathered before one write on the blocking pool: each handoff moves a lot.
const WRITE_BATCH: usize = 1 << 20;

/// A blob being received. Bytes must be appended in order. Chunks are
/// hashed beside the transfer and written in batches on the blocking pool,
/// without being copied on the way.
pub struct Spool {
    /// `None` only while a batch is being written (or after a failed write).
    file: Option<File>,
    hasher: BackgroundHasher,
    pending: Vec<Bytes>,
    pending_bytes: usize,
    written: u64,
}

impl Spool {
    /// Creates an anonymous file in `dir`.
    pub fn create(dir: &Path) -> io::Result<Self> {
        let file = tempfile::tempfile_in(dir)?;
        Ok(Self {
            file: Some(file),
            hasher: BackgroundHasher::start(),
            pending: Vec::new(),
            pending_bytes: 0,
            written: 0,
        })
    }

    /// Bytes appended so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn append(&mut self, data: &Bytes) -> io::Result<()> {
        self.hasher.update(data.clone()).await.map_err(io::Error::other)?;
        self.pending.push(data.clone());
        self.pending_bytes += data.len();
        self.written += data.len() as u64;
        if self.pending_bytes >= WRITE_BATCH {
            self.write_pending().await?;
        }
        Ok(())
    }

    /// Whether the bytes appended so far hash to `digest`. Hashing starts
    /// over afterwards: call it once, when every byte is in.
    pub async fn matches(&mut self, digest: &Digest) -> io::Result<bool> {
        let hasher = std::mem::replace(&mut self.hasher, BackgroundHasher::start());
        Ok(hasher.finish().await.map_err(io::Error::other)? == *digest)
    }

    /// Drops everything received so far (after a digest mismatch).
    pub async fn reset(&mut self) -> io::Result<()> {
        self.pending.clear();
        self.pending_bytes = 0;
        self.hasher = BackgroundHasher::start();
        self.written = 0;
        self.with_file(|file| {
            file.set_len(0)?;
            // Writes go where the file position is: back to the start.
            file.seek(SeekFrom::Start(0)).map(|_| ())
        })
        .await
    }

    /// Seals a spool whose content was verified.
    pub async fn into_verified(mut self) -> io::Result<VerifiedBlob> {
        self.write_pending().await?;
        let file = self.file.take().ok_or_else(file_lost)?;
        Ok(VerifiedBlob { file, size: self.written })
    }

    async fn write_pending(&mut self) -> io::Result<()> {
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.with_file(move |file| batch.iter().try_for_each(|chunk| file.write_all(chunk))).await
    }

    /// Runs `work` on the file on the blocking pool.
    async fn with_file(&mut self, work: impl FnOnce(&mut File) -> io::Result<()> + Send + 'static) -> io::Result<()> {
        let mut file = self.file.take().ok_or_else(file_lost)?;
        let (file, result) = tokio::task::spawn_blocking(move || {
            let result = work(&mut file);
            (file, result)
        })
        .await
        .map_err(io::Error::other)?;
        self.file = Some(file);
        result
    }
}

fn file_lost() -> io::Error {
    io::Error::other("the spool file was lost by an earlier failed write")
}

/// A blob whose bytes match its digest, ready to be served.
pub struct VerifiedBlob {
    file: File,
    pub size: u64,
}

impl VerifiedBlob {
    /// Streams `range` of the blob, in chunks as the content directory's.
    pub async fn stream(self, range: ResolvedRange) -> io::Result<BlobStream> {
        Ok(file_range::stream_range(self.file, range))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::TryStreamExt;

    async fn collect(stream: BlobStream) -> Vec<u8> {
        stream.try_collect::<Vec<Bytes>>().await.unwrap().concat()
    }

    #[tokio::test]
    async fn verified_content_streams_back_in_any_range() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut spool = Spool::create(dir.path()).unwrap();
        for chunk in data.chunks(70_000) {
            spool.append(&Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        assert!(spool.matches(&Digest::of(&data)).await.unwrap());
        let blob = spool.into_verified().await.unwrap();
        assert_eq!(blob.size, data.len() as u64);
        let range = ResolvedRange { start: 1_000_001, end: 2_500_000 };
        assert_eq!(collect(blob.stream(range).await.unwrap()).await, &data[1_000_001..=2_500_000]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spool file is anonymous");
    }

    #[tokio::test]
    async fn reset_after_written_batches_starts_the_file_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        let bad = Bytes::from(vec![7u8; 3 * WRITE_BATCH + 5]);
        spool.append(&bad).await.unwrap();
        assert!(!spool.matches(&Digest::of(b"good")).await.unwrap());
        spool.reset().await.unwrap();
        let good: Vec<u8> = (0..2 * WRITE_BATCH as u32 + 3).map(|i| (i % 253) as u8).collect();
        for chunk in good.chunks(300_000) {
            spool.append(&Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        assert!(spool.matches(&Digest::of(&good)).await.unwrap());
        let blob = spool.into_verified().await.unwrap();
        let full = ResolvedRange::full(blob.size).unwrap();
        assert_eq!(collect(blob.stream(full).await.unwrap()).await, good);
    }

    #[tokio::test]
    async fn reset_discards_bad_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        spool.append(&Bytes::from_static(b"corrupt")).await.unwrap();
        assert!(!spool.matches(&Digest::of(b"good")).await.unwrap());
        spool.reset().await.unwrap();
        spool.append(&Bytes::from_static(b"good")).await.unwrap();
        assert!(spool.matches(&Digest::of(b"good")).await.unwrap());
        let blob = spool.into_verified().await.unwrap();
        let full = ResolvedRange::full(blob.size).unwrap();
        assert_eq!(collect(blob.stream(full).await.unwrap()).await, b"good");
    }
}
