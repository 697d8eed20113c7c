//! Peers that misbehave in the ways real ones do: dead, hung, corrupt, or
//! cut off in the middle of a body. Each answers on its own loopback port.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use shoal::oci::Key;
use shoal::routing::memory::MemoryNetwork;
use shoal::routing::{Peer, PeerName, Router};
use tokio::net::TcpListener;

/// How a fake peer answers every request.
#[derive(Clone)]
pub enum Behaviour {
    /// Serves `body` with one byte flipped.
    Corrupt(Bytes),
    /// Sends the headers for `body` and its first half, then drops the connection.
    CutHalfway(Bytes),
    /// Like `CutHalfway`, but answers a `Range: bytes=N-` request properly with 206.
    CutUnlessRanged(Bytes),
}

/// Registers `endpoint` in `network` as a provider of `keys` under `name`.
pub async fn advertise(network: &MemoryNetwork, name: &str, endpoint: SocketAddr, keys: &[Key]) {
    let router = network.router(Peer { name: PeerName::new(name), endpoint });
    for key in keys {
        router.provide(key).await.unwrap();
    }
}

/// An address where nothing listens: connections are refused at once.
pub async fn dead_endpoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Accepts connections and never answers, like a SIGSTOPped process.
pub async fn hung_endpoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A peer that answers every request with `behaviour`.
pub async fn misbehaving_endpoint(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let behaviour = Arc::new(behaviour);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let behaviour = behaviour.clone();
                    let range_start = req
                        .headers()
                        .get("range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok());
                    async move { Ok::<_, Infallible>(respond(&behaviour, range_start)) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

type FakeBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

fn respond(behaviour: &Behaviour, range_start: Option<usize>) -> Response<FakeBody> {
    if let (Behaviour::CutUnlessRanged(body), Some(start)) = (behaviour, range_start) {
        let rest = body.slice(start..);
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(Frame::data(rest.clone()))]);
        return Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header("content-length", rest.len())
            .header("content-range", format!("bytes {start}-{}/{}", body.len() - 1, body.len()))
            .body(StreamBody::new(stream).boxed_unsync())
            .unwrap();
    }
    let (length, chunks): (usize, Vec<Result<Bytes, std::io::Error>>) = match behaviour {
        Behaviour::Corrupt(body) => {
            let mut bytes = body.to_vec();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            (bytes.len(), vec![Ok(Bytes::from(bytes))])
        }
        Behaviour::CutHalfway(body) | Behaviour::CutUnlessRanged(body) => {
            let half = body.slice(..body.len() / 2);
            (body.len(), vec![Ok(half), Err(std::io::Error::other("cut"))])
        }
    };
    let stream = futures::stream::iter(chunks).map(|chunk| chunk.map(Frame::data));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-length", length)
        .header("content-type", "application/octet-stream")
        .body(StreamBody::new(stream).boxed_unsync())
        .unwrap()
}
