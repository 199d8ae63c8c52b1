//! The training core's contract: it learns (f32 and f16 with loss scaling), the loss
//! scaler backs off and grows, the optimiser state round-trips, weight decay spares
//! biases and batch norm, and bf16 on the CPU is refused.

use super::*;
use crate::bench::sample_positions;
use crate::encoding::move_to_index;
use crate::net::NetConfig;
use crate::replay::EncodedSample;
use crate::selfplay::Sample;
use rand::{rngs::StdRng, Rng, SeedableRng};
use shakmaty::Position;

const TINY: NetConfig = NetConfig::plain(16, 1);

/// Random-game positions with random sparse visit distributions and random results.
fn random_samples(n: usize, seed: u64) -> Vec<Sample> {
    let mut rng = StdRng::seed_from_u64(seed);
    sample_positions(4 * n, seed)
        .into_iter()
        .filter(|p| !p.legal_moves().is_empty())
        .take(n)
        .map(|position| {
            let moves = position.legal_moves();
            let k = rng.random_range(1..=3.min(moves.len()));
            let mut policy: Vec<(u16, f32)> = Vec::new();
            for _ in 0..k {
                let m = &moves[rng.random_range(0..moves.len())];
                let index = move_to_index(m, position.turn()) as u16;
                if !policy.iter().any(|(i, _)| *i == index) {
                    policy.push((index, rng.random_range(0.1..1.0)));
                }
            }
            let sum: f32 = policy.iter().map(|(_, p)| p).sum();
            policy.iter_mut().for_each(|(_, p)| *p /= sum);
            let result = [-1.0, 0.0, 1.0][rng.random_range(0..3)];
            Sample {
                position,
                visits: policy,
                result,
                root_q: rng.random_range(-1.0..1.0),
                reply: None,
                plies_left: None,
            }
        })
        .collect()
}

fn fixed_batch(n: usize, seed: u64) -> TrainingBatch {
    let samples = random_samples(n, seed);
    let refs: Vec<&Sample> = samples.iter().collect();
    TrainingBatch::from_samples(&refs)
}

fn tiny_trainer(config: TrainConfig, seed: u64) -> Trainer {
    Trainer::new(Network::new(TINY, &Device::Cpu, seed).unwrap(), config).unwrap()
}

/// (initial total loss, final total loss) after `steps` steps on one batch.
fn overfit(config: TrainConfig, steps: usize) -> (f32, f32, Vec<StepReport>) {
    overfit_trainer(&mut tiny_trainer(config, 3), steps)
}

/// [`overfit`] with `trainer`'s network.
fn overfit_trainer(trainer: &mut Trainer, steps: usize) -> (f32, f32, Vec<StepReport>) {
    let batch = fixed_batch(32, 11);
    let reports: Vec<StepReport> = (0..steps)
        .map(|_| trainer.train_step(&batch).unwrap())
        .collect();
    let first = reports[0].loss_policy + reports[0].loss_value;
    let last = reports
        .iter()
        .rev()
        .take(5)
        .map(|r| r.loss_policy + r.loss_value)
        .sum::<f32>()
        / 5.0;
    (first, last, reports)
}

#[test]
fn training_on_one_batch_drives_the_f32_loss_below_half() {
    let config = TrainConfig {
        lr: 3e-3,
        weight_decay: 0.0,
        ..TrainConfig::with_optimizer(OptimizerKind::adamw())
    };
    let (first, last, reports) = overfit(config, 50);
    assert!(reports.iter().all(|r| !r.skipped && r.loss_scale.is_none()));
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
}

