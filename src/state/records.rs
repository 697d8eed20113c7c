//! How state is laid out in the store: the tables and the encoding of each
//! value.
//!
//! Owns: table definitions, the schema version, and converting between
//! domain values and their stored form. Values are JSON (small, readable with
//! any tool, tolerant of added fields); a value that does not decode, or
//! decodes to something invalid (a bad digest, tag or media type), is
//! reported as [`Invalid`] so the caller can treat the file as corrupt.
//! No I/O here.

use std::net::SocketAddr;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::content::{IndexedImage, WalkedBlob};
use crate::oci::{Digest, MediaType, TagRef};
use crate::routing::PeerName;

/// Bumped when the layout changes incompatibly; a file with another version
/// is set aside and the state rebuilt.
pub(super) const SCHEMA_VERSION: u32 = 1;

/// Small named values: the schema version, the identity, when peers were saved.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Known peers by name.
pub(super) const PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("peers");
/// The images this node indexes (and so advertises), by containerd name.
pub(super) const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

pub(super) const SCHEMA_KEY: &str = "schema";
pub(super) const IDENTITY_KEY: &str = "identity";
pub(super) const PEERS_SAVED_AT_KEY: &str = "peers_saved_at_unix_ms";

/// A stored value that does not decode: the file is not what this version wrote.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct Invalid {
    pub what: String,
    pub reason: String,
}

impl Invalid {
    pub(super) fn new(what: impl Into<String>, reason: impl ToString) -> Self {
        Self { what: what.into(), reason: reason.to_string() }
    }
}

/// A peer this node knew: where its router listens, and how it served us.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRecord {
    pub name: PeerName,
    /// The peer's announced router addresses.
    pub addrs: Vec<SocketAddr>,
    /// The mirror's reliability figure (1.0 is fully reliable), if it has one.
    pub reliability: Option<f64>,
    /// Smoothed bytes per second of large transfers, if measured.
    pub throughput: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct StoredPeer {
    addrs: Vec<SocketAddr>,
    #[serde(default)]
    reliability: Option<f64>,
    #[serde(default)]
    throughput: Option<f64>,
}

pub(super) fn encode_peer(peer: &PeerRecord) -> Result<Vec<u8>, Invalid> {
    let stored = StoredPeer { addrs: peer.addrs.clone(), reliability: peer.reliability, throughput: peer.throughput };
    serde_json::to_vec(&stored).map_err(|e| Invalid::new(format!("peer {}", peer.name), e))
}

pub(super) fn decode_peer(name: &str, bytes: &[u8]) -> Result<PeerRecord, Invalid> {
    let stored: StoredPeer = serde_json::from_slice(bytes).map_err(|e| Invalid::new(format!("peer {name}"), e))?;
    let valid = |v: &Option<f64>| v.is_none_or(|v| v.is_finite() && v >= 0.0);
    if !valid(&stored.reliability) || !valid(&stored.throughput) {
        return Err(Invalid::new(format!("peer {name}"), "score out of range"));
    }
    Ok(PeerRecord {
        name: PeerName::new(name),
        addrs: stored.addrs,
        reliability: stored.reliability.map(|r| r.min(1.0)),
        throughput: stored.throughput,
    })
}

#[derive(Serialize, Deserialize)]
struct StoredImage {
    #[serde(default)]
    tag: Option<String>,
    target: Digest,
    blobs: Vec<StoredBlob>,
}

#[derive(Serialize, Deserialize)]
struct StoredBlob {
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifest_type: Option<String>,
}

pub(super) fn encode_image(image: &IndexedImage) -> Result<Vec<u8>, Invalid> {
    let stored = StoredImage {
        tag: image.tag.as_ref().map(ToString::to_string),
        target: image.target,
        blobs: image
            .blobs
            .iter()
            .map(|b| StoredBlob {
                digest: b.digest,
                size: b.size,
                manifest_type: b.manifest_type.as_ref().map(ToString::to_string),
            })
            .collect(),
    };
    serde_json::to_vec(&stored).map_err(|e| Invalid::new(format!("image {}", image.name), e))
}

pub(super) fn decode_image(name: &str, bytes: &[u8]) -> Result<IndexedImage, Invalid> {
    let what = || format!("image {name}");
    let stored: StoredImage = serde_json::from_slice(bytes).map_err(|e| Invalid::new(what(), e))?;
    let tag = match stored.tag {
        Some(tag) => Some(tag.parse::<TagRef>().map_err(|e| Invalid::new(what(), e))?),
        None => None,
    };
    let blobs = stored
        .blobs
        .into_iter()
        .map(|b| {
            let manifest_type = match b.manifest_type {
                Some(text) => Some(MediaType::parse(&text).ok_or_else(|| Invalid::new(what(), "bad media type"))?),
                None => None,
            };
            Ok(WalkedBlob { digest: b.digest, size: b.size, manifest_type })
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    Ok(IndexedImage { name: name.to_owned(), tag, target: stored.target, blobs })
}

pub(super) fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64, Invalid> {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or_else(|| Invalid::new(what, "not a number"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn image() -> IndexedImage {
        let manifest = Digest::of(b"manifest");
        IndexedImage {
            name: "registry.test/app:v1".into(),
            tag: Some("registry.test/app:v1".parse().unwrap()),
            target: manifest,
            blobs: vec![
                WalkedBlob {
                    digest: manifest,
                    size: 10,
                    manifest_type: Some(MediaType::from_static(MediaType::OCI_MANIFEST)),
                },
                WalkedBlob { digest: Digest::of(b"layer"), size: 1 << 40, manifest_type: None },
            ],
        }
    }

    #[test]
    fn images_round_trip() {
        let image = image();
        let bytes = encode_image(&image).unwrap();
        assert_eq!(decode_image(&image.name, &bytes).unwrap(), image);
    }

    #[test]
    fn peers_round_trip_and_scores_are_checked() {
        let peer = PeerRecord {
            name: PeerName::new("peer-1"),
            addrs: vec!["127.0.4.1:5001".parse().unwrap()],
            reliability: Some(0.5),
            throughput: None,
        };
        assert_eq!(decode_peer("peer-1", &encode_peer(&peer).unwrap()).unwrap(), peer);
        assert!(decode_peer("p", br#"{"addrs":[],"reliability":-1}"#).is_err());
    }

    #[test]
    fn values_that_do_not_decode_are_invalid() {
        assert!(decode_image("x", b"not json").is_err());
        assert!(decode_image("x", br#"{"tag":"no tag here!","target":"sha256:00","blobs":[]}"#).is_err());
        let bad_type = format!(
            r#"{{"target":"{d}","blobs":[{{"digest":"{d}","size":1,"manifest_type":"bad type"}}]}}"#,
            d = Digest::of(b"x")
        );
        assert!(decode_image("x", bad_type.as_bytes()).is_err());
        assert!(decode_u64("n", b"12x").is_err());
        assert_eq!(decode_u64("n", b"12").unwrap(), 12);
    }
}
