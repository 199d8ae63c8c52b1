//! The commit: an iteration becomes durable in the run folder. The checkpoints the next
//! iteration reads go into `pending-NNNNNN/`, the metrics line is appended, `state.json`
//! (the commit record) is written, and the pending files are renamed into place. A kill
//! at any point leaves either the previous iteration or this one (see [`super::run`]).

use super::metrics::{self, IterationMetrics};
use super::run::{RunDir, RunState};
use crate::files::write_atomic;
use crate::train::Trainer;
use anyhow::{Context, Result};

/// What an iteration commits.
pub struct Iteration<'a> {
    pub number: u64,
    /// The candidate's checkpoint bytes (`latest`; also `best` when promoted).
    pub candidate: &'a [u8],
    pub promoted: bool,
    /// Also keep the candidate as `iter-NNNNNN.safetensors`.
    pub snapshot: bool,
    /// The replay shard self-play wrote (a file name in `replay/`), or none when the
    /// positions came from workers' shards.
    pub shard: Option<String>,
    /// Workers' shards taken into the replay window (names in `shards/`).
    pub worker_shards: Vec<String>,
    pub positions: u64,
    pub games: u64,
    /// The gating Elo, added to the cumulative Elo on promotion.
    pub elo: Option<f64>,
}

impl Iteration<'_> {
    /// The run state after this iteration, on top of `state`, with the trainer at `steps`.
    pub fn next_state(&self, state: &RunState, steps: u64) -> RunState {
        let mut next = state.clone();
        next.iteration = self.number;
        next.shards.extend(self.shard.clone());
        next.worker_shards
            .extend(self.worker_shards.iter().cloned());
        next.positions_total += self.positions;
        next.games_total += self.games;
        next.trainer_steps = steps;
        if self.promoted {
            next.cumulative_elo += self.elo.unwrap_or(0.0);
            next.best_iteration = self.number;
        }
        next
    }
}

/// Commits `it`, whose run state afterwards is `next` ([`Iteration::next_state`]).
/// `metrics` are the committed iterations' metrics with this one's last (written before
/// the commit record, so a kill leaves at most a line that the next start trims).
pub fn commit(
    dir: &RunDir,
    next: &RunState,
    it: &Iteration,
    trainer: &Trainer,
    metrics: &[IterationMetrics],
) -> Result<()> {
    let pending = dir.pending(it.number);
    std::fs::create_dir_all(&pending).with_context(|| format!("creating {}", pending.display()))?;
    write_atomic(&pending.join("latest.safetensors"), it.candidate)?;
    trainer.save_state(&pending.join("train_state.safetensors"))?;
    if it.promoted {
        write_atomic(&pending.join("best.safetensors"), it.candidate)?;
    }
    if it.snapshot {
        write_atomic(&dir.snapshot(it.number), it.candidate)?;
    }
    metrics::append(&dir.metrics(), metrics)?;
    dir.write_state(next)?;
    dir.roll_forward(it.number)?;
    Ok(())
}