#[test]
fn a_network_with_squeeze_excitation_learns_and_trains_every_unit() {
    let config = TrainConfig {
        lr: 3e-3,
        weight_decay: 0.0,
        ..TrainConfig::with_optimizer(OptimizerKind::adamw())
    };
    let se = NetConfig {
        se_channels: 4,
        ..NetConfig::plain(16, 2)
    };
    let mut trainer = Trainer::new(Network::new(se, &Device::Cpu, 3).unwrap(), config).unwrap();
    let names: Vec<String> = trainer
        .network()
        .trainable()
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    for unit in ["tower.0.se.fc1.weight", "tower.1.se.fc2.bias"] {
        assert!(names.iter().any(|n| n == unit), "{unit} missing: {names:?}");
    }
    let before = weights(trainer.network());
    let (first, last, _) = overfit_trainer(&mut trainer, 50);
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
    let after = weights(trainer.network());
    for ((name, b), a) in names.iter().zip(&before).zip(&after) {
        if name.contains(".se.") {
            assert_ne!(b, a, "{name} did not change: the unit is not in the graph");
        }
    }
}

#[test]
fn the_reply_head_learns_the_replies_and_costs_nothing_without_them() {
    let config = TrainConfig {
        lr: 3e-3,
        weight_decay: 0.0,
        reply_weight: 0.5,
        ..TrainConfig::with_optimizer(OptimizerKind::adamw())
    };
    let with_head = NetConfig {
        reply_head: true,
        ..NetConfig::plain(16, 1)
    };
    let mut samples = random_samples(32, 11);
    for (i, s) in samples.iter_mut().enumerate() {
        s.reply = Some((i * 131 % crate::encoding::POLICY_SIZE) as u16);
    }
    let refs: Vec<&Sample> = samples.iter().collect();
    let batch = TrainingBatch::from_samples(&refs);
    let net = Network::new(with_head, &Device::Cpu, 3).unwrap();
    let mut trainer = Trainer::new(net, config.clone()).unwrap();
    let reports: Vec<StepReport> = (0..60)
        .map(|_| trainer.train_step(&batch).unwrap())
        .collect();
    let (first, last) = (reports[0].loss_reply, reports[59].loss_reply);
    // A near-uniform start over 4672 logits: ln 4672 = 8.45.
    assert!((first - 8.45).abs() < 0.1, "first reply loss {first}");
    assert!(last < 0.5 * first, "reply loss went from {first} to {last}");
    let r = &reports[59];
    let total = r.loss_policy + r.loss_value + 0.5 * r.loss_reply + r.loss_l2;
    assert!((r.loss_total - total).abs() < 1e-4);
    // Rows without a reply teach the head nothing, and a network without the head has
    // no reply loss.
    for s in samples.iter_mut() {
        s.reply = None;
    }
    let refs: Vec<&Sample> = samples.iter().collect();
    let none = TrainingBatch::from_samples(&refs);
    assert_eq!(trainer.train_step(&none).unwrap().loss_reply, 0.0);
    let mut plain = tiny_trainer(config, 3);
    assert_eq!(plain.train_step(&batch).unwrap().loss_reply, 0.0);
}

