//! The run folder `runs/NAME/` and what makes it survive a kill at any moment.
//!
//! `state.json` is the commit record: an iteration is complete once `state.json` says so.
//! The files the next iteration reads (`latest`, `best`, `train_state`) are first written
//! into `pending-NNNNNN/`; after `state.json` is written they are renamed into place. On
//! start, a pending folder of a committed iteration is rolled forward, one of an
//! uncommitted iteration is deleted, and so are replay shards and games the state does
//! not list: the run goes on from the last complete iteration with all its data.
//!
//! One trainer at a time owns a run folder: [`RunLock`] holds an exclusive lock on
//! `runs/NAME/lock` for the life of the process; the operating system drops it when the
//! process ends however it ends, so a crashed owner never leaves the folder stuck.
//!
//! ```text
//! runs/NAME/lock  config.json  state.json  metrics.jsonl  progress.svg
//!           best.safetensors  latest.safetensors  train_state.safetensors  iter-NNNNNN.safetensors
//!           replay/iter-NNNNNN.shard   games/iter-NNNNNN.pgn  games/gating-NNNNNN.pgn
//! ```

use crate::files::{sweep_temporaries, sync_dir, write_atomic, Sweep};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

const STATE_FORMAT: &str = "ember-run-state";
const STATE_VERSION: u32 = 1;

/// Files committed through the pending folder, in the order they are moved into place.
pub const JOURNALED: [&str; 3] = [
    "train_state.safetensors",
    "latest.safetensors",
    "best.safetensors",
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    pub format: String,
    pub version: u32,
    /// Last complete iteration (0: none yet).
    pub iteration: u64,
    /// The run's seed; every iteration's random streams derive from it and the iteration.
    pub seed: u64,
    /// Replay shards of complete iterations (file names in `replay/`), oldest first.
    pub shards: Vec<String>,
    /// Shards of self-play workers a learner has trained on (names in `shards/`, see
    /// [`super::exchange`]), in the order it took them.
    #[serde(default)]
    pub worker_shards: Vec<String>,
    pub positions_total: u64,
    pub games_total: u64,
    pub trainer_steps: u64,
    /// Sum of the gating Elo differences of promoted candidates.
    pub cumulative_elo: f64,
    /// Iteration whose candidate is the best network (0: the initial network).
    pub best_iteration: u64,
    /// The best network last offered for publishing (the iteration that made it), whether
    /// or not it won its publishing match; a network is offered once.
    #[serde(default)]
    pub offered: Option<u64>,
    /// Wall time of the completed iterations, in seconds (for a time budget).
    #[serde(default)]
    pub wall_s: f64,
}

impl RunState {
    pub fn new(seed: u64) -> RunState {
        RunState {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            iteration: 0,
            seed,
            shards: Vec::new(),
            worker_shards: Vec::new(),
            positions_total: 0,
            games_total: 0,
            trainer_steps: 0,
            cumulative_elo: 0.0,
            best_iteration: 0,
            offered: None,
            wall_s: 0.0,
        }
    }
}

/// The exclusive lock on a run folder, held until dropped (or the process ends).
pub struct RunLock {
    _file: File,
}

