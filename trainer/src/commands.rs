//! The subcommands besides training: `bench`, `check`, `match`, `gauntlet` and `export`.

use crate::cli::{BenchArgs, CheckArgs, ExportArgs, GameArgs, GauntletArgs, MatchArgs, OnOff};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use ember_engine::bench::{self, BenchOptions};
use ember_engine::devicecheck;
use ember_engine::files::write_atomic;
use ember_engine::matches::{
    parse_openings, parse_openings_in, read_openings, run_match, CastlingMode, Limit, MatchReport,
    MatchSpec, CHESS960_BOOK, DEFAULT_BOOK,
};
use ember_engine::net::checkpoint::read_file;
use ember_engine::net::{describe_device, NetConfig, Network, Precision};
use ember_engine::players::{EmberSetup, PlayerSpec, Prepared};
use ember_engine::stats::{format_elo, Sprt};
use ember_engine::{DeviceChoice, SearchParams};
use log::{info, warn};
use serde_json::Value;
use std::io::IsTerminal;

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
        se_channels: args.se_channels,
        ..NetConfig::plain(args.filters, args.blocks)
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

/// What a match or gauntlet needs from its flags: the Ember setup, the match spec, and
/// the limit stated for the table.
pub fn match_setup(play: &GameArgs) -> Result<(EmberSetup, MatchSpec)> {
    let device = play.device.parse::<DeviceChoice>()?.open()?;
    let precision = Precision::resolve(&play.precision, &device)?;
    let timed = play.tc.is_some() || play.movetime.is_some();
    let concurrency = play
        .concurrency
        .unwrap_or(if timed { 1 } else { 16 })
        .max(1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let setup = EmberSetup {
        embedded: Some(ember_engine::net::EMBEDDED_NETWORK),
        device,
        precision,
        threads: (cpus / concurrency).max(1),
        solver: play.solver == OnOff::On,
    };
    let mode = if play.chess960 {
        CastlingMode::Chess960
    } else {
        CastlingMode::Standard
    };
    let openings = match (&play.openings, play.chess960) {
        (Some(path), _) => read_openings(path, mode)?,
        (None, false) => parse_openings(DEFAULT_BOOK, "data/openings/ember-120.epd")?,
        (None, true) => parse_openings_in(CHESS960_BOOK, "data/openings/chess960-20.epd", mode)?,
    };
    let limit = match (play.tc, play.movetime) {
        (Some(tc), _) => tc,
        (None, Some(ms)) => Limit::MoveTime(ms.max(1)),
        (None, None) => Limit::Nodes(play.nodes.max(1)),
    };
    let spec = MatchSpec {
        games: play.games + play.games % 2,
        limit,
        openings,
        max_plies: play.max_plies,
        random_opening_plies: 0,
        search: SearchParams::for_matches(),
        concurrency,
        sprt: play.sprt,
        seed: play.seed,
    };
    Ok((setup, spec))
}

/// One line of a match's standing: W/D/L, score, Elo with its intervals, LOS, LLR.
fn standing(r: &MatchReport, sprt: Option<&Sprt>) -> String {
    let t = r.trinomial;
    let e = t.estimate();
    let mut line = format!(
        "+{} ={} -{} of {}: score {:.3}, Elo {} [{}, {}] (games)",
        t.wins,
        t.draws,
        t.losses,
        t.games(),
        e.score,
        format_elo(e.elo),
        format_elo(e.elo_low),
        format_elo(e.elo_high)
    );
    if r.pentanomial.pairs() > 0 {
        let p = r.pentanomial.estimate();
        line.push_str(&format!(
            " [{}, {}] (pairs {:?})",
            format_elo(p.elo_low),
            format_elo(p.elo_high),
            r.pentanomial.pairs
        ));
    }
    line.push_str(&format!(", LOS {:.1}%", 100.0 * t.los()));
    if let (Some(llr), Some(sprt)) = (r.llr, sprt) {
        let (lo, hi) = sprt.bounds();
        line.push_str(&format!(", LLR {llr:.2} [{lo:.2}, {hi:.2}]"));
    }
    line
}

/// The JSON line of a finished match.
fn match_json(r: &MatchReport, spec: &MatchSpec, a: &PlayerSpec, b: &PlayerSpec) -> Value {
    let t = r.trinomial;
    let e = t.estimate();
    let p = r.pentanomial.estimate();
    let finite = |x: f64| {
        if x.is_finite() {
            Value::from(x)
        } else {
            Value::Null
        }
    };
    let mut forfeits: Vec<Value> = Vec::new();
    for g in r.games.iter().filter(|g| g.reason.is_some()) {
        forfeits.push(serde_json::json!({"game": g.number, "reason": g.reason}));
    }
    serde_json::json!({
        "a": a.to_string(), "b": b.to_string(), "name_a": r.name_a, "name_b": r.name_b,
        "limit": spec.limit.to_string(), "games": t.games(),
        "wins_a": t.wins, "draws": t.draws, "losses_a": t.losses, "score_a": e.score,
        "elo": finite(e.elo), "elo_low": finite(e.elo_low), "elo_high": finite(e.elo_high),
        "pentanomial": r.pentanomial.pairs, "elo_low_pairs": finite(p.elo_low), "elo_high_pairs": finite(p.elo_high),
        "los": t.los(), "llr": r.llr, "sprt": r.verdict, "forfeits": forfeits,
        "wall_s": r.wall.as_secs_f64(),
    })
}

/// Plays one match, showing its standing after every game (one line rewritten on a
/// terminal, a log line every tenth of the games otherwise).
fn one_match(
    a: &PlayerSpec,
    b: &PlayerSpec,
    setup: &EmberSetup,
    spec: &MatchSpec,
) -> Result<MatchReport> {
    let pa = Prepared::new(a.clone(), setup)?;
    let pb = Prepared::new(b.clone(), setup)?;
    info!(
        "{} vs {}: {} games at {}, {} openings, {} at once",
        pa.label(),
        pb.label(),
        spec.games,
        spec.limit,
        spec.openings.len(),
        spec.concurrency
    );
    let embers = [a, b]
        .iter()
        .filter(|p| matches!(p, PlayerSpec::Ember(_)))
        .count();
    match spec.limit {
        _ if embers == 0 => {}
        Limit::Nodes(n) => info!(
            "{}",
            ember_engine::mcts::params::describe_tree_bound(n, embers * spec.concurrency)
        ),
        _ => info!(
            "search trees: at most {} MB each for an Ember player under a clock or move time",
            ember_engine::mcts::params::DEFAULT_TREE_MB
        ),
    }
    let live = std::io::stderr().is_terminal();
    let every = (spec.games / 10).max(1);
    let report = run_match(&pa, &pb, setup, spec, |r| {
        let n = r.games.len();
        let line = format!(
            "game {n}/{}: {}",
            spec.games,
            standing(r, spec.sprt.as_ref())
        );
        if live {
            eprint!("\r\x1b[2K{line}");
        } else if n % every == 0 || n == spec.games {
            info!("{line}");
        }
        if let Some(g) = r.games.last() {
            if let Some(why) = &g.reason {
                if live {
                    eprintln!();
                }
                warn!("game {}: {why}", g.number);
            }
        }
    })?;
    if live {
        eprintln!();
    }
    Ok(report)
}

fn write_pgn(path: &std::path::Path, text: &str) -> Result<()> {
    write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    info!("games saved to {}", path.display());
    Ok(())
}

/// `trainer match`: two players, one report.
pub fn play(args: &MatchArgs) -> Result<()> {
    let (setup, spec) = match_setup(&args.play)?;
    let r = one_match(&args.a, &args.b, &setup, &spec)?;
    say(&format!("{} vs {} at {}", r.name_a, r.name_b, spec.limit))?;
    say(&format!("A vs B: {}", standing(&r, spec.sprt.as_ref())))?;
    if let Some(v) = r.verdict {
        say(&format!("SPRT: {v:?}"))?;
    }
    say(&match_json(&r, &spec, &args.a, &args.b).to_string())?;
    if let Some(path) = &args.play.pgn {
        write_pgn(path, &r.pgn())?;
    }
    Ok(())
}

/// `trainer gauntlet`: one player against each fixed opponent, one table.
pub fn gauntlet(args: &GauntletArgs) -> Result<()> {
    let (setup, spec) = match_setup(&args.play)?;
    let mut rows = Vec::new();
    let mut pgn = String::new();
    for opponent in &args.opponents {
        let r = one_match(&args.player, opponent, &setup, &spec)?;
        pgn.push_str(&r.pgn());
        rows.push((opponent.clone(), r));
    }
    let name = rows
        .first()
        .map_or(String::new(), |(_, r)| r.name_a.clone());
    say(&format!(
        "Gauntlet of {name} at {} ({} games each)",
        spec.limit, spec.games
    ))?;
    say(&format!(
        "| {:<36} | {:>5} | {:>13} | {:>5} | {:>17} | {:>5} |",
        "opponent", "games", "W / D / L", "score", "Elo [95%]", "LOS"
    ))?;
    say(&format!(
        "|{:-<38}|{:-<7}|{:-<15}|{:-<7}|{:-<19}|{:-<7}|",
        "", "", "", "", "", ""
    ))?;
    for (_, r) in &rows {
        let t = r.trinomial;
        let e = t.estimate();
        say(&format!(
            "| {:<36} | {:>5} | {:>13} | {:>5.3} | {:>17} | {:>4.0}% |",
            r.name_b.chars().take(36).collect::<String>(),
            t.games(),
            format!("{} / {} / {}", t.wins, t.draws, t.losses),
            e.score,
            format!(
                "{} [{}, {}]",
                format_elo(e.elo),
                format_elo(e.elo_low),
                format_elo(e.elo_high)
            ),
            100.0 * t.los()
        ))?;
    }
    for (opponent, r) in &rows {
        say(&match_json(r, &spec, &args.player, opponent).to_string())?;
    }
    if let Some(path) = &args.play.pgn {
        write_pgn(path, &pgn)?;
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