/// The moves-left head learns a few positions' plies left; rows whose plies left are
/// unknown (capped games, older shards) teach it nothing; a network without the head has
/// no moves-left loss.
#[test]
fn the_moves_left_head_learns_the_plies_left_and_skips_the_unknown_ones() {
    let config = TrainConfig {
        lr: 3e-3,
        weight_decay: 0.0,
        moves_left_weight: 1.0,
        ..TrainConfig::with_optimizer(OptimizerKind::adamw())
    };
    let with_head = NetConfig {
        moves_left_head: true,
        ..NetConfig::plain(16, 1)
    };
    let mut samples = random_samples(32, 12);
    for (i, s) in samples.iter_mut().enumerate() {
        s.plies_left = (i % 4 != 3).then_some((5 + i * 37 % 150) as u16);
    }
    let refs: Vec<&Sample> = samples.iter().collect();
    let batch = TrainingBatch::from_samples(&refs);
    assert_eq!(batch.moves_left_known.iter().sum::<f32>(), 24.0);
    assert_eq!(batch.moves_left[1], 42.0 / crate::net::MOVES_LEFT_SCALE);
    assert_eq!((batch.moves_left[3], batch.moves_left_known[3]), (0.0, 0.0));
    let net = Network::new(with_head, &Device::Cpu, 3).unwrap();
    let mut trainer = Trainer::new(net, config.clone()).unwrap();
    let reports: Vec<StepReport> = (0..80)
        .map(|_| trainer.train_step(&batch).unwrap())
        .collect();
    let (first, last) = (reports[0].loss_moves_left, reports[79].loss_moves_left);
    assert!(first > 0.5, "first moves-left loss {first}");
    assert!(
        last < 0.3 * first,
        "moves-left loss went from {first} to {last}"
    );
    let r = &reports[79];
    let total = r.loss_policy + r.loss_value + r.loss_moves_left + r.loss_l2;
    assert!((r.loss_total - total).abs() < 1e-4);

    // A fresh head is left exactly as it was by a batch whose plies left are all unknown.
    for s in samples.iter_mut() {
        s.plies_left = None;
    }
    let refs: Vec<&Sample> = samples.iter().collect();
    let none = TrainingBatch::from_samples(&refs);
    let mut fresh = Trainer::new(
        Network::new(with_head, &Device::Cpu, 4).unwrap(),
        config.clone(),
    )
    .unwrap();
    let head = |t: &Trainer| -> Vec<f32> {
        t.network()
            .moves_left
            .as_ref()
            .unwrap()
            .fc2
            .weight
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let before = head(&fresh);
    assert_eq!(fresh.train_step(&none).unwrap().loss_moves_left, 0.0);
    assert_eq!(head(&fresh), before);
    let mut plain = tiny_trainer(config, 3);
    assert_eq!(plain.train_step(&batch).unwrap().loss_moves_left, 0.0);
}

/// The moves-left loss is Huber's on the plies left in units of 20 plies: quadratic
/// within 10 plies of the target, linear beyond, averaged over the known rows only.
#[test]
fn the_moves_left_loss_is_huber_over_the_known_rows() {
    let mut samples = random_samples(3, 13);
    for (s, p) in samples.iter_mut().zip([Some(20), Some(100), None]) {
        s.plies_left = p;
    }
    let refs: Vec<&Sample> = samples.iter().collect();
    let batch = TrainingBatch::from_samples(&refs);
    let target = batch.to_tensors(&Device::Cpu).unwrap();
    let trainer = tiny_trainer(TrainConfig::default(), 1);
    let cpu = &Device::Cpu;
    // Predictions of 26 plies (0.3 units off: quadratic), 40 plies (3 units off:
    // linear) and anything for the unknown row.
    let out = NetOutput {
        policy: Tensor::zeros(
            (3, crate::encoding::POLICY_SIZE),
            candle_core::DType::F32,
            cpu,
        )
        .unwrap(),
        wdl: Tensor::zeros((3, 3), candle_core::DType::F32, cpu).unwrap(),
        reply: None,
        moves_left: Some(Tensor::new(&[1.3f32, 2.0, 50.0], cpu).unwrap()),
    };
    let loss = trainer
        .moves_left_loss(&out, &target)
        .unwrap()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let want = (0.5 * 0.3f32 * 0.3 + 0.5 * (3.0 - 0.25)) / 2.0;
    assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
}

#[test]
fn training_with_sgd_momentum_lowers_the_loss() {
    let config = TrainConfig {
        lr: 0.1,
        ..TrainConfig::default()
    };
    let (first, last, _) = overfit(config, 40);
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
}

#[test]
fn training_in_f16_with_loss_scaling_drives_the_loss_below_half() {
    let config = TrainConfig {
        precision: Precision::F16,
        lr: 3e-3,
        weight_decay: 0.0,
        ..TrainConfig::with_optimizer(OptimizerKind::adamw())
    };
    let (first, last, reports) = overfit(config, 50);
    assert!(reports.iter().all(|r| r.loss_scale.is_some()));
    assert!(reports.iter().filter(|r| !r.skipped).count() > 40);
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
}

#[test]
fn loss_scaler_halves_and_skips_on_an_infinite_gradient() {
    let mut scaler = LossScaler::new(1024.0, 3);
    let bad = Tensor::new(&[1.0f32, f32::INFINITY, 2.0], &Device::Cpu).unwrap();
    let good = Tensor::new(&[2048.0f32, -1024.0], &Device::Cpu).unwrap();
    assert!(scaler.unscale(&[good.clone(), bad]).unwrap().is_none());
    assert_eq!(scaler.scale(), 512.0);
    let nan = Tensor::new(&[f32::NAN], &Device::Cpu).unwrap();
    assert!(scaler.unscale(&[nan]).unwrap().is_none());
    assert_eq!(scaler.scale(), 256.0);
    let unscaled = scaler
        .unscale(&[good])
        .unwrap()
        .expect("finite gradients pass");
    assert_eq!(unscaled[0].to_vec1::<f32>().unwrap(), vec![8.0, -4.0]);
}

#[test]
fn loss_scaler_doubles_after_a_run_of_clean_steps() {
    let mut scaler = LossScaler::new(256.0, 3);
    let good = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
    for _ in 0..2 {
        scaler
            .unscale(std::slice::from_ref(&good))
            .unwrap()
            .unwrap();
        assert_eq!(scaler.scale(), 256.0);
    }
    scaler
        .unscale(std::slice::from_ref(&good))
        .unwrap()
        .unwrap();
    assert_eq!(scaler.scale(), 512.0);
    scaler.update(false);
    scaler.update(true);
    scaler.update(true);
    assert_eq!(
        scaler.scale(),
        256.0,
        "an overflow restarts the run of clean steps"
    );
}

#[test]
fn an_overflowing_f16_step_is_skipped_and_leaves_the_weights_alone() {
    let mut trainer = tiny_trainer(
        TrainConfig {
            precision: Precision::F16,
            ..TrainConfig::default()
        },
        5,
    );
    // A scale far above f16's range (65504) makes the scaled gradients overflow.
    trainer.set_loss_scaler(LossScaler::new(1e12, 200));
    let before = trainer
        .network()
        .value
        .fc2
        .weight
        .as_tensor()
        .to_vec2::<f32>()
        .unwrap();
    let report = trainer.train_step(&fixed_batch(8, 2)).unwrap();
    assert!(report.skipped);
    assert!(trainer.loss_scaler().unwrap().scale() < report.loss_scale.unwrap());
    assert_eq!(
        trainer
            .network()
            .value
            .fc2
            .weight
            .as_tensor()
            .to_vec2::<f32>()
            .unwrap(),
        before
    );
}

fn weights(net: &Network) -> Vec<Vec<f32>> {
    net.trainable()
        .iter()
        .map(|(_, v, _)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn state_round_trip_gives_the_same_next_step(optimizer: OptimizerKind, precision: Precision) {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        precision,
        ..TrainConfig::with_optimizer(optimizer)
    };
    let batches: Vec<TrainingBatch> = (0..4).map(|i| fixed_batch(8, 20 + i)).collect();
    let mut original = tiny_trainer(config.clone(), 9);
    for b in &batches[..3] {
        original.train_step(b).unwrap();
    }
    let net_path = dir.path().join("net.safetensors");
    let state_path = dir.path().join("state.safetensors");
    original.network().save(&net_path).unwrap();
    original.save_state(&state_path).unwrap();

    let mut resumed = Trainer::new(
        Network::load(&net_path, Some(TINY), &Device::Cpu).unwrap(),
        config.clone(),
    )
    .unwrap();
    resumed.load_state(&state_path).unwrap();
    assert_eq!(resumed.step(), original.step());
    let a = original.train_step(&batches[3]).unwrap();
    let b = resumed.train_step(&batches[3]).unwrap();
    assert_eq!(
        (a.loss_policy, a.loss_value, a.lr, a.loss_scale),
        (b.loss_policy, b.loss_value, b.lr, b.loss_scale)
    );
    for (x, y) in weights(original.network())
        .iter()
        .zip(weights(resumed.network()))
    {
        let max_diff = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff < 1e-6,
            "weights differ by {max_diff} after the resumed step"
        );
    }

    // Without the state (fresh moments) the same step lands elsewhere: the state matters.
    let mut fresh = Trainer::new(
        Network::load(&net_path, Some(TINY), &Device::Cpu).unwrap(),
        config,
    )
    .unwrap();
    fresh.train_step(&batches[3]).unwrap();
    assert_ne!(weights(fresh.network()), weights(original.network()));
}

#[test]
fn sgd_state_round_trip_gives_the_same_next_step() {
    state_round_trip_gives_the_same_next_step(OptimizerKind::sgd(), Precision::F32);
}

#[test]
fn adamw_state_round_trip_gives_the_same_next_step_in_f16() {
    state_round_trip_gives_the_same_next_step(OptimizerKind::adamw(), Precision::F16);
}

#[test]
fn loading_state_of_another_optimizer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let mut sgd = tiny_trainer(TrainConfig::default(), 1);
    sgd.train_step(&fixed_batch(4, 1)).unwrap();
    sgd.save_state(&path).unwrap();
    let mut adamw = tiny_trainer(TrainConfig::with_optimizer(OptimizerKind::adamw()), 1);
    let err = adamw.load_state(&path).unwrap_err().to_string();
    assert!(err.contains("sgd") && err.contains("adamw"), "{err}");
}

