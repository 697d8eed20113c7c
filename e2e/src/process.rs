//! Long-running child processes (containerd, the registry, Shoal) owned by a
//! guard: output goes to a log file, and dropping the guard stops the process
//! by its PID (SIGTERM, then SIGKILL after a grace period) and reaps it, also
//! when a test fails or panics. Dropping during a panic prints the log's tail.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::wait::Fatal;

/// How long a process gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of log printed when a test panics.
const TAIL_LINES: usize = 40;

/// A running child process; stopped when dropped.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
    exit_status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Starts `command` with stdout and stderr appended to `log_path`.
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("open log {}", log_path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name}: {command:?}"))?;
        Ok(Self { name: name.to_owned(), child: Some(child), log_path: log_path.to_path_buf(), exit_status: None })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PID, or `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else { return false };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.exit_status = Some(status);
                false
            }
            Err(_) => false,
        }
    }

    /// Fails with the log's tail if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let status = self.exit_status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string());
        let message = format!("{} exited ({status}); last log lines:\n{}", self.name, self.log_tail(TAIL_LINES));
        Err(Fatal(message).into())
    }

    /// Sends `signal` (e.g. SIGSTOP / SIGCONT to simulate a hung process).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self.pid().with_context(|| format!("{} is already stopped", self.name))?;
        kill(Pid::from_raw(i32::try_from(pid)?), signal).with_context(|| format!("send {signal} to {}", self.name))
    }

    /// Freezes the process (SIGSTOP) and returns once the kernel reports every
    /// one of its threads stopped: a thread busy in a request when the signal
    /// arrives could otherwise still answer it.
    pub async fn freeze(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)?;
        let pid = self.pid().with_context(|| format!("{} is already stopped", self.name))?;
        let tasks = PathBuf::from(format!("/proc/{pid}/task"));
        let what = format!("every thread of {} stopped", self.name);
        crate::wait::poll_until(&what, FREEZE_TIMEOUT, || {
            let stopped = all_threads_stopped(&tasks);
            async move { Ok(stopped.then_some(())) }
        })
        .await
    }

    /// Kills the process at once (SIGKILL, by PID) and reaps it: a node that
    /// dies without any chance to clean up.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = child.kill();
        self.exit_status = child.wait().ok();
    }

    /// Stops the process (SIGTERM, SIGKILL after a grace period) and reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(pid) = i32::try_from(child.id()) {
            // A stopped (SIGSTOP) process must be continued to act on SIGTERM.
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.exit_status = Some(status);
                    return;
                }
                Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("{} did not exit within {STOP_GRACE:?} of SIGTERM; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last {TAIL_LINES} lines of {} ({}) ----\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(TAIL_LINES)
            );
        }
        self.stop();
    }
}

/// The last `lines` lines of a text file (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether any live process has `needle` in its command line: the check that
/// a run left nothing behind (every process of a run names its run directory).
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline.contains(needle).then_some((pid, cmdline))
        })
        .collect()
}

/// Longest a SIGSTOP may take to stop every thread.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether every thread under `/proc/<pid>/task` is in the stopped state (`T`).
fn all_threads_stopped(tasks: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(tasks) else { return false };
    entries.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name, which may itself hold spaces.
        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
    })
}
