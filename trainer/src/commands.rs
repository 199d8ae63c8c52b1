//! The subcommands besides training: `bench`, `match` and `export`.

use crate::cli::{BenchArgs, CheckArgs, ExportArgs, MatchArgs, OnOff};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use ember_engine::arena::{play_match, MatchConfig};
use ember_engine::bench::{self, BenchOptions};
use ember_engine::devicecheck;
use ember_engine::files::write_atomic;
use ember_engine::mcts::NetEvaluator;
use ember_engine::net::checkpoint::read_file;
use ember_engine::net::{describe_device, NetConfig, Network, Precision};
use ember_engine::DeviceChoice;
use log::info;
use serde_json::Value;

/// Runs the benchmarks: one JSON object per line on stdout, a table on stderr.
pub fn bench(args: &BenchArgs) -> Result<()> {
    for name in &args.only {
        if !bench::ALL.contains(&name.as_str()) {
            bail!(
                "unknown benchmark {name:?}: expected one of {}",
                bench::ALL.join(", ")
            );
        }
    }
    let device = args.device.parse::<DeviceChoice>()?.open()?;
    eprintln!("Using device: {}", describe_device(&device));
    let mut opts = BenchOptions::for_device(device.clone());
    opts.net = NetConfig {
        filters: args.filters,
        blocks: args.blocks,
    };
    opts.precision = Precision::resolve(&args.precision, &device)?;
    opts.seconds = args.seconds;
    opts.selfplay_seconds = args.selfplay_seconds;
    let parse_all =
        |names: &[String]| -> Result<Vec<Precision>> { names.iter().map(|n| n.parse()).collect() };
    if !args.nn_precisions.is_empty() {
        opts.nn_precisions = parse_all(&args.nn_precisions)?;
    }
    if !args.train_precisions.is_empty() {
        opts.train_precisions = parse_all(&args.train_precisions)?;
    }
    if !args.batches.is_empty() {
        if args.batches.contains(&0) {
            bail!("--batches: a batch size must be at least 1");
        }
        opts.batches = args.batches.clone();
    }
    if let Some(b) = args.train_batch {
        if b == 0 {
            bail!("--train-batch must be at least 1");
        }
        opts.train_batch = b;
    }
    if let Some(g) = args.games_in_flight {
        opts.selfplay_games_in_flight = g.max(1);
    }
    if let Some(l) = args.leaves_per_game {
        opts.selfplay_leaves_per_game = l.max(1);
    }
    if let Some(p) = args.pipeline {
        opts.selfplay_pipeline = p == OnOff::On;
    }
    eprintln!("{:<14} result", "benchmark");
    let mut written = Ok(());
    bench::run(&opts, &args.only, |v: &Value| {
        if written.is_ok() {
            written = say(&v.to_string());
        }
        eprintln!("{}", table_row(v));
    })?;
    written
}

/// Compares the device's inference (f32, bf16, f16) and training step (f32, bf16) with the
/// CPU's f32 results; fails if any is outside its tolerance.
pub fn check(args: &CheckArgs) -> Result<()> {
    let device = args.device.parse::<DeviceChoice>()?.open()?;
    if device.is_cpu() {
        bail!(
            "--device {}: the check compares a GPU with the CPU; give cuda or cuda:N",
            args.device
        );
    }
    eprintln!("Using device: {}", describe_device(&device));
    let network = match &args.checkpoint {
        Some(path) => Network::load(path, None, &Device::Cpu)?,
        None => {
            let net = Network::new(NetConfig::default(), &Device::Cpu, 17)?;
            net.randomise_statistics(18)?;
            net
        }
    };
    let mut failed = Vec::new();
    let mut written = Ok(());
    let mut emit = |v: Value| {
        if written.is_ok() {
            written = say(&v.to_string());
        }
        eprintln!("{}", table_row(&v));
        if v["pass"] != Value::Bool(true) {
            failed.push(format!("{} {}", v["check"], v["precision"]));
        }
    };
    for p in [Precision::F32, Precision::Bf16, Precision::F16] {
        emit(devicecheck::check_inference(
            &network,
            &device,
            p,
            args.positions,
        )?);
    }
    for p in [Precision::F32, Precision::Bf16] {
        emit(devicecheck::check_training_step(
            &network,
            &device,
            p,
            args.train_batch,
        )?);
    }
    written?;
    if !failed.is_empty() {
        bail!("outside tolerance: {}", failed.join(", "));
    }
    eprintln!("all checks within tolerance");
    Ok(())
}