/// One update with zero gradients: only weight decay moves anything.
fn decay_only_update(kind: OptimizerKind) {
    let net = Network::new(TINY, &Device::Cpu, 4).unwrap();
    let params = net.trainable();
    for (_, var, decay) in &params {
        if !decay {
            var.set(&var.as_tensor().ones_like().unwrap()).unwrap();
        }
    }
    let before = weights(&net);
    let grads: Vec<Option<Tensor>> = params
        .iter()
        .map(|(_, v, _)| Some(v.as_tensor().zeros_like().unwrap()))
        .collect();
    let (lr, wd) = (0.1, 0.5);
    let mut opt = Optimizer::new(kind, wd);
    opt.apply(&params, &grads, lr).unwrap();
    let after = weights(&net);
    for (((name, _, decay), b), a) in params.iter().zip(&before).zip(&after) {
        if *decay {
            for (x, y) in b.iter().zip(a) {
                assert!(
                    (y - x * (1.0 - (lr * wd) as f32)).abs() < 1e-6,
                    "{name}: {x} decayed to {y}"
                );
            }
        } else {
            assert_eq!(
                a, b,
                "{name} is a bias or batch-norm parameter and must not decay"
            );
        }
    }
    assert!(params.iter().any(|(_, _, d)| *d) && params.iter().any(|(_, _, d)| !*d));
}

