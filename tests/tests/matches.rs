//! `trainer match` and `trainer gauntlet` driven as a user would: games between
//! checkpoints, Stockfish and Ember's own UCI binary, whose PGN python-chess reads back;
//! and small fake UCI engines (tests/fake-engines) that crash, hang, answer with an
//! illegal or malformed move, or overstep their clock, each of which loses its games with
//! the reason recorded while the match goes on to the end.

use candle_core::Device;
use ember_engine::net::{NetConfig, Network};
use ember_tests::binary;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const STOCKFISH: &str = "/usr/games/stockfish";

fn fake(mode: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fake-engines/fake_uci.py");
    format!("uci:python3 {} {mode}", script.display())
}

/// Runs `trainer` with `args`; returns the JSON summary lines and stderr. It must succeed.
fn trainer(args: &[&str]) -> (Vec<Value>, String) {
    let out = Command::new(binary("trainer"))
        .args(args)
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "trainer {args:?} failed:\n{stderr}");
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    (json, stderr)
}

/// (games, results, TerminationDetails tags) of a PGN file, as python-chess reads it.
fn read_pgn(path: &Path) -> (usize, Vec<String>, Vec<String>) {
    let script = r#"
import sys, chess.pgn
f = open(sys.argv[1])
while True:
    g = chess.pgn.read_game(f)
    if g is None:
        break
    if g.errors:
        print("ERROR", g.errors)
    print(g.headers["Result"] + "\t" + g.headers.get("TerminationDetails", ""))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python-chess: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("ERROR"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    (
        lines.len(),
        lines
            .iter()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect(),
        lines
            .iter()
            .filter_map(|l| l.split('\t').nth(1))
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect(),
    )
}

fn tiny_checkpoint(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = dir.join(name);
    Network::new(NetConfig::plain(8, 1), &Device::Cpu, seed)
        .unwrap()
        .save(&path)
        .unwrap();
    path
}

fn results_add_up(json: &Value, games: u64) {
    let sum = json["wins_a"].as_u64().unwrap()
        + json["draws"].as_u64().unwrap()
        + json["losses_a"].as_u64().unwrap();
    assert_eq!(sum, games, "{json}");
    assert_eq!(json["games"], games);
}

/// `trainer match ARGS`, checked for what every match must hold: the results add up to
/// `games` and no game was forfeited. Its summary line.
fn complete_match(args: &[&str], games: u64) -> Value {
    let (json, _) = trainer(&[&["match"], args].concat());
    let summary = json.last().unwrap().clone();
    results_add_up(&summary, games);
    assert!(
        summary["forfeits"].as_array().unwrap().is_empty(),
        "{args:?}: {summary}"
    );
    summary
}

#[test]
fn misbehaving_engines_lose_their_games_and_the_match_finishes() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, limit, expect) in [
        ("crash", ["--nodes", "10"], "crashed"),
        ("illegal", ["--nodes", "10"], "illegal move e2e5"),
        ("malformed", ["--nodes", "10"], "malformed answer"),
        ("hang", ["--movetime", "100"], "sent no move within"),
        ("slow", ["--tc", "1+0"], "ran out of time"),
    ] {
        let pgn = dir.path().join(format!("{mode}.pgn"));
        let b = fake(mode);
        let mut args = vec!["match", "--a", "random", "--b", &b, "--games", "2"];
        args.extend(limit);
        args.extend(["--pgn", pgn.to_str().unwrap()]);
        let (json, _) = trainer(&args);
        let summary = json.last().expect("a JSON summary");
        results_add_up(summary, 2);
        assert_eq!(summary["wins_a"], 2, "{mode}: {summary}");
        let forfeits = summary["forfeits"].as_array().unwrap();
        assert_eq!(forfeits.len(), 2, "{mode}: {summary}");
        for f in forfeits {
            assert!(
                f["reason"].as_str().unwrap().contains(expect),
                "{mode}: {f}"
            );
        }
        let (games, results, details) = read_pgn(&pgn);
        assert_eq!(games, 2);
        // Random has White in game 1 and Black in game 2; it wins both.
        assert_eq!(results, ["1-0", "0-1"], "{mode}");
        assert!(
            details.iter().all(|d| d.contains(expect)),
            "{mode}: {details:?}"
        );
    }
}

