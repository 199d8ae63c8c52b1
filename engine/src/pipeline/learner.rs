//! The learner's side of the [`exchange`](super::exchange): its claim on the exchange
//! (`learner.json`, one learner per exchange), the workers' shards it collects into each
//! iteration, and the networks it publishes for the workers. A learner's replay window is
//! filled from the workers' shards it has trained on, which its `state.json` lists.

use super::exchange::{with_retry, Exchange};
use super::selfplay_stage::SelfPlayOutcome;
use crate::replay::{parse_shard, LoadStats, ReplayWindow, WindowSize};
use crate::selfplay::{PlayStats, Sample};
use anyhow::{bail, Context, Result};
use log::{info, warn};
use serde::Serialize;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Tries of each storage operation of the learner.
const LEARNER_RETRIES: u32 = 8;
/// Tries of reading a shard's record before it is left for a later iteration.
const RECORD_TRIES: u32 = 4;
/// Reads of a shard that came back short before its readable part is used.
const SHARD_READS: u32 = 4;
/// How often a waiting learner looks for new shards.
const SHARD_POLL: Duration = Duration::from_millis(500);
/// Unfinished files in `shards/` older than this are left by a worker that is gone.
const STALE_PARTIAL: Duration = Duration::from_secs(3600);
/// How often a learner renews its claim on the exchange (it expires after
/// [`super::exchange::LEASE_EXPIRY`], 10 minutes).
const CLAIM_RENEWAL: Duration = Duration::from_secs(60);
/// Published networks kept besides the newest (workers read only the newest).
const NETWORKS_KEPT: u64 = 4;

/// The positions of one iteration of a learner: the shards taken and what they hold.
pub struct Collected {
    /// The shards' samples and their games' statistics, summed over the shards.
    pub outcome: SelfPlayOutcome,
    /// The shards taken, in name order.
    pub shards: Vec<String>,
}

/// A learner holding its claim on an exchange.
pub struct Learner {
    exchange: Exchange,
    /// `HOST:RUN_DIR`: this learner's claim on the exchange ([`Exchange::claim_learner`]).
    owner: String,
    /// When the claim was last renewed.
    claimed: Cell<Instant>,
    /// Training steps per published network.
    publish_steps: usize,
    /// Stop once no new shard has come for this long.
    pub idle_exit: Option<Duration>,
}

/// `HOST:RUN_DIR`, the run folder made absolute.
fn owner_of(root: &Path) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let dir = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    format!("{host}:{}", dir.display())
}

/// Claims (or renews the claim on) the exchange for `owner`; refused while another
/// learner holds it.
fn claim(exchange: &Exchange, owner: &str) -> Result<()> {
    if let Some(why) = with_retry("claiming the exchange", LEARNER_RETRIES, || {
        exchange.claim_learner(owner)
    })? {
        bail!("{why}");
    }
    Ok(())
}

impl Learner {
    /// Claims `exchange` for the learner whose run folder is `root`: refused while another
    /// learner holds it. Nothing is written before the claim.
    pub fn claim(
        exchange: Exchange,
        root: &Path,
        publish_steps: usize,
        idle_exit: Option<Duration>,
    ) -> Result<Learner> {
        let owner = owner_of(root);
        claim(&exchange, &owner)?;
        Ok(Learner {
            exchange,
            owner,
            claimed: Cell::new(Instant::now()),
            publish_steps: publish_steps.max(1),
            idle_exit,
        })
    }

    /// Renews the claim when it is due.
    fn renew(&self) -> Result<()> {
        if self.claimed.get().elapsed() >= CLAIM_RENEWAL {
            claim(&self.exchange, &self.owner)?;
            self.claimed.set(Instant::now());
        }
        Ok(())
    }

    /// The replay window: the newest of the workers' shards trained on (oldest first in
    /// `names`), read from the exchange until the window is full.
    pub fn window(&self, names: &[String], size: WindowSize) -> Result<ReplayWindow> {
        let (window, _) = ReplayWindow::fill_newest(names, size, |name| {
            self.read_shard(name, None)
                .map(|samples| Some((samples, LoadStats::default())))
                .with_context(|| {
                    format!(
                        "loading the replay window from {}",
                        self.exchange.describe()
                    )
                })
        })?;
        Ok(window)
    }

