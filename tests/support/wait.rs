//! Waiting on a condition in tests: poll it with a deadline, never sleep as
//! synchronisation. Uses tokio's clock, so paused-time tests advance it.
#![allow(dead_code)]

use std::time::Duration;

use tokio::time::Instant;

/// The default bound for `eventually`.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// Polls `condition` every 10 ms until it holds, failing after 10 s.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    eventually_within(what, EVENTUALLY, condition).await;
}

/// Polls `condition` every 5 ms until it holds, failing after `bound`.
pub async fn eventually_within(what: &str, bound: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + bound;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`eventually_within`] for a condition that must await its answer.
pub async fn eventually_async<F, Fut>(what: &str, bound: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + bound;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
