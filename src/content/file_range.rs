//! Streams a byte range of an open file as chunks, for serving blobs from
//! containerd's content directory and from verified spools.
//!
//! Owns: the read loop and a bounded pool of chunk buffers. Each chunk is one
//! positional read, straight from the page cache into the buffer that goes to
//! the socket. What the page cache holds is read on the calling task with
//! `preadv2(RWF_NOWAIT)`, which never waits on the disk (it answers EAGAIN
//! instead); only data that must come from the disk is read on tokio's
//! blocking pool. A hot blob thus costs no thread handoff per chunk. Buffers
//! return to the pool when hyper drops the `Bytes` after writing them, so a
//! steady transfer allocates nothing per chunk.
//!
//! Must not: block the async runtime, or keep more than [`POOL_KEEP`] idle
//! buffers.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use rustix::io::{Errno, ReadWriteFlags};

use crate::content::BlobStream;
use crate::oci::ResolvedRange;

/// Bytes per read and per chunk. Large enough that a read moves a lot of
/// data per system call, small enough that a transfer holds little memory:
/// hyper keeps about two chunks of each response in flight.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Idle buffers the pool keeps (16 MiB); beyond it freed buffers are dropped.
pub const POOL_KEEP: usize = 64;

static POOL: LazyLock<Arc<BufferPool>> = LazyLock::new(|| Arc::new(BufferPool::new(CHUNK_SIZE, POOL_KEEP)));

/// Streams `range` of `file`. The stream ends with `UnexpectedEof` if the
/// file is shorter than the range.
pub fn stream_range(file: File, range: ResolvedRange) -> BlobStream {
    let state = Some(Reader { file, offset: range.start, remaining: range.len(), nowait: true });
    stream::unfold(state, |state| async move {
        let mut reader = state?;
        if reader.remaining == 0 {
            return None;
        }
        let read = match reader.read_cached(&POOL) {
            Some(read) => read.map(|chunk| (reader, chunk)),
            None => match tokio::task::spawn_blocking(move || reader.read_waiting(&POOL)).await {
                Ok(read) => read,
                Err(join) => Err(io::Error::other(join)),
            },
        };
        match read {
            Ok((reader, chunk)) => Some((Ok(chunk), Some(reader))),
            Err(error) => Some((Err(error), None)),
        }
    })
    .boxed()
}

/// The read position of one stream.
struct Reader {
    file: File,
    offset: u64,
    remaining: u64,
    /// Whether `RWF_NOWAIT` reads work on this file (not on every filesystem).
    nowait: bool,
}

impl Reader {
    /// The next chunk if the page cache holds (the start of) it; `None` if
    /// reading it would wait on the disk.
    fn read_cached(&mut self, pool: &Arc<BufferPool>) -> Option<io::Result<Bytes>> {
        if !self.nowait {
            return None;
        }
        let mut buffer = pool.take();
        let want = self.want(&buffer);
        let read = rustix::io::preadv2(
            &self.file,
            &mut [IoSliceMut::new(&mut buffer[..want])],
            self.offset,
            ReadWriteFlags::NOWAIT,
        );
        let errno = match read {
            Ok(read) => return Some(self.chunk(pool, buffer, read)),
            Err(errno) => errno,
        };
        pool.give_back(buffer);
        match errno {
            Errno::AGAIN => None,
            Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL => {
                self.nowait = false;
                None
            }
            errno => Some(Err(errno.into())),
        }
    }

    /// The next chunk, waiting on the disk if need be (blocking pool only).
    fn read_waiting(mut self, pool: &Arc<BufferPool>) -> io::Result<(Self, Bytes)> {
        let mut buffer = pool.take();
        let want = self.want(&buffer);
        let read = self.file.read_at(&mut buffer[..want], self.offset)?;
        let chunk = self.chunk(pool, buffer, read)?;
        Ok((self, chunk))
    }

    fn want(&self, buffer: &[u8]) -> usize {
        usize::try_from(self.remaining).map_or(buffer.len(), |remaining| remaining.min(buffer.len()))
    }

