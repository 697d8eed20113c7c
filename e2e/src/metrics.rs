//! Scraping a Shoal node's `/metrics` and reading its counters.
//! Parses the Prometheus text exposition format (samples only; `#` lines skipped).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::http;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// All samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// `GET <url>` (e.g. `http://127.0.0.2:9090/metrics`) and parse it.
    pub async fn scrape(url: &str) -> Result<Self> {
        let response = http::get(url, Duration::from_secs(5)).await?;
        if !response.status.is_success() {
            bail!("GET {url} answered {}", response.status);
        }
        Ok(Self::parse(&response.text()))
    }

    /// Parses the text format; lines that are not samples are skipped.
    pub fn parse(text: &str) -> Self {
        Self { samples: text.lines().filter_map(parse_sample).collect() }
    }

    /// Sum of `name` over samples whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .fold(0.0, |total, s| total + s.value)
    }

    /// `shoal_bytes_served_total` for one `source` (`local`, `peer` or `miss`).
    pub fn bytes_served(&self, source: &str) -> f64 {
        self.sum("shoal_bytes_served_total", &[("source", source)])
    }

    /// `shoal_requests_total` for one `source` and `kind` (`manifest` or `blob`).
    pub fn requests(&self, source: &str, kind: &str) -> f64 {
        self.sum("shoal_requests_total", &[("source", source), ("kind", kind)])
    }

    /// `shoal_requests_total` of one `kind`, from every source.
    pub fn requests_of_kind(&self, kind: &str) -> f64 {
        self.sum("shoal_requests_total", &[("kind", kind)])
    }

    /// `shoal_peer_fetch_failures_total` for one `reason` (`connect`, `header_timeout`,
    /// `not_found`, `stall`, `body`, `digest_mismatch`, ...).
    pub fn fetch_failures(&self, reason: &str) -> f64 {
        self.sum("shoal_peer_fetch_failures_total", &[("reason", reason)])
    }

    /// `shoal_peer_fetch_failures_total` over every reason.
    pub fn all_fetch_failures(&self) -> f64 {
        self.sum("shoal_peer_fetch_failures_total", &[])
    }

    /// `shoal_peer_requests_total` (requests from other nodes) with one `result`
    /// (`served` or `not_found`), over both kinds.
    pub fn peer_requests(&self, result: &str) -> f64 {
        self.sum("shoal_peer_requests_total", &[("result", result)])
    }

    /// `shoal_peer_upload_bytes_total` of blobs: blob bytes sent to other nodes.
    pub fn blob_upload_bytes(&self) -> f64 {
        self.sum("shoal_peer_upload_bytes_total", &[("kind", "blob")])
    }

    /// One unlabelled sample (a gauge such as `shoal_containerd_connected`), if present.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples.iter().find(|s| s.name == name && s.labels.is_empty()).map(|s| s.value)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (&line[..open], parse_labels(&line[open + 1..close])?, &line[close + 1..])
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

/// `a="1",b="x\"y"` → map; handles escaped quotes, backslashes and newlines.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        chars.next()?; // '='
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        labels.insert(name.trim().to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP shoal_requests_total Requests served.
# TYPE shoal_requests_total counter
shoal_requests_total{kind="blob",registry="127.0.0.200:5000",source="peer"} 3
shoal_requests_total{kind="manifest",registry="127.0.0.200:5000",source="peer"} 2
shoal_requests_total{kind="blob",registry="127.0.0.200:5000",source="miss"} 1
shoal_bytes_served_total{kind="blob",registry="127.0.0.200:5000",source="peer"} 1.5e6
shoal_bytes_served_total{kind="blob",registry="other",source="peer"} 500000
shoal_peer_fetch_failures_total{reason="connect"} 2
shoal_peer_fetch_failures_total{reason="digest_mismatch"} 1
shoal_peer_requests_total{kind="blob",result="not_found"} 4
shoal_peer_requests_total{kind="manifest",result="not_found"} 1
shoal_peer_upload_bytes_total{kind="blob"} 1024
shoal_containerd_connected 1
weird{a="x\"y,z",b="\\"} 7
up 1
"#;

    #[test]
    fn sums_counters_by_label() {
        let metrics = Metrics::parse(TEXT);
        assert_eq!(metrics.samples.len(), 13);
        assert_eq!(metrics.requests("peer", "blob"), 3.0);
        assert_eq!(metrics.requests_of_kind("blob"), 4.0);
        assert_eq!(metrics.fetch_failures("connect"), 2.0);
        assert_eq!(metrics.all_fetch_failures(), 3.0);
        assert_eq!(metrics.peer_requests("not_found"), 5.0);
        assert_eq!(metrics.blob_upload_bytes(), 1024.0);
        assert_eq!(metrics.value("shoal_containerd_connected"), Some(1.0));
        assert_eq!(metrics.value("shoal_requests_total"), None);
        assert_eq!(metrics.requests("peer", "manifest"), 2.0);
        assert_eq!(metrics.bytes_served("peer"), 2_000_000.0);
        assert_eq!(metrics.bytes_served("local"), 0.0);
        assert_eq!(metrics.sum("up", &[]), 1.0);
    }

    #[test]
    fn parses_escaped_label_values() {
        let metrics = Metrics::parse(TEXT);
        let weird = metrics.samples.iter().find(|s| s.name == "weird").map(|s| &s.labels);
        assert_eq!(weird.and_then(|l| l.get("a")).map(String::as_str), Some("x\"y,z"));
        assert_eq!(weird.and_then(|l| l.get("b")).map(String::as_str), Some("\\"));
    }
}
