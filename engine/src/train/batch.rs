//! Training batches: self-play samples turned into dense arrays (input planes, the
//! visit distribution over all 4672 policy indices, the game result) and then into
//! tensors on the training device.

use crate::encoding::{PLANES_LEN, POLICY_SIZE};
use crate::game::piece_value;
use crate::net::{MOVES_LEFT_SCALE, WDL};
use crate::replay::EncodedSample;
use crate::selfplay::Sample;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// How samples become targets.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Targets {
    /// Weight of the search's root Q in the value target (lc0's q-ratio): the target is
    /// `(1 - q_ratio) * result + q_ratio * q`, as a scalar and as a WDL distribution.
    pub q_ratio: f32,
    /// Weight of the position's material balance in the value target, as
    /// `tanh(material / MATERIAL_SCALE)` (pawn 1, knight and bishop 3, rook 5, queen 9,
    /// for the side to move): a dense signal that a piece is worth something, taken from
    /// the rest of the blend (`q_ratio` and this weight together are at most 1).
    pub material_ratio: f32,
    /// The policy's softmax runs over the legal moves only (the illegal ones are masked
    /// out), so the loss measures move choice, not legality.
    pub mask_illegal: bool,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            q_ratio: 0.0,
            material_ratio: 0.0,
            mask_illegal: false,
        }
    }
}

/// Pawns of material at which the material target is `tanh(1)` = 0.76.
pub const MATERIAL_SCALE: f32 = 4.0;

/// The material balance for the side to move of encoded planes (ours minus theirs, in
/// [`piece_value`]s): planes 0-5 hold our pawns to king, 6-11 theirs, in `Role::ALL` order.
pub fn material_balance(planes: &[u8]) -> f32 {
    let count = |plane: usize| {
        planes[plane * 64..(plane + 1) * 64]
            .iter()
            .filter(|&&b| b != 0)
            .count() as f32
    };
    shakmaty::Role::ALL
        .iter()
        .enumerate()
        .map(|(plane, &role)| piece_value(role) as f32 * (count(plane) - count(6 + plane)))
        .sum()
}

/// What a policy loss should be compared with, as batch means.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PolicyBaselines {
    /// `ln(legal moves)`: the loss of spreading the bets evenly over the legal moves.
    pub uniform_legal: f64,
    /// The entropy of the visit distributions: the loss of predicting them exactly (the
    /// loss minus it is the KL divergence from the target).
    pub target_entropy: f64,
}

/// A minibatch on the host. Rows are aligned: row `i` of each array belongs to sample `i`.
#[derive(Clone, Debug, Default)]
pub struct TrainingBatch {
    /// `n * PLANES_LEN` encoded positions (side-to-move perspective).
    pub planes: Vec<f32>,
    /// `n * POLICY_SIZE` dense visit distributions (zero off the legal moves).
    pub policy: Vec<f32>,
    /// Value target for the side to move in [-1, 1]: the result (+1 win, 0 draw, -1
    /// loss), blended with the root Q by [`Targets::q_ratio`] and with the material by
    /// [`Targets::material_ratio`].
    pub results: Vec<f32>,
    /// `n * 3` WDL targets (win, draw, loss for the side to move).
    pub wdl: Vec<f32>,
    /// `n * POLICY_SIZE`: 0 on the legal moves, a large negative number elsewhere, added
    /// to the policy logits ([`Targets::mask_illegal`]).
    pub mask: Option<Vec<f32>>,
    /// The opponent's reply per row, as its policy index (0 where none is known), and 1
    /// where it is known, 0 where not: the reply head's target and its row weights.
    pub reply: Vec<u32>,
    pub reply_known: Vec<f32>,
    /// The plies left per row in units of [`MOVES_LEFT_SCALE`] (0 where unknown), and 1
    /// where they are known, 0 where not: the moves-left head's target and its row
    /// weights.
    pub moves_left: Vec<f32>,
    pub moves_left_known: Vec<f32>,
    pub baselines: PolicyBaselines,
    pub n: usize,
}

/// Added to an illegal move's logit: its probability underflows to exactly 0, and the
/// sums stay finite.
const MASKED: f32 = -1.0e9;

/// The WDL of a value `q` in [-1, 1] with as much draw as it leaves: `[q+, 1-|q|, q-]`.
/// A result of +1, 0 or -1 is its one-hot WDL; a value target that deblunder set to a
/// search's Q spreads over the win or loss and the draw.
fn wdl_of_q(q: f32) -> [f32; 3] {
    let q = q.clamp(-1.0, 1.0);
    [q.max(0.0), 1.0 - q.abs(), (-q).max(0.0)]
}

/// A batch as tensors: planes `[n, 1152]`, policy target `[n, 4672]`, one-hot WDL
/// target `[n, 3]` (win, draw, loss for the side to move) and results `[n]`.
pub struct BatchTensors {
    pub planes: Tensor,
    pub policy: Tensor,
    pub wdl: Tensor,
    pub results: Tensor,
    /// Added to the policy logits: 0 on legal moves, a large negative number elsewhere.
    pub mask: Option<Tensor>,
    /// The reply's policy index `[n, 1]` (u32) and whether it is known `[n]`.
    pub reply: Tensor,
    pub reply_known: Tensor,
    /// The plies left in units of [`MOVES_LEFT_SCALE`] `[n]` and whether they are known
    /// `[n]`.
    pub moves_left: Tensor,
    pub moves_left_known: Tensor,
}

