//! A device against the CPU: the same network's outputs on a fixed set of positions, and
//! the same training step, compared with the CPU's f32 results as the reference. This is
//! the first thing to run on a new GPU (`trainer check --device cuda`): a device path
//! that is fast but wrong would train and play with garbage.
//!
//! Errors are relative L2 distances, `|device - cpu| / |cpu|`, over all outputs at once.
//! The tolerances follow from the arithmetic: f32 on both sides differs only in the
//! order of additions (far under 1e-4); bf16 keeps 8 significant bits (about 4e-3 per
//! rounding, so 1e-2 to 3e-2 through a dozen layers); f16 keeps 11 (about 5e-4 a rounding).

use crate::bench::{sample_positions, sample_training_batch};
use crate::encoding::{encode_position, PLANES_LEN, POLICY_SIZE};
use crate::mcts::{EvalBatch, Evaluator, NetEvaluator};
use crate::net::{Network, Precision};
use crate::phase_times::PhaseTimes;
use crate::train::{OptimizerKind, StepReport, TrainConfig, Trainer, TrainingBatch};
use anyhow::Result;
use candle_core::{DType, Device};
use serde_json::{json, Value};
use shakmaty::Position;

/// The largest relative error accepted in `precision`.
pub fn tolerance(precision: Precision) -> f64 {
    match precision {
        Precision::F32 => 1e-4,
        Precision::F16 => 1e-2,
        Precision::Bf16 => 4e-2,
    }
}

/// `|a - b| / |b|` over all elements.
pub fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared arrays differ in length");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    if !num.is_finite() {
        return f64::INFINITY;
    }
    num.sqrt() / den.sqrt().max(1e-30)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(
            0.0,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
}

/// A copy of `network` on `device` (through its checkpoint bytes, so nothing is shared).
pub fn copy_to(network: &Network, device: &Device) -> Result<Network> {
    Network::from_bytes(&network.to_bytes()?, None, device, "device check copy")
}

/// Inference: `network` (on the CPU) folded and run in f32 on the CPU, against the same
/// network on `device` in `precision`: the raw logits of `positions` and the search's
/// path (priors over the legal moves and WDL probabilities). `pass` is set when every
/// relative error is within [`tolerance`].
pub fn check_inference(
    network: &Network,
    device: &Device,
    precision: Precision,
    positions: usize,
) -> Result<Value> {
    let positions = sample_positions(positions, 21);
    let n = positions.len();
    let mut planes = vec![0f32; n * PLANES_LEN];
    for (p, chunk) in positions.iter().zip(planes.chunks_exact_mut(PLANES_LEN)) {
        encode_position(p, chunk);
    }
    let mut reference = NetEvaluator::new(network, Precision::F32)?;
    let on_device = copy_to(network, device)?;
    let mut tested = NetEvaluator::new(&on_device, precision)?;
    let (rp, rw) = reference.forward_planes(&planes, n)?;
    let (dp, dw) = tested.forward_planes(&planes, n)?;

    let mut batch_ref = EvalBatch::new();
    for p in &positions {
        batch_ref.push(p, &p.legal_moves());
    }
    let mut batch_dev = batch_ref.clone();
    reference.evaluate(&mut batch_ref, &mut PhaseTimes::default())?;
    tested.evaluate(&mut batch_dev, &mut PhaseTimes::default())?;
    let (mut pr, mut pd, mut wr, mut wd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        pr.extend_from_slice(batch_ref.priors(i));
        pd.extend_from_slice(batch_dev.priors(i));
        wr.extend_from_slice(&batch_ref.wdl(i));
        wd.extend_from_slice(&batch_dev.wdl(i));
    }
    let errors = [
        relative_l2(&dp, &rp),
        relative_l2(&dw, &rw),
        relative_l2(&pd, &pr),
        relative_l2(&wd, &wr),
    ];
    let tol = tolerance(precision);
    Ok(json!({
        "check": "inference", "precision": precision.as_str(), "positions": n,
        "policy_logits_rel_err": errors[0], "wdl_logits_rel_err": errors[1],
        "priors_rel_err": errors[2], "wdl_prob_rel_err": errors[3],
        "priors_max_abs_diff": max_abs_diff(&pd, &pr),
        "wdl_prob_max_abs_diff": max_abs_diff(&wd, &wr),
        "tolerance": tol, "pass": errors.iter().all(|e| *e <= tol),
    }))
}

