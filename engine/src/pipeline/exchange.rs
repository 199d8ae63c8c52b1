//! The meeting point of distributed self-play: a run folder on storage that self-play
//! workers and one learner share (a local disk, or a network filesystem such as NFS, EFS
//! or Filestore mounted on every machine). Nothing else connects them.
//!
//! ```text
//! RUN/config.json                      the run's configuration (the learner writes it)
//!     published.json                   which network to play with: {"version": V, "network": "networks/net-V.safetensors"}
//!     networks/net-NNNNNN.safetensors  published networks, never rewritten
//!     shards/WORKER-SEQ.shard          a batch of finished games' training samples
//!     shards/WORKER-SEQ.json           its record: the network version it was played with, games, positions, results
//!     games/WORKER-SEQ.pgn             the batch's games
//! ```
//!
//! - Every file appears under its name complete or not at all (written beside it, then
//!   renamed), and a shard counts only once its `.json` record exists, which is written
//!   after the shard. So a worker killed at any moment leaves nothing a reader takes for
//!   data: at most a `.partial` or `.tmp` file, which the worker removes when it starts
//!   again under the same id and the learner removes once it is an hour old.
//! - Shards are named by worker id and sequence number, so no two writers share a name;
//!   a worker starting again under the same id goes on after its last complete shard.
//! - The learner records the shards it has trained on in its `state.json` (see
//!   [`super::run`]): a shard is taken into the replay window exactly once, also across a
//!   kill of the learner.

use super::run::{read_json, write_json};
use crate::files::write_atomic;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const META_FORMAT: &str = "ember-shard";
const PUBLISHED_FORMAT: &str = "ember-published";

/// The network workers should play with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Published {
    pub format: String,
    /// The learner's iteration that trained it (0: the initial network).
    pub version: u64,
    /// Its file, relative to the run folder.
    pub network: String,
}

/// The record of one shard: who played it, with which network, and what it holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ShardMeta {
    pub format: String,
    pub worker: String,
    pub seq: u64,
    /// The published network version the games were played with.
    pub network_version: u64,
    pub games: usize,
    /// Moves searched (every move of every game, recorded or not).
    pub positions: usize,
    /// Training samples in the shard.
    pub samples: usize,
    pub plies: Vec<usize>,
    pub terminations: BTreeMap<String, usize>,
    pub white_wins: usize,
    pub black_wins: usize,
    pub draws: usize,
    pub resigned: usize,
    pub resign_checked: usize,
    pub resign_false_positives: usize,
    pub evaluations: u64,
    /// Seconds the worker spent playing the batch.
    pub wall_s: f64,
}

/// A run folder seen as the exchange between workers and the learner.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub root: PathBuf,
}

