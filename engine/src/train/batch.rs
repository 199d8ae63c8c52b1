//! Training batches: self-play samples turned into dense arrays (input planes, the
//! visit distribution over all 4672 policy indices, the game result) and then into
//! tensors on the training device.

use crate::encoding::{PLANES_LEN, POLICY_SIZE};
use crate::net::WDL;
use crate::replay::EncodedSample;
use crate::selfplay::Sample;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// A minibatch on the host. Rows are aligned: row `i` of each array belongs to sample `i`.
#[derive(Clone, Debug, Default)]
pub struct TrainingBatch {
    /// `n * PLANES_LEN` encoded positions (side-to-move perspective).
    pub planes: Vec<f32>,
    /// `n * POLICY_SIZE` dense visit distributions (zero off the legal moves).
    pub policy: Vec<f32>,
    /// Final result for the side to move: +1 win, 0 draw, -1 loss.
    pub results: Vec<f32>,
    pub n: usize,
}

/// A batch as tensors: planes `[n, 1152]`, policy target `[n, 4672]`, one-hot WDL
/// target `[n, 3]` (win, draw, loss for the side to move) and results `[n]`.
pub struct BatchTensors {
    pub planes: Tensor,
    pub policy: Tensor,
    pub wdl: Tensor,
    pub results: Tensor,
}

impl TrainingBatch {
    /// A batch of window samples: planes widened to f32, visits spread over all 4672
    /// policy indices.
    pub fn from_encoded(samples: &[&EncodedSample]) -> TrainingBatch {
        let n = samples.len();
        let mut planes = Vec::with_capacity(n * PLANES_LEN);
        let mut policy = vec![0.0; n * POLICY_SIZE];
        let mut results = Vec::with_capacity(n);
        for (i, s) in samples.iter().enumerate() {
            planes.extend(s.planes.iter().map(|&b| f32::from(b)));
            let row = &mut policy[i * POLICY_SIZE..(i + 1) * POLICY_SIZE];
            for &(index, p) in s.visits.iter() {
                if let Some(x) = row.get_mut(index as usize) {
                    *x += p;
                }
            }
            results.push(s.result);
        }
        TrainingBatch {
            planes,
            policy,
            results,
            n,
        }
    }

    /// A batch of self-play samples (encoded here).
    pub fn from_samples(samples: &[&Sample]) -> TrainingBatch {
        let encoded: Vec<EncodedSample> = samples.iter().map(|s| EncodedSample::new(s)).collect();
        TrainingBatch::from_encoded(&encoded.iter().collect::<Vec<_>>())
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The one-hot WDL target of each row: a result above +0.5 is a win, below -0.5 a
    /// loss, anything else a draw.
    pub fn wdl_targets(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.n * WDL];
        for (row, &r) in out.chunks_exact_mut(WDL).zip(&self.results) {
            let k = if r > 0.5 {
                0
            } else if r < -0.5 {
                2
            } else {
                1
            };
            row[k] = 1.0;
        }
        out
    }

    pub fn to_tensors(&self, device: &Device) -> Result<BatchTensors> {
        let n = self.n;
        if n == 0 {
            bail!("a training batch needs at least one sample");
        }
        if self.planes.len() != n * PLANES_LEN
            || self.policy.len() != n * POLICY_SIZE
            || self.results.len() != n
        {
            bail!(
                "training batch arrays disagree with n = {n}: {} plane floats, {} policy floats, {} results",
                self.planes.len(),
                self.policy.len(),
                self.results.len()
            );
        }
        Ok(BatchTensors {
            planes: Tensor::from_slice(&self.planes, (n, PLANES_LEN), device)?,
            policy: Tensor::from_slice(&self.policy, (n, POLICY_SIZE), device)?,
            wdl: Tensor::from_vec(self.wdl_targets(), (n, WDL), device)?,
            results: Tensor::from_slice(&self.results, n, device)?,
        })
    }
}
