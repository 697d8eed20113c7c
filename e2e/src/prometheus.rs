//! A real Prometheus (the Debian `prometheus` binary) on a free loopback port,
//! scraping given targets every second and loading given rule files, with
//! its TSDB in a temporary directory; stopped by PID when dropped. Queries go
//! through its HTTP API (`/api/v1/query`, `/api/v1/rules`).
//!
//! Owns only the Prometheus process and its API; what to query is the test's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tempfile::TempDir;

use crate::http;
use crate::process::ChildGuard;
use crate::wait::poll_until;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// One scrape target: `host:port` and the labels its samples get (e.g. `node`).
#[derive(Debug, Clone)]
pub struct Target {
    pub address: String,
    pub labels: Vec<(String, String)>,
}

/// What an alerting or recording rule looks like to Prometheus after loading.
#[derive(Debug, Clone)]
pub struct RuleState {
    pub name: String,
    /// `ok`, `err` or `unknown` (not evaluated yet).
    pub health: String,
    pub last_error: String,
}

/// A running Prometheus; killed (by PID) and its directory removed on drop.
pub struct Prometheus {
    process: ChildGuard,
    url: String,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` at `/metrics` every second and
    /// evaluating `rule_files` every second, and waits until it is ready.
    pub async fn start(targets: &[Target], rule_files: &[PathBuf]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("shoal-e2e-prometheus-").tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_text(targets, rule_files)?)?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut process = ChildGuard::spawn("prometheus", command, &dir.path().join("prometheus.log"))?;
        poll_until("prometheus to be ready", START_TIMEOUT, || {
            let running = process.ensure_running();
            let ready_url = format!("{url}/-/ready");
            async move {
                running?;
                Ok(http::get(&ready_url, API_TIMEOUT).await.is_ok_and(|r| r.status.is_success()).then_some(()))
            }
        })
        .await?;
        Ok(Self { process, url, _dir: dir })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Runs an instant query; returns its result series (empty when it has
    /// no data), or an error when Prometheus rejects it.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let url = format!("{}/api/v1/query?query={}", self.url, percent_encode(expr));
        let body = self.api(&url).await?;
        match body["data"]["result"].as_array() {
            Some(series) => Ok(series.clone()),
            None => bail!("query {expr} answered no result array: {body}"),
        }
    }

    /// Every loaded rule and its health.
    pub async fn rules(&self) -> Result<Vec<RuleState>> {
        let body = self.api(&format!("{}/api/v1/rules", self.url)).await?;
        let groups = body["data"]["groups"].as_array().context("no rule groups in /api/v1/rules")?;
        let rules = groups.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default());
        Ok(rules
            .map(|r| RuleState {
                name: r["name"].as_str().unwrap_or_default().to_owned(),
                health: r["health"].as_str().unwrap_or_default().to_owned(),
                last_error: r["lastError"].as_str().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// GETs an API URL and fails unless its `status` is `success`.
    async fn api(&self, url: &str) -> Result<Value> {
        let response = http::get(url, API_TIMEOUT).await?;
        let body: Value = serde_json::from_slice(&response.body)
            .with_context(|| format!("GET {url} answered {} with no JSON", response.status))?;
        if body["status"] != "success" {
            bail!("GET {url}: {} {}", body["errorType"], body["error"]);
        }
        Ok(body)
    }
}

/// The configuration: a 1 s scrape and evaluation interval, one static
/// config per target so each keeps its own labels.
fn config_text(targets: &[Target], rule_files: &[PathBuf]) -> Result<String> {
    let mut text = String::from("global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files:\n");
    for file in rule_files {
        writeln!(text, "  - {}", serde_json::to_string(&file.display().to_string())?)?;
    }
    text.push_str("scrape_configs:\n  - job_name: shoal\n    static_configs:\n");
    for target in targets {
        let labels: Vec<String> = target
            .labels
            .iter()
            .map(|(k, v)| Ok(format!("{k}: {}", serde_json::to_string(v)?)))
            .collect::<Result<_>>()?;
        writeln!(text, "      - targets: [{}]", serde_json::to_string(&target.address)?)?;
        writeln!(text, "        labels: {{{}}}", labels.join(", "))?;
    }
    Ok(text)
}

/// A port free on 127.0.0.1 right now (the OS picks it).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Percent-encodes everything but unreserved characters, for a query string.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(percent_encode(r#"a{b=~".*"} / 2"#), "a%7Bb%3D~%22.%2A%22%7D%20%2F%202");
    }

    #[test]
    fn the_config_gives_each_target_its_labels() {
        let target = Target { address: "127.0.0.2:9090".into(), labels: vec![("node".into(), "node-2".into())] };
        let text = config_text(&[target], &[PathBuf::from("/r/shoal.rules.yaml")]).unwrap();
        assert!(text.contains(r#"  - "/r/shoal.rules.yaml""#), "{text}");
        assert!(text.contains(r#"      - targets: ["127.0.0.2:9090"]"#), "{text}");
        assert!(text.contains(r#"        labels: {node: "node-2"}"#), "{text}");
    }
}