impl TrainingBatch {
    /// A batch of window samples with plain targets (the result alone, no mask).
    pub fn from_encoded(samples: &[&EncodedSample]) -> TrainingBatch {
        TrainingBatch::build(samples, Targets::default())
    }

    /// A batch of window samples: planes widened to f32, visits spread over all 4672
    /// policy indices (a sample's visit list names every legal move, visited or not),
    /// value targets blended by `targets`.
    pub fn build(samples: &[&EncodedSample], targets: Targets) -> TrainingBatch {
        let n = samples.len();
        let mut planes = Vec::with_capacity(n * PLANES_LEN);
        let mut policy = vec![0.0; n * POLICY_SIZE];
        let mut mask = targets.mask_illegal.then(|| vec![MASKED; n * POLICY_SIZE]);
        let mut results = Vec::with_capacity(n);
        let mut wdl = Vec::with_capacity(n * WDL);
        let reply: Vec<u32> = samples
            .iter()
            .map(|s| s.reply.map_or(0, u32::from))
            .collect();
        let reply_known: Vec<f32> = samples
            .iter()
            .map(|s| if s.reply.is_some() { 1.0 } else { 0.0 })
            .collect();
        let moves_left: Vec<f32> = samples
            .iter()
            .map(|s| {
                s.plies_left
                    .map_or(0.0, |p| f32::from(p) / MOVES_LEFT_SCALE)
            })
            .collect();
        let moves_left_known: Vec<f32> = samples
            .iter()
            .map(|s| if s.plies_left.is_some() { 1.0 } else { 0.0 })
            .collect();
        let (mut uniform, mut entropy) = (0.0f64, 0.0f64);
        let r = targets.q_ratio.clamp(0.0, 1.0);
        let rm = targets.material_ratio.clamp(0.0, 1.0 - r);
        let rz = 1.0 - r - rm;
        for (i, s) in samples.iter().enumerate() {
            planes.extend(s.planes.iter().map(|&b| f32::from(b)));
            let rows = i * POLICY_SIZE..(i + 1) * POLICY_SIZE;
            let row = &mut policy[rows.clone()];
            for &(index, p) in s.visits.iter() {
                if let Some(x) = row.get_mut(index as usize) {
                    *x += p;
                }
            }
            if let Some(m) = mask.as_mut() {
                let m = &mut m[rows];
                for &(index, _) in s.visits.iter() {
                    if let Some(x) = m.get_mut(index as usize) {
                        *x = 0.0;
                    }
                }
            }
            uniform += (s.visits.len().max(1) as f64).ln();
            entropy -= s
                .visits
                .iter()
                .filter(|(_, p)| *p > 0.0)
                .map(|&(_, p)| f64::from(p) * f64::from(p).ln())
                .sum::<f64>();
            let material = if rm > 0.0 {
                (material_balance(&s.planes) / MATERIAL_SCALE).tanh()
            } else {
                0.0
            };
            results.push(rz * s.result + r * s.root_q + rm * material);
            let (z, q, m) = (wdl_of_q(s.result), wdl_of_q(s.root_q), wdl_of_q(material));
            wdl.extend((0..WDL).map(|k| rz * z[k] + r * q[k] + rm * m[k]));
        }
        let per = |x: f64| x / n.max(1) as f64;
        TrainingBatch {
            planes,
            policy,
            results,
            wdl,
            mask,
            reply,
            reply_known,
            moves_left,
            moves_left_known,
            baselines: PolicyBaselines {
                uniform_legal: per(uniform),
                target_entropy: per(entropy),
            },
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

    pub fn to_tensors(&self, device: &Device) -> Result<BatchTensors> {
        let n = self.n;
        if n == 0 {
            bail!("a training batch needs at least one sample");
        }
        if self.planes.len() != n * PLANES_LEN
            || self.policy.len() != n * POLICY_SIZE
            || self.results.len() != n
            || self.wdl.len() != n * WDL
            || self
                .mask
                .as_ref()
                .is_some_and(|m| m.len() != n * POLICY_SIZE)
            || self.reply.len() != n
            || self.reply_known.len() != n
            || self.moves_left.len() != n
            || self.moves_left_known.len() != n
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
            wdl: Tensor::from_slice(&self.wdl, (n, WDL), device)?,
            results: Tensor::from_slice(&self.results, n, device)?,
            mask: match &self.mask {
                Some(m) => Some(Tensor::from_slice(m, (n, POLICY_SIZE), device)?),
                None => None,
            },
            reply: Tensor::from_slice(&self.reply, (n, 1), device)?,
            reply_known: Tensor::from_slice(&self.reply_known, n, device)?,
            moves_left: Tensor::from_slice(&self.moves_left, n, device)?,
            moves_left_known: Tensor::from_slice(&self.moves_left_known, n, device)?,
        })
    }
}