#[test]
fn sgd_weight_decay_spares_biases_and_batch_norm() {
    decay_only_update(OptimizerKind::Sgd { momentum: 0.9 });
}

#[test]
fn adamw_weight_decay_spares_biases_and_batch_norm() {
    decay_only_update(OptimizerKind::adamw());
}

#[test]
fn l2_term_is_half_the_decay_times_the_squared_weights() {
    let mut trainer = tiny_trainer(
        TrainConfig {
            weight_decay: 0.01,
            ..TrainConfig::default()
        },
        2,
    );
    let expected: f64 = trainer
        .network()
        .trainable()
        .iter()
        .filter(|(_, _, d)| *d)
        .map(|(_, v, _)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| (*x as f64).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        * 0.005;
    let report = trainer.train_step(&fixed_batch(4, 3)).unwrap();
    assert!(
        (report.loss_l2 as f64 - expected).abs() < 1e-4 * expected,
        "{} vs {expected}",
        report.loss_l2
    );
    assert_eq!(
        report.loss_total,
        report.loss_policy + report.loss_value + report.loss_l2
    );
}

#[test]
fn bf16_training_on_the_cpu_is_refused_with_a_reason() {
    let net = Network::new(TINY, &Device::Cpu, 1).unwrap();
    let err = Trainer::new(
        net,
        TrainConfig {
            precision: Precision::Bf16,
            ..TrainConfig::default()
        },
    )
    .err()
    .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("bf16") && msg.contains("CPU"), "{msg}");
}

