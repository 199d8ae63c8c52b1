//! Benchmarks of the engine core: encoding, network throughput by batch size, search
//! with the uniform evaluator, and self-play. Each measurement is a JSON object; the
//! `trainer bench` command prints them as a table and as JSON lines.

use crate::encoding::{encode_position, PLANES_LEN, POLICY_SIZE};
use crate::game::Game;
use crate::mcts::{EvalBatch, Evaluator, NetEvaluator, Search, SearchParams, UniformEvaluator};
use crate::net::{describe_device, NetConfig, Network, Precision};
use crate::selfplay::{play_games, SelfPlayConfig};
use crate::timing::PhaseTimes;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use shakmaty::{Chess, Position};
use std::time::{Duration, Instant};

pub const ALL: [&str; 4] = ["encode", "nn", "mcts_uniform", "selfplay"];

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub device: candle_core::Device,
    pub net: NetConfig,
    pub precision: Precision,
    /// Batch sizes for the network benchmark.
    pub batches: Vec<usize>,
    /// Seconds spent on each measurement (roughly).
    pub seconds: f64,
    pub selfplay_games_in_flight: usize,
    pub selfplay_leaves_per_game: usize,
    pub selfplay_seconds: f64,
}

impl BenchOptions {
    pub fn for_device(device: candle_core::Device) -> Self {
        let gpu = !device.is_cpu();
        BenchOptions {
            net: NetConfig::default(),
            precision: if gpu { Precision::Bf16 } else { Precision::F32 },
            batches: if gpu {
                vec![1, 8, 64, 256, 1024, 4096]
            } else {
                vec![1, 8, 64, 256]
            },
            seconds: 2.0,
            selfplay_games_in_flight: if gpu { 512 } else { 128 },
            selfplay_leaves_per_game: if gpu { 4 } else { 2 },
            selfplay_seconds: 20.0,
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
    let mut eval = NetEvaluator::new(&net, opts.precision)?;
    let positions = sample_positions(*opts.batches.iter().max().unwrap_or(&1), 11);
    let mut out = Vec::new();
    for &b in &opts.batches {
        let mut planes = vec![0f32; b * PLANES_LEN];
        for (p, chunk) in positions.iter().zip(planes.chunks_exact_mut(PLANES_LEN)) {
            encode_position(p, chunk);
        }
        let (policy, _) = eval.forward_planes(&planes, b)?; // warm-up
        debug_assert_eq!(policy.len(), b * POLICY_SIZE);
        let (n, secs) = timed(opts.seconds, || {
            std::hint::black_box(eval.forward_planes(&planes, b).expect("forward"));
            b as u64
        });
        let precision = if opts.device.is_cpu() {
            "f32"
        } else {
            opts.precision.as_str()
        };
        out.push(json!({
            "bench": "nn", "net": opts.net.to_string(), "batch": b, "precision": precision,
            "device": device_name(&opts.device), "evals_per_s": (n as f64 / secs).round(),
        }));
    }
    Ok(out)
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
        leaves_per_game: opts.selfplay_leaves_per_game,
        simulations: 25,
        max_plies: 150,
        time_limit: Some(Duration::from_secs_f64(opts.selfplay_seconds)),
        ..SelfPlayConfig::default()
    };
    let stats = play_games(&cfg, &mut eval, |_| {})?;
    Ok(json!({
        "bench": "selfplay", "net": opts.net.to_string(), "sims": 25, "max_plies": 150,
        "device": device_name(&opts.device), "games_in_flight": cfg.games_in_flight,
        "leaves_per_game": cfg.leaves_per_game,
        "positions": stats.positions,
        "positions_per_s": (stats.positions_per_s() * 10.0).round() / 10.0,
        "games_per_s": (stats.estimated_games_per_s(cfg.max_plies) * 1000.0).round() / 1000.0,
        "mean_plies": (stats.mean_plies() * 10.0).round() / 10.0,
        "games_finished": stats.games,
        "evals_per_position": (stats.evals_per_position() * 100.0).round() / 100.0,
        "collisions": stats.collisions,
        "timing": stats.timing.summary(),
    }))
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
