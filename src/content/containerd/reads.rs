//! Blob reads: straight from containerd's content directory when we can, else
//! through the content Read API.
//!
//! Owns: opening `<content_path>/blobs/sha256/<hex>`, the gRPC read with
//! offset and size, and the guarantee that a stream yields exactly the
//! requested number of bytes or ends with an error. Does not verify digests:
//! containerd wrote and verified these blobs.

use std::io;
use std::path::Path;

use bytes::Bytes;
use containerd_client::services::v1::ReadContentRequest;
use futures::stream::{self, Stream, StreamExt};

use super::client::{self, Client};
use crate::content::{BlobStream, Error, file_range};
use crate::oci::{Digest, ResolvedRange};

/// Opens `range` of a blob in the content directory, or `None` if the blob
/// file cannot be opened there (the caller then asks containerd).
pub(super) async fn read_local(content_path: &Path, digest: &Digest, range: ResolvedRange) -> Option<BlobStream> {
    let path = content_path.join("blobs").join("sha256").join(digest.hex());
    match tokio::fs::File::open(&path).await {
        // `file_range` reads from the page cache on the task, or from disk on the blocking pool.
        Ok(file) => Some(file_range::stream_range(file.into_std().await, range)),
        Err(error) => {
            tracing::debug!(path = %path.display(), %error, "blob not readable on disk, reading through containerd");
            None
        }
    }
}

/// Streams `range` of a blob through containerd's content Read API.
pub(super) async fn read_remote(client: &Client, digest: &Digest, range: ResolvedRange) -> Result<BlobStream, Error> {
    let offset = i64::try_from(range.start).map_err(|_| Error::Request(format!("offset {} too large", range.start)))?;
    let size = i64::try_from(range.len()).map_err(|_| Error::Request(format!("length {} too large", range.len())))?;
    let request = client.request(ReadContentRequest { digest: digest.to_string(), offset, size })?;
    let mut content = client.content()?;
    let Some(responses) = client::call("read content", content.read(request)).await? else {
        return Err(Error::NotFound(*digest));
    };
    let chunks = responses.map(|response| match response {
        Ok(response) => Ok(Bytes::from(response.data)),
        Err(status) => Err(io::Error::other(client::status_error("read content", &status))),
    });
    Ok(exactly(chunks, range.len()))
}

/// Passes `chunks` through, failing the stream if it ends before `expected`
/// bytes (`UnexpectedEof`) or carries more (`InvalidData`). Empty chunks are
/// dropped. Nothing follows the first error.
pub(super) fn exactly<S>(chunks: S, expected: u64) -> BlobStream
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    let state = Some((chunks.boxed(), 0u64));
    stream::unfold(state, move |state| async move {
        let (mut chunks, mut seen) = state?;
        loop {
            let item = match chunks.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    seen = seen.saturating_add(chunk.len() as u64);
                    if seen > expected {
                        let message = format!("blob stream carried {seen} bytes, expected {expected}");
                        return Some((Err(io::Error::new(io::ErrorKind::InvalidData, message)), None));
                    }
                    return Some((Ok(chunk), Some((chunks, seen))));
                }
                Some(Err(error)) => Err(error),
                None if seen < expected => {
                    let message = format!("blob ended after {seen} of {expected} bytes");
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, message))
                }
                None => return None,
            };
            return Some((item, None));
        }
    })
    .boxed()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    async fn collect(stream: BlobStream) -> (Vec<u8>, Option<io::ErrorKind>) {
        let items: Vec<io::Result<Bytes>> = stream.collect().await;
        let mut data = Vec::new();
        let mut error = None;
        for item in items {
            match item {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(e) => error = Some(e.kind()),
            }
        }
        (data, error)
    }

    #[tokio::test]
    async fn exact_streams_pass_through() {
        let (data, error) = collect(exactly(chunks(&[b"ab", b"", b"cd"]), 4)).await;
        assert_eq!((data.as_slice(), error), (&b"abcd"[..], None));
    }

    #[tokio::test]
    async fn short_streams_end_with_unexpected_eof() {
        let (data, error) = collect(exactly(chunks(&[b"ab"]), 4)).await;
        assert_eq!((data.as_slice(), error), (&b"ab"[..], Some(io::ErrorKind::UnexpectedEof)));
    }

    #[tokio::test]
    async fn long_streams_fail_with_invalid_data() {
        let (data, error) = collect(exactly(chunks(&[b"ab", b"cde"]), 4)).await;
        assert_eq!((data.as_slice(), error), (&b"ab"[..], Some(io::ErrorKind::InvalidData)));
    }

    fn content_dir_with(data: &[u8]) -> (tempfile::TempDir, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::of(data);
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join(digest.hex()), data).unwrap();
        (dir, digest)
    }

    #[tokio::test]
    async fn reads_ranges_from_the_content_directory() {
        let data: Vec<u8> = (0..3 * crate::content::file_range::CHUNK_SIZE + 7).map(|i| (i % 251) as u8).collect();
        let (dir, digest) = content_dir_with(&data);
        let range = ResolvedRange { start: 5, end: data.len() as u64 - 2 };
        let stream = read_local(dir.path(), &digest, range).await.unwrap();
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert!(chunks.len() >= 3, "large chunks, got {}", chunks.len());
        assert_eq!(chunks.concat(), &data[5..data.len() - 1]);
    }

    #[tokio::test]
    async fn a_blob_shorter_than_the_range_ends_with_an_error() {
        let (dir, digest) = content_dir_with(b"0123456789");
        let stream = read_local(dir.path(), &digest, ResolvedRange { start: 4, end: 19 }).await.unwrap();
        let (data, error) = collect(stream).await;
        assert_eq!((data.as_slice(), error), (&b"456789"[..], Some(io::ErrorKind::UnexpectedEof)));
    }

    #[tokio::test]
    async fn a_missing_blob_file_is_not_read_locally() {
        let (dir, _) = content_dir_with(b"present");
        assert!(read_local(dir.path(), &Digest::of(b"absent"), ResolvedRange { start: 0, end: 0 }).await.is_none());
    }
}