#[test]
fn mse_value_loss_trains_the_scalar_value() {
    let config = TrainConfig {
        value_loss: ValueLoss::Mse,
        weight_decay: 0.0,
        ..TrainConfig::with_optimizer(OptimizerKind::adamw())
    };
    let (_, _, reports) = overfit(config, 30);
    let first = reports[0].loss_value;
    let last = reports.last().unwrap().loss_value;
    assert!(
        first <= 4.0 && last < 0.5 * first,
        "value loss went from {first} to {last}"
    );
}

#[test]
fn evaluate_loss_changes_nothing() {
    let trainer = tiny_trainer(TrainConfig::default(), 6);
    let all_tensors = |net: &Network| -> Vec<Vec<f32>> {
        net.named_tensors()
            .iter()
            .map(|(_, v, _)| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    };
    let before = all_tensors(trainer.network());
    let batch = fixed_batch(8, 4);
    let a = trainer.evaluate_loss(&batch).unwrap();
    let b = trainer.evaluate_loss(&batch).unwrap();
    assert_eq!(a, b);
    assert!(
        all_tensors(trainer.network()) == before,
        "evaluation changed a weight or a batch-norm statistic"
    );
}

#[test]
fn learning_rate_schedules_follow_their_shape() {
    let cosine = LrSchedule::Cosine {
        total_steps: 100,
        min_lr: 0.001,
    };
    assert_eq!(cosine.lr_at(0.1, 0), 0.1);
    assert!((cosine.lr_at(0.1, 50) - 0.0505).abs() < 1e-12);
    assert!((cosine.lr_at(0.1, 100) - 0.001).abs() < 1e-12);
    assert!((cosine.lr_at(0.1, 1000) - 0.001).abs() < 1e-12);
    let step = LrSchedule::Step {
        every: 10,
        gamma: 0.5,
    };
    assert_eq!(
        (step.lr_at(0.1, 9), step.lr_at(0.1, 10), step.lr_at(0.1, 25)),
        (0.1, 0.05, 0.025)
    );
    assert_eq!(LrSchedule::Constant.lr_at(0.1, 12345), 0.1);
}

#[test]
fn train_config_round_trips_through_json() {
    let config = TrainConfig {
        precision: Precision::F16,
        lr_schedule: LrSchedule::Cosine {
            total_steps: 10,
            min_lr: 1e-5,
        },
        ..TrainConfig::with_optimizer(OptimizerKind::adamw())
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains("\"f16\"") && json.contains("adamw"), "{json}");
    assert_eq!(serde_json::from_str::<TrainConfig>(&json).unwrap(), config);
}

#[test]
fn batch_rows_hold_the_visit_distribution_and_the_result_target() {
    let samples = random_samples(3, 8);
    let refs: Vec<&Sample> = samples.iter().collect();
    let batch = TrainingBatch::from_samples(&refs);
    for (i, s) in samples.iter().enumerate() {
        let row =
            &batch.policy[i * crate::encoding::POLICY_SIZE..(i + 1) * crate::encoding::POLICY_SIZE];
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        for &(index, p) in &s.visits {
            assert_eq!(row[index as usize], p);
        }
        let wdl = &batch.wdl[i * 3..i * 3 + 3];
        let expected = match s.result as i32 {
            1 => [1.0, 0.0, 0.0],
            -1 => [0.0, 0.0, 1.0],
            _ => [0.0, 1.0, 0.0],
        };
        assert_eq!(wdl, expected);
    }
}

#[test]
fn state_saved_before_any_step_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let trainer = tiny_trainer(
        TrainConfig {
            precision: Precision::F16,
            ..TrainConfig::default()
        },
        1,
    );
    trainer.save_state(&path).unwrap();
    let mut other = tiny_trainer(
        TrainConfig {
            precision: Precision::F16,
            ..TrainConfig::default()
        },
        1,
    );
    other.set_loss_scaler(LossScaler::new(8.0, 5));
    other.load_state(&path).unwrap();
    assert_eq!(other.step(), 0);
    assert_eq!(other.loss_scaler().unwrap().scale(), DEFAULT_INITIAL_SCALE);
}

