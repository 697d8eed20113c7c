//! A minimal HTTP/1.1 client for the harness: readiness probes, metrics
//! scrapes and registry checks, each bounded by a timeout.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response with its whole body.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method url` with `headers` and reads the whole response within `timeout`.
pub async fn request(method: Method, url: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<Response> {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder().method(method.clone()).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Empty::new()).with_context(|| format!("build request {method} {url}"))?;
    let exchange = async {
        let response = client.request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(Response { status: parts.status, headers: parts.headers, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{method} {url} did not answer within {timeout:?}"))?
        .with_context(|| format!("{method} {url}"))
}

/// `GET url` with a timeout.
pub async fn get(url: &str, timeout: Duration) -> Result<Response> {
    request(Method::GET, url, &[], timeout).await
}
