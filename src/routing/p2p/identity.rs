//! This node's libp2p identity: an ed25519 keypair, and its stable name.
//!
//! Owns: generating the key and encoding it (libp2p's protobuf form) so the
//! caller can persist it across restarts. Does not touch the filesystem.

use std::fmt;

use libp2p::PeerId;
use libp2p::identity::{KeyType, Keypair};

use super::Error;
use crate::routing::PeerName;

/// An ed25519 keypair. `Debug` shows the public name only.
#[derive(Clone)]
pub struct Identity {
    keypair: Keypair,
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Self {
        Self { keypair: Keypair::generate_ed25519() }
    }

    /// The private key in libp2p's protobuf encoding: keep it secret.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        self.keypair.to_protobuf_encoding().map_err(|e| Error::Identity(e.to_string()))
    }

    /// Decodes what [`Identity::to_bytes`] wrote. Only ed25519 keys are accepted.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let keypair = Keypair::from_protobuf_encoding(bytes).map_err(|e| Error::Identity(e.to_string()))?;
        if keypair.key_type() != KeyType::Ed25519 {
            return Err(Error::Identity(format!("expected an ed25519 key, found {:?}", keypair.key_type())));
        }
        Ok(Self { keypair })
    }

    /// The name other peers know this node by (the text of its PeerId).
    pub fn name(&self) -> PeerName {
        PeerName::new(self.peer_id().to_string())
    }

    pub(super) fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    pub(super) fn keypair(&self) -> &Keypair {
        &self.keypair
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("name", &self.name()).finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_bytes_and_keeps_its_name() {
        let identity = Identity::generate();
        let restored = Identity::from_bytes(&identity.to_bytes().unwrap()).unwrap();
        assert_eq!(restored.name(), identity.name());
        assert_ne!(Identity::generate().name(), identity.name());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = Identity::from_bytes(b"not a key").unwrap_err();
        assert!(matches!(err, Error::Identity(_)), "{err}");
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let identity = Identity::generate();
        let secret_hex = hex::encode(identity.to_bytes().unwrap());
        let shown = format!("{identity:?}");
        assert!(shown.contains(identity.name().as_str()));
        assert!(!shown.contains(&secret_hex));
    }
}
