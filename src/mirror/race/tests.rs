//! The race under paused time: every timing below is virtual and exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};

use super::*;
use crate::routing::PeerName;

const MS: Duration = Duration::from_millis(1);
const HEDGE: Duration = Duration::from_millis(50);
/// Stands in for the client's header timeout.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy)]
enum Answer {
    /// Headers after this long.
    After(Duration),
    /// Fails after this long.
    FailAfter(Duration),
    /// Never answers: fails at the header timeout.
    Hang,
}

struct Script {
    peers: VecDeque<Peer>,
    budget: usize,
    tried: usize,
    log: Vec<String>,
}

impl Script {
    fn new(names: &[&str], budget: usize) -> Self {
        let peers = names.iter().enumerate().map(|(i, n)| peer(n, i as u8 + 1)).collect();
        Self { peers, budget, tried: 0, log: Vec::new() }
    }
}

fn peer(name: &str, n: u8) -> Peer {
    Peer { name: PeerName::new(name), endpoint: ([127, 0, 5, n], 5000).into() }
}

impl AttemptSource for Script {
    fn can_start(&self) -> bool {
        self.tried < self.budget
    }

    async fn next(&mut self) -> Option<Peer> {
        let peer = self.peers.pop_front()?;
        self.tried += 1;
        Some(peer)
    }

    fn failed(&mut self, peer: &Peer, _error: &FetchError) {
        self.log.push(format!("failed {}", peer.name));
    }

    fn hedged(&mut self) {
        self.log.push("hedge".into());
    }

    fn outrun(&mut self, peer: &Peer, silent_for: Duration) {
        self.log.push(format!("outrun {} after {}ms", peer.name, silent_for.as_millis()));
    }
}

/// Races `script` with peers answering as `answers` says; returns the
/// winner's name and the virtual time the race took.
async fn run(script: &mut Script, answers: &[(&str, Answer)], hedge: Option<Duration>) -> (Option<String>, Duration) {
    let answers: HashMap<String, Answer> = answers.iter().map(|(n, a)| (n.to_string(), *a)).collect();
    let started = Instant::now();
    let won = race(script, hedge, |peer: Peer| {
        let answer = answers[peer.name.as_str()];
        async move {
            match answer {
                Answer::After(delay) => {
                    tokio::time::sleep(delay).await;
                    Ok(peer.name.to_string())
                }
                Answer::FailAfter(delay) => {
                    tokio::time::sleep(delay).await;
                    Err(FetchError::Connect("refused".into()))
                }
                Answer::Hang => {
                    tokio::time::sleep(HEADER_TIMEOUT).await;
                    Err(FetchError::HeaderTimeout(HEADER_TIMEOUT))
                }
            }
        }
    })
    .await;
    (won.map(|w| w.value), started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_prompt_peer_wins_without_a_hedge() {
    let mut script = Script::new(&["a", "b"], 4);
    let (winner, took) =
        run(&mut script, &[("a", Answer::After(MS * 10)), ("b", Answer::After(MS))], Some(HEDGE)).await;
    assert_eq!((winner.as_deref(), took), (Some("a"), MS * 10));
    assert!(script.log.is_empty(), "{:?}", script.log);
    assert_eq!(script.tried, 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_hedged_at_the_deadline_and_the_hedge_wins() {
    let mut script = Script::new(&["hung", "good"], 4);
    let (winner, took) =
        run(&mut script, &[("hung", Answer::Hang), ("good", Answer::After(MS * 10))], Some(HEDGE)).await;
    assert_eq!((winner.as_deref(), took), (Some("good"), HEDGE + MS * 10));
    assert_eq!(script.log, ["hedge", "outrun hung after 60ms"]);
}

#[tokio::test(start_paused = true)]
async fn the_original_can_still_win_after_a_hedge_started_and_the_later_hedge_is_not_blamed() {
    let mut script = Script::new(&["slow", "slower"], 4);
    let answers = [("slow", Answer::After(MS * 70)), ("slower", Answer::After(MS * 100))];
    let (winner, took) = run(&mut script, &answers, Some(HEDGE)).await;
    assert_eq!((winner.as_deref(), took), (Some("slow"), MS * 70));
    assert_eq!(script.log, ["hedge"]);
}

#[tokio::test(start_paused = true)]
async fn a_fast_failure_moves_on_at_once_without_waiting_for_the_deadline() {
    let mut script = Script::new(&["dead", "good"], 4);
    let answers = [("dead", Answer::FailAfter(MS)), ("good", Answer::After(MS * 5))];
    let (winner, took) = run(&mut script, &answers, Some(HEDGE)).await;
    assert_eq!((winner.as_deref(), took), (Some("good"), MS * 6));
    assert_eq!(script.log, ["failed dead"]);
}

#[tokio::test(start_paused = true)]
async fn hedges_keep_coming_at_each_deadline_until_the_budget_is_spent() {
    let mut script = Script::new(&["a", "b", "c", "d"], 3);
    let answers = [("a", Answer::Hang), ("b", Answer::Hang), ("c", Answer::Hang), ("d", Answer::After(MS))];
    let (winner, took) = run(&mut script, &answers, Some(HEDGE)).await;
    assert_eq!(winner, None, "d is beyond the budget of 3");
    assert_eq!(took, HEDGE * 2 + HEADER_TIMEOUT, "ends when the last hedge times out");
    assert_eq!(script.tried, 3);
    assert_eq!(script.log.iter().filter(|l| *l == "hedge").count(), 2);
    assert_eq!(script.log.iter().filter(|l| l.starts_with("failed")).count(), 3);
}

#[tokio::test(start_paused = true)]
async fn without_hedging_attempts_run_one_after_another() {
    let mut script = Script::new(&["hung", "good"], 4);
    let (winner, took) = run(&mut script, &[("hung", Answer::Hang), ("good", Answer::After(MS * 10))], None).await;
    assert_eq!((winner.as_deref(), took), (Some("good"), HEADER_TIMEOUT + MS * 10));
    assert_eq!(script.log, ["failed hung"]);
}

#[tokio::test(start_paused = true)]
async fn no_peers_means_no_winner_at_once() {
    let mut script = Script::new(&[], 4);
    let (winner, took) = run(&mut script, &[], Some(HEDGE)).await;
    assert_eq!((winner, took), (None, Duration::ZERO));
}
