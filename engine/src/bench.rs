//! Benchmarks of the engine core: encoding, network throughput by batch size and
//! precision, the training step, search with the uniform evaluator, and self-play. Each
//! measurement is a JSON object; the `trainer bench` command prints them as a table and
//! as JSON lines. On a GPU each network, training and self-play figure carries the GPU's
//! mean utilisation over the measurement, as `nvidia-smi` reports it.

use crate::encoding::{encode_position, move_to_index, PLANES_LEN, POLICY_SIZE};
use crate::game::Game;
use crate::mcts::{EvalBatch, Evaluator, NetEvaluator, Search, SearchParams, UniformEvaluator};
use crate::net::{cpu::Conv3x3, describe_device, NetConfig, Network, Precision};
use crate::phase_times::PhaseTimes;
use crate::runner::Rules;
use crate::selfplay::{play_games, Sample, SelfPlayConfig};
use crate::train::{OptimizerKind, TrainConfig, Trainer, TrainingBatch};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use shakmaty::{Chess, Position};
use std::time::{Duration, Instant};

pub const ALL: [&str; 5] = ["encode", "nn", "train", "mcts_uniform", "selfplay"];

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub device: candle_core::Device,
    pub net: NetConfig,
    /// Precision of the self-play benchmark's network.
    pub precision: Precision,
    /// Precisions of the network benchmark (the CPU runs f32 only).
    pub nn_precisions: Vec<Precision>,
    /// Batch sizes for the network benchmark.
    pub batches: Vec<usize>,
    /// Seconds spent on each measurement (roughly).
    pub seconds: f64,
    /// Training-step benchmark: batch size and the precisions to run.
    pub train_batch: usize,
    pub train_precisions: Vec<Precision>,
    pub selfplay_games_in_flight: usize,
    pub selfplay_leaves_per_game: usize,
    pub selfplay_seconds: f64,
    /// Double-buffered self-play (see [`crate::selfplay::play_games`]).
    pub selfplay_pipeline: bool,
}

impl BenchOptions {
    pub fn for_device(device: candle_core::Device) -> Self {
        let gpu = !device.is_cpu();
        BenchOptions {
            net: NetConfig::default(),
            precision: Precision::auto_for(&device),
            nn_precisions: if gpu {
                vec![Precision::F32, Precision::Bf16, Precision::F16]
            } else {
                vec![Precision::F32]
            },
            batches: if gpu {
                vec![1, 8, 64, 256, 1024, 4096]
            } else {
                vec![1, 8, 64, 256]
            },
            seconds: 2.0,
            train_batch: if gpu { 1024 } else { 256 },
            train_precisions: if gpu {
                vec![Precision::F32, Precision::Bf16]
            } else {
                vec![Precision::F32]
            },
            selfplay_games_in_flight: if gpu { 1024 } else { 128 },
            selfplay_leaves_per_game: 2,
            selfplay_seconds: 20.0,
            selfplay_pipeline: gpu,
            device,
        }
    }
}

/// Positions from a few random games, for encoding and network inputs.
pub fn sample_positions(n: usize, seed: u64) -> Vec<Chess> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    let mut pos = Chess::default();
    while out.len() < n {
        let moves = pos.legal_moves();
        if moves.is_empty() || pos.halfmoves() > 60 {
            pos = Chess::default();
            continue;
        }
        pos.play_unchecked(moves[rng.random_range(0..moves.len())]);
        out.push(pos.clone());
    }
    out
}

fn timed<F: FnMut() -> u64>(seconds: f64, mut f: F) -> (u64, f64) {
    let start = Instant::now();
    let mut count = 0;
    loop {
        count += f();
        let e = start.elapsed().as_secs_f64();
        if e >= seconds {
            return (count, e);
        }
    }
}

pub fn bench_encode(opts: &BenchOptions) -> Value {
    let positions = sample_positions(1024, 7);
    let mut buf = vec![0f32; PLANES_LEN];
    let (n, secs) = timed(opts.seconds, || {
        for p in &positions {
            encode_position(p, &mut buf);
            std::hint::black_box(&buf);
        }
        positions.len() as u64
    });
    json!({"bench": "encode", "positions_per_s": (n as f64 / secs).round()})
}

