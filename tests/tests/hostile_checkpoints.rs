//! Hostile checkpoint files against every reader: the engine library, the UCI engine
//! `ember` (which must keep its network and keep answering) and the trainer (which must
//! exit non-zero with nothing in the run folder changed). Nothing may abort, and every
//! error is one line naming the file and what is wrong with it.

use candle_core::Device;
use ember_engine::net::{NetConfig, Network};
use ember_tests::{binary, files_under, hostile_checkpoints, Hostile};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A valid 64x3 checkpoint with a checksum, iteration 7.
fn good_checkpoint() -> Vec<u8> {
    let mut net = Network::new(NetConfig::default(), &Device::Cpu, 3).unwrap();
    net.iteration = 7;
    net.to_bytes().unwrap()
}

fn cases(dir: &Path) -> Vec<(Hostile, std::path::PathBuf)> {
    hostile_checkpoints(&good_checkpoint())
        .into_iter()
        .map(|h| {
            let path = dir.join(format!("{}.safetensors", h.name));
            std::fs::write(&path, &h.bytes).unwrap();
            (h, path)
        })
        .collect()
}

#[test]
fn the_library_refuses_each_hostile_file_in_one_line_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Network::from_bytes(&good_checkpoint(), None, &Device::Cpu, "good").is_ok());
    for (h, path) in cases(dir.path()) {
        let err = match Network::load(&path, None, &Device::Cpu) {
            Ok(_) => panic!("{} was accepted", h.name),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(&path.display().to_string()),
            "{}: {err}",
            h.name
        );
        assert!(
            err.contains(h.error),
            "{}: expected {:?} in {err}",
            h.name,
            h.error
        );
        assert!(!err.contains('\n'), "{}: more than one line: {err}", h.name);
    }
    for (what, path, expect) in [
        ("a directory", dir.path().to_path_buf(), "is a directory"),
        (
            "/dev/zero",
            Path::new("/dev/zero").to_path_buf(),
            "not a regular file",
        ),
        (
            "a missing file",
            dir.path().join("nothing.safetensors"),
            "does not exist",
        ),
    ] {
        let err = format!(
            "{:#}",
            Network::load(&path, None, &Device::Cpu).err().unwrap()
        );
        assert!(err.contains(expect), "{what}: {err}");
    }
}

/// Sends lines to `ember` and collects its answers up to (and including) the line that
/// starts with `until`, or fails after a timeout.
struct Ember {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Ember {
    fn start(cwd: &Path) -> Ember {
        let mut child = Command::new(binary("ember"))
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ember { child, lines }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn until(&mut self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let done = line.starts_with(prefix);
                    out.push(line);
                    if done {
                        return out;
                    }
                }
                Err(_) => panic!("no `{prefix}` from ember; got {out:?}"),
            }
        }
    }

    fn quit(mut self) {
        self.send("quit");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "ember exited with {status}");
    }
}

#[test]
fn ember_keeps_its_network_and_keeps_answering_after_each_hostile_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    std::fs::write(&good, good_checkpoint()).unwrap();
    let mut ember = Ember::start(dir.path());
    ember.send("uci");
    ember.until("uciok");
    ember.send(&format!(
        "setoption name WeightsFile value {}",
        good.display()
    ));
    ember.send("isready");
    let lines = ember.until("readyok");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("loaded network 64x3 (training iteration 7)")),
        "{lines:?}"
    );
    let mut hostile: Vec<(String, &str)> = cases(dir.path())
        .into_iter()
        .map(|(h, p)| (p.display().to_string(), h.error))
        .collect();
    hostile.push((dir.path().display().to_string(), "is a directory"));
    hostile.push(("/dev/zero".to_string(), "not a regular file"));
    for (path, expect) in &hostile {
        ember.send(&format!("setoption name WeightsFile value {path}"));
        ember.send("isready");
        let lines = ember.until("readyok");
        let errors: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("info string error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{path}: {lines:?}");
        assert!(errors[0].contains(path.as_str()), "{path}: {lines:?}");
        assert!(
            errors[0].contains(expect),
            "{path}: expected {expect:?}: {lines:?}"
        );
        assert!(
            errors[0].contains("keeping the current network"),
            "{lines:?}"
        );
        ember.send("position startpos moves e2e4");
        ember.send("go nodes 16");
        let lines = ember.until("bestmove");
        let best = lines.last().unwrap();
        assert!(
            best.split_whitespace().nth(1).is_some_and(|m| m.len() >= 4),
            "{lines:?}"
        );
    }
    // The network it plays with is still the good one.
    ember.send("setoption name WeightsFile value <embedded>");
    ember.send("isready");
    ember.until("readyok");
    ember.quit();
}

