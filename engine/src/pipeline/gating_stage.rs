//! The gating stage: the candidate plays the best network through the match driver
//! ([`crate::matches::run_match`], the code of `trainer match` and the strength curve);
//! it is promoted when it scores at least the promotion score.

use super::Observer;
use crate::matches::{run_match, MatchReport, MatchSpec};
use crate::net::{Network, Precision};
use crate::players::{EmberSetup, Prepared};
use crate::runner::GameTally;
use anyhow::Result;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The match and its verdict.
#[derive(Clone, Debug)]
pub struct GatingOutcome {
    /// The candidate is side A.
    pub report: MatchReport,
    /// The candidate's score (1 when no games were played).
    pub score: f64,
    /// The candidate's Elo over the best network and its 95% interval; `None` where not
    /// finite (no games, or a score of 0 or 1 at the interval's ends).
    pub elo: Option<f64>,
    pub interval: (Option<f64>, Option<f64>),
    pub promoted: bool,
    /// The games' results (for White and Black), ends and plies.
    pub tally: GameTally,
    pub wall: Duration,
}

pub struct GatingStage {
    /// Paired games from the openings (the standard position and random plies); no
    /// games: promote at once.
    pub spec: MatchSpec,
    /// The candidate's and the best network's names in the PGN.
    pub names: (String, String),
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
        let games = self.spec.games;
        if games == 0 {
            return Ok(GatingOutcome {
                report: MatchReport::default(),
                score: 1.0,
                elo: None,
                interval: (None, None),
                promoted: true,
                tally: GameTally::default(),
                wall: Duration::ZERO,
            });
        }
        let setup = EmberSetup {
            embedded: None,
            device: candidate.device.clone(),
            precision,
            threads: rayon::current_num_threads(),
            solver: self.spec.search.solver,
        };
        let player = |net: &Network, name: &str| -> Result<Prepared> {
            let copy = Network::from_bytes(&net.to_bytes()?, None, &setup.device, name)?;
            Ok(Prepared::from_network(Arc::new(copy), name.to_string()))
        };
        let a = player(candidate, &self.names.0)?;
        let b = player(best, &self.names.1)?;
        observer.start("gating", games as u64, "games");
        let mut seen = 0;
        let report = run_match(&a, &b, &setup, &self.spec, |r| {
            let fresh = &r.games[seen..];
            seen = r.games.len();
            for g in fresh {
                let (n, ended) = (g.plies, g.termination.as_str());
                observer.advance(&|| format!("last: {n} plies, {ended}"));
            }
        })?;
        observer.finish();
        let estimate = report.trinomial.estimate();
        let finite = |x: f64| x.is_finite().then_some(x);
        Ok(GatingOutcome {
            score: estimate.score,
            elo: finite(estimate.elo),
            interval: (finite(estimate.elo_low), finite(estimate.elo_high)),
            promoted: estimate.score >= self.promotion_score,
            tally: report.tally.clone(),
            wall: start.elapsed(),
            report,
        })
    }
}

impl GatingOutcome {
    /// Games played.
    pub fn games(&self) -> usize {
        self.tally.games
    }

    /// The games as one PGN text, in game order.
    pub fn pgn(&self) -> String {
        let mut games: Vec<_> = self.report.games.iter().collect();
        games.sort_by_key(|g| g.number);
        games
            .iter()
            .map(|g| format!("{}\n", g.pgn.trim_end()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
