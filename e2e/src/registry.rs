//! The upstream registry: Debian's `docker-registry` (CNCF distribution) on
//! 127.0.0.200:5000 with its access log on, and a parser of that log that
//! counts blob GETs per digest and client: the proof of who served what.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::http;
use crate::process::ChildGuard;
use crate::wait::poll_until;

/// Where the upstream registry listens.
pub const REGISTRY_ADDR: &str = "127.0.0.200:5000";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running upstream registry; stopped when dropped.
pub struct UpstreamRegistry {
    dir: PathBuf,
    process: Option<ChildGuard>,
}

impl UpstreamRegistry {
    /// Writes the config under `dir` and starts the registry.
    pub async fn start(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir.join("storage"))?;
        let config = format!(
            "version: 0.1\n\
             log: {{level: info, accesslog: {{disabled: false}}}}\n\
             storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
             http: {{addr: {REGISTRY_ADDR}, secret: shoal-e2e-only}}\n",
            dir.join("storage").display()
        );
        fs::write(dir.join("config.yml"), config)?;
        let mut registry = Self { dir: dir.to_path_buf(), process: None };
        registry.restart().await?;
        Ok(registry)
    }

    /// Starts the registry again after [`stop`](Self::stop); the stored images remain.
    pub async fn restart(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        let mut command = Command::new("docker-registry");
        command.arg("serve").arg(self.dir.join("config.yml"));
        self.process = Some(ChildGuard::spawn("docker-registry", command, &self.log_path())?);
        let url = format!("{}/v2/", self.url());
        let process = &mut self.process;
        poll_until("the upstream registry to answer /v2/", READY_TIMEOUT, || {
            let running = process.as_mut().map_or(Ok(()), ChildGuard::ensure_running);
            let url = url.clone();
            async move {
                running?;
                Ok(http::get(&url, Duration::from_secs(1)).await?.status.is_success().then_some(()))
            }
        })
        .await
    }

    /// Stops the registry (pulls from the upstream now fail with connection refused).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ChildGuard::pid)
    }

    /// `http://127.0.0.200:5000`
    pub fn url(&self) -> String {
        format!("http://{REGISTRY_ADDR}")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    /// The access log after the first `mark` entries, once `ready` holds for
    /// it: the registry writes a line only after the response is complete,
    /// which may be just after the client has its bytes.
    pub async fn access_log_when(
        &self,
        mark: usize,
        timeout: Duration,
        ready: impl Fn(&AccessLog) -> bool,
    ) -> Result<AccessLog> {
        poll_until("the registry access log to show the expected requests", timeout, || {
            let log = self.access_log().map(|log| log.since(mark));
            let ready = log.as_ref().map(&ready).unwrap_or(false);
            async move { Ok(ready.then_some(log?)) }
        })
        .await
    }

    /// Everything in the access log so far.
    pub fn access_log(&self) -> Result<AccessLog> {
        let text = fs::read_to_string(self.log_path())
            .with_context(|| format!("read registry log {}", self.log_path().display()))?;
        Ok(AccessLog::parse(&text))
    }
}

/// One access log line: `IP - - [date] "METHOD URI PROTO" status bytes "ref" "agent"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    pub client: IpAddr,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
}

impl AccessEntry {
    fn parse(line: &str) -> Option<Self> {
        let (client, rest) = line.split_once(' ')?;
        let client = client.parse().ok()?;
        let (_, rest) = rest.split_once("] \"")?;
        let (request, rest) = rest.split_once('"')?;
        let mut request_parts = request.split(' ');
        let method = request_parts.next()?.to_owned();
        let path = request_parts.next()?.to_owned();
        let mut fields = rest.split_whitespace();
        let status = fields.next()?.parse().ok()?;
        let bytes = fields.next()?.parse().unwrap_or(0);
        Some(Self { client, method, path, status, bytes })
    }

    /// The digest of a successful `GET /v2/<repo>/blobs/<digest>`.
    pub fn served_blob(&self) -> Option<&str> {
        if self.method != "GET" || !(200..300).contains(&self.status) {
            return None;
        }
        let path = self.path.split('?').next()?;
        let (_, digest) = path.strip_prefix("/v2/")?.rsplit_once("/blobs/")?;
        digest.starts_with("sha256:").then_some(digest)
    }
}

