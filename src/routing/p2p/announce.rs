//! The wire protocol of batched provider announcements, `/shoal/provide/1.0.0`:
//! "I provide these keys; here are my addresses", answered with how many
//! records were stored.
//!
//! Owns: the messages and their encoding (JSON, one message per stream,
//! bounded in size). What a node does with them is `bulk`'s job.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use serde::{Deserialize, Serialize};

/// The protocol name, beside Shoal's Kademlia protocol.
pub(super) const ANNOUNCE_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/provide/1.0.0");
/// Most keys in one request; larger batches are split.
pub(super) const MAX_KEYS_PER_REQUEST: usize = 4096;
/// Largest request read (4,096 keys of a few hundred bytes fit well inside).
const MAX_REQUEST_BYTES: u64 = 4 << 20;
/// Largest response read.
const MAX_RESPONSE_BYTES: u64 = 1024;

/// The sender provides `keys` (record keys as text) and is reachable at `addrs` (multiaddrs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Announcement {
    pub(super) keys: Vec<String>,
    pub(super) addrs: Vec<String>,
}

/// How many of the announced keys the receiver stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stored {
    pub(super) stored: u32,
}

/// Reads and writes [`Announcement`] and [`Stored`], one JSON document per stream.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AnnounceCodec;

async fn read_json<T: for<'de> Deserialize<'de>>(
    io: &mut (impl AsyncRead + Unpin + Send),
    limit: u64,
) -> io::Result<T> {
    let mut bytes = Vec::new();
    io.take(limit + 1).read_to_end(&mut bytes).await?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "announcement message too large"));
    }
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_json(io: &mut (impl AsyncWrite + Unpin + Send), value: &impl Serialize) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    io.write_all(&bytes).await
}

impl request_response::Codec for AnnounceCodec {
    type Protocol = StreamProtocol;
    type Request = Announcement;
    type Response = Stored;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Announcement>
    where
        T: AsyncRead + Unpin + Send,
    {
        let announcement: Announcement = read_json(io, MAX_REQUEST_BYTES).await?;
        if announcement.keys.len() > MAX_KEYS_PER_REQUEST {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too many keys in one announcement"));
        }
        Ok(announcement)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Stored>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_json(io, MAX_RESPONSE_BYTES).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, request: Announcement) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_json(io, &request).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, response: Stored) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_json(io, &response).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use futures::io::Cursor;
    use request_response::Codec;

    use super::*;

    #[tokio::test]
    async fn messages_round_trip() {
        let announcement = Announcement { keys: vec!["sha256:00".into()], addrs: vec!["/ip4/127.0.4.1/tcp/1".into()] };
        let mut wire = Cursor::new(Vec::new());
        AnnounceCodec.write_request(&ANNOUNCE_PROTOCOL, &mut wire, announcement.clone()).await.unwrap();
        let mut wire = Cursor::new(wire.into_inner());
        assert_eq!(AnnounceCodec.read_request(&ANNOUNCE_PROTOCOL, &mut wire).await.unwrap(), announcement);
    }

    #[tokio::test]
    async fn oversized_and_malformed_messages_are_rejected() {
        let huge = vec![b' '; (MAX_REQUEST_BYTES + 10) as usize];
        let err = AnnounceCodec.read_request(&ANNOUNCE_PROTOCOL, &mut Cursor::new(huge)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let garbage = Cursor::new(b"{\"keys\": 5}".to_vec());
        assert!(AnnounceCodec.read_request(&ANNOUNCE_PROTOCOL, &mut garbage.clone()).await.is_err());
        let many = Announcement { keys: vec![String::new(); MAX_KEYS_PER_REQUEST + 1], addrs: vec![] };
        let wire = Cursor::new(serde_json::to_vec(&many).unwrap());
        assert!(AnnounceCodec.read_request(&ANNOUNCE_PROTOCOL, &mut wire.clone()).await.is_err());
    }
}
