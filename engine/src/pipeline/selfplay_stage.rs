//! The self-play stage: games with one network, written as a replay shard and a PGN file.
//! Everything a self-play worker needs; it touches no other file of the run.

use super::Observer;
use crate::files::write_atomic;
use crate::mcts::NetEvaluator;
use crate::net::{Network, Precision};
use crate::replay::ShardWriter;
use crate::selfplay::{play_games, GameRecord, PlayStats, Sample, SelfPlayConfig};
use anyhow::{Context, Result};
use std::path::Path;

/// What self-play made.
pub struct SelfPlayOutcome {
    pub stats: PlayStats,
    /// The samples written to the shard, for the in-memory replay window.
    pub samples: Vec<Sample>,
    /// The first game, when it was played alone ([`SelfPlayStage::first_alone`]).
    pub first_game: Option<PlayStats>,
}

/// Plays `config.games` games with one network into a shard and a PGN file.
pub struct SelfPlayStage {
    pub config: SelfPlayConfig,
    /// Plays the first game alone first, with this seed, so that its phase breakdown can
    /// be shown (the trainer does it once per process).
    pub first_alone: Option<u64>,
}

impl SelfPlayStage {
    pub fn run(
        &self,
        network: &Network,
        precision: Precision,
        shard: &Path,
        pgn: &Path,
        observer: &mut dyn Observer,
    ) -> Result<SelfPlayOutcome> {
        let cfg = &self.config;
        let mut eval = NetEvaluator::new(network, precision)?;
        let mut writer = ShardWriter::create(shard)?;
        let mut write_error: Option<anyhow::Error> = None;
        let mut pgn_text = String::new();
        let mut out = SelfPlayOutcome {
            stats: PlayStats::default(),
            samples: Vec::new(),
            first_game: None,
        };
        observer.start("self-play", cfg.games as u64, "games");
        let mut on_game = |rec: GameRecord, out: &mut SelfPlayOutcome| {
            if write_error.is_none() {
                for s in &rec.samples {
                    if let Err(e) = writer.append(s) {
                        write_error = Some(e.context(format!("appending to {}", shard.display())));
                        break;
                    }
                }
            }
            pgn_text.push_str(rec.pgn.trim_end());
            pgn_text.push_str("\n\n");
            let (plies, ended) = (rec.plies, rec.outcome.termination.as_str());
            out.samples.extend(rec.samples);
            observer.advance(&|| format!("last: {plies} plies, {ended}"));
        };

        let mut rest = cfg.clone();
        if let (Some(seed), true) = (self.first_alone, cfg.games > 1) {
            let alone = SelfPlayConfig {
                games: 1,
                games_in_flight: 1,
                seed,
                ..cfg.clone()
            };
            let mut first = Vec::new();
            let stats = play_games(&alone, &mut eval, |rec| first.push(rec))?;
            for rec in first {
                on_game(rec, &mut out);
            }
            out.stats += &stats;
            out.first_game = Some(stats);
            rest.games -= 1;
            rest.first_round = cfg.first_round + 1;
        }
        // Each game is streamed to the shard as it finishes.
        let more = play_games(&rest, &mut eval, |rec| on_game(rec, &mut out))?;
        out.stats += &more;
        observer.finish();
        if let Some(e) = write_error {
            return Err(e);
        }
        writer
            .finish()
            .with_context(|| format!("finishing {}", shard.display()))?;
        write_atomic(pgn, pgn_text.as_bytes())
            .with_context(|| format!("writing {}", pgn.display()))?;
        Ok(out)
    }
}
