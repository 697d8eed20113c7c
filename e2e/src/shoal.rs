//! A Shoal node process (`shoal run`) beside one containerd, and where its
//! binary comes from: `SHOAL_BIN`, else `shoal` next to the running e2e
//! binary in the same cargo profile directory (built on demand).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::containerd::Containerd;
use crate::http;
use crate::metrics::Metrics;
use crate::process::ChildGuard;
use crate::wait::poll_until;

pub const REGISTRY_PORT: u16 = 5000;
pub const ROUTER_PORT: u16 = 5001;
pub const METRICS_PORT: u16 = 9090;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// How to start one Shoal node.
#[derive(Debug, Clone)]
pub struct ShoalOptions {
    /// The node's address: router and metrics listen here, and peers reach
    /// its registry at this address (the IP its router announces).
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    /// The first node's IP, or `None` for the first node itself.
    pub bootstrap: Option<Ipv4Addr>,
    /// Upstream registries as URLs, e.g. `http://127.0.0.200:5000`.
    pub mirrored_registries: Vec<String>,
    pub tuning: ShoalTuning,
}

/// What a scenario changes about one Shoal node.
#[derive(Debug, Clone, Default)]
pub struct ShoalTuning {
    /// Bind the registry here instead of the node's address, so that a shim
    /// can stand at `<node ip>:5000`, where peers reach this node.
    pub registry_ip: Option<Ipv4Addr>,
    /// Extra `shoal run` flags, e.g. `["--provider-ttl", "6s"]`.
    pub args: Vec<String>,
}

/// A running `shoal run`; stopped when dropped.
pub struct Shoal {
    ip: Ipv4Addr,
    registry_ip: Ipv4Addr,
    process: ChildGuard,
}

impl Shoal {
    /// Starts Shoal for `containerd` and waits until `/readyz` answers 200.
    pub async fn start(options: &ShoalOptions, containerd: &Containerd) -> Result<Self> {
        std::fs::create_dir_all(&options.data_dir)?;
        let ip = options.ip;
        let registry_ip = options.tuning.registry_ip.unwrap_or(ip);
        let mut command = Command::new(shoal_binary()?);
        command
            .arg("run")
            .args(["--registry-addr", &format!("{registry_ip}:{REGISTRY_PORT}")])
            .args(["--router-addr", &format!("{ip}:{ROUTER_PORT}")])
            .args(["--metrics-addr", &format!("{ip}:{METRICS_PORT}")])
            .arg("--containerd-sock")
            .arg(containerd.socket())
            .args(["--containerd-namespace", "k8s.io"])
            .arg("--containerd-content-path")
            .arg(containerd.content_dir())
            .arg("--data-dir")
            .arg(&options.data_dir)
            .args(["--log-format", "json"]);
        if let Some(peer) = options.bootstrap {
            command.args(["--bootstrap-peers", &format!("/ip4/{peer}/tcp/{ROUTER_PORT}")]);
        }
        if !options.mirrored_registries.is_empty() {
            command.args(["--mirrored-registries", &options.mirrored_registries.join(",")]);
        }
        command.args(&options.tuning.args);
        let log = options.data_dir.join("shoal.log");
        let process = ChildGuard::spawn(&format!("shoal {ip}"), command, &log)?;
        let mut shoal = Self { ip, registry_ip, process };
        shoal.wait_ready().await?;
        Ok(shoal)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let url = format!("{}/readyz", mirror_url(self.registry_ip));
        let process = &mut self.process;
        poll_until(&format!("{url} to answer 200"), READY_TIMEOUT, || {
            let running = process.ensure_running();
            let url = url.clone();
            async move {
                running?;
                Ok(http::get(&url, Duration::from_secs(1)).await?.status.is_success().then_some(()))
            }
        })
        .await
    }

    /// The registry mirror URL containerd is pointed at: `http://<ip>:5000`.
    pub fn url(&self) -> String {
        mirror_url(self.ip)
    }

    /// Where the registry really listens (differs from [`url`](Self::url) behind a shim).
    pub fn registry_url(&self) -> String {
        mirror_url(self.registry_ip)
    }

    /// Kills Shoal at once (SIGKILL): peers' connections are refused from now on.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Freezes Shoal (SIGSTOP): connections are still accepted by the kernel,
    /// but nothing answers; returns once every thread has stopped.
    /// [`resume`](Self::resume) thaws it.
    pub async fn freeze(&self) -> Result<()> {
        self.process.freeze().await
    }

    /// Thaws a frozen Shoal (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.process.signal(nix::sys::signal::Signal::SIGCONT)
    }

    pub async fn metrics(&self) -> Result<Metrics> {
        Metrics::scrape(&format!("http://{}:{METRICS_PORT}/metrics", self.ip)).await
    }

    pub fn process(&mut self) -> &mut ChildGuard {
        &mut self.process
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

/// `http://<ip>:5000`
pub fn mirror_url(ip: Ipv4Addr) -> String {
    format!("http://{ip}:{REGISTRY_PORT}")
}

/// The `shoal` binary: `SHOAL_BIN`, else built (once per process) with cargo
/// into the profile directory of the running executable.
pub fn shoal_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(|| locate_or_build().map_err(|err| format!("{err:#}"))).clone().map_err(anyhow::Error::msg)
}

fn locate_or_build() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SHOAL_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("SHOAL_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let profile_dir = profile_dir()?;
    let release = profile_dir.file_name().is_some_and(|name| name == "release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("e2e crate has no parent directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // With the features the e2e tests turn on (a dev-dependency), so that the
    // library built for the tests is reused, and `cargo build --workspace
    // --all-targets` and this build do not undo each other (test-util only
    // adds the in-memory fakes; `shoal run` is the same).
    command.current_dir(workspace).args(["build", "--quiet", "--bin", "shoal", "--features", "test-util"]);
    // What cargo set for this test binary must not reach the nested build:
    // build scripts that watch such variables (ring watches
    // CARGO_MANIFEST_DIR) would otherwise rebuild on every switch between
    // `cargo test` and `cargo build`.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_per_crate_cargo_variable) {
            command.env_remove(&name);
        }
    }
    if release {
        command.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        command.env("CARGO_TARGET_DIR", target);
    }
    let status = run_bounded(command, BUILD_TIMEOUT).context("build shoal (set SHOAL_BIN to skip)")?;
    if !status.success() {
        bail!("`cargo build --bin shoal` failed ({status}); set SHOAL_BIN to a built binary");
    }
    let binary = profile_dir.join("shoal");
    if !binary.is_file() {
        bail!("{} is missing after building it", binary.display());
    }
    Ok(binary)
}

/// Variables cargo sets for the crate it runs (not the user's configuration).
fn is_per_crate_cargo_variable(name: &str) -> bool {
    const EXACT: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "CARGO_BIN_NAME",
        "OUT_DIR",
    ];
    EXACT.contains(&name) || name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_BIN_EXE_")
}

/// `target/<profile>` of the running executable (tests live in `<profile>/deps`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("executable has no directory")?;
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    Ok(dir.to_path_buf())
}

fn run_bounded(mut command: Command, timeout: Duration) -> Result<std::process::ExitStatus> {
    let mut child = command.spawn()?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
