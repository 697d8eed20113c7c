//! Unit tests of `configure` and `cleanup` on temporary directories.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::hosts_toml::{HEADER, parse_host_tables};
use super::*;

const ORIGINAL: &str = r#"server = "https://reg.test"

[host."https://cache.reg.test"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
"#;

fn config(path: &Path, targets: &[&str], upstreams: &[&str]) -> ConfigureConfig {
    ConfigureConfig {
        config_path: path.to_path_buf(),
        mirror_targets: targets.iter().map(|t| t.parse().unwrap()).collect(),
        upstreams: upstreams.iter().map(|u| u.parse().unwrap()).collect(),
        prepend_existing: false,
    }
}

/// Every file under `root` (relative path → contents), to compare whole trees.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                walk(root, &path, out);
            } else {
                out.insert(rel, fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn host_names(path: &Path) -> Vec<String> {
    parse_host_tables(&fs::read_to_string(path).unwrap()).unwrap().into_iter().map(|h| h.name).collect()
}

#[test]
fn writes_one_file_per_upstream_with_server_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &["http://127.0.0.1:5000", "http://127.0.0.2:5000"],
        &["http://127.0.0.200:5000", "ghcr.io"],
    );
    let written = configure(&cfg).unwrap();
    assert_eq!(written, [dir.path().join("127.0.0.200:5000/hosts.toml"), dir.path().join("ghcr.io/hosts.toml")]);
    let text = fs::read_to_string(&written[0]).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(table["server"].as_str(), Some("http://127.0.0.200:5000"));
    assert_eq!(host_names(&written[0]), ["http://127.0.0.1:5000", "http://127.0.0.2:5000"]);
    let host = &table["host"]["http://127.0.0.1:5000"];
    assert_eq!(host["capabilities"].as_array().unwrap().len(), 2);
    let ghcr: toml::Table = toml::from_str(&fs::read_to_string(&written[1]).unwrap()).unwrap();
    assert_eq!(ghcr["server"].as_str(), Some("https://ghcr.io"));
}

#[test]
fn no_upstreams_writes_default_without_server() {
    let dir = tempfile::tempdir().unwrap();
    let written = configure(&config(dir.path(), &["http://127.0.0.1:5000"], &[])).unwrap();
    assert_eq!(written, [dir.path().join("_default/hosts.toml")]);
    let table: toml::Table = toml::from_str(&fs::read_to_string(&written[0]).unwrap()).unwrap();
    assert!(!table.contains_key("server"));
    assert!(table["host"].as_table().unwrap().contains_key("http://127.0.0.1:5000"));
}

#[test]
fn running_twice_gives_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("reg.test")).unwrap();
    fs::write(dir.path().join("reg.test/hosts.toml"), ORIGINAL).unwrap();
    let mut cfg = config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test"]);
    cfg.prepend_existing = true;
    configure(&cfg).unwrap();
    let first = snapshot(dir.path());
    configure(&cfg).unwrap();
    assert_eq!(snapshot(dir.path()), first);
    assert_eq!(first[".shoal-backup/reg.test/hosts.toml"], ORIGINAL);
}

#[test]
fn cleanup_restores_an_original_file_exactly() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("reg.test")).unwrap();
    fs::write(dir.path().join("reg.test/hosts.toml"), ORIGINAL).unwrap();
    fs::write(dir.path().join("reg.test/ca.crt"), "cert").unwrap();
    let before = snapshot(dir.path());
    let cfg = config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test"]);
    configure(&cfg).unwrap();
    configure(&cfg).unwrap();
    assert_eq!(host_names(&dir.path().join("reg.test/hosts.toml")), ["http://127.0.0.1:5000"]);
    cleanup(dir.path()).unwrap();
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn cleanup_removes_what_shoal_created() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("other.test")).unwrap();
    fs::write(dir.path().join("other.test/ca.crt"), "cert").unwrap();
    let before = snapshot(dir.path());
    configure(&config(dir.path(), &["http://127.0.0.1:5000"], &["https://new.test", "https://other.test"])).unwrap();
    assert!(dir.path().join("other.test/hosts.toml").is_file());
    cleanup(dir.path()).unwrap();
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn cleanup_without_configure_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("reg.test")).unwrap();
    fs::write(dir.path().join("reg.test/hosts.toml"), ORIGINAL).unwrap();
    let before = snapshot(dir.path());
    cleanup(dir.path()).unwrap();
    cleanup(dir.path()).unwrap();
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn prepend_existing_keeps_original_hosts_after_shoal() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("reg.test")).unwrap();
    fs::write(dir.path().join("reg.test/hosts.toml"), ORIGINAL).unwrap();
    let mut cfg = config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test"]);
    cfg.prepend_existing = true;
    configure(&cfg).unwrap();
    configure(&cfg).unwrap();
    let path = dir.path().join("reg.test/hosts.toml");
    assert_eq!(host_names(&path), ["http://127.0.0.1:5000", "https://cache.reg.test"]);
    let table: toml::Table = toml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(table["host"]["https://cache.reg.test"]["skip_verify"].as_bool(), Some(true));
}

