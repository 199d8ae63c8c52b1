//! The evaluator seam: the search fills an [`EvalBatch`] with leaf positions and their
//! legal moves, one call fills in priors (over those moves, in their order), WDL values
//! (for the side to move) and, from a network with the moves-left head, the plies left. [`NetEvaluator`] runs the network; [`UniformEvaluator`]
//! is the test double that needs none.

use crate::encoding::{encode_position, move_to_index, PLANES_LEN, POLICY_SIZE};
use crate::net::{
    cpu::{Conv3x3, CpuNet},
    selected_policy_index, wdl_probabilities, DeviceNet, Network, Precision,
};
use crate::phase_times::{lap, PhaseTimes};
use rayon::prelude::*;
use shakmaty::{Chess, Move, Position};
use std::time::Instant;

/// Leaves to evaluate, and the evaluator's answers.
#[derive(Default, Clone)]
pub struct EvalBatch {
    positions: Vec<Chess>,
    /// `moves[offsets[i]..offsets[i+1]]` are the legal moves of position `i`.
    offsets: Vec<usize>,
    moves: Vec<Move>,
    /// Output: prior of each move, aligned with `moves`.
    priors: Vec<f32>,
    /// Output: win/draw/loss probabilities for the side to move.
    wdl: Vec<[f32; 3]>,
    /// Output: the plies left until the game's end, from a network with the moves-left
    /// head (none otherwise).
    moves_left: Vec<Option<f32>>,
}

impl EvalBatch {
    pub fn new() -> Self {
        EvalBatch {
            offsets: vec![0],
            ..Default::default()
        }
    }

