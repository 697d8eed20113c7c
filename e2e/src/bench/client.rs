//! The measuring HTTP client: a hyper client that GETs a URL and reads the
//! body into a byte counter (no hashing, no copying), timing the first byte
//! and the whole transfer. One [`Fetcher`] holds one connection pool, so
//! concurrent clients each get their own.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// One finished GET.
#[derive(Debug, Clone, Copy)]
pub struct Fetched {
    pub bytes: u64,
    /// Until the response head arrived.
    pub first_byte: Duration,
    /// Until the last body byte arrived.
    pub elapsed: Duration,
}

impl Fetched {
    pub fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64()
    }
}

/// A client with its own connection pool.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Fetcher {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self { client: Client::builder(TokioExecutor::new()).build(connector), timeout }
    }

    /// GETs `url` and counts the body; fails unless the answer is a 200 of `expected` bytes.
    pub async fn fetch(&self, url: &str, expected: u64) -> Result<Fetched> {
        self.fetch_with(url, expected, None).await
    }

    /// [`Self::fetch`], sending `range` as the `Range` header if given
    /// (a 206 of `expected` bytes is then the answer wanted).
    pub async fn fetch_with(&self, url: &str, expected: u64, range: Option<&str>) -> Result<Fetched> {
        let fetched = tokio::time::timeout(self.timeout, self.get(url, range))
            .await
            .with_context(|| format!("GET {url} did not finish within {:?}", self.timeout))??;
        ensure!(fetched.bytes == expected, "GET {url} gave {} bytes, expected {expected}", fetched.bytes);
        Ok(fetched)
    }

    async fn get(&self, url: &str, range: Option<&str>) -> Result<Fetched> {
        let mut request = Request::get(url);
        if let Some(range) = range {
            request = request.header(http::header::RANGE, range);
        }
        let request = request.body(Empty::new()).with_context(|| format!("build GET {url}"))?;
        let start = Instant::now();
        let response = self.client.request(request).await.with_context(|| format!("GET {url}"))?;
        let first_byte = start.elapsed();
        ensure!(response.status().is_success(), "GET {url} answered {}", response.status());
        let mut body = response.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.with_context(|| format!("read the body of {url}"))?.data_ref() {
                bytes += data.len() as u64;
            }
        }
        Ok(Fetched { bytes, first_byte, elapsed: start.elapsed() })
    }
}
