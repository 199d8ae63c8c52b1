//! The built binary with nothing beside it: started in an empty working directory (so no
//! `models/latest.safetensors` can be found there), it must play with the network it
//! carries, also after `setoption name WeightsFile value <embedded>`.

use shakmaty::uci::UciMove;
use shakmaty::Chess;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sends `input` to a fresh copy of `ember` in an empty directory tree (so that neither
/// the working directory nor the executable's `../../` has a `models/` folder) and
/// returns its output.
fn run_ember(input: &str) -> Vec<String> {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ember-embedded-{}-{run}", std::process::id()));
    let bin_dir = dir.join("target").join("release");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let exe = bin_dir.join("ember");
    std::fs::copy(env!("CARGO_BIN_EXE_ember"), &exe).unwrap();
    // A test thread that forks while the copy above is open for writing keeps the file
    // busy for a moment (ETXTBSY): try again then.
    let mut tries = 0;
    let mut child = loop {
        match Command::new(&exe)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.expect("ember starts"),
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .collect();
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).ok();
    lines
}

fn assert_legal_bestmove(lines: &[String]) {
    let best = lines
        .iter()
        .find_map(|l| l.strip_prefix("bestmove "))
        .expect("a bestmove line");
    let mv: UciMove = best.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        mv.to_move(&Chess::default()).is_ok(),
        "illegal bestmove {best}"
    );
}

#[test]
fn embedded_network_is_the_default_without_a_models_folder() {
    let lines = run_ember("uci\nquit\n");
    assert!(
        lines
            .iter()
            .any(|l| l == "option name WeightsFile type string default <embedded>"),
        "{lines:?}"
    );
}

#[test]
fn embedded_network_plays_a_legal_move() {
    // End of input ends the engine only after the search's bestmove (it stops the
    // search, which still answers).
    let lines = run_ember("position startpos\ngo nodes 64\n");
    assert_legal_bestmove(&lines);
}

#[test]
fn weights_file_embedded_reloads_and_plays() {
    let lines =
        run_ember("setoption name WeightsFile value <embedded>\nposition startpos\ngo nodes 64\n");
    assert!(
        !lines.iter().any(|l| l.starts_with("info string error")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("info string loaded network") && l.contains("<embedded>")),
        "{lines:?}"
    );
    assert_legal_bestmove(&lines);
}
