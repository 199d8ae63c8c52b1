//! `metrics.jsonl`: one JSON object per complete iteration, what the trainer reports and
//! plots. Written before the iteration's commit, trimmed back to the committed
//! iterations on start.

use super::strength_stage::StrengthPoint;
use crate::files::write_atomic;
use crate::runner::GameTally;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IterationMetrics {
    pub iteration: u64,
    /// Mean losses of the iteration's training steps; null when every step was skipped.
    pub loss_policy: Option<f64>,
    pub loss_value: Option<f64>,
    pub loss_l2: Option<f64>,
    pub loss_total: Option<f64>,
    /// The reply head's loss (0 without the head).
    #[serde(default)]
    pub loss_reply: Option<f64>,
    /// The moves-left head's loss (0 without the head).
    #[serde(default)]
    pub loss_moves_left: Option<f64>,
    pub lr: f64,
    /// Steps skipped by the f16 loss scaler (inf/NaN gradients).
    pub skipped_steps: usize,
    /// Positions recorded for training (with a playout cap, the fully searched moves).
    pub positions: usize,
    /// The iteration's self-play games: results, ends, plies, resignations.
    #[serde(flatten)]
    pub tally: GameTally,
    pub mean_plies: f64,
    /// Moves searched per second of self-play (fast and full ones).
    pub selfplay_positions_per_s: f64,
    pub evals_per_position: f64,
    pub replay_positions: usize,
    pub train_steps: usize,
    pub train_batch: usize,
    pub train_samples_per_s: f64,
    pub gating_games: usize,
    pub gating_score: f64,
    /// Elo of the candidate over the best network; null when the score is 0 or 1.
    pub gating_elo: Option<f64>,
    pub gating_elo_low: Option<f64>,
    pub gating_elo_high: Option<f64>,
    pub promoted: bool,
    pub best_iteration: u64,
    /// The sum of the gating Elo of the promoted candidates: how much each promotion
    /// beat the network before it, added up. Not a strength measure (it adds up noise
    /// and intransitive gains); `strength` is.
    pub cumulative_elo: f64,
    /// The policy loss above a uniform guess among the legal moves, and its KL from the
    /// visit distributions (see `TrainOutcome`); null when no step counted.
    #[serde(default)]
    pub policy_excess: Option<f64>,
    #[serde(default)]
    pub policy_kl: Option<f64>,
    /// The weight of the root Q in this iteration's value targets.
    #[serde(default)]
    pub q_ratio: f32,
    /// The weight of the material balance in this iteration's value targets.
    #[serde(default)]
    pub material_ratio: f32,
    /// The network after this iteration against fixed anchors (when measured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strength: Vec<StrengthPoint>,
    #[serde(default)]
    pub wall_strength_s: f64,
    pub wall_selfplay_s: f64,
    pub wall_train_s: f64,
    pub wall_gating_s: f64,
    pub wall_total_s: f64,
}

/// Reads the metrics of complete iterations. Lines of iterations after `complete` (left
/// by a run killed before it committed) are dropped from the file; a line that does not
/// parse, or repeats an iteration, is moved to `metrics.unreadable.jsonl` beside it with
/// a warning, never lost.
pub fn load_and_trim(path: &Path, complete: u64) -> Result<Vec<IterationMetrics>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        crate::files::read_bounded_text(path, crate::files::MAX_METRICS_BYTES, "a metrics file")?;
    let mut kept: Vec<IterationMetrics> = Vec::new();
    let mut unreadable = String::new();
    let mut dropped = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<IterationMetrics>(line) {
            Ok(m) if m.iteration > complete => {
                log::info!(
                    "{}: dropped the metrics of uncommitted iteration {}",
                    path.display(),
                    m.iteration
                );
                dropped = true;
            }
            Ok(m) if kept.last().is_none_or(|k| k.iteration < m.iteration) => kept.push(m),
            parsed => {
                let why = match parsed {
                    Err(e) => format!("does not parse ({e})"),
                    Ok(m) => format!("repeats iteration {}", m.iteration),
                };
                log::warn!(
                    "{} line {} {why}; moved to {}",
                    path.display(),
                    n + 1,
                    unreadable_path(path).display()
                );
                unreadable.push_str(line);
                unreadable.push('\n');
                dropped = true;
            }
        }
    }
    if !unreadable.is_empty() {
        let aside = unreadable_path(path);
        let mut all = crate::files::read_bounded_text(
            &aside,
            crate::files::MAX_METRICS_BYTES,
            "a metrics file",
        )
        .unwrap_or_default();
        all.push_str(&unreadable);
        write_atomic(&aside, all.as_bytes())
            .with_context(|| format!("writing {}", aside.display()))?;
    }
    if dropped || !text.ends_with('\n') {
        write_all(path, &kept)?;
    }
    Ok(kept)
}

/// Where [`load_and_trim`] keeps the lines it could not use.
pub fn unreadable_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("unreadable.jsonl")
}

fn write_all(path: &Path, all: &[IterationMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in all {
        text.push_str(&serde_json::to_string(m)?);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Rewrites the file with one more line (atomic, so a kill never leaves half a line).
pub fn append(path: &Path, all: &[IterationMetrics]) -> Result<()> {
    write_all(path, all).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_drops_uncommitted_iterations_and_moves_unreadable_lines_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let line = |i: u64| {
            serde_json::to_string(&IterationMetrics {
                iteration: i,
                ..Default::default()
            })
            .unwrap()
        };
        std::fs::write(
            &path,
            format!(
                "{}\n{}\n{}\n{}\n{{\"iter",
                line(1),
                line(2),
                line(2),
                line(3)
            ),
        )
        .unwrap();
        let kept = load_and_trim(&path, 2).unwrap();
        assert_eq!(
            kept.iter().map(|m| m.iteration).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        let aside = std::fs::read_to_string(dir.path().join("metrics.unreadable.jsonl")).unwrap();
        assert_eq!(aside, format!("{}\n{{\"iter\n", line(2)));
        // Read again: nothing more is moved, and what was moved aside stays.
        load_and_trim(&path, 2).unwrap();
        let again = std::fs::read_to_string(dir.path().join("metrics.unreadable.jsonl")).unwrap();
        assert_eq!(again, aside);
    }
}
