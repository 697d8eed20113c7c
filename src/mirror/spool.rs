//! A blob received from peers, written to an anonymous temporary file while
//! it is hashed, and handed out only once its digest has been verified.
//!
//! Why spool instead of passing bytes straight through: containerd keeps
//! every byte it has received in its ingest and resumes with `Range`, so a
//! single corrupt byte that reaches it fails the pull (and can poison the
//! ingest). Only verified bytes ever leave Shoal. The file is unlinked from
//! the start, so nothing is left behind even after a crash.

use std::io::SeekFrom;
use std::path::Path;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::content::{BlobStream, file_range};
use crate::oci::{Digest, ResolvedRange};

/// Write buffer: large enough that each blocking write moves a lot of data.
const WRITE_BUFFER: usize = 1 << 20;

/// A blob being received. Bytes must be appended in order.
pub struct Spool {
    file: BufWriter<tokio::fs::File>,
    hasher: Sha256,
    written: u64,
}

impl Spool {
    /// Creates an anonymous file in `dir`.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::File::from_std(tempfile::tempfile_in(dir)?);
        Ok(Self { file: BufWriter::with_capacity(WRITE_BUFFER, file), hasher: Sha256::new(), written: 0 })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn append(&mut self, data: &Bytes) -> std::io::Result<()> {
        self.file.write_all(data).await?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Drops everything received so far (after a digest mismatch).
    pub async fn reset(&mut self) -> std::io::Result<()> {
        self.file.flush().await?;
        let file = self.file.get_mut();
        file.set_len(0).await?;
        file.seek(SeekFrom::Start(0)).await?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    /// Whether the bytes received hash to `digest`.
    pub fn matches(&self, digest: &Digest) -> bool {
        Digest::from_sha256(self.hasher.clone().finalize().into()) == *digest
    }

    /// Seals a spool whose content was verified.
    pub async fn into_verified(mut self) -> std::io::Result<VerifiedBlob> {
        self.file.flush().await?;
        Ok(VerifiedBlob { file: self.file.into_inner(), size: self.written })
    }
}

/// A blob whose bytes match its digest, ready to be served.
pub struct VerifiedBlob {
    file: tokio::fs::File,
    pub size: u64,
}

impl VerifiedBlob {
    /// Streams `range` of the blob, in chunks as the content directory's.
    pub async fn stream(self, range: ResolvedRange) -> std::io::Result<BlobStream> {
        Ok(file_range::stream_range(self.file.into_std().await, range))
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
        assert!(spool.matches(&Digest::of(&data)));
        let blob = spool.into_verified().await.unwrap();
        assert_eq!(blob.size, data.len() as u64);
        let range = ResolvedRange { start: 1_000_001, end: 2_500_000 };
        assert_eq!(collect(blob.stream(range).await.unwrap()).await, &data[1_000_001..=2_500_000]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spool file is anonymous");
    }

    #[tokio::test]
    async fn reset_discards_bad_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        spool.append(&Bytes::from_static(b"corrupt")).await.unwrap();
        assert!(!spool.matches(&Digest::of(b"good")));
        spool.reset().await.unwrap();
        spool.append(&Bytes::from_static(b"good")).await.unwrap();
        assert!(spool.matches(&Digest::of(b"good")));
        let blob = spool.into_verified().await.unwrap();
        let full = ResolvedRange::full(blob.size).unwrap();
        assert_eq!(collect(blob.stream(full).await.unwrap()).await, b"good");
    }
}
