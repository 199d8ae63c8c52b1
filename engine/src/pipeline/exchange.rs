//! The meeting point of distributed self-play: a run folder on storage that self-play
//! workers and one learner share. Nothing else connects them. The storage is a
//! [`Storage`]: a folder ([`LocalStorage`]: a local disk, or a network filesystem such as
//! NFS, EFS or Filestore mounted on every machine), or S3-compatible object storage (the
//! trainer's `s3` feature).
//!
//! ```text
//! RUN/config.json                      the run's configuration (the learner writes it)
//!     learner.json                     the learner's claim: one learner per exchange
//!     published.json                   which network to play with: {"version": V, "network": "networks/net-V.safetensors"}
//!     networks/net-NNNNNN.safetensors  published networks, never rewritten
//!     shards/WORKER-SEQ.shard          a batch of finished games' training samples
//!     shards/WORKER-SEQ.json           its record: the network version it was played with, games, positions, results
//!     games/WORKER-SEQ.pgn             the batch's games
//! ```
//!
//! - Every object appears under its name complete or not at all (a file is written beside
//!   it, then renamed; an object store's put is atomic), and a shard counts only once its
//!   `.json` record exists, which is written after the shard. So a worker killed at any
//!   moment leaves nothing a reader takes for data: in a folder, at most a `.tmp` file,
//!   which the worker removes when it starts again under the same id and the learner
//!   removes once it is an hour old.
//! - Shards are named by worker id and sequence number, so no two writers share a name;
//!   a worker starting again under the same id goes on after its last complete shard.
//! - The learner records the shards it has trained on in its `state.json` (see
//!   [`super::run`]): a shard is taken into the replay window exactly once, also across a
//!   kill of the learner.

use crate::files::write_atomic;
use crate::runner::GameTally;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const META_FORMAT: &str = "ember-shard";
const PUBLISHED_FORMAT: &str = "ember-published";

/// Where the exchange's objects live: keys are `/`-separated paths under the run folder.
pub trait Storage: Send + Sync {
    /// The object's bytes, or none when there is no such object.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Stores `bytes` under `key` so that readers see the old object or the new one.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// Names of the objects directly in the folder `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    fn delete(&self, key: &str) -> Result<()>;
    /// `/mnt/run1`, `s3://bucket/run1`: for messages.
    fn describe(&self) -> String;
    /// Removes unfinished writes (see [`Exchange::sweep_unfinished`]); object stores have none.
    fn sweep(&self, _worker: Option<&str>, _max_age: Duration) -> Vec<String> {
        Vec::new()
    }
}

/// A folder: every write is a temporary file renamed into place after an fsync.
#[derive(Clone, Debug)]
pub struct LocalStorage {
    pub root: PathBuf,
}

impl Storage for LocalStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.root.join(key);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => crate::files::read_bounded(
                &path,
                crate::files::MAX_SHARD_BYTES,
                "an exchange object",
            )
            .map(Some),
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.root.join(key), bytes)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.root.join(prefix);
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.root.join(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    /// The temporary files of interrupted writes in `shards/`, `games/` and `networks/`:
    /// those of `worker` (`.WORKER-...`), or with no worker those older than `max_age`.
    fn sweep(&self, worker: Option<&str>, max_age: Duration) -> Vec<String> {
        let mut removed = Vec::new();
        for dir in ["shards", "games", "networks"] {
            let Ok(entries) = std::fs::read_dir(self.root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !(name.starts_with('.') && name.ends_with(".tmp")) {
                    continue;
                }
                let stale = match worker {
                    Some(w) => name[1..].starts_with(&format!("{w}-")),
                    None => e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age >= max_age),
                };
                if stale && std::fs::remove_file(e.path()).is_ok() {
                    removed.push(format!("{dir}/{name}"));
                }
            }
        }
        removed.sort();
        removed
    }
}

/// The network workers should play with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Published {
    pub format: String,
    /// The learner's iteration that trained it (0: the initial network).
    pub version: u64,
    /// Its key, relative to the run folder.
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
    /// The games of the batch: results, ends, plies, resignations.
    #[serde(flatten)]
    pub tally: GameTally,
    /// Moves searched (every move of every game, recorded or not).
    pub positions: usize,
    /// Training samples in the shard.
    pub samples: usize,
    pub evaluations: u64,
    /// Seconds the worker spent playing the batch.
    pub wall_s: f64,
}

/// The claim of the learner that owns an exchange (`learner.json`): one learner per
/// exchange, also when learners with separate local run folders point at one S3 prefix.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LearnerLease {
    pub format: String,
    /// `HOST:RUN_DIR` of the learner: the same learner started again keeps its claim.
    pub owner: String,
    /// Seconds since the Unix epoch of the last renewal.
    pub renewed_unix_s: f64,
}

const LEASE_FORMAT: &str = "ember-learner";

/// A claim not renewed for this long belongs to a learner that is gone.
pub const LEASE_EXPIRY: Duration = Duration::from_secs(600);

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A run folder seen as the exchange between workers and the learner.
#[derive(Clone)]
pub struct Exchange {
    pub storage: Arc<dyn Storage>,
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text.into_bytes())
}