fn table_row(v: &Value) -> String {
    let name = v
        .get("bench")
        .or_else(|| v.get("check"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let fields: Vec<String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "bench" | "check" | "timing"))
                .map(|(k, x)| match x {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut row = format!("{name:<14} {}", fields.join("  "));
    if let Some(t) = v.get("timing").and_then(Value::as_str) {
        row.push_str(&format!("\n{:<14} {t}", ""));
    }
    row
}

/// Plays a match between two checkpoints; prints the score, Elo and its interval.
pub fn play(args: &MatchArgs) -> Result<()> {
    let device = args.device.parse::<DeviceChoice>()?.open()?;
    let precision = Precision::resolve(&args.precision, &device)?;
    info!("Using device: {}", describe_device(&device));
    let a = Network::load(&args.a, None, &device)?;
    let b = Network::load(&args.b, None, &device)?;
    info!(
        "A: {} ({}, iteration {}); B: {} ({}, iteration {})",
        args.a.display(),
        a.config,
        a.iteration,
        args.b.display(),
        b.config,
        b.iteration
    );
    let mut ea = NetEvaluator::new(&a, precision)?;
    let mut eb = NetEvaluator::new(&b, precision)?;
    let games = args.games + args.games % 2;
    let cfg = MatchConfig {
        games,
        games_in_flight: args.games_in_flight.unwrap_or(games).max(1),
        simulations: args.simulations,
        max_plies: args.max_plies,
        opening_random_plies: args.opening_random_plies,
        temperature: 0.0,
        seed: args.seed,
        name_a: checkpoint_name(&args.a),
        name_b: checkpoint_name(&args.b),
        ..MatchConfig::default()
    };
    let mut done = 0;
    let r = play_match(&cfg, &mut ea, &mut eb, |_| {
        done += 1;
        info!("game {done}/{games} finished");
    })?;
    let (lo, hi) = r.elo_interval();
    say(&format!(
        "A vs B: +{} ={} -{} of {} games: score {:.3}, Elo {:+.0} (95% interval {:+.0} .. {:+.0})",
        r.wins_a,
        r.draws,
        r.losses_a,
        r.games,
        r.score_a(),
        r.elo_diff(),
        lo,
        hi
    ))?;
    let finite = |x: f64| {
        if x.is_finite() {
            Value::from(x)
        } else {
            Value::Null
        }
    };
    say(&serde_json::json!({
        "a": args.a.display().to_string(), "b": args.b.display().to_string(), "games": r.games,
        "wins_a": r.wins_a, "draws": r.draws, "losses_a": r.losses_a, "score_a": r.score_a(),
        "elo": finite(r.elo_diff()), "elo_low": finite(lo), "elo_high": finite(hi),
    })
    .to_string())?;
    if let Some(path) = &args.pgn {
        let text: String = r
            .pgns
            .iter()
            .map(|p| format!("{}\n\n", p.trim_end()))
            .collect();
        write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        info!("games saved to {}", path.display());
    }
    Ok(())
}

/// Writes a line of results to stdout; a failed write (a full disk, a closed pipe) is an
/// error, never a panic.
pub fn say(line: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .context("writing to standard output")
}

fn checkpoint_name(path: &std::path::Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Copies a checkpoint (checked to load first) to `--to`, atomically.
pub fn export(args: &ExportArgs) -> Result<()> {
    let from = match (&args.run, &args.checkpoint) {
        (_, Some(path)) => path.clone(),
        (Some(run), None) => args.runs_dir.join(run).join("best.safetensors"),
        (None, None) => {
            bail!("say what to export: --run NAME (its best network) or --checkpoint PATH")
        }
    };
    let bytes = read_file(&from)?;
    let net = Network::from_bytes(&bytes, None, &Device::Cpu, &from.display().to_string())?;
    let folder = args
        .to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    crate::publish::prepare(folder, "--to")?;
    write_atomic(&args.to, &bytes).with_context(|| format!("writing {}", args.to.display()))?;
    say(&format!(
        "exported {} ({}, iteration {}) to {}",
        from.display(),
        net.config,
        net.iteration,
        args.to.display()
    ))
}
