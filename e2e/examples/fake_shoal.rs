//! A stand-in for `shoal run`, only for checking the e2e harness and demo
//! before the real mirror exists. It is NOT Shoal: no DHT, no streaming, no
//! verification; for content it lacks it asks every other 127.0.0.{1..10}:5000
//! in turn. It takes the flags the harness passes and serves `/readyz`,
//! `/v2/...` and `/metrics` with the same metric names.
//!
//! `cargo build -p shoal-e2e --example fake_shoal` then
//! `SHOAL_BIN=target/debug/examples/fake_shoal cargo test -p shoal-e2e --features mirror --test mirror`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const FORWARDED: &str = "x-fake-shoal-forwarded";

/// (source, kind) → (requests, bytes).
type Counters = BTreeMap<(&'static str, &'static str), (u64, u64)>;

struct State {
    addr: SocketAddr,
    socket: String,
    content: PathBuf,
    /// Never held across an await.
    counters: Mutex<Counters>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let flags = parse_flags()?;
    let flag = |name: &str| flags.get(name).cloned().with_context(|| format!("--{name} is required"));
    let state = Arc::new(State {
        addr: flag("registry-addr")?.parse()?,
        socket: flag("containerd-sock")?,
        content: PathBuf::from(flag("containerd-content-path")?),
        counters: Mutex::new(BTreeMap::new()),
    });
    let metrics_addr: SocketAddr = flag("metrics-addr")?.parse()?;
    tokio::spawn(serve(TcpListener::bind(metrics_addr).await?, state.clone()));
    serve(TcpListener::bind(state.addr).await?, state).await
}

fn parse_flags() -> Result<BTreeMap<String, String>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("run") {
        bail!("usage: fake_shoal run --registry-addr ... (only `run` exists)");
    }
    let mut flags = BTreeMap::new();
    for pair in args[1..].chunks(2) {
        if let [name, value] = pair {
            flags.insert(name.trim_start_matches("--").to_owned(), value.clone());
        }
    }
    Ok(flags)
}

async fn serve(listener: TcpListener, state: Arc<State>) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match path.as_str() {
        "/readyz" | "/v2/" => reply(StatusCode::OK, "text/plain", Bytes::from_static(b"ok"), None),
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", Bytes::from(metrics_text(&state)), None),
        _ => distribution(&req, &path, &state).await.unwrap_or_else(|err| {
            eprintln!("{} {path}: {err:#}", req.method());
            reply(StatusCode::NOT_FOUND, "text/plain", Bytes::new(), None)
        }),
    };
    Ok(if req.method() == Method::HEAD { strip_body(response) } else { response })
}

async fn distribution(req: &Request<Incoming>, path: &str, state: &State) -> Result<Response<Full<Bytes>>> {
    let rest = path.strip_prefix("/v2/").context("not a /v2 path")?;
    let (name, kind, reference) = if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        (name, "manifest", reference)
    } else if let Some((name, reference)) = rest.rsplit_once("/blobs/") {
        (name, "blob", reference)
    } else {
        bail!("unknown path");
    };
    // containerd percent-encodes the port colon: ns=127.0.0.200%3A5000.
    let ns = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ns="))).unwrap_or("");
    let ns = ns.replace("%3A", ":").replace("%3a", ":");
    let forwarded = req.headers().contains_key(FORWARDED);
    let (source, body) = match local(state, &ns, name, reference).await {
        Ok(body) => ("local", body),
        Err(_) if forwarded => {
            count(state, "miss", kind, 0);
            bail!("not here");
        }
        Err(_) => match from_peers(state, req.uri().path_and_query().map_or(path, |p| p.as_str())).await {
            Some(body) => ("peer", body),
            None => {
                count(state, "miss", kind, 0);
                bail!("no peer has it");
            }
        },
    };
    count(state, source, kind, body.len() as u64);
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)));
    let media_type = if kind == "manifest" {
        serde_json::from_slice::<serde_json::Value>(&body)?["mediaType"].as_str().unwrap_or("").to_owned()
    } else {
        "application/octet-stream".to_owned()
    };
    Ok(reply(StatusCode::OK, &media_type, body, Some(&digest)))
}

async fn local(state: &State, ns: &str, name: &str, reference: &str) -> Result<Bytes> {
    let digest = if reference.starts_with("sha256:") {
        reference.to_owned()
    } else {
        tag_digest(state, &format!("{ns}/{name}:{reference}")).await?
    };
    let hex = digest.strip_prefix("sha256:").context("not sha256")?;
    Ok(Bytes::from(tokio::fs::read(state.content.join("blobs/sha256").join(hex)).await?))
}

/// The target digest of image `name` in containerd, from `ctr images ls`.
async fn tag_digest(state: &State, name: &str) -> Result<String> {
    let out = tokio::process::Command::new("ctr")
        .args(["--address", &state.socket, "-n", "k8s.io", "images", "ls"])
        .output()
        .await?;
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    listing
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&name))
        .and_then(|cols| cols.get(2).map(|d| (*d).to_owned()))
        .with_context(|| format!("no image {name}"))
}

async fn from_peers(state: &State, path_and_query: &str) -> Option<Bytes> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    for octet in 1..=10u8 {
        let peer = SocketAddr::from(([127, 0, 0, octet], state.addr.port()));
        if peer == state.addr {
            continue;
        }
        let Ok(request) = Request::get(format!("http://{peer}{path_and_query}"))
            .header(FORWARDED, "1")
            .header("accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
            .body(http_body_util::Empty::<Bytes>::new())
        else {
            continue;
        };
        let fetched = tokio::time::timeout(Duration::from_secs(10), async {
            let response = client.request(request).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            response.into_body().collect().await.ok().map(|b| b.to_bytes())
        })
        .await;
        if let Ok(Some(body)) = fetched {
            return Some(body);
        }
    }
    None
}

fn count(state: &State, source: &'static str, kind: &'static str, bytes: u64) {
    if let Ok(mut counters) = state.counters.lock() {
        let entry = counters.entry((source, kind)).or_default();
        entry.0 += 1;
        entry.1 += bytes;
    }
}

fn metrics_text(state: &State) -> String {
    let Ok(counters) = state.counters.lock() else { return String::new() };
    let mut text = String::new();
    for ((source, kind), (requests, bytes)) in counters.iter() {
        let labels = format!("kind=\"{kind}\",registry=\"127.0.0.200:5000\",source=\"{source}\"");
        text.push_str(&format!("shoal_requests_total{{{labels}}} {requests}\n"));
        text.push_str(&format!("shoal_bytes_served_total{{{labels}}} {bytes}\n"));
    }
    text
}

fn reply(status: StatusCode, content_type: &str, body: Bytes, digest: Option<&str>) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status).header("content-type", content_type);
    if let Some(digest) = digest {
        builder = builder.header("docker-content-digest", digest);
    }
    builder.body(Full::new(body)).unwrap_or_default()
}

fn strip_body(response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let (mut parts, body) = response.into_parts();
    let len = body.size_hint().exact().unwrap_or(0);
    parts.headers.insert("content-length", len.into());
    Response::from_parts(parts, Full::new(Bytes::new()))
}