    fn chunk(&mut self, pool: &Arc<BufferPool>, buffer: Vec<u8>, read: usize) -> io::Result<Bytes> {
        if read == 0 {
            pool.give_back(buffer);
            let message = format!("file ended {} bytes before the range did", self.remaining);
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
        }
        self.offset += read as u64;
        self.remaining -= read as u64;
        Ok(Bytes::from_owner(Pooled { buffer, len: read, pool: pool.clone() }))
    }
}

/// Reusable chunk buffers, each `buffer_size` initialised bytes (zeroed
/// once, when first allocated).
struct BufferPool {
    buffer_size: usize,
    keep: usize,
    idle: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    fn new(buffer_size: usize, keep: usize) -> Self {
        Self { buffer_size, keep, idle: Mutex::new(Vec::new()) }
    }

    fn take(&self) -> Vec<u8> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        idle.unwrap_or_else(|| vec![0; self.buffer_size])
    }

    fn give_back(&self, buffer: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.keep && buffer.len() == self.buffer_size {
            idle.push(buffer);
        }
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A chunk's storage: returns to its pool when the last `Bytes` of it drops.
struct Pooled {
    buffer: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::io::Write;

    fn file_with(data: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        file
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn streams_any_range_in_chunks() {
        let data = data(3 * CHUNK_SIZE + 17);
        let range = ResolvedRange { start: 5, end: (2 * CHUNK_SIZE + 9) as u64 };
        let chunks: Vec<Bytes> = stream_range(file_with(&data), range).try_collect().await.unwrap();
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_SIZE));
        assert_eq!(chunks.concat(), &data[5..=2 * CHUNK_SIZE + 9]);
    }

    #[test]
    fn cached_and_waiting_reads_give_the_same_bytes() {
        let data = data(2 * CHUNK_SIZE);
        let pool = Arc::new(BufferPool::new(CHUNK_SIZE, 4));
        let mut cached = Reader { file: file_with(&data), offset: 7, remaining: CHUNK_SIZE as u64, nowait: true };
        // A file just written is in the page cache, unless the filesystem has no RWF_NOWAIT.
        if let Some(chunk) = cached.read_cached(&pool) {
            assert_eq!(chunk.unwrap(), &data[7..7 + CHUNK_SIZE]);
            assert_eq!((cached.offset, cached.remaining), (7 + CHUNK_SIZE as u64, 0));
        }
        let waiting = Reader { file: file_with(&data), offset: 7, remaining: CHUNK_SIZE as u64, nowait: false };
        let (_, chunk) = waiting.read_waiting(&pool).unwrap();
        assert_eq!(chunk, &data[7..7 + CHUNK_SIZE]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_the_range_ends_with_unexpected_eof() {
        let range = ResolvedRange { start: 0, end: 99 };
        let result: io::Result<Vec<Bytes>> = stream_range(file_with(&data(10)), range).try_collect().await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn buffers_return_to_the_pool_when_their_chunk_drops() {
        let pool = Arc::new(BufferPool::new(1024, 2));
        let reader = Reader { file: file_with(&data(3000)), offset: 0, remaining: 3000, nowait: true };
        let (reader, first) = reader.read_waiting(&pool).unwrap();
        let (_, second) = reader.read_waiting(&pool).unwrap();
        assert_eq!((first.len(), second.len()), (1024, 1024));
        assert_eq!(pool.idle(), 0);
        let shared = first.slice(10..20);
        drop(first);
        assert_eq!(pool.idle(), 0, "a slice still holds the first buffer");
        drop(shared);
        drop(second);
        assert_eq!(pool.idle(), 2);
        assert_eq!(pool.take().len(), 1024);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_buffers() {
        let pool = BufferPool::new(64, 2);
        for _ in 0..5 {
            pool.give_back(vec![0; 64]);
        }
        assert_eq!(pool.idle(), 2);
        pool.give_back(vec![0; 8]);
        assert_eq!(pool.idle(), 2, "a buffer of another size is dropped");
    }
}
