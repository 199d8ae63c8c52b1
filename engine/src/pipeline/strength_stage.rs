//! The strength stage: the current network plays fixed anchors (the random mover, the
//! greedy player, the run's iteration-0 network, any UCI engine) from the opening book,
//! through the same match code as `trainer match`, so that a run measures what it learns
//! against opponents that do not move.

use super::Observer;
use crate::matches::{parse_openings, run_match, Limit, MatchSpec, DEFAULT_BOOK};
use crate::mcts::SearchParams;
use crate::net::Network;
use crate::players::{EmberSetup, PlayerSpec, Prepared};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One anchor's result, from the network's side.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StrengthPoint {
    /// The anchor as given (`random`, `greedy`, `iteration 0`, `uci:...`).
    pub opponent: String,
    pub games: usize,
    pub wins: u64,
    pub draws: u64,
    pub losses: u64,
    pub score: f64,
    /// Elo over the anchor and its 95% interval (trinomial); null where not finite.
    pub elo: Option<f64>,
    pub elo_low: Option<f64>,
    pub elo_high: Option<f64>,
    pub nodes: u32,
}

/// An anchor: a player, and the name metrics use for it.
#[derive(Clone, Debug)]
pub struct Anchor {
    pub name: String,
    pub spec: PlayerSpec,
}

/// A match from the repository's book, as the strength and publishing stages play it.
#[derive(Clone, Debug, PartialEq)]
pub struct BookMatch {
    /// Games (rounded up to even: each book opening with both colours).
    pub games: usize,
    /// Root visits a move for Ember (and `go nodes` for UCI players).
    pub nodes: u32,
    pub max_plies: u32,
    /// Games in flight.
    pub concurrency: usize,
    pub seed: u64,
}

impl BookMatch {
    pub fn spec(&self) -> Result<MatchSpec> {
        Ok(MatchSpec {
            games: self.games.max(2) + self.games % 2,
            limit: Limit::Nodes(self.nodes.max(2) as u64),
            openings: parse_openings(DEFAULT_BOOK, "book")?,
            max_plies: self.max_plies,
            random_opening_plies: 0,
            search: SearchParams::for_matches(),
            concurrency: self.concurrency.max(1),
            sprt: None,
            seed: self.seed,
        })
    }
}

pub struct StrengthStage {
    pub anchors: Vec<Anchor>,
    /// Games per anchor.
    pub book: BookMatch,
}

pub struct StrengthOutcome {
    pub points: Vec<StrengthPoint>,
    pub wall: Duration,
}

/// A player of its own copy of `network` (so the caller's network can go on training).
pub(super) fn own_player(network: &Network, label: &str, setup: &EmberSetup) -> Result<Prepared> {
    let copy = Network::from_bytes(&network.to_bytes()?, None, &setup.device, label)?;
    Ok(Prepared::from_network(Arc::new(copy), label.to_string()))
}

impl StrengthStage {
    /// Plays `network` (named `label`) against every anchor.
    pub fn run(
        &self,
        network: &Network,
        label: &str,
        setup: &EmberSetup,
        observer: &mut dyn Observer,
    ) -> Result<StrengthOutcome> {
        let start = Instant::now();
        let player = own_player(network, label, setup)?;
        let spec = self.book.spec()?;
        observer.start(
            "strength",
            (spec.games * self.anchors.len()) as u64,
            "games",
        );
        let mut points = Vec::new();
        for anchor in &self.anchors {
            let opponent = Prepared::new(anchor.spec.clone(), setup)
                .with_context(|| format!("strength anchor {}", anchor.name))?;
            let report = run_match(&player, &opponent, setup, &spec, |r| {
                let t = r.trinomial;
                observer.advance(&|| {
                    format!("{}: +{} ={} -{}", anchor.name, t.wins, t.draws, t.losses)
                });
            })
            .with_context(|| format!("strength match against {}", anchor.name))?;
            let t = report.trinomial;
            let e = t.estimate();
            let finite = |x: f64| x.is_finite().then_some(x);
            points.push(StrengthPoint {
                opponent: anchor.name.clone(),
                games: t.games() as usize,
                wins: t.wins,
                draws: t.draws,
                losses: t.losses,
                score: e.score,
                elo: finite(e.elo),
                elo_low: finite(e.elo_low),
                elo_high: finite(e.elo_high),
                nodes: self.book.nodes,
            });
        }
        observer.finish();
        Ok(StrengthOutcome {
            points,
            wall: start.elapsed(),
        })
    }
}
