//! The pull lanes of the soak: each lane pulls its own image, alternating
//! over the pullers, verifies and removes it, until the run is cancelled or
//! the shared pull cap is reached. A failed pull is reported and the lane
//! goes on, so that the run shows every failure, not only the first.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use shoal_e2e::BuiltImage;
use shoal_e2e::load::{PullDone, PullTarget, pull_verify_remove, wait_layers_gone};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Generous bound on one pull (a healthy one takes well under a second).
const PULL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a lane reports after each pull.
pub enum PullEvent {
    Done(PullDone),
    Failed(String),
}

/// One concurrent stream of pulls of one image.
pub struct Lane {
    pub index: usize,
    pub image: BuiltImage,
    pub reference: String,
    pub pullers: Vec<PullTarget>,
    /// Pulls started by every lane together; no lane starts one past `max_pulls`.
    pub started: Arc<AtomicUsize>,
    pub max_pulls: usize,
}

impl Lane {
    /// Pull, verify, remove, report; until `token` is cancelled or the cap is reached.
    pub async fn run(self, token: CancellationToken, events: mpsc::UnboundedSender<PullEvent>) {
        for round in 0.. {
            if token.is_cancelled() || self.started.fetch_add(1, Ordering::SeqCst) >= self.max_pulls {
                return;
            }
            let target = &self.pullers[(round + self.index) % self.pullers.len()];
            let event = match pull_verify_remove(target, &self.image, &self.reference, PULL_TIMEOUT).await {
                Ok(done) => PullEvent::Done(done),
                Err(err) => {
                    let message = format!("lane {} pull {round} on node {}: {err:#}", self.index, target.node);
                    self.clean_up_after_failure(target).await;
                    PullEvent::Failed(message)
                }
            };
            if events.send(event).is_err() {
                return;
            }
        }
    }

    /// Best effort: remove the image so that the next pull fetches again.
    async fn clean_up_after_failure(&self, target: &PullTarget) {
        let removed: Result<()> = async {
            if target.cri.has_image(&self.reference).await? {
                target.cri.remove(&self.reference).await?;
            }
            wait_layers_gone(&target.content_dir, &self.image).await
        }
        .await;
        if let Err(err) = removed {
            eprintln!("[soak] lane {}: clean-up after a failed pull: {err:#}", self.index);
        }
    }
}
