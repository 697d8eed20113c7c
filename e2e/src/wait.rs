//! Bounded polling: wait for a condition with a deadline instead of sleeping.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

/// Interval between two checks of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// An error that ends a [`poll_until`] at once instead of being retried
/// (e.g. the process being waited for has exited).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Polls `check` until it returns `Ok(Some(value))`, or fails after `timeout`
/// with the last error (or "still false") and `what` in the message. A
/// [`Fatal`] error fails at once.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met yet".to_owned(),
            Err(err) if err.is::<Fatal>() => return Err(err.context(format!("while waiting for {what}"))),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `future` with a deadline; `what` names it in the timeout error.
pub async fn with_timeout<T>(what: &str, timeout: Duration, future: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result,
        Err(_) => bail!("{what} did not finish within {timeout:?}"),
    }
}
