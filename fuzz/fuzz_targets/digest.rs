//! Digests: parsing never panics; a parsed digest prints as the canonical
//! `sha256:<64 lowercase hex>` it was parsed from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::oci::Digest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(digest) = text.parse::<Digest>() else { return };
    let shown = digest.to_string();
    assert_eq!(shown, text, "only the canonical form parses");
    assert_eq!(shown.len(), Digest::STRING_LEN);
    assert_eq!(shown.parse::<Digest>().ok(), Some(digest));
    assert_eq!(format!("sha256:{}", digest.hex()), shown);
});
