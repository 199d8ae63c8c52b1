//! The `trainer` binary driven like a user drives it: tiny runs on the CPU, a run killed
//! with SIGKILL and resumed, a checkpoint of another architecture refused, benchmarks,
//! matches and exports. Every run writes under Cargo's test temporary folder.

use candle_core::Device;
use ember_engine::net::{NetConfig, Network};
use ember_engine::replay::ReplayWindow;
use ember_tests::files_under;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TINY_NET: NetConfig = NetConfig::plain(16, 1);

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

/// A fresh folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("trainer-e2e")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Flags of a tiny run under `root` (runs in `root/runs`, promotions in `root/models`).
fn tiny_args(root: &Path, run: &str, iterations: u32) -> Vec<String> {
    let mut args: Vec<String> = [
        "--preset",
        "quick",
        "--games",
        "4",
        "--simulations",
        "8",
        "--filters",
        "16",
        "--blocks",
        "1",
        "--train-steps",
        "4",
        "--batch-size",
        "64",
        "--gating-games",
        "2",
        "--max-plies",
        "60",
        "--device",
        "cpu",
        "--seed",
        "7",
        "--publish-games",
        "10",
        "--strength-nodes",
        "8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "--iterations".into(),
        iterations.to_string(),
        "--run".into(),
        run.into(),
    ]);
    args.extend(["--runs-dir".into(), root.join("runs").display().to_string()]);
    args.extend([
        "--models-dir".into(),
        root.join("models").display().to_string(),
    ]);
    args
}

/// Starts a trainer in the background, its output discarded.
fn spawn_quiet(args: &[String]) -> std::process::Child {
    trainer()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("trainer starts");
    assert!(
        out.status.success(),
        "trainer failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn metrics_lines(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each metrics line is JSON"))
        .collect()
}

fn state(run: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run.join("state.json")).unwrap()).unwrap()
}

struct TinyRun {
    root: PathBuf,
    run: PathBuf,
    stderr: String,
}

/// One finished 2-iteration tiny run shared by the tests that only read it.
fn tiny_run() -> &'static TinyRun {
    static RUN: OnceLock<TinyRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let root = scratch("tiny");
        let out = run_ok(trainer().args(tiny_args(&root, "tiny", 2)));
        TinyRun {
            run: root.join("runs/tiny"),
            root,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
}