/// Training: one SGD step (no momentum yet, so the update is the learning rate times the
/// gradient plus weight decay) on the same batch from the same weights, on the CPU in f32
/// and on `device` with `precision` compute. Compares the losses and the update of every
/// trainable tensor, concatenated.
pub fn check_training_step(
    network: &Network,
    device: &Device,
    precision: Precision,
    batch_size: usize,
) -> Result<Value> {
    let batch = sample_training_batch(batch_size, 9);
    let config = |precision| TrainConfig {
        batch_size,
        precision,
        ..TrainConfig::with_optimizer(OptimizerKind::sgd())
    };
    let step_on =
        |device: &Device, precision, batch: &TrainingBatch| -> Result<(StepReport, Vec<f32>)> {
            let mut t = Trainer::new(copy_to(network, device)?, config(precision))?;
            let r = t.train_step(batch)?;
            Ok((r, flat_trainable(t.network())?))
        };
    let before = flat_trainable(network)?;
    let (r_cpu, after_cpu) = step_on(&Device::Cpu, Precision::F32, &batch)?;
    let (r_dev, after_dev) = step_on(device, precision, &batch)?;
    // The same step with the batch in reverse order: the same function, other orders of
    // summation. Its distance from the first is the f32 noise floor of the update (batch
    // norm's gradient cancels most of its terms, which magnifies rounding).
    let (_, after_reversed) = step_on(&Device::Cpu, Precision::F32, &reversed(&batch))?;
    let delta =
        |after: &[f32]| -> Vec<f32> { after.iter().zip(&before).map(|(a, b)| a - b).collect() };
    let d_cpu = delta(&after_cpu);
    let update_err = relative_l2(&delta(&after_dev), &d_cpu);
    let noise_floor = relative_l2(&delta(&after_reversed), &d_cpu);
    let loss_err = |a: f32, b: f32| ((a - b).abs() / b.abs().max(1e-6)) as f64;
    let errors = [
        loss_err(r_dev.loss_policy, r_cpu.loss_policy),
        loss_err(r_dev.loss_value, r_cpu.loss_value),
        update_err,
    ];
    // The update may differ from the CPU's by twice the forward tolerance, or ten times
    // what reordering the batch does on the CPU, whichever is larger.
    let tol = tolerance(precision);
    let update_tol = (2.0 * tol).max(10.0 * noise_floor);
    Ok(json!({
        "check": "training_step", "precision": precision.as_str(), "batch": batch_size,
        "loss_policy_cpu": r_cpu.loss_policy, "loss_policy_device": r_dev.loss_policy,
        "loss_value_cpu": r_cpu.loss_value, "loss_value_device": r_dev.loss_value,
        "loss_policy_rel_err": errors[0], "loss_value_rel_err": errors[1],
        "update_rel_err": errors[2], "update_noise_floor": noise_floor, "skipped": r_dev.skipped,
        "tolerance": tol, "update_tolerance": update_tol,
        "pass": !r_dev.skipped && errors[0] <= tol && errors[1] <= tol && errors[2] <= update_tol,
    }))
}

/// `batch` with its rows in reverse order.
fn reversed(batch: &TrainingBatch) -> TrainingBatch {
    let rows = |v: &[f32], width: usize| -> Vec<f32> {
        v.chunks_exact(width).rev().flatten().copied().collect()
    };
    TrainingBatch {
        planes: rows(&batch.planes, PLANES_LEN),
        policy: rows(&batch.policy, POLICY_SIZE),
        results: batch.results.iter().rev().copied().collect(),
        wdl: rows(&batch.wdl, 3),
        mask: batch.mask.as_ref().map(|m| rows(m, POLICY_SIZE)),
        reply: batch.reply.iter().rev().copied().collect(),
        reply_known: batch.reply_known.iter().rev().copied().collect(),
        moves_left: batch.moves_left.iter().rev().copied().collect(),
        moves_left_known: batch.moves_left_known.iter().rev().copied().collect(),
        baselines: batch.baselines,
        n: batch.n,
    }
}

/// Every trainable tensor of `network`, flattened and concatenated in name order, on the
/// host in f32.
fn flat_trainable(network: &Network) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for (_, var, _) in network.trainable() {
        out.extend(
            var.as_tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1::<f32>()?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetConfig;

    #[test]
    fn relative_error_is_zero_for_equal_and_catches_nan() {
        assert_eq!(relative_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((relative_l2(&[1.0, 0.0], &[2.0, 0.0]) - 0.5).abs() < 1e-12);
        assert!(relative_l2(&[f32::NAN, 0.0], &[1.0, 0.0]).is_infinite());
    }

    /// On the CPU both sides are the CPU: the check must pass, and it must fail when the
    /// tested side is given different weights.
    #[test]
    fn cpu_against_itself_passes_and_a_different_network_fails() {
        let cfg = NetConfig::plain(16, 1);
        let net = Network::new(cfg, &Device::Cpu, 3).unwrap();
        let r = check_inference(&net, &Device::Cpu, Precision::F32, 40).unwrap();
        assert_eq!(r["pass"], true, "{r}");
        let r = check_training_step(&net, &Device::Cpu, Precision::F32, 32).unwrap();
        assert_eq!(r["pass"], true, "{r}");
        assert!(r["update_rel_err"].as_f64().unwrap() < 1e-6, "{r}");
        // Reordering the batch changes the update only by rounding.
        let floor = r["update_noise_floor"].as_f64().unwrap();
        assert!(floor > 0.0 && floor < 1e-2, "{r}");
        // The same comparison between two different networks is far off.
        let other = Network::new(cfg, &Device::Cpu, 4).unwrap();
        let planes = {
            let mut p = vec![0f32; PLANES_LEN];
            encode_position(&shakmaty::Chess::default(), &mut p);
            p
        };
        let a = NetEvaluator::new(&net, Precision::F32)
            .unwrap()
            .forward_planes(&planes, 1)
            .unwrap();
        let b = NetEvaluator::new(&other, Precision::F32)
            .unwrap()
            .forward_planes(&planes, 1)
            .unwrap();
        assert!(relative_l2(&a.0, &b.0) > tolerance(Precision::Bf16));
    }
}