pub fn bench_nn(opts: &BenchOptions) -> anyhow::Result<Vec<Value>> {
    let net = Network::new(opts.net, &opts.device, 1)?;
    let positions = sample_positions(*opts.batches.iter().max().unwrap_or(&1), 11);
    let precisions = if opts.device.is_cpu() {
        vec![Precision::F32]
    } else {
        opts.nn_precisions.clone()
    };
    let mut out = Vec::new();
    // On the CPU, each batch size with the Winograd 3x3 convolutions and with the direct
    // (im2col) ones, so that the two compare within one run.
    let convs: &[Option<Conv3x3>] = if opts.device.is_cpu() {
        &[Some(Conv3x3::Winograd), Some(Conv3x3::Im2col)]
    } else {
        &[None]
    };
    for precision in precisions {
        let mut eval = NetEvaluator::new(&net, precision)?;
        for &b in &opts.batches {
            let mut planes = vec![0f32; b * PLANES_LEN];
            for (p, chunk) in positions.iter().zip(planes.chunks_exact_mut(PLANES_LEN)) {
                encode_position(p, chunk);
            }
            for &conv in convs {
                if let Some(conv) = conv {
                    eval.set_conv3x3(conv);
                }
                let (policy, _) = eval.forward_planes(&planes, b)?; // warm-up
                debug_assert_eq!(policy.len(), b * POLICY_SIZE);
                let mut row = throughput_row(opts, "nn", precision, b, || {
                    std::hint::black_box(eval.forward_planes(&planes, b).expect("forward"));
                });
                if let Some(conv) = conv {
                    row["conv"] = conv.as_str().into();
                }
                out.push(row);
            }
        }
        // The search's path: byte planes up, only the legal moves' logits back.
        if !opts.device.is_cpu() {
            for &b in &opts.batches {
                let mut batch = EvalBatch::new();
                for p in positions.iter().take(b) {
                    batch.push(p, &p.legal_moves());
                }
                let mut timing = PhaseTimes::default();
                eval.evaluate(&mut batch, &mut timing)?; // warm-up
                out.push(throughput_row(opts, "nn_search_path", precision, b, || {
                    eval.evaluate(&mut batch, &mut timing).expect("evaluate");
                }));
            }
        }
    }
    Ok(out)
}

/// Calls `evaluate` (one batch of `batch` positions) for `opts.seconds` and returns the row
/// of evaluations per second, with the GPU's utilisation on a GPU.
fn throughput_row(
    opts: &BenchOptions,
    bench: &str,
    precision: Precision,
    batch: usize,
    mut evaluate: impl FnMut(),
) -> Value {
    let gpu = GpuMonitor::start(&opts.device);
    let (n, secs) = timed(opts.seconds, || {
        evaluate();
        batch as u64
    });
    let mut row = json!({
        "bench": bench, "net": opts.net.to_string(), "batch": batch,
        "precision": precision.as_str(),
        "device": device_name(&opts.device), "evals_per_s": (n as f64 / secs).round(),
    });
    gpu.finish(&mut row);
    row
}

/// Training samples for the training-step benchmark: positions from random games, the
/// visit distribution uniform over the legal moves, results spread over win/draw/loss.
pub fn sample_training_batch(n: usize, seed: u64) -> TrainingBatch {
    let samples: Vec<Sample> = sample_positions(n, seed)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let moves = p.legal_moves();
            let policy = moves
                .iter()
                .map(|m| (move_to_index(m, p.turn()) as u16, 1.0 / moves.len() as f32))
                .collect();
            Sample {
                position: p,
                visits: policy,
                result: [1.0, 0.0, -1.0][i % 3],
                root_q: 0.0,
                reply: None,
                plies_left: None,
            }
        })
        .collect();
    let refs: Vec<&Sample> = samples.iter().collect();
    TrainingBatch::from_samples(&refs)
}

