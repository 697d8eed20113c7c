//! `Range` header values: parsing never panics, a parsed range prints as a
//! header that parses to the same range, and resolving against any length
//! gives a non-empty range inside the blob or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::oci::ByteRange;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes pick a blob length, the rest is the header value.
    let (len, header) = match data.split_first_chunk::<8>() {
        Some((len, rest)) => (u64::from_le_bytes(*len), rest),
        None => (0, data),
    };
    let Ok(text) = std::str::from_utf8(header) else { return };
    let Ok(range) = ByteRange::parse_header(text) else { return };
    let shown = range.to_string();
    assert_eq!(ByteRange::parse_header(&shown).ok(), Some(range), "round trip of {text:?}");
    for len in [len, 0, 1, u64::MAX] {
        if let Ok(resolved) = range.resolve(len) {
            assert!(resolved.start <= resolved.end && resolved.end < len, "{range:?} on {len}: {resolved:?}");
            assert_eq!(resolved.len(), resolved.end - resolved.start + 1);
            assert_eq!(resolved.as_request().resolve(len).ok(), Some(resolved));
            assert!(resolved.content_range(len).starts_with("bytes "));
        }
    }
});
