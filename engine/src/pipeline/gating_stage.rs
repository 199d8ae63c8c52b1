//! The gating stage: the candidate plays the best network; it is promoted when it scores
//! at least the promotion score.

use super::{termination_key, Observer};
use crate::arena::{play_match, MatchConfig, MatchResult};
use crate::mcts::NetEvaluator;
use crate::net::{Network, Precision};
use anyhow::Result;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The match and its verdict.
#[derive(Clone, Debug)]
pub struct GatingOutcome {
    pub result: MatchResult,
    /// The candidate's score (1 when no games were played).
    pub score: f64,
    /// The candidate's Elo over the best network and its 95% interval; `None` where not
    /// finite (no games, or a score of 0 or 1 at the interval's ends).
    pub elo: Option<f64>,
    pub interval: (Option<f64>, Option<f64>),
    pub promoted: bool,
    pub plies: usize,
    pub terminations: BTreeMap<String, usize>,
    pub wall: Duration,
}

pub struct GatingStage {
    /// `name_a` is the candidate, `name_b` the best network. No games: promote at once.
    pub config: MatchConfig,
    pub promotion_score: f64,
}

impl GatingStage {
    pub fn run(
        &self,
        candidate: &Network,
        best: &Network,
        precision: Precision,
        observer: &mut dyn Observer,
    ) -> Result<GatingOutcome> {
        let start = Instant::now();
        let games = self.config.games;
        if games == 0 {
            return Ok(GatingOutcome {
                result: MatchResult::default(),
                score: 1.0,
                elo: None,
                interval: (None, None),
                promoted: true,
                plies: 0,
                terminations: BTreeMap::new(),
                wall: Duration::ZERO,
            });
        }
        let mut a = NetEvaluator::new(candidate, precision)?;
        let mut b = NetEvaluator::new(best, precision)?;
        observer.start("gating", games as u64, "games");
        let mut plies = 0usize;
        let mut terminations: BTreeMap<String, usize> = BTreeMap::new();
        let result = play_match(&self.config, &mut a, &mut b, |g| {
            plies += g.plies;
            *terminations
                .entry(termination_key(g.outcome.termination))
                .or_default() += 1;
            let (n, ended) = (g.plies, g.outcome.termination.as_str());
            observer.advance(&|| format!("last: {n} plies, {ended}"));
        })?;
        observer.finish();
        let score = result.score_a();
        let finite = |x: f64| x.is_finite().then_some(x);
        let (lo, hi) = result.elo_interval();
        Ok(GatingOutcome {
            score,
            elo: finite(result.elo_diff()),
            interval: (finite(lo), finite(hi)),
            promoted: score >= self.promotion_score,
            plies,
            terminations,
            wall: start.elapsed(),
            result,
        })
    }
}

impl GatingOutcome {
    /// The games as one PGN text.
    pub fn pgn(&self) -> String {
        self.result
            .pgns
            .iter()
            .map(|p| format!("{}\n", p.trim_end()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