#[test]
fn checkpoints_stockfish_and_the_ember_binary_play_complete_games() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_checkpoint(dir.path(), "a.safetensors", 1);
    let b = tiny_checkpoint(dir.path(), "b.safetensors", 2);
    let ember = format!("uci:{};Threads=1", binary("ember").display());
    let stockfish = format!("uci:{STOCKFISH};Skill Level=0;Threads=1");
    let mut opponents = vec![format!("ember:{}", b.display()), ember];
    if Path::new(STOCKFISH).exists() {
        opponents.push(stockfish);
    } else {
        eprintln!("warning: {STOCKFISH} is missing; the game against Stockfish is skipped");
    }
    for (i, opponent) in opponents.iter().enumerate() {
        let pgn = dir.path().join(format!("{i}.pgn"));
        let a_spec = format!("ember:{}", a.display());
        let summary = complete_match(
            &[
                "--a",
                &a_spec,
                "--b",
                opponent,
                "--games",
                "2",
                "--nodes",
                "16",
                "--max-plies",
                "80",
                "--pgn",
                pgn.to_str().unwrap(),
            ],
            2,
        );
        let (games, results, _) = read_pgn(&pgn);
        assert_eq!(games, 2, "{opponent}");
        // The PGN results agree with the score from A's side (A is White in game 1).
        let score_a: f64 = results
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let white = match r.as_str() {
                    "1-0" => 1.0,
                    "0-1" => 0.0,
                    _ => 0.5,
                };
                if k == 0 {
                    white
                } else {
                    1.0 - white
                }
            })
            .sum::<f64>()
            / 2.0;
        assert_eq!(score_a, summary["score_a"].as_f64().unwrap(), "{opponent}");
    }
}

#[test]
fn a_gauntlet_prints_one_table_row_per_opponent() {
    let out = Command::new(binary("trainer"))
        .args([
            "gauntlet",
            "--player",
            "greedy",
            "--opponents",
            "random,greedy",
            "--games",
            "4",
            "--nodes",
            "1",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("opponent"))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(
        rows[0].contains("random") && rows[1].contains("greedy"),
        "{stdout}"
    );
    let json: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(json.len(), 2);
    for j in &json {
        results_add_up(j, 4);
    }
}

/// (games, castling moves, games tagged Chess960) of a PGN file, replayed by python-chess
/// move by move (an illegal move is an error).
fn read_chess960_pgn(path: &Path) -> (usize, usize, usize) {
    let script = r#"
import sys, chess.pgn
f = open(sys.argv[1])
games = castles = tagged = 0
while True:
    g = chess.pgn.read_game(f)
    if g is None:
        break
    assert not g.errors, g.errors
    games += 1
    tagged += g.headers.get("Variant") == "Chess960"
    board = g.board()
    for move in g.mainline_moves():
        assert board.is_legal(move), (board.fen(), move)
        castles += board.is_castling(move)
        board.push(move)
print(games, castles, tagged)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python-chess: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let n: Vec<usize> = text
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

#[test]
fn chess960_matches_tell_engines_and_write_castling_as_the_king_taking_its_rook() {
    let dir = tempfile::tempdir().unwrap();
    let castler = fake("castle960");
    // The fake engine forfeits a game whose castling arrives in the wrong notation, whose
    // moves are not legal, or whose Chess960 start came without UCI_Chess960; it castles
    // as soon as it can. A standard match must not switch it to Chess960 either.
    for (chess960, against) in [(true, "greedy"), (true, "random"), (false, "greedy")] {
        let pgn = dir.path().join(format!("{chess960}-{against}.pgn"));
        let mut args = vec![
            "--a",
            &castler,
            "--b",
            against,
            "--games",
            "8",
            "--nodes",
            "1",
            "--max-plies",
            "120",
            "--pgn",
        ];
        let pgn_text = pgn.to_str().unwrap().to_string();
        args.push(&pgn_text);
        if chess960 {
            args.push("--chess960");
        }
        complete_match(&args, 8);
        let (games, castles, tagged) = read_chess960_pgn(&pgn);
        assert_eq!(games, 8);
        assert_eq!(tagged, if chess960 { 8 } else { 0 });
        assert!(
            castles >= 4,
            "{chess960} {against}: {castles} castling moves"
        );
    }
    // Ember's network, Ember's UCI binary and Stockfish in Chess960.
    let a = tiny_checkpoint(dir.path(), "a.safetensors", 1);
    let a_spec = format!("ember:{}", a.display());
    let mut opponents = vec![format!("uci:{};Threads=1", binary("ember").display())];
    if Path::new(STOCKFISH).exists() {
        opponents.push(format!("uci:{STOCKFISH};Skill Level=0;Threads=1"));
    }
    for (i, opponent) in opponents.iter().enumerate() {
        let pgn = dir.path().join(format!("ember-{i}.pgn"));
        complete_match(
            &[
                "--a",
                &a_spec,
                "--b",
                opponent,
                "--chess960",
                "--games",
                "4",
                "--nodes",
                "16",
                "--max-plies",
                "100",
                "--pgn",
                pgn.to_str().unwrap(),
            ],
            4,
        );
        let (games, _, tagged) = read_chess960_pgn(&pgn);
        assert_eq!((games, tagged), (4, 4), "{opponent}");
    }
}