#[test]
fn tiny_run_leaves_checkpoints_metrics_plot_and_pgn() {
    let t = tiny_run();
    assert!(t.stderr.contains("Using device: cpu"), "{}", t.stderr);
    assert!(t.stderr.contains("16x1"), "network size is printed");
    for name in [
        "best",
        "latest",
        "train_state",
        "iter-000000",
        "iter-000001",
        "iter-000002",
    ] {
        assert!(
            t.run.join(format!("{name}.safetensors")).exists(),
            "{name}.safetensors missing"
        );
    }
    Network::load(
        &t.run.join("latest.safetensors"),
        Some(TINY_NET),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(state(&t.run)["iteration"], 2);
    let config: Value =
        serde_json::from_slice(&std::fs::read(t.run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["filters"], 16);

    let lines = metrics_lines(&t.run);
    assert_eq!(lines.len(), 2);
    let required = [
        "iteration",
        "loss_policy",
        "loss_value",
        "loss_l2",
        "positions",
        "games",
        "mean_plies",
        "terminations",
        "white_wins",
        "black_wins",
        "draws",
        "selfplay_positions_per_s",
        "evals_per_position",
        "train_samples_per_s",
        "train_steps",
        "gating_score",
        "gating_elo",
        "gating_elo_low",
        "gating_elo_high",
        "promoted",
        "cumulative_elo",
        "wall_selfplay_s",
        "wall_train_s",
        "wall_gating_s",
        "wall_total_s",
    ];
    for (i, line) in lines.iter().enumerate() {
        for key in required {
            assert!(
                line.get(key).is_some(),
                "metrics line {} lacks {key}: {line}",
                i + 1
            );
        }
        assert_eq!(line["iteration"], i as u64 + 1);
        assert_eq!(line["games"], 4);
        assert!(line["loss_policy"].as_f64().unwrap().is_finite());
    }

    let svg = std::fs::read_to_string(t.run.join("progress.svg")).unwrap();
    assert!(svg.starts_with("<svg"));

    for it in 1..=2 {
        let pgn = std::fs::read_to_string(t.run.join(format!("games/iter-{it:06}.pgn"))).unwrap();
        assert_eq!(
            pgn.matches("[Result ").count(),
            4,
            "one Result tag per game"
        );
        assert_eq!(
            pgn.matches("[Termination ").count(),
            4,
            "one Termination tag per game"
        );
    }
}

#[test]
fn promoted_candidate_becomes_best_and_a_tiny_run_does_not_replace_the_built_in_network() {
    let root = scratch("promote");
    let run = root.join("runs/promote");
    let mut args = tiny_args(&root, "promote", 2);
    args.extend(["--promotion-score", "0"].map(String::from));
    let out = run_ok(trainer().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(metrics_lines(&run).iter().all(|l| l["promoted"] == true));
    assert_eq!(state(&run)["best_iteration"], 2);
    let best = std::fs::read(run.join("best.safetensors")).unwrap();
    assert_eq!(best, std::fs::read(run.join("latest.safetensors")).unwrap());
    let net = Network::load(&run.join("best.safetensors"), Some(TINY_NET), &Device::Cpu).unwrap();
    assert_eq!(
        (net.iteration, net.run.as_deref()),
        (2, Some("promote")),
        "the checkpoint records the iteration and the run that made it"
    );
    // The models folder is fresh, so the network to beat is the one built into the
    // binaries, and the tiny network loses to it.
    assert!(
        stderr.contains("publishing: to ")
            && stderr.contains("only when the run's best network beats"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "publishing match: iteration 2 of run promote vs the built-in 64x3 network of run gpu (iteration 64), 10 games at 8 nodes a move"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("not published: iteration 2 of run promote did not beat the built-in"),
        "{stderr}"
    );
    assert!(stderr.contains("trainer export --run promote"), "{stderr}");
    assert!(!root.join("models/latest.safetensors").exists());
    assert_eq!(state(&run)["offered"], 2);

    // Offered once: going on with the finished run plays no second publishing match.
    let out = run_ok(trainer().args(&args));
    let again = String::from_utf8_lossy(&out.stderr);
    assert!(!again.contains("publishing match"), "{again}");

    // --no-publish: no match, and the models folder is not touched.
    let quiet = scratch("no-publish");
    let mut args = tiny_args(&quiet, "quiet", 1);
    args.extend(["--promotion-score", "0", "--no-publish"].map(String::from));
    let out = run_ok(trainer().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("publishing: off (--no-publish)"),
        "{stderr}"
    );
    assert!(!stderr.contains("publishing match"), "{stderr}");
    assert!(!quiet.join("models").exists());
}

/// `tiny_args` with the architecture flags left out (for `--init`, which sets them).
fn tiny_args_without_architecture(root: &Path, run: &str, iterations: u32) -> Vec<String> {
    let args = tiny_args(root, run, iterations);
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--filters" || a == "--blocks" {
            it.next();
        } else {
            out.push(a);
        }
    }
    out
}

#[test]
fn a_run_whose_network_wins_the_publishing_match_replaces_the_published_one() {
    let root = scratch("publish-wins");
    // Published: the untrained network of another run.
    let t = tiny_run();
    let published = root.join("models/latest.safetensors");
    std::fs::create_dir_all(root.join("models")).unwrap();
    std::fs::copy(t.run.join("iter-000000.safetensors"), &published).unwrap();
    // This run starts from the trained network in the repository and barely moves it.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.safetensors");
    let mut args = tiny_args_without_architecture(&root, "strong", 1);
    args.extend(
        [
            "--gating-games",
            "0",
            "--lr",
            "1e-7",
            "--publish-games",
            "20",
        ]
        .map(String::from),
    );
    args.extend(["--strength-nodes", "16", "--init"].map(String::from));
    args.push(shipped.display().to_string());
    let out = run_ok(trainer().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = root.join("runs/strong");
    assert!(
        stderr.contains("publishing match: iteration 1 of run strong vs the published 16x1 network of run tiny (iteration 0)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("published iteration 1 of run strong to"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&published).unwrap(),
        std::fs::read(run.join("best.safetensors")).unwrap()
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (&config["filters"], &config["blocks"], &config["init"]),
        (
            &Value::from(64),
            &Value::from(3),
            &Value::from(shipped.display().to_string())
        )
    );
    let first = Network::load(&run.join("iter-000000.safetensors"), None, &Device::Cpu).unwrap();
    assert_eq!((first.iteration, first.run.as_deref()), (0, Some("strong")));

    // An --init whose architecture the flags contradict is refused before anything is written.
    let mut args = tiny_args(&root, "contradicted", 1);
    args.extend(["--init".into(), shipped.display().to_string()]);
    let out = trainer().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("holds a 64x3 network, and --filters 16 asks for another"),
        "{stderr}"
    );
    assert!(!root.join("runs/contradicted").exists());
}

#[test]
fn run_killed_mid_way_resumes_from_its_last_complete_iteration_with_all_data() {
    let root = scratch("kill");
    let run = root.join("runs/killed");
    let mut args = tiny_args(&root, "killed", 4);
    // Larger iterations than the tiny run, so the kill lands inside one.
    args.extend(
        [
            "--games",
            "6",
            "--simulations",
            "24",
            "--max-plies",
            "80",
            "--train-steps",
            "12",
        ]
        .map(String::from),
    );
    let mut child = spawn_quiet(&args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics_lines_now(&run) < 1 {
        assert!(Instant::now() < deadline, "first iteration never finished");
        assert!(
            child.try_wait().unwrap().is_none(),
            "trainer exited before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before = state(&run)["iteration"].as_u64().unwrap();
    assert!(done_before < 4, "the kill must land before the run ends");

    run_ok(trainer().args(&args));

    let lines = metrics_lines(&run);
    let iterations: Vec<u64> = lines
        .iter()
        .map(|l| l["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(iterations, vec![1, 2, 3, 4], "each iteration exactly once");
    let s = state(&run);
    assert_eq!(s["iteration"], 4);
    let shards: Vec<String> = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        shards,
        (1..=4)
            .map(|i| format!("iter-{i:06}.shard"))
            .collect::<Vec<_>>()
    );
    for shard in &shards {
        assert!(run.join("replay").join(shard).exists(), "{shard} was lost");
    }
    let leftovers: Vec<_> = std::fs::read_dir(run.join("replay"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !shards.contains(n))
        .collect();
    assert!(
        leftovers.is_empty(),
        "unfinished data left behind: {leftovers:?}"
    );
    let (window, stats) = ReplayWindow::load(&run.join("replay"), 1_000_000).unwrap();
    let positions: u64 = lines.iter().map(|l| l["positions"].as_u64().unwrap()).sum();
    assert_eq!(stats.skipped_corrupt, 0);
    assert_eq!(
        window.len() as u64,
        positions,
        "every complete iteration's samples are readable"
    );
}

fn metrics_lines_now(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn checkpoint_of_another_architecture_is_refused_and_left_untouched() {
    let t = tiny_run();
    let files = [
        "best.safetensors",
        "latest.safetensors",
        "config.json",
        "state.json",
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(t.run.join(f)).unwrap())
        .collect();
    let mut args = tiny_args(&t.root, "tiny", 3);
    args.extend(["--filters", "32"].map(String::from));
    let out = trainer().args(&args).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds another architecture: filters is 16 (expected 32)"),
        "{stderr}"
    );
    assert!(!stderr.contains("stack backtrace"));
    for (f, bytes) in files.iter().zip(&before) {
        assert_eq!(&std::fs::read(t.run.join(f)).unwrap(), bytes, "{f} changed");
    }
}

#[test]
fn bench_encode_prints_one_json_line_with_positions_per_second() {
    let out = run_ok(trainer().args([
        "bench",
        "--only",
        "encode",
        "--seconds",
        "0.2",
        "--device",
        "cpu",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout is JSON lines"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["bench"], "encode");
    assert!(lines[0]["positions_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn export_writes_the_runs_best_network_as_a_loadable_checkpoint() {
    let t = tiny_run();
    let to = scratch("export").join("models/exported.safetensors");
    let runs = t.root.join("runs");
    run_ok(
        trainer()
            .args(["export", "--run", "tiny", "--runs-dir"])
            .arg(&runs)
            .arg("--to")
            .arg(&to),
    );
    Network::load(&to, Some(TINY_NET), &Device::Cpu).unwrap();
    assert_eq!(
        std::fs::read(&to).unwrap(),
        std::fs::read(t.run.join("best.safetensors")).unwrap()
    );
}

#[test]
fn match_between_two_checkpoints_reports_score_and_saves_pgn() {
    let t = tiny_run();
    let pgn = scratch("match").join("match.pgn");
    let out = run_ok(
        trainer()
            .arg("match")
            .arg("--a")
            .arg(t.run.join("latest.safetensors"))
            .arg("--b")
            .arg(t.run.join("best.safetensors"))
            .args([
                "--games",
                "2",
                "--simulations",
                "4",
                "--max-plies",
                "30",
                "--device",
                "cpu",
                "--pgn",
            ])
            .arg(&pgn),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON summary line");
    assert_eq!(json["games"], 2);
    let score = json["score_a"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score));
    assert_eq!(
        std::fs::read_to_string(&pgn)
            .unwrap()
            .matches("[Result ")
            .count(),
        2
    );
}

#[test]
fn selfplay_adds_games_the_run_keeps_as_replay_data() {
    let root = scratch("selfplay");
    let run = root.join("runs/sp");
    let mut args = vec!["selfplay".to_string()];
    args.extend(tiny_args(&root, "sp", 1));
    run_ok(trainer().args(&args));
    let shards = state(&run)["shards"].as_array().unwrap().clone();
    assert_eq!(shards.len(), 1);
    let (window, _) = ReplayWindow::load(&run.join("replay"), 1_000_000).unwrap();
    assert!(window.len() >= 4, "four games make at least four positions");
    assert_eq!(
        state(&run)["iteration"],
        0,
        "self-play alone completes no iteration"
    );
}

/// A process id that no running process has (above Linux's largest pid_max).
const DEAD_PID: u32 = 4_194_999;

#[test]
fn a_second_trainer_on_a_run_is_refused_and_a_killed_owner_leaves_no_lock_behind() {
    let root = scratch("lock");
    let run = root.join("runs/locked");
    let mut args = tiny_args(&root, "locked", 2);
    args.extend(["--games", "8", "--simulations", "24"].map(String::from));
    let mut first = spawn_quiet(&args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.join("state.json").exists() {
        assert!(Instant::now() < deadline, "the first trainer never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = trainer().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is in use by another trainer (process {})",
            first.id()
        )),
        "{stderr}"
    );
    first.kill().unwrap(); // SIGKILL: the lock goes with the process
    first.wait().unwrap();
    run_ok(trainer().args(&args));
    let s = state(&run);
    assert_eq!(s["iteration"], 2);
    let lines = metrics_lines(&run);
    assert_eq!(lines.len(), 2);
    assert_eq!(
        s["best_iteration"],
        lines
            .iter()
            .filter(|l| l["promoted"] == true)
            .map(|l| l["iteration"].as_u64().unwrap())
            .max()
            .unwrap_or(0)
    );
}

#[test]
fn an_overflowing_learning_rate_fails_the_iteration_and_the_run_resumes_with_a_sane_one() {
    let root = scratch("lr");
    let run = root.join("runs/lr");
    for extra in [
        ["--lr", "1e30", "--optimizer", "adamw"],
        ["--lr", "1e6", "--optimizer", "sgd"],
    ] {
        let mut args = tiny_args(&root, "lr", 1);
        args.extend(extra.map(String::from));
        let out = trainer().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains("NaN or infinite"), "{stderr}");
        assert!(
            stderr.contains("nothing of iteration 1 was saved"),
            "{stderr}"
        );
        assert_eq!(state(&run)["iteration"], 0);
        assert!(!root.join("models/latest.safetensors").exists());
    }
    let mut args = tiny_args(&root, "lr", 1);
    args.extend(["--lr", "1e-3", "--optimizer", "adamw"].map(String::from));
    run_ok(trainer().args(&args));
    assert_eq!(state(&run)["iteration"], 1);
    for name in ["best", "latest"] {
        Network::load(
            &run.join(format!("{name}.safetensors")),
            Some(TINY_NET),
            &Device::Cpu,
        )
        .unwrap()
        .check_usable()
        .unwrap();
    }
}

#[test]
fn a_run_that_lost_its_state_is_not_started_over_and_missing_data_is_warned_about() {
    let root = scratch("lost");
    let run = root.join("runs/lost");
    run_ok(trainer().args(tiny_args(&root, "lost", 1)));

    // state.json deleted: refused, nothing touched.
    let state_bytes = std::fs::read(run.join("state.json")).unwrap();
    std::fs::remove_file(run.join("state.json")).unwrap();
    let before = files_under(&root);
    let out = trainer()
        .args(tiny_args(&root, "lost", 2))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("but no state.json"), "{stderr}");
    assert!(stderr.contains("train_state.safetensors"), "{stderr}");
    assert!(before == files_under(&root), "files changed");
    std::fs::write(run.join("state.json"), state_bytes).unwrap();

    // A listed shard deleted, temporary files of dead writers and a bad metrics line:
    // each is reported, and the run goes on.
    std::fs::remove_file(run.join("replay/iter-000001.shard")).unwrap();
    let stray = [
        run.join(format!(".state.json.{DEAD_PID}.tmp")),
        run.join(format!("games/.iter-000002.pgn.{DEAD_PID}.tmp")),
        root.join(format!("models/.latest.safetensors.{DEAD_PID}.tmp")),
    ];
    std::fs::create_dir_all(root.join("models")).unwrap();
    for p in &stray {
        std::fs::write(p, b"half").unwrap();
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    std::fs::write(run.join("metrics.jsonl"), format!("{metrics}{{\"garbage\n")).unwrap();
    let out = run_ok(trainer().args(tiny_args(&root, "lost", 2)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("iter-000001.shard is listed but missing"),
        "{stderr}"
    );
    assert!(
        stderr.contains("metrics.jsonl line 2 does not parse"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.unreadable.jsonl")).unwrap(),
        "{\"garbage\n"
    );
    for p in &stray {
        assert!(!p.exists(), "{} was not swept", p.display());
    }
    assert_eq!(state(&run)["iteration"], 2);
}

#[test]
fn bad_flags_are_refused_before_anything_is_written() {
    let root = scratch("flags");
    let blocker = root.join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let mut args = tiny_args(&root, "flags", 1);
    args.extend([
        "--models-dir".into(),
        blocker.join("models").display().to_string(),
    ]);
    let out = trainer().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--models-dir") && stderr.contains("cannot be written"),
        "{stderr}"
    );
    assert!(
        !root.join("runs/flags").exists(),
        "the run folder was created"
    );

    let mut args = tiny_args(&root, "flags", 1);
    args.extend(["--simulations", "1"].map(String::from));
    let out = trainer().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--simulations must be at least 2"),
        "{stderr}"
    );
    assert!(!root.join("runs/flags").exists());

    let out = trainer()
        .args(["match", "--a", "random", "--b", "greedy", "--games", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--games"));
}

#[test]
fn results_written_to_a_full_device_are_an_error_not_a_panic() {
    let t = tiny_run();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let to = scratch("full").join("exported.safetensors");
    let out = trainer()
        .args(["export", "--run", "tiny", "--runs-dir"])
        .arg(t.root.join("runs"))
        .arg("--to")
        .arg(&to)
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing to standard output"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_run_does_not_replace_a_stronger_network_another_run_published() {
    let root = scratch("publish");
    let published = root.join("models/latest.safetensors");
    std::fs::create_dir_all(root.join("models")).unwrap();
    // Published: the trained network of the repository.
    let shipped =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.safetensors"))
            .unwrap();
    std::fs::write(&published, &shipped).unwrap();
    let mut args = tiny_args(&root, "second", 1);
    args.extend(["--promotion-score", "0"].map(String::from));
    let out = run_ok(trainer().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("vs the published 64x3 network of run gpu (iteration 64)"),
        "{stderr}"
    );
    assert!(stderr.contains("not published"), "{stderr}");
    assert!(stderr.contains("trainer export --run second"), "{stderr}");
    assert_eq!(std::fs::read(&published).unwrap(), shipped);

    // A file there that is not a network is never replaced by a run.
    std::fs::write(&published, b"someone's notes").unwrap();
    let mut args = tiny_args(&root, "third", 1);
    args.extend(["--promotion-score", "0"].map(String::from));
    let out = run_ok(trainer().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not read as a network"), "{stderr}");
    assert!(!stderr.contains("publishing match"), "{stderr}");
    assert_eq!(std::fs::read(&published).unwrap(), b"someone's notes");

    // Exporting is the deliberate way.
    run_ok(
        trainer()
            .args(["export", "--run", "second", "--runs-dir"])
            .arg(root.join("runs"))
            .arg("--to")
            .arg(&published),
    );
    assert_eq!(
        std::fs::read(&published).unwrap(),
        std::fs::read(root.join("runs/second/best.safetensors")).unwrap()
    );
}

#[test]
fn a_run_with_the_strength_curve_on_records_each_anchor_and_draws_the_curve() {
    let root = scratch("strength");
    let mut args = tiny_args(&root, "strength", 2);
    args.extend(
        [
            "--gating-games",
            "0",
            "--checkpoint-every",
            "3",
            "--strength-every",
            "1",
            "--strength-games",
            "2",
            "--strength-nodes",
            "4",
            "--strength-anchors",
            "random,greedy,iteration0",
            "--cap-material",
            "3",
            "--fast-simulations",
            "2",
            "--q-ratio",
            "0.2",
            "--q-ratio-final",
            "0.4",
            "--material-ratio",
            "0.3",
            "--material-ratio-final",
            "0.1",
        ]
        .map(String::from),
    );
    let out = run_ok(trainer().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("strength 2: iteration 2 vs greedy"),
        "{stderr}"
    );
    let run = root.join("runs/strength");
    let lines = metrics_lines(&run);
    assert_eq!(lines.len(), 2);
    for (i, line) in lines.iter().enumerate() {
        let points = line["strength"].as_array().expect("strength measured");
        let names: Vec<&str> = points
            .iter()
            .map(|p| p["opponent"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["random", "greedy", "iteration0"], "{line}");
        for p in points {
            assert_eq!(p["games"], 2);
            let (w, d, l) = (
                p["wins"].as_u64().unwrap(),
                p["draws"].as_u64().unwrap(),
                p["losses"].as_u64().unwrap(),
            );
            assert_eq!(w + d + l, 2);
            let score = (w as f64 + d as f64 / 2.0) / 2.0;
            assert!((p["score"].as_f64().unwrap() - score).abs() < 1e-9);
            assert_eq!(p["nodes"], 4);
        }
        assert!(line["policy_excess"].as_f64().unwrap().is_finite());
        assert!(line["policy_kl"].as_f64().unwrap() >= 0.0);
        // The q-ratio moves from 0.2 at the first iteration to 0.4 at the last.
        let q = line["q_ratio"].as_f64().unwrap();
        assert!((q - [0.2, 0.4][i]).abs() < 1e-6, "{q}");
        // The material weight from 0.3 to 0.1.
        let m = line["material_ratio"].as_f64().unwrap();
        assert!((m - [0.3, 0.1][i]).abs() < 1e-6, "{m}");
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["strength_every"], 1);
    assert_eq!(config["cap_material"], 3);
    assert_eq!(config["fast_simulations"], 2);
    assert_eq!(config["mask_illegal"], true);
    assert!((config["material_ratio"].as_f64().unwrap() - 0.3).abs() < 1e-6);
    assert!((config["material_ratio_final"].as_f64().unwrap() - 0.1).abs() < 1e-6);
    let svg = std::fs::read_to_string(run.join("progress.svg")).unwrap();
    assert!(svg.contains("Elo against fixed anchors"));
    assert!(svg.contains("The same, by wall time"));
    for anchor in ["vs random", "vs greedy", "vs iteration0"] {
        // In the legends of both strength panels.
        assert_eq!(
            svg.matches(&format!("\n{anchor}\n")).count(),
            2,
            "{anchor} in the plot's legends"
        );
    }
    assert!(
        stderr.contains("strength 2: measured in")
            && stderr.contains("the strength curve has taken"),
        "the log states what the strength curve costs: {stderr}"
    );
}

#[test]
fn files_a_user_names_are_read_within_bounds_with_one_line_errors() {
    let start = Instant::now();
    let out = trainer()
        .args(["match", "--a", "random", "--b", "greedy", "--games", "2"])
        .args(["--openings", "/dev/zero"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/dev/zero is not a regular file") && stderr.contains("opening book"),
        "{stderr}"
    );
    assert!(start.elapsed() < Duration::from_secs(30));

    // A run folder whose config.json, state.json or metrics.jsonl is a device.
    let root = scratch("bounded");
    run_ok(trainer().args(tiny_args(&root, "b", 1)));
    let run = root.join("runs/b");
    for name in ["config.json", "state.json", "metrics.jsonl"] {
        let path = run.join(name);
        let kept = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let out = trainer().args(tiny_args(&root, "b", 2)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name} is not a regular file")),
            "{name}: {stderr}"
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, kept).unwrap();
    }
    run_ok(trainer().args(tiny_args(&root, "b", 2)));
    assert_eq!(state(&run)["iteration"], 2);
}

#[test]
fn a_gumbel_run_under_a_time_budget_records_every_move_and_stops_when_the_budget_is_spent() {
    let root = scratch("gumbel-budget");
    let mut args = tiny_args(&root, "g", 50);
    // 3 seconds: the first iteration's self-play and training take about that, so the
    // run stops after one or two iterations of the fifty allowed.
    args.extend(
        [
            "--root-rule",
            "gumbel",
            "--gumbel-considered",
            "4",
            "--time-budget",
            "0.05",
            "--gating-games",
            "0",
            "--no-publish",
            "--strength-every",
            "1000",
            "--strength-games",
            "2",
            "--strength-nodes",
            "4",
            "--strength-anchors",
            "random",
        ]
        .map(String::from),
    );
    let out = run_ok(trainer().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = root.join("runs/g");
    let st = state(&run);
    let done = st["iteration"].as_u64().unwrap();
    assert!((1..50).contains(&done), "{done} iterations\n{stderr}");
    assert!(st["wall_s"].as_f64().unwrap() >= 3.0, "{st}");
    assert!(stderr.contains("time budget of 0.05 min spent"), "{stderr}");
    let config: Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["root_rule"], "gumbel");
    assert_eq!(config["gumbel_considered"], 4);
    assert_eq!(config["time_budget"], 0.05);
    // Without a playout cap every searched move is a sample (the two random opening
    // plies of each game are not searched).
    let m = &metrics_lines(&run)[0];
    let (plies, games) = (m["plies"].as_u64().unwrap(), m["games"].as_u64().unwrap());
    assert_eq!(m["positions"].as_u64().unwrap(), plies - 2 * games, "{m}");
    // The iteration that spends the budget is measured and kept as a snapshot, though
    // it is not a multiple of 1000; the ones before it are not measured.
    let lines = metrics_lines(&run);
    let measured = |l: &Value| {
        l.get("strength")
            .is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty()))
    };
    assert!(measured(lines.last().unwrap()), "{:?}", lines.last());
    assert!(run.join(format!("iter-{done:06}.safetensors")).exists());
    for line in &lines[..lines.len() - 1] {
        assert!(!measured(line), "{line}");
    }
    // Started again, a spent budget runs no further iteration.
    run_ok(trainer().args(&args));
    assert_eq!(state(&run)["iteration"].as_u64().unwrap(), done);
}

#[test]
fn tune_logs_each_spsa_step_and_resumes_after_the_last_complete_one() {
    let root = scratch("tune");
    let out = root.join("tune.jsonl");
    let args: Vec<String> = [
        "tune",
        "--param",
        "cpuct,0.5,5,0.5,0.02",
        "--param",
        "fpu_reduction,0,1,0.1",
        "--steps",
        "3",
        "--games",
        "2",
        "--nodes",
        "8",
        "--max-plies",
        "16",
        "--device",
        "cpu",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect();
    run_ok(trainer().args(&args));
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], i as u64 + 1);
        assert_eq!(l["games"], 2);
        let (w, d, lost) = (
            l["wins"].as_i64().unwrap(),
            l["draws"].as_i64().unwrap(),
            l["losses"].as_i64().unwrap(),
        );
        assert_eq!(w + d + lost, 2);
        // The two sides straddle the theta the step started from, and the step moves
        // theta towards the side that won, by a / c per game.
        let before = if i == 0 {
            [1.745, 0.33]
        } else {
            [
                lines[i - 1]["theta"]["cpuct"].as_f64().unwrap(),
                lines[i - 1]["theta"]["fpu_reduction"].as_f64().unwrap(),
            ]
        };
        for (j, name) in ["cpuct", "fpu_reduction"].iter().enumerate() {
            let plus = l["plus"][name].as_f64().unwrap();
            let minus = l["minus"][name].as_f64().unwrap();
            let after = l["theta"][name].as_f64().unwrap();
            assert!((plus + minus - 2.0 * before[j]).abs() < 1e-4, "{name}: {l}");
            let (a, c) = (
                l["a"][name].as_f64().unwrap(),
                l["c"][name].as_f64().unwrap(),
            );
            let flip = (plus - before[j]).signum();
            let want = before[j] + a / c * (w - lost) as f64 * flip;
            assert!(
                (after - want).abs() < 1e-4,
                "{name}: {after} != {want}: {l}"
            );
        }
    }
    // A kill mid-write leaves a cut-short line: started again, the tuner drops it and
    // plays the steps after the last complete one.
    let complete: Vec<&str> = std::fs::read_to_string(&out)
        .unwrap()
        .leak()
        .lines()
        .collect();
    std::fs::write(
        &out,
        format!("{}\n{}\n{{\"step\": 3, \"the", complete[0], complete[1]),
    )
    .unwrap();
    let again = run_ok(trainer().args(&args));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("incomplete"), "{stderr}");
    assert!(stderr.contains("from step 3"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let resumed: Vec<&str> = text.lines().collect();
    assert_eq!(resumed.len(), 3);
    assert_eq!(&resumed[..2], &complete[..2]);
    // Done: a third start plays nothing.
    run_ok(trainer().args(&args));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
    // A parameter that is not a number of the search is an error naming it.
    let mut bad = args.clone();
    bad[2] = "solver,0,1,0.5".to_string();
    let failed = trainer().args(&bad).output().unwrap();
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("solver is not a number"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

#[test]
fn a_run_under_a_time_budget_offers_its_network_once_at_the_end() {
    let root = scratch("budget-publish");
    let mut args = tiny_args(&root, "p", 50);
    args.extend(
        [
            "--time-budget",
            "0.1",
            "--gating-games",
            "0",
            "--strength-every",
            "1",
            "--strength-games",
            "2",
            "--strength-nodes",
            "4",
            "--strength-anchors",
            "random",
            "--publish-games",
            "2",
        ]
        .map(String::from),
    );
    let out = run_ok(trainer().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let done = state(&root.join("runs/p"))["iteration"].as_u64().unwrap();
    let measured = stderr.matches(": measured in").count() as u64;
    assert_eq!(measured, done, "every iteration measured\n{stderr}");
    assert_eq!(
        stderr.matches("publishing match:").count(),
        1,
        "one offer, at the end, after {done} iterations\n{stderr}"
    );
}