/// The parsed access log.
#[derive(Debug, Clone, Default)]
pub struct AccessLog {
    pub entries: Vec<AccessEntry>,
}

impl AccessLog {
    /// Keeps only access lines; the registry's other log lines are skipped.
    pub fn parse(text: &str) -> Self {
        Self { entries: text.lines().filter_map(AccessEntry::parse).collect() }
    }

    /// Entries after the first `mark` ones (a mark is `entries.len()` at some earlier time).
    pub fn since(&self, mark: usize) -> AccessLog {
        AccessLog { entries: self.entries.get(mark..).unwrap_or_default().to_vec() }
    }

    /// Successful blob GETs per (digest, client).
    pub fn blob_gets(&self) -> BTreeMap<(String, IpAddr), usize> {
        let mut counts = BTreeMap::new();
        for entry in &self.entries {
            if let Some(digest) = entry.served_blob() {
                *counts.entry((digest.to_owned(), entry.client)).or_default() += 1;
            }
        }
        counts
    }

    /// Successful GETs of `digest`, from any client.
    pub fn blob_gets_of(&self, digest: &str) -> usize {
        self.entries.iter().filter(|e| e.served_blob() == Some(digest)).count()
    }

    /// Successful blob GETs made by `client`.
    pub fn blob_gets_by(&self, client: IpAddr) -> usize {
        self.entries.iter().filter(|e| e.client == client && e.served_blob().is_some()).count()
    }

    /// Blob bytes served, per client.
    pub fn blob_bytes_by_client(&self) -> BTreeMap<IpAddr, u64> {
        let mut bytes = BTreeMap::new();
        for entry in self.entries.iter().filter(|e| e.served_blob().is_some()) {
            *bytes.entry(entry.client).or_default() += entry.bytes;
        }
        bytes
    }
}

impl Drop for UpstreamRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LOG: &str = r#"time="2026-11-22T03:09:04Z" level=info msg="response completed" http.request.uri=/v2/
127.0.0.2 - - [22/Nov/2026:03:09:04 +0000] "GET /v2/e2e/app/blobs/sha256:aa HTTP/1.1" 200 1234 "" "containerd/1.6.20"
127.0.0.3 - - [22/Nov/2026:03:09:04 +0000] "GET /v2/e2e/app/blobs/sha256:aa?ns=x HTTP/1.1" 200 1234 "" "containerd/1.6.20"
127.0.0.3 - - [22/Nov/2026:03:09:04 +0000] "HEAD /v2/e2e/app/blobs/sha256:bb HTTP/1.1" 200 0 "" "containerd/1.6.20"
127.0.0.3 - - [22/Nov/2026:03:09:04 +0000] "GET /v2/e2e/app/blobs/sha256:cc HTTP/1.1" 404 157 "" "curl/7.88.1"
127.0.0.1 - - [22/Nov/2026:03:09:05 +0000] "GET /v2/e2e/app/manifests/v1 HTTP/1.1" 200 500 "" "containerd/1.6.20"
"#;

    #[test]
    fn counts_successful_blob_gets_per_digest_and_client() {
        let log = AccessLog::parse(LOG);
        assert_eq!(log.entries.len(), 5);
        let gets = log.blob_gets();
        assert_eq!(gets.len(), 2);
        assert_eq!(gets[&("sha256:aa".to_owned(), "127.0.0.2".parse().unwrap())], 1);
        assert_eq!(log.blob_gets_of("sha256:aa"), 2);
        assert_eq!(log.blob_gets_of("sha256:cc"), 0);
        assert_eq!(log.blob_gets_by("127.0.0.3".parse().unwrap()), 1);
        assert_eq!(log.blob_bytes_by_client()[&"127.0.0.2".parse().unwrap()], 1234);
    }

    #[test]
    fn since_skips_earlier_entries() {
        let log = AccessLog::parse(LOG);
        assert_eq!(log.since(2).blob_gets_of("sha256:aa"), 0);
        assert!(log.since(99).entries.is_empty());
    }
}