impl Exchange {
    /// The exchange in a folder.
    pub fn new(root: &Path) -> Exchange {
        Exchange {
            storage: Arc::new(LocalStorage {
                root: root.to_path_buf(),
            }),
        }
    }

    pub fn describe(&self) -> String {
        self.storage.describe()
    }

    /// Claims the exchange for the learner `owner`, or renews its claim. Refused (the
    /// reason returned) while another learner's claim is younger than [`LEASE_EXPIRY`]; a
    /// storage failure or a claim that does not parse is an error (a torn read is retried
    /// by the caller; a corrupt file is named).
    pub fn claim_learner(&self, owner: &str) -> Result<Option<String>> {
        if let Some(bytes) = self.storage.get("learner.json")? {
            let lease: LearnerLease = serde_json::from_slice(&bytes)
                .context("parsing learner.json (remove it if no learner uses this exchange)")?;
            let age = unix_now() - lease.renewed_unix_s;
            if lease.owner != owner && age < LEASE_EXPIRY.as_secs_f64() {
                return Ok(Some(format!(
                    "{} is in use by another learner ({}, its claim renewed {:.0}s ago); a learner that is gone \
frees it {} s after its last renewal",
                    self.describe(),
                    lease.owner,
                    age.max(0.0),
                    LEASE_EXPIRY.as_secs()
                )));
            }
        }
        self.storage.put(
            "learner.json",
            &json(&LearnerLease {
                format: LEASE_FORMAT.into(),
                owner: owner.to_string(),
                renewed_unix_s: unix_now(),
            })?,
        )?;
        Ok(None)
    }