    /// Readies the exchange for the workers: stores the run's configuration `cfg`,
    /// removes what workers that are gone left unfinished, and publishes the best network
    /// (`best_version`, its bytes read by `best_bytes`) unless it is published already.
    pub fn offer_run<T: Serialize>(
        &self,
        cfg: &T,
        best_version: u64,
        best_bytes: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<()> {
        with_retry("storing config.json", LEARNER_RETRIES, || {
            self.exchange.put_config(cfg)
        })?;
        for name in self.exchange.sweep_unfinished(None, STALE_PARTIAL) {
            info!("removed {name}, left unfinished by a worker that is gone");
        }
        let published = with_retry("reading published.json", LEARNER_RETRIES, || {
            self.exchange.published()
        })?;
        if published.is_none_or(|p| p.version != best_version) {
            let bytes = best_bytes()?;
            with_retry("publishing the network", LEARNER_RETRIES, || {
                self.exchange.publish(best_version, &bytes)
            })?;
            info!(
                "published network version {best_version} for the workers in {}",
                self.exchange.describe()
            );
        }
        Ok(())
    }

    /// Publishes a promoted network `bytes` as version `version`, and removes old ones.
    pub fn publish(&self, version: u64, bytes: &[u8]) -> Result<()> {
        with_retry("publishing the network", LEARNER_RETRIES, || {
            self.exchange.publish(version, bytes)
        })?;
        if let Err(e) = self.exchange.prune_networks(version, NETWORKS_KEPT) {
            warn!("removing old published networks: {e:#}");
        }
        info!("published network version {version} for the workers");
        Ok(())
    }

    /// Positions an iteration waits for: enough for `publish_steps` steps of `batch_size`
    /// samples at `sample_reuse` draws of each position.
    pub fn positions_needed(&self, batch_size: usize, sample_reuse: f64) -> usize {
        ((self.publish_steps * batch_size) as f64 / sample_reuse.max(1e-9)).ceil() as usize
    }

    /// Iteration `it`'s positions: the complete shards not in `taken`, once they hold
    /// `needed` positions (or whatever came, once workers have been idle for
    /// `idle_exit`). None when nothing came. A shard whose record cannot be read is left
    /// for a later iteration.
    pub fn collect(&self, taken: &[String], needed: usize, it: u64) -> Result<Option<Collected>> {
        let taken: HashSet<&String> = taken.iter().collect();
        let mut known = BTreeMap::new();
        let mut refused = BTreeSet::new();
        let mut last_arrival = Instant::now();
        let mut announced = false;
        loop {
            self.renew()?;
            let names = with_retry("listing the shards", LEARNER_RETRIES, || {
                self.exchange.complete_shards()
            })?;
            for name in names {
                if taken.contains(&name) || known.contains_key(&name) || refused.contains(&name) {
                    continue;
                }
                // A record read cut short does not parse: it is read again before it is
                // refused (for this iteration; a later one tries it afresh).
                match with_retry("reading a shard's record", RECORD_TRIES, || {
                    self.exchange.read_meta(&name)
                }) {
                    Ok(meta) => {
                        known.insert(name, meta);
                        last_arrival = Instant::now();
                    }
                    Err(e) => {
                        warn!("shard {name} is not used: {e:#}");
                        refused.insert(name);
                    }
                }
            }
            let positions: usize = known.values().map(|m| m.samples).sum();
            if positions >= needed {
                break;
            }
            if let Some(idle) = self.idle_exit {
                if last_arrival.elapsed() >= idle {
                    if known.is_empty() {
                        return Ok(None);
                    }
                    break;
                }
            }
            if !announced {
                info!(
                    "waiting for workers' shards: {positions} of {needed} positions for iteration {it}"
                );
                announced = true;
            }
            std::thread::sleep(SHARD_POLL);
        }
        let mut sp = SelfPlayOutcome {
            stats: PlayStats::default(),
            samples: Vec::new(),
            first_game: None,
        };
        let mut versions = BTreeSet::new();
        for (name, meta) in &known {
            sp.samples
                .extend(self.read_shard(name, Some(meta.samples))?);
            let s = &mut sp.stats;
            s.tally += &meta.tally;
            s.positions += meta.positions;
            s.evaluations += meta.evaluations;
            s.wall += Duration::from_secs_f64(meta.wall_s.max(0.0));
            versions.insert(meta.network_version);
        }
        let workers: BTreeSet<&str> = known.values().map(|m| m.worker.as_str()).collect();
        info!(
            "took {} shard(s) from {} worker(s): {} games, {} positions, played with network version(s) {:?}",
            known.len(),
            workers.len(),
            sp.stats.tally.games,
            sp.samples.len(),
            versions
        );
        Ok(Some(Collected {
            outcome: sp,
            shards: known.into_keys().collect(),
        }))
    }

    /// The samples of a worker's shard; corrupt records are skipped with a warning. A read
    /// that came back short (fewer samples than its record says, `expected`, or a torn
    /// last record) is read again, [`SHARD_READS`] times at most, before what it holds is
    /// used.
    fn read_shard(&self, name: &str, expected: Option<usize>) -> Result<Vec<Sample>> {
        let mut reads = 0;
        let (samples, stats) = loop {
            reads += 1;
            let bytes = with_retry("reading a shard", LEARNER_RETRIES, || {
                self.exchange.read_shard(name)
            })?;
            let (samples, stats) = parse_shard(&bytes, name);
            let short = expected.map_or(stats.torn_tail > 0, |n| samples.len() < n);
            if !short || reads >= SHARD_READS {
                break (samples, stats);
            }
            warn!(
                "shard {name}: read {} of {} samples, reading it again",
                samples.len(),
                expected.map_or("?".to_string(), |n| n.to_string())
            );
        };
        if expected.is_some_and(|n| samples.len() < n) {
            warn!(
                "shard {name}: {} of its {} samples could be read",
                samples.len(),
                expected.unwrap_or_default()
            );
        }
        if stats.skipped_corrupt > 0 || stats.torn_tail > 0 {
            warn!(
                "shard {name}: skipped {} corrupt record(s) and {} torn tail(s)",
                stats.skipped_corrupt, stats.torn_tail
            );
        }
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::exchange::ShardMeta;
    use crate::runner::GameTally;

    #[test]
    fn an_iteration_takes_the_new_shards_and_sums_their_records() {
        let root = std::env::temp_dir().join(format!("ember-learner-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let x = Exchange::new(&root);
        let learner = Learner::claim(x.clone(), &root, 4, Some(Duration::ZERO)).unwrap();
        assert!(
            learner.collect(&[], 1, 1).unwrap().is_none(),
            "nothing came"
        );
        for (worker, seq, games) in [("a", 1, 3), ("a", 2, 2), ("b", 1, 4)] {
            let meta = ShardMeta {
                worker: worker.into(),
                seq,
                tally: GameTally {
                    games,
                    white_wins: 1,
                    plies: 10 * games,
                    terminations: [("checkmate".to_string(), games)].into(),
                    ..Default::default()
                },
                ..Default::default()
            };
            x.put_shard(&meta, b"", b"").unwrap();
        }
        // A record that does not parse is left out (and tried again by later iterations).
        std::fs::write(root.join("shards/c-000001.json"), b"{\"format\"").unwrap();
        let got = learner
            .collect(&["a-000001".to_string()], 1, 2)
            .unwrap()
            .unwrap();
        assert_eq!(got.shards, ["a-000002", "b-000001"]);
        let s = &got.outcome.stats;
        let t = &s.tally;
        assert_eq!((t.games, t.white_wins, t.plies), (6, 2, 60));
        assert_eq!(t.terminations["checkmate"], 6);
        assert_eq!(learner.positions_needed(256, 2.0), 512);
        std::fs::remove_dir_all(&root).ok();
    }
}
