//! nginx as the reference file server: our own `nginx` process (Debian's
//! binary) with a temporary config, `sendfile on`, serving a directory on a
//! loopback address. Stopped by PID when dropped; touches no system config.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::process::ChildGuard;
use crate::wait::poll_until;

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running nginx; stopped when dropped (the guard before the directory).
pub struct Nginx {
    process: ChildGuard,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Nginx {
    /// Serves `root` at `http://addr/` until dropped.
    pub async fn start(root: &Path, addr: SocketAddr) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("shoal-bench-nginx-").tempdir()?;
        let config = dir.path().join("nginx.conf");
        std::fs::write(&config, config_text(dir.path(), root, addr))?;
        let mut command = Command::new("nginx");
        command.arg("-p").arg(dir.path()).arg("-e").arg(dir.path().join("error.log")).arg("-c").arg(&config);
        let process = ChildGuard::spawn("nginx", command, &dir.path().join("nginx.out"))?;
        let mut nginx = Self { process, addr, _dir: dir };
        nginx.wait_ready().await?;
        Ok(nginx)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let addr = self.addr;
        let process = &mut self.process;
        poll_until(&format!("nginx to listen on {addr}"), READY_TIMEOUT, || {
            let running = process.ensure_running();
            async move {
                running?;
                Ok(tokio::net::TcpStream::connect(addr).await.ok().map(drop))
            }
        })
        .await
        .context("start nginx (is Debian's nginx or nginx-light installed?)")
    }

    /// `http://<addr>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn config_text(dir: &Path, root: &Path, addr: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        "daemon off;\n\
         master_process on;\n\
         worker_processes auto;\n\
         user root;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
           access_log off;\n\
           sendfile on;\n\
           tcp_nopush on;\n\
           default_type application/octet-stream;\n\
           client_body_temp_path {dir}/client;\n\
           proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fastcgi;\n\
           uwsgi_temp_path {dir}/uwsgi;\n\
           scgi_temp_path {dir}/scgi;\n\
           server {{ listen {addr}; root {}; }}\n\
         }}\n",
        root.display()
    )
}