/// Training-step speed: samples/s at `train_batch` with AdamW (the trainer's default),
/// with the forward, backward and optimiser share of each step. On a GPU the phases are
/// split at the points where the host waits for the device (the loss values in the
/// forward, the finiteness check in the optimiser).
pub fn bench_train(opts: &BenchOptions) -> anyhow::Result<Vec<Value>> {
    let batch = sample_training_batch(opts.train_batch, 5);
    let precisions = if opts.device.is_cpu() {
        vec![Precision::F32]
    } else {
        opts.train_precisions.clone()
    };
    let mut out = Vec::new();
    for precision in precisions {
        let net = Network::new(opts.net, &opts.device, 2)?;
        let config = TrainConfig {
            batch_size: opts.train_batch,
            precision,
            ..TrainConfig::with_optimizer(OptimizerKind::adamw())
        };
        let mut trainer = Trainer::new(net, config)?;
        for _ in 0..2 {
            trainer.train_step(&batch)?; // warm-up
        }
        let (mut f, mut b, mut o, mut steps) = (0.0, 0.0, 0.0, 0u64);
        let gpu = GpuMonitor::start(&opts.device);
        let (n, secs) = timed(opts.seconds, || {
            let r = trainer.train_step(&batch).expect("training step");
            f += r.forward.as_secs_f64();
            b += r.backward.as_secs_f64();
            o += r.optimizer.as_secs_f64();
            steps += 1;
            opts.train_batch as u64
        });
        let ms = |x: f64| (x / steps as f64 * 1e4).round() / 10.0;
        let mut row = json!({
            "bench": "train", "net": opts.net.to_string(), "batch": opts.train_batch,
            "precision": precision.as_str(), "optimizer": "adamw",
            "device": device_name(&opts.device),
            "samples_per_s": (n as f64 / secs).round(), "steps": steps,
            "ms_per_step": ms(secs), "forward_ms": ms(f), "backward_ms": ms(b),
            "optimizer_ms": ms(o),
        });
        gpu.finish(&mut row);
        out.push(row);
    }
    Ok(out)
}

/// Mean GPU utilisation over a measurement, sampled by `nvidia-smi` every 100 ms in a
/// child process. Nothing on the CPU, or where `nvidia-smi` is missing.
pub struct GpuMonitor {
    child: Option<std::process::Child>,
    samples: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl GpuMonitor {
    pub fn start(device: &candle_core::Device) -> GpuMonitor {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let none = GpuMonitor {
            child: None,
            samples: samples.clone(),
            reader: None,
        };
        if device.is_cpu() {
            return none;
        }
        let Ok(mut child) = std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                "-lms",
                "100",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            return none;
        };
        let stdout = child.stdout.take();
        let sink = samples.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            if let Some(out) = stdout {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(v) = line.trim().parse::<f64>() {
                        sink.lock().expect("utilisation samples").push(v);
                    }
                }
            }
        });
        GpuMonitor {
            child: Some(child),
            samples,
            reader: Some(reader),
        }
    }

    /// Stops sampling and adds `gpu_util_pct` (mean) to `row` if anything was sampled.
    pub fn finish(mut self, row: &mut Value) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let s = self.samples.lock().expect("utilisation samples");
        if !s.is_empty() {
            let mean = s.iter().sum::<f64>() / s.len() as f64;
            row["gpu_util_pct"] = json!((mean * 10.0).round() / 10.0);
        }
    }
}

fn device_name(d: &candle_core::Device) -> &'static str {
    if d.is_cpu() {
        "cpu"
    } else {
        "cuda"
    }
}

/// Search speed alone: uniform evaluator, one thread, batches of 32 leaves.
pub fn bench_mcts_uniform(opts: &BenchOptions) -> anyhow::Result<Value> {
    let params = SearchParams {
        cache_entries: 0,
        max_batch: 32,
        ..SearchParams::default()
    };
    let mut eval = UniformEvaluator;
    let mut timing = PhaseTimes::default();
    let game = Game::new();
    let mut collisions = 0;
    let (n, secs) = timed(opts.seconds, || {
        let mut s = Search::new(&game, params.clone());
        s.run_until_visits(&mut eval, 20_000, &mut timing)
            .expect("uniform evaluation");
        collisions += s.stats.collisions;
        s.root_visits() as u64
    });
    Ok(
        json!({"bench": "mcts_uniform", "threads": 1, "sims_per_s": (n as f64 / secs).round(), "collisions": collisions}),
    )
}

