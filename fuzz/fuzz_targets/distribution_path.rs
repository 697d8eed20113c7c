//! Distribution API paths: parsing never panics, and a parsed path's URI
//! path parses back to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::oci::DistributionPath;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(path) = DistributionPath::parse(text) else { return };
    let uri_path = path.to_uri_path();
    assert_eq!(DistributionPath::parse(&uri_path).ok(), Some(path.clone()), "round trip of {text:?}");
    assert_eq!(path.kind(), DistributionPath::parse(&uri_path).ok().and_then(|p| p.kind()));
});
