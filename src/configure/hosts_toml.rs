//! Reading and writing containerd's `hosts.toml` text. Pure: no file I/O.
//!
//! containerd tries the `[host."..."]` tables in file order, so order is kept
//! both for Shoal's own tables and for the existing ones kept after them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::{Spanned, Table, Value};

use super::target::MirrorTarget;

/// First line of every file Shoal writes: marks the file as Shoal's own, so an
/// earlier Shoal file is never taken for the operator's original.
pub const HEADER: &str = "# Written by `shoal configure`; `shoal cleanup` restores the original.";

/// One `[host."<name>"]` table of an existing file, with all its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTable {
    pub name: String,
    pub settings: Table,
}

/// Whether `text` was written by Shoal.
pub fn is_shoal_file(text: &str) -> bool {
    text.lines().next().is_some_and(|line| line.trim_end() == HEADER)
}

/// The `[host]` tables of an existing hosts.toml, in file order.
pub fn parse_host_tables(text: &str) -> Result<Vec<HostTable>, toml::de::Error> {
    #[derive(Deserialize)]
    struct HostsFile {
        #[serde(default)]
        host: BTreeMap<String, Spanned<Table>>,
    }
    let file: HostsFile = toml::from_str(text)?;
    let mut hosts: Vec<_> = file.host.into_iter().collect();
    hosts.sort_by_key(|(_, table)| table.span().start);
    Ok(hosts.into_iter().map(|(name, table)| HostTable { name, settings: table.into_inner() }).collect())
}

/// The file for one registry: `server` (none for `_default`), Shoal's mirror
/// targets in order, then the `kept` tables of the original file.
pub fn render(server: Option<&str>, targets: &[MirrorTarget], kept: &[HostTable]) -> Result<String, toml::ser::Error> {
    let mut out = format!("{HEADER}\n");
    if let Some(server) = server {
        out.push_str(&format!("server = {}\n", quoted(server)));
    }
    for target in targets {
        out.push_str(&format!("\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n", quoted(&target.url())));
    }
    for host in kept.iter().filter(|host| !names_a_target(&host.name, targets)) {
        out.push('\n');
        out.push_str(&render_host_table(host)?);
    }
    Ok(out)
}

/// A TOML basic string, escaped.
fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn names_a_target(name: &str, targets: &[MirrorTarget]) -> bool {
    name.parse::<MirrorTarget>().is_ok_and(|parsed| targets.contains(&parsed))
}

/// One existing table as a standalone `[host."<name>"]` document.
fn render_host_table(host: &HostTable) -> Result<String, toml::ser::Error> {
    let mut inner = Table::new();
    inner.insert(host.name.clone(), Value::Table(host.settings.clone()));
    let mut outer = Table::new();
    outer.insert("host".to_owned(), Value::Table(inner));
    toml::to_string(&outer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn targets(urls: &[&str]) -> Vec<MirrorTarget> {
        urls.iter().map(|url| url.parse().unwrap()).collect()
    }

    #[test]
    fn renders_server_and_targets_in_order() {
        let text =
            render(Some("http://127.0.0.200:5000"), &targets(&["http://127.0.0.1:5000", "http://127.0.0.2:5000"]), &[])
                .unwrap();
        let expected = format!(
            "{HEADER}\nserver = \"http://127.0.0.200:5000\"\n\n\
             [host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"http://127.0.0.2:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        assert_eq!(text, expected);
        let names: Vec<_> = parse_host_tables(&text).unwrap().into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["http://127.0.0.1:5000", "http://127.0.0.2:5000"]);
    }

    #[test]
    fn default_file_has_no_server() {
        let text = render(None, &targets(&["http://127.0.0.1:5000"]), &[]).unwrap();
        let table: Table = toml::from_str(&text).unwrap();
        assert!(!table.contains_key("server"));
        assert!(is_shoal_file(&text));
    }

    #[test]
    fn host_tables_come_back_in_file_order() {
        let text = r#"
server = "https://reg.test"
[host."https://zeta.test"]
  capabilities = ["pull"]
[host."https://alpha.test"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
  [host."https://alpha.test".header]
    x-custom = ["1"]
"#;
        let hosts = parse_host_tables(text).unwrap();
        let names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["https://zeta.test", "https://alpha.test"]);
        assert_eq!(hosts[1].settings.get("skip_verify"), Some(&Value::Boolean(true)));
    }

    #[test]
    fn kept_tables_follow_shoal_tables_with_all_settings() {
        let original = r#"
[host."https://zeta.test"]
  capabilities = ["pull"]
[host."https://alpha.test"]
  skip_verify = true
  [host."https://alpha.test".header]
    x-custom = ["1"]
"#;
        let kept = parse_host_tables(original).unwrap();
        let text = render(Some("https://reg.test"), &targets(&["http://127.0.0.1:5000"]), &kept).unwrap();
        let hosts = parse_host_tables(&text).unwrap();
        let names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["http://127.0.0.1:5000", "https://zeta.test", "https://alpha.test"]);
        assert_eq!(hosts[1..], kept[..]);
    }

    #[test]
    fn a_kept_table_naming_a_target_is_not_repeated() {
        let kept = parse_host_tables("[host.\"http://127.0.0.1:5000/\"]\n  capabilities = [\"pull\"]\n").unwrap();
        let text = render(None, &targets(&["http://127.0.0.1:5000"]), &kept).unwrap();
        assert_eq!(parse_host_tables(&text).unwrap().len(), 1);
    }

    #[test]
    fn odd_names_are_escaped() {
        let kept = vec![HostTable { name: "https://q\"uote.test".to_owned(), settings: Table::new() }];
        let text = render(Some("https://a\"b.test"), &targets(&["http://127.0.0.1:5000"]), &kept).unwrap();
        let table: Table = toml::from_str(&text).unwrap();
        assert_eq!(table["server"].as_str(), Some("https://a\"b.test"));
        assert_eq!(parse_host_tables(&text).unwrap()[1].name, "https://q\"uote.test");
    }

    #[test]
    fn a_file_without_hosts_has_no_tables() {
        assert!(parse_host_tables("server = \"https://reg.test\"\n").unwrap().is_empty());
        assert!(parse_host_tables("not toml [").is_err());
    }
}
