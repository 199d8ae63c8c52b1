//! The training stage: minibatch steps of the candidate over the replay window.

use super::Observer;
use crate::replay::ReplayWindow;
use crate::train::{PolicyBaselines, Targets, Trainer, TrainingBatch};
use anyhow::{bail, Result};
use rand::{rngs::StdRng, SeedableRng};
use std::time::{Duration, Instant};

/// What the training steps did.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub steps: usize,
    pub batch: usize,
    pub window_positions: usize,
    /// Means over the steps taken; `None` when every step was skipped.
    pub loss_policy: Option<f64>,
    pub loss_value: Option<f64>,
    pub loss_l2: Option<f64>,
    pub loss_total: Option<f64>,
    pub loss_reply: Option<f64>,
    pub loss_moves_left: Option<f64>,
    pub lr: f64,
    /// Steps skipped for non-finite gradients.
    pub skipped: usize,
    pub loss_scale: Option<f64>,
    pub wall: Duration,
    /// Time building batches, and in the forward, backward and optimiser passes.
    pub phases: [Duration; 4],
    /// Means over the steps of the batches' policy baselines: `ln(legal moves)` and the
    /// targets' entropy (the policy loss minus them is its excess over a uniform guess
    /// among the legal moves, and its KL divergence from the targets).
    pub baselines: PolicyBaselines,
}

impl TrainOutcome {
    /// The policy loss above a uniform guess among the legal moves: negative once the
    /// network prefers the moves the search prefers.
    pub fn policy_excess(&self) -> Option<f64> {
        self.loss_policy.map(|l| l - self.baselines.uniform_legal)
    }

    /// The KL divergence of the policy from the visit distributions.
    pub fn policy_kl(&self) -> Option<f64> {
        self.loss_policy.map(|l| l - self.baselines.target_entropy)
    }
}

/// `steps` minibatch steps of `batch` positions drawn uniformly (with replacement) from
/// `window`, the draws seeded with `seed`.
pub struct TrainingStage {
    pub steps: usize,
    pub batch: usize,
    pub seed: u64,
    pub targets: Targets,
}

impl TrainingStage {
    pub fn run(
        &self,
        trainer: &mut Trainer,
        window: &ReplayWindow,
        observer: &mut dyn Observer,
    ) -> Result<TrainOutcome> {
        let start = Instant::now();
        let batch = self.batch.min(window.len());
        if batch == 0 {
            bail!("the replay window is empty: self-play made no positions to train on");
        }
        let mut rng = StdRng::seed_from_u64(self.seed);
        observer.start("training", self.steps as u64, "steps");
        let mut sums = [0f64; 6];
        let (mut counted, mut skipped) = (0usize, 0usize);
        let mut phases = [Duration::ZERO; 4];
        let mut lr = 0.0;
        let mut loss_scale = None;
        let mut baselines = PolicyBaselines::default();
        for _ in 0..self.steps {
            let t0 = Instant::now();
            let samples = window.sample_batch(&mut rng, batch);
            let tb = TrainingBatch::build(&samples, self.targets);
            baselines.uniform_legal += tb.baselines.uniform_legal / self.steps as f64;
            baselines.target_entropy += tb.baselines.target_entropy / self.steps as f64;
            phases[0] += t0.elapsed();
            let r = trainer.train_step(&tb)?;
            phases[1] += r.forward;
            phases[2] += r.backward;
            phases[3] += r.optimizer;
            lr = r.lr;
            loss_scale = r.loss_scale;
            if r.skipped {
                skipped += 1;
            } else {
                for (sum, x) in sums.iter_mut().zip([
                    r.loss_policy,
                    r.loss_value,
                    r.loss_l2,
                    r.loss_total,
                    r.loss_reply,
                    r.loss_moves_left,
                ]) {
                    *sum += f64::from(x);
                }
                counted += 1;
            }
            observer.advance(&|| {
                format!(
                    "loss {:.3} (policy {:.3}, value {:.3})",
                    r.loss_total, r.loss_policy, r.loss_value
                )
            });
        }
        observer.finish();
        let mean = |sum: f64| mean_loss(sum, counted);
        Ok(TrainOutcome {
            steps: self.steps,
            batch,
            window_positions: window.len(),
            loss_policy: mean(sums[0]),
            loss_value: mean(sums[1]),
            loss_l2: mean(sums[2]),
            loss_total: mean(sums[3]),
            loss_reply: mean(sums[4]),
            loss_moves_left: mean(sums[5]),
            lr,
            skipped,
            loss_scale,
            wall: start.elapsed(),
            phases,
            baselines,
        })
    }
}

/// The mean of `counted` step losses summing to `sum`; none when every step was skipped
/// (a mean of nothing is not a loss of 0).
fn mean_loss(sum: f64, counted: usize) -> Option<f64> {
    (counted > 0).then(|| sum / counted as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_iteration_whose_steps_were_all_skipped_has_no_mean_loss() {
        assert_eq!(mean_loss(0.0, 0), None);
        assert_eq!(mean_loss(3.0, 2), Some(1.5));
    }
}
