//! Shutdown drains: once cancelled, the server accepts no new connections,
//! and a transfer already in flight still completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shoal::registry::{response, server};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn in_flight_transfers_finish_and_new_connections_are_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The response body is fed by the test, so the transfer is in flight for as long as it likes.
    let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(4);
    let chunks_rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(chunks_rx)));
    let handler = move |_req| {
        let chunks_rx = chunks_rx.clone();
        async move {
            let rx = chunks_rx.lock().await.take().unwrap();
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
            Response::new(response::stream(Box::pin(stream)))
        }
    };
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let serving = tokio::spawn(server::serve(listener, handler, token.clone(), tracker.clone()));

    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
    let response = client.get(format!("http://{addr}/blob").parse().unwrap()).await.unwrap();
    chunks_tx.send(Bytes::from_static(b"first ")).await.unwrap();

    token.cancel();
    tokio::time::timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the listener closes after cancellation");

    chunks_tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(chunks_tx);
    let body = tokio::time::timeout(WAIT, response.into_body().collect()).await.unwrap().unwrap().to_bytes();
    assert_eq!(body, "first second", "the in-flight transfer completed");
    tokio::time::timeout(WAIT, serving).await.expect("serve returns once drained").unwrap();
    tracker.close();
    tokio::time::timeout(WAIT, tracker.wait()).await.expect("no connection task is left");
}
