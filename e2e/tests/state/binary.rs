//! The real `shoal run` binary as a child process on 127.0.4.N with ports
//! of its own, and the helpers restart tests need: SIGTERM and `kill -9` by
//! PID, JSON logs read back (identity, start mode), metrics, plain HTTP.
//!
//! Every process is killed when its guard drops, also when a test fails.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

/// How long a condition may take to hold.
pub const SETTLE: Duration = Duration::from_secs(30);
/// Pause between polls.
const POLL: Duration = Duration::from_millis(5);
/// One HTTP attempt may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 4, n)
}

/// A TCP port free on every one of `ips` right now.
pub fn free_port_on(ips: &[Ipv4Addr]) -> Result<u16> {
    for _ in 0..50 {
        let port = TcpListener::bind((ips[0], 0))?.local_addr()?.port();
        if ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok()) {
            return Ok(port);
        }
    }
    bail!("no port free on all of {ips:?}")
}

/// Polls `condition` until it holds, failing after [`SETTLE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE;
    while !condition().await {
        ensure!(Instant::now() < deadline, "{what}: not within {SETTLE:?}");
        tokio::time::sleep(POLL * 10).await;
    }
    Ok(())
}

/// One shoal node: its addresses, its data directory, and the running process.
pub struct ShoalNode {
    pub ip: Ipv4Addr,
    pub registry_port: u16,
    pub router_port: u16,
    pub metrics_port: u16,
    pub data_dir: Option<PathBuf>,
    /// containerd socket and content directory, if the node has a containerd.
    pub containerd: Option<(PathBuf, PathBuf)>,
    logs: PathBuf,
    runs: usize,
    child: Option<Child>,
}

impl ShoalNode {
    /// A node on 127.0.4.`n` with the cluster's `registry_port`, logging under `logs`.
    pub fn new(n: u8, registry_port: u16, logs: &Path) -> Result<Self> {
        let ip = ip(n);
        let router_port = free_port_on(&[ip])?;
        let metrics_port = free_port_on(&[ip])?;
        Ok(Self {
            ip,
            registry_port,
            router_port,
            metrics_port,
            data_dir: None,
            containerd: None,
            logs: logs.to_path_buf(),
            runs: 0,
            child: None,
        })
    }

    pub fn router_multiaddr(&self) -> String {
        format!("/ip4/{}/tcp/{}", self.ip, self.router_port)
    }

    pub fn registry_url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.ip, self.registry_port)
    }

    /// Starts `shoal run` with `extra` flags; returns when the process is spawned.
    pub fn start(&mut self, extra: &[String]) -> Result<Instant> {
        ensure!(self.child.is_none(), "node {} is already running", self.ip);
        self.runs += 1;
        let log = std::fs::File::create(self.log_path())?;
        let mut command = Command::new(shoal_e2e::shoal::shoal_binary()?);
        command
            .args(["--log-format", "json", "--log-level", "info", "run"])
            .arg(format!("--registry-addr={}:{}", self.ip, self.registry_port))
            .arg(format!("--router-addr={}:{}", self.ip, self.router_port))
            .arg(format!("--metrics-addr={}:{}", self.ip, self.metrics_port))
            .arg("--drain-timeout=5s");
        match &self.containerd {
            Some((socket, content)) => {
                command.arg("--containerd-sock").arg(socket).arg("--containerd-content-path").arg(content);
            }
            None => {
                command.arg("--containerd-sock").arg(self.logs.join("no-containerd.sock"));
            }
        }
        if let Some(dir) = &self.data_dir {
            command.arg("--data-dir").arg(dir);
        }
        command.args(extra).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let started = Instant::now();
        self.child = Some(command.spawn().context("starting shoal")?);
        Ok(started)
    }

    /// SIGTERM by PID, then waits for a clean exit.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        let pid = self.child.as_ref().map(Child::id).context("not running")?;
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Some(status) = self.child.as_mut().context("not running")?.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            ensure!(Instant::now() < deadline, "shoal did not exit within {SETTLE:?} of SIGTERM");
            tokio::time::sleep(POLL * 4).await;
        }
    }

    /// `kill -9` by PID, and reaps the process.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Fails if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.as_mut().context("not started")?.try_wait()? {
            bail!("shoal exited with {status}:\n{}", self.log_tail());
        }
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.logs.join(format!("shoal-{}-run{}.log", self.ip, self.runs))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A field of the first log event whose message is `message`.
    pub fn log_field(&self, message: &str, field: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.log_path()).ok()?;
        text.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()).find_map(|event| {
            let fields = event.get("fields")?;
            (fields.get("message")?.as_str()? == message).then(|| fields.get(field)?.as_str().map(str::to_owned))?
        })
    }

    /// The node's name and how its run started, once logged.
    pub async fn identity_and_mode(&mut self) -> Result<(String, String)> {
        let mut found = None;
        eventually("the node logs its state", || {
            found = self.log_field("state loaded", "name").zip(self.log_field("state loaded", "mode"));
            std::future::ready(found.is_some())
        })
        .await
        .with_context(|| self.log_tail())?;
        found.context("logged")
    }

    /// One metric's value from `/metrics` (the first series whose line starts with `series`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let url = format!("http://{}:{}/metrics", self.ip, self.metrics_port);
        let (status, body) = get(&url, &[]).await?;
        if status != StatusCode::OK {
            return None;
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub async fn status_peers(&self) -> Option<serde_json::Value> {
        let url = format!("http://{}:{}/status/peers", self.ip, self.metrics_port);
        let (_, body) = get(&url, &[]).await?;
        serde_json::from_slice(&body).ok()
    }
}

impl Drop for ShoalNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A GET with `headers`; `None` if the connection or the request failed.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Option<(StatusCode, Bytes)> {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut builder = Request::builder().uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Empty::new()).ok()?;
    let exchange = async {
        let response = client.request(request).await.ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.ok()?
}

/// What a peer asks: a blob, marked as forwarded so only local content answers.
pub async fn peer_request(node: &ShoalNode, repository: &str, digest: &str) -> Option<(StatusCode, Bytes)> {
    get(&node.registry_url(&format!("/v2/{repository}/blobs/{digest}")), &[("shoal-mirrored", "true")]).await
}

/// Polls `node` with a peer request until it is served; returns the time since `since`.
pub async fn until_served(node: &ShoalNode, repository: &str, digest: &str, since: Instant) -> Result<Duration> {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Some((StatusCode::OK, _)) = peer_request(node, repository, digest).await {
            return Ok(since.elapsed());
        }
        ensure!(Instant::now() < deadline, "{} did not serve {digest} within {SETTLE:?}", node.ip);
        tokio::time::sleep(POLL).await;
    }
}

/// A socket address on 127.0.4.`n`.
pub fn socket(n: u8, port: u16) -> SocketAddr {
    SocketAddr::from((ip(n), port))
}
