//! Image names, tag references and their parts: parsing never panics, and
//! whatever parses prints back to a string that parses to the same value.
#![no_main]

use std::fmt::Display;
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use shoal::oci::{Reference, Registry, Repository, Tag, TagRef};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    round_trips::<TagRef>(text);
    round_trips::<Reference>(text);
    round_trips::<Registry>(text);
    round_trips::<Repository>(text);
    round_trips::<Tag>(text);
    if let Ok(Some(tag_ref)) = TagRef::from_image_name(text) {
        assert_eq!(TagRef::from_image_name(&tag_ref.to_string()).ok().flatten(), Some(tag_ref));
    }
});

/// `parse(display(parse(text))) == parse(text)`, and display is stable.
fn round_trips<T>(text: &str)
where
    T: FromStr + Display + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    let Ok(parsed) = text.parse::<T>() else { return };
    let shown = parsed.to_string();
    let reparsed = shown.parse::<T>().unwrap_or_else(|e| panic!("{shown:?} (from {text:?}) no longer parses: {e:?}"));
    assert_eq!(reparsed, parsed, "round trip of {text:?}");
    assert_eq!(reparsed.to_string(), shown, "display is stable for {text:?}");
}