/// Samples whose visit lists name every legal move (as self-play's do), most visits on
/// the first.
fn full_visit_samples(n: usize, seed: u64) -> Vec<Sample> {
    random_samples(n, seed)
        .into_iter()
        .map(|mut s| {
            let moves = s.position.legal_moves();
            let share = 0.5 / moves.len() as f32;
            s.visits = moves
                .iter()
                .enumerate()
                .map(|(k, m)| {
                    let p = if k == 0 { 0.5 + share } else { share };
                    (move_to_index(m, s.position.turn()) as u16, p)
                })
                .collect();
            s
        })
        .collect()
}

#[test]
fn the_q_ratio_blends_the_result_with_the_root_q_in_both_value_targets() {
    let mut samples = random_samples(2, 3);
    samples[0].result = 1.0;
    samples[0].root_q = -0.2;
    samples[1].result = 0.0;
    samples[1].root_q = 0.6;
    let encoded: Vec<EncodedSample> = samples.iter().map(EncodedSample::new).collect();
    let refs: Vec<&EncodedSample> = encoded.iter().collect();
    let plain = TrainingBatch::build(&refs, Targets::default());
    assert_eq!(plain.results, vec![1.0, 0.0]);
    assert_eq!(&plain.wdl[..], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    let blended = TrainingBatch::build(
        &refs,
        Targets {
            q_ratio: 0.25,
            ..Targets::default()
        },
    );
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    // 0.75 * 1 + 0.25 * -0.2, and 0.75 * 0 + 0.25 * 0.6.
    assert!(
        close(&blended.results, &[0.7, 0.15]),
        "{:?}",
        blended.results
    );
    // 0.75 * [1,0,0] + 0.25 * [0, 0.8, 0.2]; 0.75 * [0,1,0] + 0.25 * [0.6, 0.4, 0].
    assert!(
        close(&blended.wdl, &[0.75, 0.2, 0.05, 0.15, 0.85, 0.0]),
        "{:?}",
        blended.wdl
    );
    for row in blended.wdl.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

#[test]
fn the_material_ratio_blends_the_material_balance_for_the_side_to_move_of_either_colour() {
    use crate::train::{material_balance, MATERIAL_SCALE};
    // White to move, a queen up (Black's queen is gone); then Black to move, the same
    // board: a queen down for the side to move.
    let fens = [
        "rnb1kbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
        "rnb1kbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR b KQkq - 0 1",
    ];
    let mut samples = random_samples(2, 3);
    for (s, fen) in samples.iter_mut().zip(fens) {
        s.position = fen
            .parse::<shakmaty::fen::Fen>()
            .unwrap()
            .into_position(shakmaty::CastlingMode::Standard)
            .unwrap();
        s.result = -1.0;
        s.root_q = 0.0;
    }
    let encoded: Vec<EncodedSample> = samples.iter().map(EncodedSample::new).collect();
    assert_eq!(material_balance(&encoded[0].planes), 9.0);
    assert_eq!(material_balance(&encoded[1].planes), -9.0);
    let refs: Vec<&EncodedSample> = encoded.iter().collect();
    let batch = TrainingBatch::build(
        &refs,
        Targets {
            q_ratio: 0.25,
            material_ratio: 0.5,
            ..Targets::default()
        },
    );
    let m = (9.0 / MATERIAL_SCALE).tanh();
    // 0.25 * -1 (result) + 0.25 * 0 (q) + 0.5 * (+-m).
    let want = [-0.25 + 0.5 * m, -0.25 - 0.5 * m];
    for (got, want) in batch.results.iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    // WDL: 0.25 * [0,0,1] + 0.25 * [0,1,0] + 0.5 * [m, 1-m, 0] for White, mirrored for Black.
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    let w = [0.5 * m, 0.25 + 0.5 * (1.0 - m), 0.25];
    let b = [0.0, 0.25 + 0.5 * (1.0 - m), 0.25 + 0.5 * m];
    assert!(close(&batch.wdl[..3], &w), "{:?}", &batch.wdl[..3]);
    assert!(close(&batch.wdl[3..], &b), "{:?}", &batch.wdl[3..]);
    // The weights never exceed 1 together: the material takes what q leaves.
    let capped = TrainingBatch::build(
        &refs,
        Targets {
            q_ratio: 0.75,
            material_ratio: 0.5,
            ..Targets::default()
        },
    );
    assert!((capped.results[0] - 0.25 * m).abs() < 1e-6);
}

#[test]
fn the_legal_move_mask_opens_exactly_the_legal_moves_and_its_uniform_loss_is_ln_legal() {
    let samples = full_visit_samples(4, 7);
    let encoded: Vec<EncodedSample> = samples.iter().map(EncodedSample::new).collect();
    let refs: Vec<&EncodedSample> = encoded.iter().collect();
    let targets = Targets {
        mask_illegal: true,
        ..Targets::default()
    };
    let batch = TrainingBatch::build(&refs, targets);
    let mask = batch.mask.as_ref().unwrap();
    let size = crate::encoding::POLICY_SIZE;
    let mut ln_legal = 0.0;
    for (i, s) in samples.iter().enumerate() {
        let row = &mask[i * size..(i + 1) * size];
        let legal = s.position.legal_moves();
        assert_eq!(row.iter().filter(|&&x| x == 0.0).count(), legal.len());
        for m in &legal {
            assert_eq!(row[move_to_index(m, s.position.turn())], 0.0);
        }
        ln_legal += (legal.len() as f64).ln();
    }
    assert!((batch.baselines.uniform_legal - ln_legal / 4.0).abs() < 1e-9);
    assert!(batch.baselines.target_entropy > 0.0);
    assert!(batch.baselines.target_entropy < batch.baselines.uniform_legal);

    // Equal logits everywhere: masked, the loss is ln(legal moves) whatever the target;
    // unmasked it is ln(4672).
    let trainer = tiny_trainer(TrainConfig::default(), 1);
    let flat = NetOutput {
        policy: Tensor::zeros((4, size), candle_core::DType::F32, &Device::Cpu).unwrap(),
        wdl: Tensor::zeros((4, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
        reply: None,
        moves_left: None,
    };
    let loss = |b: &TrainingBatch| {
        let t = b.to_tensors(&Device::Cpu).unwrap();
        let (p, _) = trainer.losses(&flat, &t).unwrap();
        f64::from(p.to_scalar::<f32>().unwrap())
    };
    assert!((loss(&batch) - batch.baselines.uniform_legal).abs() < 1e-4);
    let unmasked = TrainingBatch::build(&refs, Targets::default());
    assert!((loss(&unmasked) - (size as f64).ln()).abs() < 1e-4);

    // A real network trains with the mask and its loss stays finite and below the
    // unmasked one (the illegal moves no longer take probability).
    let mut t = tiny_trainer(TrainConfig::default(), 2);
    let (masked_p, _) = t.evaluate_loss(&batch).unwrap();
    let (plain_p, _) = t.evaluate_loss(&unmasked).unwrap();
    assert!(
        masked_p.is_finite() && masked_p < plain_p,
        "{masked_p} vs {plain_p}"
    );
    let r = t.train_step(&batch).unwrap();
    assert!(!r.skipped && r.loss_policy.is_finite());
}

#[test]
fn the_learning_rate_warms_up_linearly_then_follows_its_schedule() {
    let mut t = tiny_trainer(
        TrainConfig {
            lr: 0.01,
            warmup_steps: 4,
            ..TrainConfig::default()
        },
        1,
    );
    let batch = fixed_batch(8, 1);
    let mut rates = Vec::new();
    for _ in 0..6 {
        rates.push(t.current_lr());
        t.train_step(&batch).unwrap();
    }
    let expected = [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01];
    for (r, e) in rates.iter().zip(expected) {
        assert!((r - e).abs() < 1e-12, "{rates:?}");
    }
    t.set_base_lr(0.002);
    assert_eq!(t.current_lr(), 0.002);
}
