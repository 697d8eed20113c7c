//! The optional pre-shared key of a private peer network (libp2p `pnet`).
//!
//! Owns: reading and checking the key file, and the key's public
//! fingerprint. The key itself never leaves this module in printable form:
//! `Debug` shows the fingerprint only, and nothing here logs the key.
//!
//! The file is the standard libp2p swarm key format, shared with go-libp2p
//! and IPFS:
//!
//! ```text
//! /key/swarm/psk/1.0.0/
//! /base16/
//! <64 hex digits>
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p::pnet::{KeyParseError, PreSharedKey};

/// Longest key file read: the format needs about 100 bytes.
const MAX_KEY_FILE: u64 = 4096;

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SwarmKeyError {
    #[error("cannot read the p2p pre-shared key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the p2p pre-shared key file {path} is not a swarm key: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The network's pre-shared key. Only nodes holding the same key can open a
/// connection to each other.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SwarmKey(PreSharedKey);

impl SwarmKey {
    /// Reads and parses the key file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, SwarmKeyError> {
        let read_error = |source| SwarmKeyError::Read { path: path.to_owned(), source };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_KEY_FILE {
            let reason = format!("{size} bytes, more than a key file holds");
            return Err(SwarmKeyError::Invalid { path: path.to_owned(), reason });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        text.parse().map_err(|reason| SwarmKeyError::Invalid { path: path.to_owned(), reason })
    }

    /// A short public digest of the key, the same as go-libp2p's: equal
    /// fingerprints mean equal keys. Safe to log.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint().to_string()
    }

    pub(super) fn psk(&self) -> PreSharedKey {
        self.0
    }
}

impl FromStr for SwarmKey {
    /// Why the text is not a key; never contains the key.
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // libp2p slices the hex line by bytes: anything but ASCII could
        // split a character, so it is turned away before parsing.
        if !text.is_ascii() {
            return Err("it contains non-ASCII characters".to_owned());
        }
        let text = text.trim_start();
        PreSharedKey::from_str(text)
            .map(Self)
            .map_err(|e| format!("{} (expected /key/swarm/psk/1.0.0/, /base16/ and 64 hex digits)", explain(&e)))
    }
}

/// libp2p's parse error in words (its `Display` is the variant name).
fn explain(error: &KeyParseError) -> &'static str {
    match error {
        KeyParseError::InvalidKeyFile => "it does not have three lines",
        KeyParseError::InvalidKeyType => "the first line is not /key/swarm/psk/1.0.0/",
        KeyParseError::InvalidKeyEncoding => "the second line is not /base16/",
        KeyParseError::InvalidKeyLength => "the key line is not 64 hex digits long",
        KeyParseError::InvalidKeyChar(_) => "the key line has a character that is not a hex digit",
    }
}

impl fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwarmKey").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn key_file(hex: &str) -> String {
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")
    }

    #[test]
    fn the_standard_format_parses_with_or_without_a_final_newline() {
        let key: SwarmKey = key_file(HEX).parse().unwrap();
        let crlf: SwarmKey = key_file(HEX).replace('\n', "\r\n").parse().unwrap();
        let bare: SwarmKey = key_file(HEX).trim_end().parse().unwrap();
        assert_eq!(key, crlf);
        assert_eq!(key, bare);
    }

    #[test]
    fn wrong_headers_lengths_and_characters_are_errors_not_panics() {
        let cases = [
            String::new(),
            HEX.to_owned(),
            format!("/key/swarm/psk/2.0.0/\n/base16/\n{HEX}\n"),
            format!("/key/swarm/psk/1.0.0/\n/base64/\n{HEX}\n"),
            key_file(&HEX[..62]),
            key_file(&format!("{}zz", &HEX[..62])),
            // 64 bytes, but multi-byte characters: must not split one.
            key_file(&"é".repeat(32)),
        ];
        for case in cases {
            assert!(case.parse::<SwarmKey>().is_err(), "{case:?} should be refused");
        }
    }

    #[test]
    fn the_fingerprint_tells_keys_apart_and_debug_never_shows_the_key() {
        let one: SwarmKey = key_file(HEX).parse().unwrap();
        let other: SwarmKey = key_file(&HEX.replace('0', "1")).parse().unwrap();
        assert_ne!(one.fingerprint(), other.fingerprint());
        assert_eq!(one.fingerprint(), one.fingerprint());
        let shown = format!("{one:?}");
        assert!(shown.contains(&one.fingerprint()));
        assert!(!shown.contains(HEX) && !shown.contains("0123456789"), "{shown}");
    }

    #[test]
    fn a_missing_or_bad_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.key");
        let error = SwarmKey::from_file(&missing).unwrap_err();
        assert!(error.to_string().contains("absent.key"), "{error}");

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key").unwrap();
        let error = SwarmKey::from_file(&bad).unwrap_err();
        assert!(matches!(error, SwarmKeyError::Invalid { .. }));
        assert!(error.to_string().contains("bad.key"), "{error}");

        let good = dir.path().join("good.key");
        std::fs::write(&good, key_file(HEX)).unwrap();
        assert_eq!(SwarmKey::from_file(&good).unwrap(), key_file(HEX).parse().unwrap());
    }
}
