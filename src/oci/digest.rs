//! Content digests. Only `sha256` is accepted: it is what containerd and
//! every registry Shoal mirrors use, and it keeps digest keys canonical.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A `sha256:<64 lowercase hex>` content digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} has no algorithm prefix (expected sha256:<hex>)")]
    MissingAlgorithm(String),
    #[error("digest algorithm {0:?} is not supported (only sha256)")]
    UnsupportedAlgorithm(String),
    #[error("sha256 digest must have 64 lowercase hex characters, got {0:?}")]
    BadHex(String),
}

impl Digest {
    /// Length of `sha256:` plus 64 hex characters.
    pub const STRING_LEN: usize = 71;

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Wraps a raw 32-byte sha256 output.
    pub fn from_sha256(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 64-character lowercase hex encoding (no algorithm prefix).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw hash bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, encoded)) = s.split_once(':') else {
            return Err(DigestError::MissingAlgorithm(truncate(s)));
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(truncate(algorithm)));
        }
        let is_lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if encoded.len() != 64 || !encoded.as_bytes().iter().all(is_lower_hex) {
            return Err(DigestError::BadHex(truncate(encoded)));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(encoded, &mut out).map_err(|_| DigestError::BadHex(truncate(encoded)))?;
        Ok(Self(out))
    }
}

/// Keeps error messages bounded when the input is hostile.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_matches_known_value() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>(), Ok(Digest::of(b"")));
    }

    #[test]
    fn rejects_other_algorithms_and_bad_hex() {
        assert!(matches!("sha512:abcd".parse::<Digest>(), Err(DigestError::UnsupportedAlgorithm(_))));
        assert!(matches!("abcd".parse::<Digest>(), Err(DigestError::MissingAlgorithm(_))));
        assert!(matches!(
            EMPTY.to_uppercase().replace("SHA256", "sha256").parse::<Digest>(),
            Err(DigestError::BadHex(_))
        ));
        assert!(matches!("sha256:abc".parse::<Digest>(), Err(DigestError::BadHex(_))));
        assert!(matches!(format!("{EMPTY}0").parse::<Digest>(), Err(DigestError::BadHex(_))));
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
            let digest = Digest::from_sha256(bytes);
            let text = digest.to_string();
            prop_assert_eq!(text.len(), Digest::STRING_LEN);
            prop_assert_eq!(text.parse::<Digest>(), Ok(digest));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,100}") {
            let _ = s.parse::<Digest>();
        }

        #[test]
        fn only_canonical_strings_parse(s in "sha256:[0-9a-fA-F]{60,68}") {
            let canonical = s.len() == Digest::STRING_LEN && !s[7..].chars().any(|c| c.is_ascii_uppercase());
            prop_assert_eq!(s.parse::<Digest>().is_ok(), canonical);
        }
    }
}