#[test]
fn without_prepend_existing_the_original_hosts_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("reg.test")).unwrap();
    fs::write(dir.path().join("reg.test/hosts.toml"), ORIGINAL).unwrap();
    configure(&config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test"])).unwrap();
    assert_eq!(host_names(&dir.path().join("reg.test/hosts.toml")), ["http://127.0.0.1:5000"]);
}

#[test]
fn prepend_existing_with_a_broken_original_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("reg.test")).unwrap();
    fs::write(dir.path().join("reg.test/hosts.toml"), "[host.\"x\"\n").unwrap();
    let mut cfg = config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test"]);
    cfg.prepend_existing = true;
    let err = configure(&cfg).unwrap_err();
    assert!(matches!(err, Error::ExistingNotToml { .. }), "{err}");
    assert!(err.to_string().contains(".shoal-backup/reg.test/hosts.toml"), "{err}");
    // The original is untouched and cleanup still works.
    assert_eq!(fs::read_to_string(dir.path().join("reg.test/hosts.toml")).unwrap(), "[host.\"x\"\n");
    cleanup(dir.path()).unwrap();
    assert!(!dir.path().join(BACKUP_DIR).exists());
}

#[test]
fn a_dropped_upstream_gets_its_original_back() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("reg.test")).unwrap();
    fs::write(dir.path().join("reg.test/hosts.toml"), ORIGINAL).unwrap();
    configure(&config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test", "https://b.test"])).unwrap();
    configure(&config(dir.path(), &["http://127.0.0.1:5000"], &["https://b.test"])).unwrap();
    assert_eq!(fs::read_to_string(dir.path().join("reg.test/hosts.toml")).unwrap(), ORIGINAL);
    assert_eq!(fs::read_dir(dir.path().join(BACKUP_DIR)).unwrap().count(), 1);
}

#[test]
fn an_orphaned_shoal_file_is_not_taken_as_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test"]);
    configure(&cfg).unwrap();
    fs::remove_dir_all(dir.path().join(BACKUP_DIR)).unwrap();
    configure(&cfg).unwrap();
    assert!(!dir.path().join(".shoal-backup/reg.test/hosts.toml").exists());
    cleanup(dir.path()).unwrap();
    assert!(!dir.path().join("reg.test/hosts.toml").exists());
}

#[test]
fn files_start_with_the_shoal_header() {
    let dir = tempfile::tempdir().unwrap();
    let written = configure(&config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test"])).unwrap();
    assert!(fs::read_to_string(&written[0]).unwrap().starts_with(HEADER));
}

#[test]
fn missing_config_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("certs.d");
    let err = configure(&config(&missing, &["http://127.0.0.1:5000"], &[])).unwrap_err();
    assert!(matches!(err, Error::MissingConfigPath(ref p) if *p == missing), "{err}");
    assert!(err.to_string().contains("does not exist"));
    assert!(matches!(cleanup(&missing), Err(Error::MissingConfigPath(_))));
}

#[test]
fn config_path_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("certs.d");
    fs::write(&file, "").unwrap();
    let err = configure(&config(&file, &["http://127.0.0.1:5000"], &[])).unwrap_err();
    assert!(matches!(err, Error::NotADirectory(_)), "{err}");
}

#[test]
fn a_file_in_place_of_the_registry_directory_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("reg.test"), "not a dir").unwrap();
    let err = configure(&config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test"])).unwrap_err();
    assert!(matches!(err, Error::NotADirectory(ref p) if p.ends_with("reg.test")), "{err}");
    cleanup(dir.path()).unwrap();
    assert_eq!(fs::read_to_string(dir.path().join("reg.test")).unwrap(), "not a dir");
}

#[test]
fn an_unwritable_registry_directory_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should go: the rename over it fails for any user, root included.
    fs::create_dir_all(dir.path().join("reg.test/hosts.toml/inner")).unwrap();
    let err = configure(&config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test"])).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("reg.test/hosts.toml"), "{err}");
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("reg.test")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "a temporary file was left behind");
}

#[test]
fn no_mirror_targets_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = configure(&config(dir.path(), &[], &["https://reg.test"])).unwrap_err();
    assert!(matches!(err, Error::NoMirrorTargets));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn two_upstreams_for_one_host_conflict_unless_equal() {
    let dir = tempfile::tempdir().unwrap();
    let err = configure(&config(dir.path(), &["http://127.0.0.1:5000"], &["http://reg.test", "https://reg.test"]))
        .unwrap_err();
    assert!(matches!(err, Error::ConflictingUpstreams(..)), "{err}");
    let written =
        configure(&config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test", "reg.test"])).unwrap();
    assert_eq!(written.len(), 1);
}

#[test]
fn an_interrupted_backup_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join(".shoal-backup/.tmp-reg.test.1")).unwrap();
    configure(&config(dir.path(), &["http://127.0.0.1:5000"], &["https://reg.test"])).unwrap();
    cleanup(dir.path()).unwrap();
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}