impl Exchange {
    pub fn new(root: &Path) -> Exchange {
        Exchange {
            root: root.to_path_buf(),
        }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    fn published_file(&self) -> PathBuf {
        self.root.join("published.json")
    }
    pub fn shards(&self) -> PathBuf {
        self.root.join("shards")
    }
    pub fn games(&self) -> PathBuf {
        self.root.join("games")
    }
    /// `shards/NAME.shard` for a shard named `WORKER-SEQ`.
    pub fn shard_path(&self, name: &str) -> PathBuf {
        self.shards().join(format!("{name}.shard"))
    }
    fn meta_path(&self, name: &str) -> PathBuf {
        self.shards().join(format!("{name}.json"))
    }
    pub fn pgn_path(&self, name: &str) -> PathBuf {
        self.games().join(format!("{name}.pgn"))
    }

    /// Publishes `bytes` (a checkpoint) as network `version`: the file first, then the
    /// pointer, so a worker that reads the pointer always finds the file.
    pub fn publish(&self, version: u64, bytes: &[u8]) -> Result<()> {
        let network = format!("networks/net-{version:06}.safetensors");
        write_atomic(&self.root.join(&network), bytes)?;
        write_json(
            &self.published_file(),
            &Published {
                format: PUBLISHED_FORMAT.into(),
                version,
                network,
            },
        )
    }

    /// The network to play with, if one is published yet.
    pub fn published(&self) -> Result<Option<Published>> {
        let path = self.published_file();
        if !path.exists() {
            return Ok(None);
        }
        let p: Published = read_json(&path)?;
        if p.format != PUBLISHED_FORMAT
            || p.network.contains("..")
            || Path::new(&p.network).is_absolute()
        {
            bail!("{}: not a published-network record", path.display());
        }
        Ok(Some(p))
    }

    /// The bytes of a published network.
    pub fn read_network(&self, p: &Published) -> Result<Vec<u8>> {
        let path = self.root.join(&p.network);
        crate::files::read_bounded(&path, crate::net::checkpoint::MAX_CHECKPOINT_BYTES, "a network")
    }

    /// Removes published networks older than the newest `keep` (workers read only the newest).
    pub fn prune_networks(&self, newest: u64, keep: u64) {
        let Ok(entries) = std::fs::read_dir(self.root.join("networks")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name
                .strip_prefix("net-")
                .and_then(|n| n.strip_suffix(".safetensors"))
                .and_then(|n| n.parse::<u64>().ok());
            if version.is_some_and(|v| v + keep <= newest) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The complete shards (those with a record), by name, in name order.
    pub fn complete_shards(&self) -> Result<Vec<String>> {
        let dir = self.shards();
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (!name.starts_with('.'))
                    .then(|| name.strip_suffix(".json").map(str::to_string))
                    .flatten()
            })
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn read_meta(&self, name: &str) -> Result<ShardMeta> {
        let meta: ShardMeta = read_json(&self.meta_path(name))?;
        if meta.format != META_FORMAT {
            bail!("{}: not a shard record", self.meta_path(name).display());
        }
        Ok(meta)
    }

    /// Commits a shard the worker has finished writing at [`Self::shard_path`]: its
    /// record makes it visible to the learner.
    pub fn commit_shard(&self, meta: &ShardMeta) -> Result<String> {
        let name = shard_name(&meta.worker, meta.seq);
        let mut meta = meta.clone();
        meta.format = META_FORMAT.into();
        write_json(&self.meta_path(&name), &meta)?;
        Ok(name)
    }

    /// The sequence number a worker's next shard gets: one after its last complete one.
    pub fn next_seq(&self, worker: &str) -> Result<u64> {
        let prefix = format!("{worker}-");
        Ok(self
            .complete_shards()?
            .iter()
            .filter_map(|n| n.strip_prefix(&prefix)?.parse::<u64>().ok())
            .max()
            .map_or(1, |s| s + 1))
    }

    /// Removes unfinished files in `shards/` and `games/`: those of `worker` (a worker
    /// starting again under its id: its earlier process is gone), or, with no worker,
    /// those older than `max_age` (the learner: a writer that old is gone). Returns the
    /// names removed.
    pub fn sweep_unfinished(&self, worker: Option<&str>, max_age: Duration) -> Vec<String> {
        let mut removed = Vec::new();
        for dir in [self.shards(), self.games()] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let unfinished = name.ends_with(".partial") || name.ends_with(".tmp");
                if !unfinished {
                    continue;
                }
                let stale = match worker {
                    Some(w) => name.trim_start_matches('.').starts_with(&format!("{w}-")),
                    None => e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age >= max_age),
                };
                if stale && std::fs::remove_file(e.path()).is_ok() {
                    removed.push(name);
                }
            }
        }
        removed.sort();
        removed
    }
}

/// `WORKER-000012`.
pub fn shard_name(worker: &str, seq: u64) -> String {
    format!("{worker}-{seq:06}")
}

/// A worker id is used in file names: letters, digits, `_` and `.` only (no `-`, which
/// separates it from the sequence number), 1-64 characters.
pub fn check_worker_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !ok {
        bail!("worker id {id:?}: use 1-64 letters, digits, '_' or '.' (not starting with '.')");
    }
    Ok(())
}