#[test]
fn ember_says_in_info_string_why_a_corrupt_published_network_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    let good = good_checkpoint();
    let mut corrupt = good.clone();
    corrupt.truncate(good.len() / 2);
    std::fs::write(dir.path().join("models/latest.safetensors"), &corrupt).unwrap();
    let mut ember = Ember::start(dir.path());
    ember.send("uci");
    let lines = ember.until("uciok");
    let info: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("info string"))
        .collect();
    assert!(
        info.iter().any(|l| l.starts_with("info string error:")
            && l.contains("models/latest.safetensors")
            && l.contains("corrupt or truncated")
            && l.contains("playing with the embedded network")),
        "{lines:?}"
    );
    assert!(
        info.iter().any(|l| *l
            == "info string network 64x3 (training iteration 64, run gpu) from <embedded> on cpu"),
        "{lines:?}"
    );
    ember.quit();

    // A good published network is named with its architecture and iteration.
    std::fs::write(dir.path().join("models/latest.safetensors"), &good).unwrap();
    let mut ember = Ember::start(dir.path());
    ember.send("uci");
    let lines = ember.until("uciok");
    assert!(
        lines.iter().any(|l| l
            == "info string network 64x3 (training iteration 7) from models/latest.safetensors on cpu"),
        "{lines:?}"
    );
    ember.quit();

    // A network a run trained is named with its run too; a run name cannot break the line.
    let mut net = Network::new(NetConfig::default(), &Device::Cpu, 3).unwrap();
    net.iteration = 12;
    net.run = Some("dev\nbestmove a2a3".into());
    std::fs::write(
        dir.path().join("models/latest.safetensors"),
        net.to_bytes().unwrap(),
    )
    .unwrap();
    let mut ember = Ember::start(dir.path());
    ember.send("uci");
    let lines = ember.until("uciok");
    assert!(
        lines.iter().any(|l| l
            == "info string network 64x3 (training iteration 12, run devbestmove a2a3) from models/latest.safetensors on cpu"),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("bestmove")),
        "{lines:?}"
    );
    ember.quit();
}

#[test]
fn the_trainer_refuses_each_hostile_checkpoint_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let models = dir.path().join("models");
    let trainer = |extra: &[&str]| {
        let mut cmd = Command::new(binary("trainer"));
        cmd.args(["--run", "r", "--runs-dir"])
            .arg(&runs)
            .arg("--models-dir")
            .arg(&models)
            .args(["--preset", "quick", "--seed", "1"])
            .args(extra);
        cmd.output().unwrap()
    };
    // A run folder with its initial 64x3 networks and no iterations yet.
    let made = trainer(&["--iterations", "0"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let best = runs.join("r/best.safetensors");
    let hostile = hostile_checkpoints(&good_checkpoint());
    for h in &hostile {
        std::fs::write(&best, &h.bytes).unwrap();
        let before = files_under(dir.path());
        let out = trainer(&["--iterations", "1", "--games", "2", "--simulations", "4"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", h.name);
        let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error.len(), 1, "{}: {stderr}", h.name);
        assert!(
            error[0].contains(&best.display().to_string()),
            "{}: {stderr}",
            h.name
        );
        assert!(
            h.explained_by(error[0]),
            "{}: expected {:?}: {stderr}",
            h.name,
            h.error
        );
        assert!(
            before == files_under(dir.path()),
            "{}: the trainer changed files",
            h.name
        );
    }
    // `trainer match` and `trainer export` refuse them too.
    let file = dir.path().join("hostile.safetensors");
    for h in &hostile {
        std::fs::write(&file, &h.bytes).unwrap();
        for args in [
            vec!["match", "--games", "1", "--simulations", "2", "--b"],
            vec![
                "export",
                "--to",
                "/nonexistent/x.safetensors",
                "--checkpoint",
            ],
        ] {
            let mut cmd = Command::new(binary("trainer"));
            cmd.args(&args).arg(&file);
            if args[0] == "match" {
                cmd.arg("--a").arg(&file);
            }
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{} {}: {stderr}",
                args[0],
                h.name
            );
            assert!(h.explained_by(&stderr), "{} {}: {stderr}", args[0], h.name);
        }
    }
}