    /// The run's configuration as the learner stored it, if it has yet.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>> {
        self.storage
            .get("config.json")?
            .map(|b| serde_json::from_slice(&b).context("parsing the run's config.json"))
            .transpose()
    }

    pub fn put_config<T: Serialize>(&self, cfg: &T) -> Result<()> {
        self.storage.put("config.json", &json(cfg)?)
    }

    /// Publishes `bytes` (a checkpoint) as network `version`: the network first, then the
    /// pointer, so a worker that reads the pointer always finds the network.
    pub fn publish(&self, version: u64, bytes: &[u8]) -> Result<()> {
        let network = format!("networks/net-{version:06}.safetensors");
        self.storage.put(&network, bytes)?;
        self.storage.put(
            "published.json",
            &json(&Published {
                format: PUBLISHED_FORMAT.into(),
                version,
                network,
            })?,
        )
    }

    /// The network to play with, if one is published yet.
    pub fn published(&self) -> Result<Option<Published>> {
        let Some(bytes) = self.storage.get("published.json")? else {
            return Ok(None);
        };
        let p: Published = serde_json::from_slice(&bytes).context("parsing published.json")?;
        if p.format != PUBLISHED_FORMAT
            || !p.network.starts_with("networks/")
            || p.network.contains("..")
        {
            bail!("published.json: not a published-network record");
        }
        Ok(Some(p))
    }

    /// The bytes of a published network.
    pub fn read_network(&self, p: &Published) -> Result<Vec<u8>> {
        let bytes = self
            .storage
            .get(&p.network)?
            .with_context(|| format!("{} is published but missing", p.network))?;
        if bytes.len() as u64 > crate::net::checkpoint::MAX_CHECKPOINT_BYTES {
            bail!("{}: larger than a checkpoint can be", p.network);
        }
        Ok(bytes)
    }

    /// Removes published networks older than the newest `keep` (workers read only the newest).
    pub fn prune_networks(&self, newest: u64, keep: u64) -> Result<()> {
        for name in self.storage.list("networks")? {
            let version = name
                .strip_prefix("net-")
                .and_then(|n| n.strip_suffix(".safetensors"))
                .and_then(|n| n.parse::<u64>().ok());
            if version.is_some_and(|v| v + keep <= newest) {
                self.storage.delete(&format!("networks/{name}"))?;
            }
        }
        Ok(())
    }

    /// The complete shards (those with a record), by name, in name order.
    pub fn complete_shards(&self) -> Result<Vec<String>> {
        Ok(self
            .storage
            .list("shards")?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect())
    }

    pub fn read_meta(&self, name: &str) -> Result<ShardMeta> {
        let key = format!("shards/{name}.json");
        let bytes = self
            .storage
            .get(&key)?
            .with_context(|| format!("{key} is missing"))?;
        let meta: ShardMeta =
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {key}"))?;
        if meta.format != META_FORMAT || shard_name(&meta.worker, meta.seq) != name {
            bail!("{key}: not this shard's record");
        }
        Ok(meta)
    }

    /// The bytes of a complete shard.
    pub fn read_shard(&self, name: &str) -> Result<Vec<u8>> {
        let key = format!("shards/{name}.shard");
        self.storage
            .get(&key)?
            .with_context(|| format!("{key} has a record but is missing"))
    }

    /// Stores a finished shard, its games and then its record, which makes it visible to
    /// the learner. Returns the shard's name.
    pub fn put_shard(&self, meta: &ShardMeta, shard: &[u8], pgn: &[u8]) -> Result<String> {
        let name = shard_name(&meta.worker, meta.seq);
        self.storage.put(&format!("shards/{name}.shard"), shard)?;
        self.storage.put(&format!("games/{name}.pgn"), pgn)?;
        let mut meta = meta.clone();
        meta.format = META_FORMAT.into();
        self.storage
            .put(&format!("shards/{name}.json"), &json(&meta)?)?;
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

    /// Removes unfinished writes: those of `worker` (a worker starting again under its
    /// id: its earlier process is gone), or, with no worker, those older than `max_age`
    /// (the learner: a writer that old is gone). Returns what was removed.
    pub fn sweep_unfinished(&self, worker: Option<&str>, max_age: Duration) -> Vec<String> {
        self.storage.sweep(worker, max_age)
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

    fn temp(tag: &str) -> (Exchange, PathBuf) {
        let root =
            std::env::temp_dir().join(format!("ember-exchange-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("shards")).unwrap();
        (Exchange::new(&root), root)
    }

    #[test]
    fn a_shard_counts_only_once_its_record_exists() {
        let (x, root) = temp("record");
        std::fs::write(root.join("shards/w1-000001.shard"), b"data").unwrap();
        std::fs::write(root.join("shards/.w1-000002.shard.77.tmp"), b"half").unwrap();
        assert!(x.complete_shards().unwrap().is_empty());
        assert_eq!(x.next_seq("w1").unwrap(), 1);
        let meta = ShardMeta {
            worker: "w1".into(),
            seq: 1,
            tally: GameTally {
                games: 3,
                plies: 120,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(x.put_shard(&meta, b"data", b"pgn").unwrap(), "w1-000001");
        assert_eq!(x.complete_shards().unwrap(), vec!["w1-000001".to_string()]);
        let read = x.read_meta("w1-000001").unwrap();
        assert_eq!((read.tally.games, read.tally.plies), (3, 120));
        assert_eq!(x.read_shard("w1-000001").unwrap(), b"data");
        assert_eq!(x.next_seq("w1").unwrap(), 2);
        assert_eq!(x.next_seq("w2").unwrap(), 1);
        // A record under another shard's name is refused.
        std::fs::copy(
            root.join("shards/w1-000001.json"),
            root.join("shards/w9-000004.json"),
        )
        .unwrap();
        assert!(x.read_meta("w9-000004").is_err());
        // The worker starting again removes its own unfinished write, not another's.
        std::fs::write(root.join("shards/.w2-000001.shard.78.tmp"), b"half").unwrap();
        let removed = x.sweep_unfinished(Some("w1"), Duration::ZERO);
        assert_eq!(removed, vec!["shards/.w1-000002.shard.77.tmp".to_string()]);
        assert!(root.join("shards/.w2-000001.shard.78.tmp").exists());
        // The learner removes only old ones.
        assert!(x
            .sweep_unfinished(None, Duration::from_secs(3600))
            .is_empty());
        assert_eq!(x.sweep_unfinished(None, Duration::ZERO).len(), 1);
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn one_learner_claims_an_exchange_until_its_claim_expires() {
        let (x, root) = temp("claim");
        assert_eq!(x.claim_learner("h:/a").unwrap(), None);
        assert_eq!(
            x.claim_learner("h:/a").unwrap(),
            None,
            "renewed by its owner"
        );
        let refused = x.claim_learner("h:/b").unwrap().unwrap();
        assert!(
            refused.contains("in use by another learner (h:/a"),
            "{refused}"
        );
        // A claim not renewed for LEASE_EXPIRY belongs to a learner that is gone.
        std::fs::write(
            root.join("learner.json"),
            br#"{"format":"ember-learner","owner":"h:/a","renewed_unix_s":0.0}"#,
        )
        .unwrap();
        assert_eq!(x.claim_learner("h:/b").unwrap(), None);
        assert!(x.claim_learner("h:/a").unwrap().is_some());
        std::fs::write(root.join("learner.json"), b"{\"format\"").unwrap();
        assert!(
            x.claim_learner("h:/b").is_err(),
            "a torn claim is an error to retry"
        );
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn published_network_is_found_through_its_pointer() {
        let (x, root) = temp("publish");
        assert!(x.published().unwrap().is_none());
        x.publish(0, b"net0").unwrap();
        x.publish(3, b"net3").unwrap();
        let p = x.published().unwrap().unwrap();
        assert_eq!(p.version, 3);
        assert_eq!(x.read_network(&p).unwrap(), b"net3");
        x.prune_networks(3, 1).unwrap();
        assert!(!root.join("networks/net-000000.safetensors").exists());
        assert!(root.join(&p.network).exists());
        std::fs::write(
            root.join("published.json"),
            br#"{"format":"ember-published","version":1,"network":"../../etc/passwd"}"#,
        )
        .unwrap();
        assert!(x.published().is_err());
        std::fs::remove_dir_all(&root).ok();
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