/// Runs `op` until it succeeds, waiting 0.5 s, 1 s, 2 s ... (at most 30 s) between tries,
/// for `attempts` tries in all: storage that is briefly away (a network filesystem
/// failing over) is waited for, one that stays away is reported.
pub fn with_retry<T>(what: &str, attempts: u32, mut op: impl FnMut() -> Result<T>) -> Result<T> {
    let mut wait = Duration::from_millis(500);
    let mut tries = 0;
    loop {
        tries += 1;
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if tries < attempts.max(1) => {
                log::warn!(
                    "{what} failed (try {tries} of {attempts}), retrying in {:.1}s: {e:#}",
                    wait.as_secs_f64()
                );
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e.context(format!("{what}: gave up after {tries} tries"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> Exchange {
        let root = std::env::temp_dir().join(format!("ember-exchange-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("shards")).unwrap();
        Exchange::new(&root)
    }

    #[test]
    fn a_shard_counts_only_once_its_record_exists() {
        let x = temp("record");
        std::fs::write(x.shard_path("w1-000001"), b"data").unwrap();
        std::fs::write(x.shards().join("w1-000002.shard.partial"), b"half").unwrap();
        assert!(x.complete_shards().unwrap().is_empty());
        assert_eq!(x.next_seq("w1").unwrap(), 1);
        let meta = ShardMeta {
            worker: "w1".into(),
            seq: 1,
            games: 3,
            ..Default::default()
        };
        assert_eq!(x.commit_shard(&meta).unwrap(), "w1-000001");
        assert_eq!(x.complete_shards().unwrap(), vec!["w1-000001".to_string()]);
        assert_eq!(x.read_meta("w1-000001").unwrap().games, 3);
        assert_eq!(x.next_seq("w1").unwrap(), 2);
        assert_eq!(x.next_seq("w2").unwrap(), 1);
        // The worker starting again removes its own unfinished shard, not another's.
        std::fs::write(x.shards().join("w2-000001.shard.partial"), b"half").unwrap();
        let removed = x.sweep_unfinished(Some("w1"), Duration::ZERO);
        assert_eq!(removed, vec!["w1-000002.shard.partial".to_string()]);
        assert!(x.shards().join("w2-000001.shard.partial").exists());
        std::fs::remove_dir_all(&x.root).ok();
    }

    #[test]
    fn published_network_is_found_through_its_pointer() {
        let x = temp("publish");
        assert!(x.published().unwrap().is_none());
        x.publish(0, b"net0").unwrap();
        x.publish(3, b"net3").unwrap();
        let p = x.published().unwrap().unwrap();
        assert_eq!(p.version, 3);
        assert_eq!(std::fs::read(x.root.join(&p.network)).unwrap(), b"net3");
        x.prune_networks(3, 1);
        assert!(!x.root.join("networks/net-000000.safetensors").exists());
        assert!(x.root.join(&p.network).exists());
        std::fs::remove_dir_all(&x.root).ok();
    }

    #[test]
    fn worker_ids_cannot_escape_or_collide_with_the_sequence() {
        assert!(check_worker_id("host1.4821").is_ok());
        for bad in ["", "a-b", "../x", "a/b", ".hidden"] {
            assert!(check_worker_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_gives_up_after_the_attempts_and_says_so() {
        let mut calls = 0;
        let r: Result<()> = with_retry("reading x", 2, || {
            calls += 1;
            bail!("unavailable")
        });
        assert_eq!(calls, 2);
        assert!(format!("{:#}", r.unwrap_err()).contains("gave up after 2 tries"));
        let mut calls = 0;
        let v = with_retry("reading y", 3, || {
            calls += 1;
            if calls < 2 {
                bail!("briefly away")
            }
            Ok(7)
        })
        .unwrap();
        assert_eq!((v, calls), (7, 2));
    }
}
