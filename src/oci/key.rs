//! The keys a node advertises on the DHT: every digest it holds, and every
//! tag as `registry/repository:tag`.

use std::fmt;
use std::str::FromStr;

use super::digest::Digest;
use super::name::{NameError, TagRef};

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Digest(Digest),
    Tag(TagRef),
}

impl Key {
    /// The bytes stored in the DHT: the key's canonical text.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    pub fn is_tag(&self) -> bool {
        matches!(self, Self::Tag(_))
    }
}

impl FromStr for Key {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("sha256:") {
            return Ok(Self::Digest(s.parse()?));
        }
        Ok(Self::Tag(s.parse()?))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Digest(d) => write!(f, "{d}"),
            Self::Tag(t) => write!(f, "{t}"),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl From<Digest> for Key {
    fn from(d: Digest) -> Self {
        Self::Digest(d)
    }
}

impl From<TagRef> for Key {
    fn from(t: TagRef) -> Self {
        Self::Tag(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keys_round_trip_through_text(bytes in proptest::array::uniform32(any::<u8>()), tag in "[a-z]{1,8}:[1-9][0-9]{0,3}/[a-z0-9]{1,8}:[a-z0-9]{1,8}") {
            let digest_key = Key::Digest(Digest::from_sha256(bytes));
            prop_assert_eq!(digest_key.to_string().parse::<Key>(), Ok(digest_key));
            let tag_key: Key = tag.parse().map_err(|e: NameError| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(tag_key.to_string(), tag);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,100}") {
            let _ = s.parse::<Key>();
        }
    }
}
