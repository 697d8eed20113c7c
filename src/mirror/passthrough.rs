//! Pass-through: a whole blob from a trusted peer goes to containerd as it
//! arrives, hashed on the way, instead of being verified in a spool first.
//!
//! Owns: the body stream of one such blob. It holds the last chunk back
//! until the digest is checked, so a response whose bytes do not match is
//! never completed: the body ends with an error instead (the connection is
//! cut), every peer that contributed loses its trust for good, and
//! containerd's ingest never commits (its own commit check fails). A peer
//! that breaks off is resumed with `Range` from another *trusted* peer, the
//! hash carried across; with none left the body is cut, and containerd's
//! `Range` retry goes through the verified spool path.
//!
//! Must not: hand out bytes from a peer that is not trusted, or finish a body
//! whose digest was not verified. Spawns nothing: the stream is driven by
//! the response body, and dropping it closes the peer connection.

use std::io;

use bytes::Bytes;
use futures::stream::{self, StreamExt};

use super::Mirror;
use super::attempts::Attempts;
use super::client::{FetchError, PeerResponse};
use super::fetch::{Ask, expected_total};
use super::hasher::BackgroundHasher;
use super::race::{AttemptSource, Winner, Won};
use crate::content::BlobStream;
use crate::oci::{ByteRange, Digest, DistributionPath, Registry};
use crate::routing::Peer;

/// Blobs smaller than this are always verified before they are sent: it
/// costs little, and a body that completes at once could not be cut.
pub const MIN_PASSTHROUGH_SIZE: u64 = 1 << 20;

/// A blob being passed through; becomes the response body with [`into_stream`](Self::into_stream).
pub(super) struct PassThrough {
    mirror: Mirror,
    attempts: Attempts,
    path: DistributionPath,
    registry: Option<Registry>,
    digest: Digest,
    size: u64,
    response: Option<PeerResponse>,
    winner: Winner,
    /// Bytes hashed so far (sent, plus the chunk held back).
    received: u64,
    /// Bytes the current peer delivered.
    from_winner: u64,
    /// `None` once the digest was taken (or the stream failed).
    hasher: Option<BackgroundHasher>,
    held: Option<Bytes>,
    /// Every peer that delivered a part, to blame if the digest fails.
    contributors: Vec<Peer>,
}

impl PassThrough {
    /// Starts with `won`, a trusted peer's full (200) answer for `digest`
    /// whose `Content-Length` is `size`.
    pub(super) fn new(
        mirror: Mirror,
        attempts: Attempts,
        path: DistributionPath,
        registry: Option<Registry>,
        digest: Digest,
        size: u64,
        won: Won<PeerResponse>,
    ) -> Self {
        let contributors = vec![won.winner.peer.clone()];
        Self {
            mirror,
            attempts,
            path,
            registry,
            digest,
            size,
            response: Some(won.value),
            winner: won.winner,
            received: 0,
            from_winner: 0,
            hasher: Some(BackgroundHasher::start()),
            held: None,
            contributors,
        }
    }

    pub(super) fn into_stream(self) -> BlobStream {
        stream::unfold(Some(self), |state| async move {
            let mut state = state?;
            match state.next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(state))),
                Ok(None) => None,
                Err(error) => Some((Err(error), None)),
            }
        })
        .boxed()
    }

    /// The next chunk to send: the one held back, once another arrived or
    /// the digest was verified.
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.received == self.size {
                return self.finish().await.map(|()| self.held.take());
            }
            let chunk = self.receive().await?;
            if self.received + chunk.len() as u64 > self.size {
                return Err(self.corrupt("more bytes than the blob's size"));
            }
            // Hashed beside the transfer: the chunk goes on while it is hashed.
            let hasher = self.hasher.as_mut().ok_or_else(hasher_gone)?;
            hasher.update(chunk.clone()).await.map_err(io::Error::other)?;
            self.received += chunk.len() as u64;
            self.from_winner += chunk.len() as u64;
            if let Some(previous) = self.held.replace(chunk) {
                return Ok(Some(previous));
            }
        }
    }

    /// The next chunk from the current peer, resuming elsewhere if it broke off.
    async fn receive(&mut self) -> io::Result<Bytes> {
        loop {
            let Some(response) = self.response.as_mut() else {
                self.resume().await?;
                continue;
            };
            let error = match response.next_chunk().await {
                Ok(Some(chunk)) => return Ok(chunk),
                Ok(None) => FetchError::Body(format!("body ended at {} of {} bytes", self.received, self.size)),
                Err(error) => error,
            };
            self.response = None;
            self.attempts.failed(&self.winner.peer, &error);
        }
    }

    /// Asks trusted peers for the rest of the blob.
    async fn resume(&mut self) -> io::Result<()> {
        self.attempts.trusted_only(self.mirror.inner.config.stream_after_verified);
        let range = Some(ByteRange::From(self.received));
        let ask =
            Ask { method: http::Method::GET, path: &self.path, registry: self.registry.as_ref(), accept: None, range };
        while let Some(Won { winner, value: response }) = self.mirror.ask(&mut self.attempts, &ask).await {
            match expected_total(&response, self.received) {
                Ok(total) if total == self.size => {
                    tracing::debug!(peer = %winner.peer.name, from = self.received, digest = %self.digest, "passing through resumed");
                    self.contributors.push(winner.peer.clone());
                    self.response = Some(response);
                    self.winner = winner;
                    self.from_winner = 0;
                    return Ok(());
                }
                Ok(total) => self.attempts.failed(&winner.peer, &FetchError::Body(format!("size {total}"))),
                Err(error) => self.attempts.failed(&winner.peer, &error),
            }
        }
        let miss = self.attempts.miss();
        Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{miss}: body cut at {} bytes", self.received)))
    }

    /// Every byte is in: checks the digest before the last chunk goes out.
    async fn finish(&mut self) -> io::Result<()> {
        if self.held.is_none() {
            return Ok(());
        }
        let hasher = self.hasher.take().ok_or_else(hasher_gone)?;
        let digest = hasher.finish().await.map_err(io::Error::other)?;
        if digest != self.digest {
            return Err(self.corrupt("content does not match its digest"));
        }
        self.attempts.succeeded(&self.winner, self.from_winner);
        for peer in &self.contributors {
            self.attempts.verified(peer);
        }
        Ok(())
    }

    /// The bytes are wrong: blames every contributor and cuts the body.
    fn corrupt(&mut self, what: &str) -> io::Error {
        self.held = None;
        self.response = None;
        tracing::warn!(digest = %self.digest, peers = ?self.contributors.iter().map(|p| p.name.to_string()).collect::<Vec<_>>(), what, "a blob passed through failed verification; cutting the response");
        for peer in &self.contributors {
            self.attempts.failed(peer, &FetchError::DigestMismatch);
        }
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", self.digest))
    }
}

fn hasher_gone() -> io::Error {
    io::Error::other("the blob's hash was already taken")
}
