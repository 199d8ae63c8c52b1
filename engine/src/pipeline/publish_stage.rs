//! The publishing match: before a run replaces the network `ember` plays (the published
//! `latest.safetensors`, or the network built into the binaries when none is published),
//! the run's best network plays that network from the opening book, through the same
//! match code as `trainer match` and the strength curve. The run publishes only a network
//! that won: the lower end of the 95% Elo interval over game pairs is above 0.

use super::strength_stage::{own_player, BookMatch};
use super::Observer;
use crate::matches::{run_match, MatchReport};
use crate::net::Network;
use crate::players::{EmberSetup, Prepared};
use crate::stats::Estimate;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

pub struct PublishStage {
    /// The match, at the same visits a move for both networks.
    pub book: BookMatch,
}

pub struct PublishOutcome {
    pub report: MatchReport,
    /// The candidate's Elo over the incumbent, from pairs of games (one opening, both
    /// colours), with its 95% interval.
    pub estimate: Estimate,
    /// Whether the candidate is stronger: the interval lies above 0.
    pub stronger: bool,
    pub wall: Duration,
}

impl PublishStage {
    /// Plays `candidate` (named `label`) against `incumbent`.
    pub fn run(
        &self,
        candidate: &Network,
        label: &str,
        incumbent: &Prepared,
        setup: &EmberSetup,
        observer: &mut dyn Observer,
    ) -> Result<PublishOutcome> {
        let start = Instant::now();
        let player = own_player(candidate, label, setup)?;
        let spec = self.book.spec()?;
        observer.start("publish", spec.games as u64, "games");
        let report = run_match(&player, incumbent, setup, &spec, |r| {
            let t = r.trinomial;
            observer.advance(&|| format!("+{} ={} -{}", t.wins, t.draws, t.losses));
        })
        .with_context(|| format!("publishing match against {}", incumbent.label()))?;
        observer.finish();
        let estimate = report.pentanomial.estimate();
        Ok(PublishOutcome {
            stronger: is_stronger(&estimate),
            estimate,
            report,
            wall: start.elapsed(),
        })
    }
}

/// The publishing rule: the lower end of the 95% interval is above 0 Elo.
pub fn is_stronger(e: &Estimate) -> bool {
    e.units > 0 && e.elo_low > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{NetConfig, EMBEDDED_NETWORK};
    use crate::pipeline::Quiet;
    use crate::players::PlayerSpec;
    use crate::stats::Pentanomial;
    use candle_core::Device;
    use std::sync::Arc;

    fn pairs(counts: [u64; 5]) -> Estimate {
        let mut p = Pentanomial::default();
        for (k, &n) in counts.iter().enumerate() {
            for _ in 0..n {
                // A pair scoring k/4 of the two games' points: wins, draws and losses.
                let (a, b) = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.5), (1.0, 1.0)][k];
                p.add(a, b);
            }
        }
        p.estimate()
    }

    #[test]
    fn only_a_result_whose_interval_lies_above_zero_publishes() {
        assert!(!is_stronger(&pairs([0; 5])), "no games");
        assert!(!is_stronger(&pairs([0, 0, 20, 0, 0])), "all drawn");
        assert!(!is_stronger(&pairs([0, 3, 10, 4, 0])), "a little ahead");
        assert!(!is_stronger(&pairs([10, 5, 5, 0, 0])), "behind");
        assert!(is_stronger(&pairs([0, 1, 6, 8, 5])), "clearly ahead");
    }

    fn setup() -> EmberSetup {
        EmberSetup {
            embedded: Some(EMBEDDED_NETWORK),
            device: Device::Cpu,
            precision: crate::Precision::F32,
            threads: 1,
            solver: true,
        }
    }

    fn stage() -> PublishStage {
        PublishStage {
            book: BookMatch {
                games: 20,
                nodes: 16,
                max_plies: 160,
                concurrency: 10,
                seed: 3,
            },
        }
    }

    #[test]
    fn an_untrained_network_does_not_beat_the_embedded_one_and_the_embedded_one_beats_it() {
        let s = setup();
        let untrained = Network::new(NetConfig::plain(16, 1), &Device::Cpu, 1).unwrap();
        let embedded = Prepared::new(PlayerSpec::Ember(None), &s).unwrap();
        let out = stage()
            .run(&untrained, "untrained", &embedded, &s, &mut Quiet)
            .unwrap();
        assert_eq!(out.report.games.len(), 20);
        assert!(!out.stronger, "{:?}", out.report.trinomial);
        assert!(out.estimate.score < 0.5, "{:?}", out.report.trinomial);

        let trained = Network::from_bytes(EMBEDDED_NETWORK, None, &Device::Cpu, "e").unwrap();
        let weak = Prepared::from_network(Arc::new(untrained), "untrained".into());
        let out = stage()
            .run(&trained, "embedded", &weak, &s, &mut Quiet)
            .unwrap();
        assert!(out.stronger, "{:?}", out.report.trinomial);
    }
}