    pub fn clear(&mut self) {
        self.positions.clear();
        self.offsets.clear();
        self.offsets.push(0);
        self.moves.clear();
        self.priors.clear();
        self.wdl.clear();
        self.moves_left.clear();
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Adds a leaf; returns its index.
    pub fn push(&mut self, position: &Chess, moves: &[Move]) -> usize {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.positions.push(position.clone());
        self.moves.extend_from_slice(moves);
        self.offsets.push(self.moves.len());
        self.priors.resize(self.moves.len(), 0.0);
        self.wdl.push([0.0, 1.0, 0.0]);
        self.moves_left.push(None);
        self.positions.len() - 1
    }

    /// Appends every leaf of `other`; returns the index of its first leaf here.
    pub fn append(&mut self, other: &EvalBatch) -> usize {
        let base = self.len();
        for i in 0..other.len() {
            self.push(&other.positions[i], other.moves(i));
        }
        base
    }

    pub fn position(&self, i: usize) -> &Chess {
        &self.positions[i]
    }

    pub fn moves(&self, i: usize) -> &[Move] {
        &self.moves[self.offsets[i]..self.offsets[i + 1]]
    }

    pub fn priors(&self, i: usize) -> &[f32] {
        &self.priors[self.offsets[i]..self.offsets[i + 1]]
    }

    pub fn priors_mut(&mut self, i: usize) -> &mut [f32] {
        let r = self.offsets[i]..self.offsets[i + 1];
        &mut self.priors[r]
    }

    pub fn wdl(&self, i: usize) -> [f32; 3] {
        self.wdl[i]
    }

    pub fn set_wdl(&mut self, i: usize, wdl: [f32; 3]) {
        self.wdl[i] = wdl;
    }

    /// The plies left until the game's end for position `i`, when the evaluator has a
    /// moves-left head.
    pub fn moves_left(&self, i: usize) -> Option<f32> {
        self.moves_left[i]
    }

    pub fn set_moves_left(&mut self, i: usize, plies: Option<f32>) {
        self.moves_left[i] = plies;
    }

    /// Legal moves over all positions.
    pub fn moves_len(&self) -> usize {
        self.moves.len()
    }

    /// Makes this batch the concatenation of `parts` (their leaves in order, outputs
    /// reset), copying in parallel; `starts[k]` becomes the index of part `k`'s first leaf.
    pub fn assign_concat(&mut self, parts: &[&EvalBatch], starts: &mut Vec<usize>) {
        starts.clear();
        self.offsets.clear();
        self.offsets.push(0);
        let mut moves = 0;
        for p in parts {
            starts.push(self.offsets.len() - 1);
            for w in p.offsets.windows(2) {
                moves += w[1] - w[0];
                self.offsets.push(moves);
            }
        }
        self.positions.clear();
        self.positions.par_extend(
            parts
                .par_iter()
                .flat_map_iter(|p| p.positions.iter().cloned()),
        );
        self.moves.clear();
        self.moves
            .par_extend(parts.par_iter().flat_map_iter(|p| p.moves.iter().cloned()));
        self.priors.clear();
        self.priors.resize(moves, 0.0);
        self.wdl.clear();
        self.wdl.resize(self.positions.len(), [0.0, 1.0, 0.0]);
        self.moves_left.clear();
        self.moves_left.resize(self.positions.len(), None);
    }

    /// For every legal move of every leaf, in the batch's move order, its index in the
    /// square-major logits of the whole batch ([`selected_policy_index`]), in parallel.
    pub fn selected_indices_into(&self, out: &mut Vec<u32>) {
        out.clear();
        out.par_extend((0..self.len()).into_par_iter().flat_map_iter(|i| {
            let turn = self.positions[i].turn();
            self.moves(i)
                .iter()
                .map(move |m| selected_policy_index(i, move_to_index(m, turn)) as u32)
        }));
    }

    /// Fills every position's priors with the softmax of its moves' `logits` (aligned
    /// with the batch's moves) and its WDL with the softmax of `wdl_logits` (`3 * len`),
    /// positions in parallel.
    pub fn set_from_logits(&mut self, logits: &[f32], wdl_logits: &[f32]) {
        assert_eq!(logits.len(), self.moves.len(), "one logit per legal move");
        assert_eq!(
            wdl_logits.len(),
            3 * self.len(),
            "three WDL logits per position"
        );
        let mut rows: Vec<&mut [f32]> = Vec::with_capacity(self.len());
        let mut rest = &mut self.priors[..];
        for w in self.offsets.windows(2) {
            let (row, tail) = rest.split_at_mut(w[1] - w[0]);
            rows.push(row);
            rest = tail;
        }
        let offsets = &self.offsets;
        rows.into_par_iter()
            .zip(self.wdl.par_iter_mut())
            .enumerate()
            .with_min_len(64)
            .for_each(|(i, (priors, wdl))| {
                softmax_into(&logits[offsets[i]..offsets[i + 1]], priors);
                *wdl = wdl_probabilities(&wdl_logits[3 * i..3 * i + 3]);
            });
    }

    /// Sets every position's plies left from `plies` (one per position).
    pub fn set_moves_left_all(&mut self, plies: &[f32]) {
        assert_eq!(
            plies.len(),
            self.len(),
            "one moves-left estimate per position"
        );
        for (m, &p) in self.moves_left.iter_mut().zip(plies) {
            *m = Some(p);
        }
    }
}

/// `out = softmax(logits)`; an empty row stays empty.
fn softmax_into(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = (l - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// Turns priors `p = softmax(logits)` into `softmax(logits / temperature)` in place (the
/// search's `policy_temperature`): `ln p` differs from the logits by a constant, so that
/// is `p^(1/T)` normalised, computed as `(p / max p)^(1/T)` so that no term underflows
/// more than it must. T = 1 leaves the priors as they are, bit for bit.
pub fn apply_policy_temperature(priors: &mut [f32], temperature: f32) {
    if temperature == 1.0 {
        return;
    }
    let max = priors.iter().copied().fold(0.0, f32::max);
    if max <= 0.0 || !temperature.is_finite() || temperature <= 0.0 {
        return;
    }
    let exponent = 1.0 / temperature;
    let mut sum = 0.0;
    for p in priors.iter_mut() {
        *p = (*p / max).powf(exponent);
        sum += *p;
    }
    for p in priors.iter_mut() {
        *p /= sum;
    }
}

/// Anything that turns leaves into priors and values.
pub trait Evaluator: Send {
    fn evaluate(&mut self, batch: &mut EvalBatch, timing: &mut PhaseTimes) -> anyhow::Result<()>;
}

impl<E: Evaluator + ?Sized> Evaluator for Box<E> {
    fn evaluate(&mut self, batch: &mut EvalBatch, timing: &mut PhaseTimes) -> anyhow::Result<()> {
        (**self).evaluate(batch, timing)
    }
}

impl<E: Evaluator + ?Sized> Evaluator for &mut E {
    fn evaluate(&mut self, batch: &mut EvalBatch, timing: &mut PhaseTimes) -> anyhow::Result<()> {
        (**self).evaluate(batch, timing)
    }
}

/// Uniform priors and a drawn value: the search alone, no network.
#[derive(Default, Clone, Copy)]
pub struct UniformEvaluator;

impl Evaluator for UniformEvaluator {
    fn evaluate(&mut self, batch: &mut EvalBatch, timing: &mut PhaseTimes) -> anyhow::Result<()> {
        for i in 0..batch.len() {
            let p = batch.priors_mut(i);
            let u = 1.0 / p.len().max(1) as f32;
            p.fill(u);
            batch.set_wdl(i, [0.0, 1.0, 0.0]);
        }
        timing.batches += 1;
        timing.evaluated += batch.len() as u64;
        Ok(())
    }
}

enum Backend {
    Cpu(Box<CpuNet>),
    Device(DeviceNet, candle_core::Device),
}

/// The network as an evaluator: encodes the batch into one buffer, makes one forward
/// call, and turns the logits of each leaf's legal moves into priors by softmax. On a
/// device the planes go up as bytes and only the legal moves' logits come back
/// ([`DeviceNet::forward_selected`]).
pub struct NetEvaluator {
    backend: Backend,
    planes: Vec<f32>,
    planes_u8: Vec<u8>,
    select: Vec<u32>,
    policy: Vec<f32>,
    wdl: Vec<f32>,
    moves_left: Vec<f32>,
}

impl NetEvaluator {
    /// Folds `network` for inference on its own device: direct GEMMs on the CPU (always
    /// f32), candle tensors in `precision` elsewhere.
    pub fn new(network: &Network, precision: Precision) -> anyhow::Result<Self> {
        let folded = network.folded()?;
        let backend = if network.device.is_cpu() {
            Backend::Cpu(Box::new(CpuNet::new(folded)))
        } else {
            Backend::Device(
                DeviceNet::new(&folded, &network.device, precision.dtype())?,
                network.device.clone(),
            )
        };
        Ok(NetEvaluator {
            backend,
            planes: Vec::new(),
            planes_u8: Vec::new(),
            select: Vec::new(),
            policy: Vec::new(),
            wdl: Vec::new(),
            moves_left: Vec::new(),
        })
    }

    /// CPU threads for the forward pass (ignored on other devices).
    pub fn set_threads(&mut self, threads: usize) {
        if let Backend::Cpu(net) = &mut self.backend {
            net.set_threads(threads);
        }
    }

    /// The CPU's 3x3 convolution algorithm (ignored on other devices).
    pub fn set_conv3x3(&mut self, conv: Conv3x3) {
        if let Backend::Cpu(net) = &mut self.backend {
            net.set_conv3x3(conv);
        }
    }

    /// Raw forward pass over encoded planes: (policy logits, WDL logits).
    pub fn forward_planes(
        &mut self,
        planes: &[f32],
        batch: usize,
    ) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        match &mut self.backend {
            Backend::Cpu(net) => {
                let mut p = vec![0.0; batch * POLICY_SIZE];
                let mut w = vec![0.0; batch * 3];
                net.forward(planes, batch, &mut p, &mut w);
                Ok((p, w))
            }
            Backend::Device(net, dev) => net.forward(planes, batch, dev),
        }
    }
}

impl Evaluator for NetEvaluator {
    fn evaluate(&mut self, batch: &mut EvalBatch, timing: &mut PhaseTimes) -> anyhow::Result<()> {
        let n = batch.len();
        if n == 0 {
            return Ok(());
        }
        let t0 = Instant::now();
        match &mut self.backend {
            Backend::Cpu(net) => {
                self.planes.resize(n * PLANES_LEN, 0.0);
                for (i, chunk) in self.planes.chunks_exact_mut(PLANES_LEN).enumerate() {
                    encode_position(batch.position(i), chunk);
                }
                let t1 = lap(&mut timing.encode, t0);
                self.policy.resize(n * POLICY_SIZE, 0.0);
                self.wdl.resize(n * 3, 0.0);
                let head = net.has_moves_left();
                self.moves_left.resize(if head { n } else { 0 }, 0.0);
                net.forward_with_moves_left(
                    &self.planes,
                    n,
                    &mut self.policy,
                    &mut self.wdl,
                    head.then_some(&mut self.moves_left[..]),
                );
                let t2 = lap(&mut timing.network, t1);
                // The legal moves' logits, aligned with the batch's moves.
                let mut logits = Vec::with_capacity(batch.moves_len());
                for i in 0..n {
                    let turn = batch.position(i).turn();
                    let row = &self.policy[i * POLICY_SIZE..(i + 1) * POLICY_SIZE];
                    logits.extend(batch.moves(i).iter().map(|m| row[move_to_index(m, turn)]));
                }
                batch.set_from_logits(&logits, &self.wdl);
                if head {
                    batch.set_moves_left_all(&self.moves_left);
                }
                lap(&mut timing.encode, t2);
            }
            Backend::Device(net, dev) => {
                self.planes_u8.resize(n * PLANES_LEN, 0);
                self.planes_u8
                    .par_chunks_mut(PLANES_LEN)
                    .with_min_len(16)
                    .enumerate()
                    .for_each(|(i, out)| encode_position(batch.position(i), out));
                batch.selected_indices_into(&mut self.select);
                let t1 = lap(&mut timing.encode, t0);
                let (logits, wdl, moves_left) =
                    net.forward_selected(&self.planes_u8, n, &self.select, dev)?;
                let t2 = lap(&mut timing.network, t1);
                batch.set_from_logits(&logits, &wdl);
                if net.has_moves_left() {
                    batch.set_moves_left_all(&moves_left);
                }
                lap(&mut timing.encode, t2);
            }
        }
        timing.batches += 1;
        timing.evaluated += n as u64;
        Ok(())
    }
}
