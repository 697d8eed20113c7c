//! Existing containerd `hosts.toml` files: reading them never panics, and
//! the tables Shoal keeps render to a file that reads back to the same
//! tables (rendering again gives the same text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::configure::MirrorTarget;
use shoal::configure::hosts_toml::{is_shoal_file, parse_host_tables, render};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = is_shoal_file(text);
    let Ok(kept) = parse_host_tables(text) else { return };
    let targets: Vec<MirrorTarget> = ["http://127.0.0.1:5000"].iter().filter_map(|url| url.parse().ok()).collect();
    let rendered = render(Some("https://registry.test"), &targets, &kept)
        .unwrap_or_else(|e| panic!("tables read from {text:?} do not render: {e}"));
    assert!(is_shoal_file(&rendered));
    let reread =
        parse_host_tables(&rendered).unwrap_or_else(|e| panic!("rendered file does not parse: {e}\n{rendered}"));
    assert!(reread.len() <= kept.len() + targets.len());
    let again = render(Some("https://registry.test"), &targets, &reread[targets.len()..])
        .unwrap_or_else(|e| panic!("re-read tables do not render: {e}"));
    assert_eq!(again, rendered, "rendering is stable");
});
