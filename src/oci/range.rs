//! Single byte ranges from an HTTP `Range` header (`bytes=a-b`, `a-`, `-n`).

use std::fmt;

/// A requested range, before the blob's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `a-b`, both inclusive.
    FromTo(u64, u64),
    /// `a-`, to the end.
    From(u64),
    /// `-n`, the last `n` bytes.
    Suffix(u64),
}

/// Why a range cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("malformed Range header {0:?}")]
    Malformed(String),
    #[error("multiple ranges are not supported")]
    MultipleRanges,
    #[error("range not satisfiable for a blob of {0} bytes")]
    Unsatisfiable(u64),
}

/// A range resolved against a blob length: `start..=end`, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Parses the value of a `Range` header.
    pub fn parse_header(value: &str) -> Result<Self, RangeError> {
        let malformed = || RangeError::Malformed(value.chars().take(80).collect());
        let spec = value.trim().strip_prefix("bytes=").ok_or_else(malformed)?;
        if spec.contains(',') {
            return Err(RangeError::MultipleRanges);
        }
        let (first, last) = spec.trim().split_once('-').ok_or_else(malformed)?;
        let number = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            s.parse().map_err(|_| malformed())
        };
        match (first.is_empty(), last.is_empty()) {
            (true, true) => Err(malformed()),
            (true, false) => Ok(Self::Suffix(number(last)?)),
            (false, true) => Ok(Self::From(number(first)?)),
            (false, false) => {
                let (start, end) = (number(first)?, number(last)?);
                if end < start {
                    return Err(malformed());
                }
                Ok(Self::FromTo(start, end))
            }
        }
    }

    /// Resolves against a blob of `len` bytes, clamping the end as RFC 9110 asks.
    pub fn resolve(self, len: u64) -> Result<ResolvedRange, RangeError> {
        let unsatisfiable = RangeError::Unsatisfiable(len);
        let (start, end) = match self {
            Self::FromTo(start, end) if start < len => (start, end.min(len - 1)),
            Self::From(start) if start < len => (start, len - 1),
            Self::Suffix(n) if n > 0 && len > 0 => (len.saturating_sub(n), len - 1),
            _ => return Err(unsatisfiable),
        };
        Ok(ResolvedRange { start, end })
    }
}

impl fmt::Display for ByteRange {
    /// Formats as a `Range` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FromTo(a, b) => write!(f, "bytes={a}-{b}"),
            Self::From(a) => write!(f, "bytes={a}-"),
            Self::Suffix(n) => write!(f, "bytes=-{n}"),
        }
    }
}

impl ResolvedRange {
    /// The whole of a non-empty blob.
    pub fn full(len: u64) -> Option<Self> {
        (len > 0).then(|| Self { start: 0, end: len - 1 })
    }

    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a resolved range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` header value for a blob of `total` bytes.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{total}", self.start, self.end)
    }

    /// The same bytes as a request range.
    pub fn as_request(&self) -> ByteRange {
        ByteRange::FromTo(self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(ByteRange::parse_header("bytes=0-9"), Ok(ByteRange::FromTo(0, 9)));
        assert_eq!(ByteRange::parse_header("bytes=5-"), Ok(ByteRange::From(5)));
        assert_eq!(ByteRange::parse_header("bytes=-3"), Ok(ByteRange::Suffix(3)));
    }

    #[test]
    fn rejects_malformed_and_multiple() {
        for value in [
            "",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "items=0-1",
            "bytes=5-1",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
        ] {
            assert!(matches!(ByteRange::parse_header(value), Err(RangeError::Malformed(_))), "{value:?}");
        }
        assert_eq!(ByteRange::parse_header("bytes=0-1,3-4"), Err(RangeError::MultipleRanges));
    }

    #[test]
    fn resolves_against_length() {
        assert_eq!(ByteRange::FromTo(2, 100).resolve(10), Ok(ResolvedRange { start: 2, end: 9 }));
        assert_eq!(ByteRange::Suffix(100).resolve(10), Ok(ResolvedRange { start: 0, end: 9 }));
        assert_eq!(ByteRange::From(10).resolve(10), Err(RangeError::Unsatisfiable(10)));
        assert_eq!(ByteRange::Suffix(0).resolve(10), Err(RangeError::Unsatisfiable(10)));
        assert_eq!(ByteRange::From(0).resolve(0), Err(RangeError::Unsatisfiable(0)));
        assert_eq!(ResolvedRange { start: 2, end: 9 }.content_range(10), "bytes 2-9/10");
    }

    proptest! {
        #[test]
        fn display_round_trips(a in 0u64..u64::MAX / 2, n in 0u64..1000) {
            for range in [ByteRange::FromTo(a, a + n), ByteRange::From(a), ByteRange::Suffix(n)] {
                prop_assert_eq!(ByteRange::parse_header(&range.to_string()), Ok(range));
            }
        }

        #[test]
        fn resolved_ranges_stay_inside_the_blob(a in 0u64..2000, b in 0u64..2000, len in 0u64..1000) {
            for range in [ByteRange::FromTo(a.min(b), a.max(b)), ByteRange::From(a), ByteRange::Suffix(b)] {
                if let Ok(resolved) = range.resolve(len) {
                    prop_assert!(resolved.start <= resolved.end && resolved.end < len);
                }
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = ByteRange::parse_header(&s);
        }
    }
}