/// Paths inside one run folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(runs_dir: &Path, name: &str) -> Result<RunDir> {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            bail!("--run {name:?} is not a folder name");
        }
        Ok(RunDir {
            root: runs_dir.join(name),
        })
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    pub fn config(&self) -> PathBuf {
        self.file("config.json")
    }
    pub fn state(&self) -> PathBuf {
        self.file("state.json")
    }
    pub fn best(&self) -> PathBuf {
        self.file("best.safetensors")
    }
    pub fn latest(&self) -> PathBuf {
        self.file("latest.safetensors")
    }
    pub fn train_state(&self) -> PathBuf {
        self.file("train_state.safetensors")
    }
    pub fn metrics(&self) -> PathBuf {
        self.file("metrics.jsonl")
    }
    pub fn plot(&self) -> PathBuf {
        self.file("progress.svg")
    }
    pub fn replay(&self) -> PathBuf {
        self.file("replay")
    }
    pub fn games(&self) -> PathBuf {
        self.file("games")
    }
    pub fn shard_name(iteration: u64) -> String {
        format!("iter-{iteration:06}.shard")
    }
    pub fn selfplay_pgn(&self, iteration: u64) -> PathBuf {
        self.games().join(format!("iter-{iteration:06}.pgn"))
    }
    pub fn gating_pgn(&self, iteration: u64) -> PathBuf {
        self.games().join(format!("gating-{iteration:06}.pgn"))
    }
    pub fn snapshot(&self, iteration: u64) -> PathBuf {
        self.file(&format!("iter-{iteration:06}.safetensors"))
    }
    pub fn pending(&self, iteration: u64) -> PathBuf {
        self.file(&format!("pending-{iteration:06}"))
    }

    pub fn exists(&self) -> bool {
        self.state().exists() || self.config().exists()
    }

    /// Takes the run folder's lock (creating the folder), or says which process holds it.
    pub fn lock(&self) -> Result<RunLock> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let path = self.file("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                bail!(
                    "{} is in use by another trainer{}; wait for it to finish or stop it",
                    self.root.display(),
                    if owner.is_empty() {
                        String::new()
                    } else {
                        format!(" ({owner})")
                    }
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        // Who holds it, for the message a second trainer prints.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "process {}", std::process::id());
        let _ = file.flush();
        Ok(RunLock { _file: file })
    }

    /// Files that only a run which has committed iterations writes: checkpoints of
    /// iterations after 0, replay shards, metrics, games. Found in a folder without
    /// `state.json`, they mean the state was lost, and starting over would overwrite them.
    pub fn orphaned_data(&self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for entry in list(&self.root)? {
            let name = file_name(&entry);
            let committed_checkpoint = name == "train_state.safetensors"
                || name
                    .strip_prefix("iter-")
                    .and_then(|s| s.strip_suffix(".safetensors"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|i| i > 0)
                || name == "metrics.jsonl";
            if committed_checkpoint {
                found.push(name);
            }
        }
        for dir in [self.replay(), self.games()] {
            for entry in list(&dir)? {
                let name = file_name(&entry);
                if !name.starts_with('.') {
                    found.push(format!("{}/{name}", file_name(&dir)));
                }
            }
        }
        Ok(found)
    }

    /// Removes the temporary files of interrupted atomic writes in the folder and its
    /// `replay/` and `games/`: all of them, since the caller holds the folder's lock.
    /// Returns what was removed, for the log.
    pub fn sweep_temporaries(&self, _lock: &RunLock) -> Vec<String> {
        let mut removed = Vec::new();
        for dir in [self.root.clone(), self.replay(), self.games()] {
            for name in sweep_temporaries(&dir, Sweep::Exclusive) {
                removed.push(self.relative(&dir.join(name)));
            }
        }
        removed
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    pub fn create_folders(&self) -> Result<()> {
        for d in [self.root.clone(), self.replay(), self.games()] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }

    /// The run's saved configuration (the trainer's own type).
    pub fn read_config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        read_json(&self.config())
    }

    pub fn write_config<T: Serialize>(&self, cfg: &T) -> Result<()> {
        write_json(&self.config(), cfg)
    }

    pub fn read_state(&self) -> Result<Option<RunState>> {
        if !self.state().exists() {
            return Ok(None);
        }
        let state: RunState = read_json(&self.state())?;
        if state.format != STATE_FORMAT || state.version != STATE_VERSION {
            bail!(
                "{}: format {:?} version {}, this build reads {STATE_FORMAT:?} version {STATE_VERSION}",
                self.state().display(),
                state.format,
                state.version
            );
        }
        Ok(Some(state))
    }

    /// The commit point of an iteration.
    pub fn write_state(&self, state: &RunState) -> Result<()> {
        write_json(&self.state(), state)
    }

    /// Moves a committed iteration's pending files into place.
    pub fn roll_forward(&self, iteration: u64) -> Result<Vec<&'static str>> {
        let pending = self.pending(iteration);
        let mut moved = Vec::new();
        for name in JOURNALED {
            let from = pending.join(name);
            if from.exists() {
                let to = self.file(name);
                std::fs::rename(&from, &to)
                    .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
                moved.push(name);
            }
        }
        sync_dir(&self.root);
        std::fs::remove_dir_all(&pending)
            .with_context(|| format!("removing {}", pending.display()))?;
        Ok(moved)
    }

    /// Brings the folder back to the last complete iteration: finishes its commit, and
    /// deletes what an interrupted iteration left behind (its temporary files go with
    /// [`Self::sweep_temporaries`]). Returns what was done, for the log.
    pub fn recover(&self, state: &RunState) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for entry in list(&self.root)? {
            let name = file_name(&entry);
            let Some(n) = name
                .strip_prefix("pending-")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if n <= state.iteration {
                let moved = self.roll_forward(n)?;
                notes.push(format!(
                    "finished committing iteration {n} ({})",
                    moved.join(", ")
                ));
            } else {
                std::fs::remove_dir_all(&entry)
                    .with_context(|| format!("removing {}", entry.display()))?;
                notes.push(format!(
                    "discarded the unfinished checkpoints of iteration {n}"
                ));
            }
        }
        for entry in list(&self.replay())? {
            let name = file_name(&entry);
            if !state.shards.contains(&name) {
                std::fs::remove_file(&entry)
                    .with_context(|| format!("removing {}", entry.display()))?;
                notes.push(format!(
                    "discarded replay/{name} of an unfinished iteration"
                ));
            }
        }
        for entry in list(&self.games())? {
            let name = file_name(&entry);
            let iteration = name
                .strip_suffix(".pgn")
                .and_then(|s| s.rsplit('-').next())
                .and_then(|n| n.parse::<u64>().ok());
            if iteration.is_some_and(|i| i > state.iteration) {
                std::fs::remove_file(&entry).ok();
            }
        }
        for entry in list(&self.root)? {
            let name = file_name(&entry);
            let snapshot = name
                .strip_prefix("iter-")
                .and_then(|s| s.strip_suffix(".safetensors"))
                .and_then(|n| n.parse::<u64>().ok());
            if snapshot.is_some_and(|i| i > state.iteration) {
                std::fs::remove_file(&entry).ok();
            }
        }
        Ok(notes)
    }
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = crate::files::read_bounded(path, crate::files::MAX_JSON_BYTES, "a JSON record")?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_run(tag: &str) -> RunDir {
        let root =
            std::env::temp_dir().join(format!("ember-run-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = RunDir { root };
        dir.create_folders().unwrap();
        dir
    }

    #[test]
    fn recovery_rolls_a_committed_iteration_forward() {
        let dir = temp_run("forward");
        std::fs::create_dir_all(dir.pending(2)).unwrap();
        std::fs::write(dir.pending(2).join("best.safetensors"), b"new").unwrap();
        std::fs::write(dir.best(), b"old").unwrap();
        let state = RunState {
            iteration: 2,
            ..RunState::new(1)
        };
        dir.recover(&state).unwrap();
        assert_eq!(std::fs::read(dir.best()).unwrap(), b"new");
        assert!(!dir.pending(2).exists());
        std::fs::remove_dir_all(&dir.root).ok();
    }

    #[test]
    fn recovery_discards_an_unfinished_iteration_and_keeps_listed_shards() {
        let dir = temp_run("discard");
        std::fs::create_dir_all(dir.pending(3)).unwrap();
        std::fs::write(dir.pending(3).join("best.safetensors"), b"new").unwrap();
        std::fs::write(dir.best(), b"old").unwrap();
        for name in [
            "iter-000001.shard",
            "iter-000002.shard",
            "iter-000003.partial",
            "iter-000003.shard",
        ] {
            std::fs::write(dir.replay().join(name), b"x").unwrap();
        }
        let state = RunState {
            iteration: 2,
            shards: vec!["iter-000001.shard".into(), "iter-000002.shard".into()],
            ..RunState::new(1)
        };
        dir.recover(&state).unwrap();
        assert_eq!(std::fs::read(dir.best()).unwrap(), b"old");
        assert!(!dir.pending(3).exists());
        let left: Vec<String> = list(&dir.replay())
            .unwrap()
            .iter()
            .map(|p| file_name(p))
            .collect();
        assert_eq!(left, state.shards);
        std::fs::remove_dir_all(&dir.root).ok();
    }
}
