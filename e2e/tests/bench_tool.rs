//! Needs root. Runs `shoal-e2e bench --short` (the real binary, every
//! section, small sizes, one repetition) and checks that `bench.json` holds
//! every section with sane values and that the charts are PNG files. No
//! timing asserts: only that each number was measured and is plausible.
//! Also checks that the run removed its shaping from `lo`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

fn positive(value: &Value, what: &str) -> f64 {
    let number = value.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {value}"));
    assert!(number.is_finite() && number > 0.0, "{what} should be positive, is {number}");
    number
}

fn check_blob(blob: &Value) {
    let targets = blob["targets"].as_array().expect("blob.targets");
    let names: Vec<&str> = targets.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["nginx", "shoal-local", "shoal-peer-verified", "shoal-peer", "registry"]);
    for target in targets {
        let name = target["name"].as_str().unwrap();
        positive(&target["mb_per_s"], &format!("{name} MB/s"));
        positive(&target["ratio_vs_nginx"], &format!("{name} ratio"));
        assert_eq!(target["seconds"].as_array().unwrap().len(), 1, "{name}: one rep in short mode");
    }
    assert!((targets[0]["ratio_vs_nginx"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert!(positive(&blob["blob_bytes"], "blob bytes") >= (32 << 20) as f64);
    // Trust is earned in the warm-up: the measured whole fetch is passed through.
    assert_eq!(blob["peer_passthroughs"], 1.0, "shoal-peer was not passed through");
}

fn check_concurrent(concurrent: &Value) {
    assert_eq!(concurrent["clients"], 8);
    let modes = concurrent["modes"].as_array().expect("concurrent.modes");
    assert_eq!(modes.len(), 4);
    for mode in modes {
        let name = mode["name"].as_str().unwrap();
        positive(&mode["aggregate_mb_per_s"], &format!("{name} throughput"));
        let p50 = positive(&mode["p50_ms"], &format!("{name} p50"));
        let p99 = positive(&mode["p99_ms"], &format!("{name} p99"));
        assert!(p99 >= p50, "{name}: p99 {p99} < p50 {p50}");
        for node in 0..2 {
            let peak = positive(&mode["peak_rss_mib"][node], &format!("{name} peak RSS"));
            assert!(peak < 4096.0, "{name}: peak RSS {peak} MiB is not plausible");
        }
    }
}

fn check_pull(pull: &Value) {
    assert_eq!(pull["upstream_rate"], "1gbit");
    let images = pull["images"].as_array().expect("pull.images");
    let layers: Vec<u64> = images.iter().filter_map(|i| i["layers"].as_u64()).collect();
    assert_eq!(layers, [1, 4]);
    for image in images {
        let name = image["name"].as_str().unwrap();
        assert!(positive(&image["bytes"], name) >= 10_000_000.0);
        positive(&image["upstream_median_seconds"], &format!("{name} upstream"));
        positive(&image["peer_median_seconds"], &format!("{name} peer"));
        positive(&image["speedup"], &format!("{name} speed-up"));
        assert_eq!(image["upstream_bytes_to_peer_node"], 0, "{name}: node 2 must pull from its peer only");
    }
}

fn check_memory(memory: &Value) {
    let expected = positive(&memory["keys_expected"], "expected keys");
    assert!(positive(&memory["keys_advertised"], "advertised keys") >= expected);
    let idle = positive(&memory["idle_rss_mib"], "idle RSS");
    assert!(idle < 1024.0, "idle RSS {idle} MiB is not plausible");
    positive(&memory["other_node_rss_mib"], "other node RSS");
    positive(&memory["peak_under_load_mib"], "peak RSS under load");
}

#[test]
fn short_mode_writes_every_section() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_shoal-e2e"))
        .args(["bench", "--short", "--out"])
        .arg(out.path())
        .status()
        .expect("run shoal-e2e bench");
    assert!(status.success(), "shoal-e2e bench --short failed: {status}");

    let report: Value = serde_json::from_slice(&std::fs::read(out.path().join("bench.json")).unwrap()).unwrap();
    assert_eq!(report["short"], true);
    assert!(!report["machine"]["loadavg_start"].as_str().unwrap().is_empty());
    check_blob(&report["blob"]);
    check_concurrent(&report["concurrent"]);
    check_pull(&report["pull"]);
    check_memory(&report["memory"]);
    for chart in ["bench-blob.png", "bench-concurrent.png", "bench-pull.png"] {
        let bytes = std::fs::read(out.path().join(chart)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{chart} is not a PNG");
    }
    let qdiscs = Command::new("tc").args(["qdisc", "show", "dev", "lo"]).output().unwrap();
    let qdiscs = String::from_utf8_lossy(&qdiscs.stdout);
    assert!(!qdiscs.contains("htb 1:") && !qdiscs.contains("tbf 10:"), "shaping left on lo: {qdiscs}");
}