pub fn bench_selfplay(opts: &BenchOptions) -> anyhow::Result<Value> {
    let net = Network::new(opts.net, &opts.device, 3)?;
    let mut eval = NetEvaluator::new(&net, opts.precision)?;
    let cfg = SelfPlayConfig {
        games: usize::MAX / 2,
        games_in_flight: opts.selfplay_games_in_flight,
        simulations: 25,
        rules: Rules {
            max_plies: 150,
            ..SelfPlayConfig::default().rules
        },
        search: SearchParams {
            max_batch: opts.selfplay_leaves_per_game,
            ..SelfPlayConfig::default().search
        },
        time_limit: Some(Duration::from_secs_f64(opts.selfplay_seconds)),
        pipeline: opts.selfplay_pipeline,
        ..SelfPlayConfig::default()
    };
    let start = Instant::now();
    let mut finished_at = Vec::new();
    let gpu = GpuMonitor::start(&opts.device);
    let stats = play_games(&cfg, &mut eval, |_| finished_at.push(start.elapsed()))?;
    let wall = stats.wall.as_secs_f64();
    // Finished games only, counted over the second half of the run: every game starts at
    // once, so the first half holds the start-up before the first games can finish.
    let half = wall / 2.0;
    let late = finished_at
        .iter()
        .filter(|t| t.as_secs_f64() >= half)
        .count();
    let mut row = json!({
        "bench": "selfplay", "net": opts.net.to_string(), "sims": 25, "max_plies": 150,
        "device": device_name(&opts.device), "precision": if opts.device.is_cpu() { "f32" } else { opts.precision.as_str() },
        "games_in_flight": cfg.games_in_flight,
        "leaves_per_game": cfg.search.max_batch, "pipeline": cfg.pipeline,
        "threads": rayon::current_num_threads(),
        "seconds": (wall * 10.0).round() / 10.0,
        "positions": stats.positions,
        "positions_per_s": (stats.positions_per_s() * 10.0).round() / 10.0,
        "games_finished": stats.tally.games,
        "games_per_s_second_half": (late as f64 / half.max(1e-9) * 1000.0).round() / 1000.0,
        "mean_plies": (stats.mean_plies() * 10.0).round() / 10.0,
        "evals_per_s": (stats.evaluations as f64 / wall.max(1e-9)).round(),
        "evals_per_position": (stats.evals_per_position() * 100.0).round() / 100.0,
        "mean_batch": (stats.timing.evaluated as f64 / stats.timing.batches.max(1) as f64).round(),
        "collisions": stats.collisions,
        "timing": stats.timing.summary(),
    });
    gpu.finish(&mut row);
    Ok(row)
}

/// Runs the named benchmarks (all if `only` is empty).
pub fn run(
    opts: &BenchOptions,
    only: &[String],
    mut emit: impl FnMut(&Value),
) -> anyhow::Result<()> {
    log::info!("bench device: {}", describe_device(&opts.device));
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if wanted("encode") {
        emit(&bench_encode(opts));
    }
    if wanted("nn") {
        for v in bench_nn(opts)? {
            emit(&v);
        }
    }
    if wanted("train") {
        for v in bench_train(opts)? {
            emit(&v);
        }
    }
    if wanted("mcts_uniform") {
        emit(&bench_mcts_uniform(opts)?);
    }
    if wanted("selfplay") {
        emit(&bench_selfplay(opts)?);
    }
    Ok(())
}

/// Keeps `EvalBatch` and `Evaluator` reachable for benchmark callers.
pub fn evaluate_once(eval: &mut dyn Evaluator, positions: &[Chess]) -> anyhow::Result<EvalBatch> {
    let mut batch = EvalBatch::new();
    for p in positions {
        batch.push(p, &p.legal_moves());
    }
    eval.evaluate(&mut batch, &mut PhaseTimes::default())?;
    Ok(batch)
}
