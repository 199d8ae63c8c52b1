//! Storage that fails on purpose: a [`Storage`] wrapper that makes a stated fraction of
//! reads, writes, lists and deletes fail with an I/O error, returns some objects cut
//! short (a torn read), writes some objects and then reports failure (the caller cannot
//! tell whether the write happened), and makes some calls slow. The distributed tests run
//! workers and a learner on it (the trainer wraps its exchange in it when
//! `EMBER_STORAGE_FAULTS` is set) to check that every game is still counted exactly once.
//!
//! A spec is `read=0.1,write=0.1,list=0.1,truncate=0.05,slow=0.05,seed=7`; every field is
//! optional (0 when left out), each a probability per call.

use super::exchange::Storage;
use anyhow::{anyhow, bail, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a slow call waits.
const SLOW: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// A read fails with an I/O error.
    pub read: f64,
    /// A write or delete fails: half of them before anything is written, half after the
    /// object was written.
    pub write: f64,
    /// A listing fails.
    pub list: f64,
    /// A read returns the first part of the object only.
    pub truncate: f64,
    /// A call waits before it runs.
    pub slow: f64,
    pub seed: u64,
}

impl std::str::FromStr for Faults {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Faults> {
        let mut f = Faults::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("storage faults {s:?}: {part:?} is not NAME=VALUE"))?;
            if key == "seed" {
                f.seed = value
                    .parse()
                    .map_err(|_| anyhow!("storage faults: seed {value:?} is not a number"))?;
                continue;
            }
            let p: f64 = value
                .parse()
                .ok()
                .filter(|p: &f64| (0.0..=1.0).contains(p))
                .ok_or_else(|| anyhow!("storage faults: {key}={value} is not a probability"))?;
            match key {
                "read" => f.read = p,
                "write" => f.write = p,
                "list" => f.list = p,
                "truncate" => f.truncate = p,
                "slow" => f.slow = p,
                _ => bail!(
                    "storage faults: unknown fault {key:?} (read, write, list, truncate, slow, seed)"
                ),
            }
        }
        Ok(f)
    }
}

pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    faults: Faults,
    rng: Mutex<StdRng>,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>, faults: Faults) -> FaultyStorage {
        FaultyStorage {
            inner,
            faults,
            rng: Mutex::new(StdRng::seed_from_u64(faults.seed)),
        }
    }

    fn roll(&self, p: f64) -> bool {
        p > 0.0
            && self
                .rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .random::<f64>()
                < p
    }

    fn maybe_slow(&self) {
        if self.roll(self.faults.slow) {
            std::thread::sleep(SLOW);
        }
    }

    /// Runs a write or delete under the write fault.
    fn write(&self, key: &str, op: impl FnOnce() -> Result<()>) -> Result<()> {
        self.maybe_slow();
        if self.roll(self.faults.write) {
            if self.roll(0.5) {
                op()?;
                bail!("injected fault: writing {key} reported failure after it was written");
            }
            bail!("injected fault: writing {key} failed");
        }
        op()
    }
}

impl Storage for FaultyStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.maybe_slow();
        if self.roll(self.faults.read) {
            bail!("injected fault: reading {key} failed");
        }
        let got = self.inner.get(key)?;
        Ok(match got {
            Some(mut bytes) if !bytes.is_empty() && self.roll(self.faults.truncate) => {
                let keep = self
                    .rng
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .random_range(0..bytes.len());
                bytes.truncate(keep);
                Some(bytes)
            }
            other => other,
        })
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.write(key, || self.inner.put(key, bytes))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.maybe_slow();
        if self.roll(self.faults.list) {
            bail!("injected fault: listing {prefix} failed");
        }
        self.inner.list(prefix)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.write(key, || self.inner.delete(key))
    }

    fn describe(&self) -> String {
        format!("{} (with injected faults)", self.inner.describe())
    }

    fn sweep(&self, worker: Option<&str>, max_age: Duration) -> Vec<String> {
        self.inner.sweep(worker, max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::exchange::LocalStorage;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        let f: Faults = "read=0.1, write=0.2,list=0.3,truncate=0.05,slow=0,seed=9"
            .parse()
            .unwrap();
        assert_eq!(
            f,
            Faults {
                read: 0.1,
                write: 0.2,
                list: 0.3,
                truncate: 0.05,
                slow: 0.0,
                seed: 9
            }
        );
        assert!("read=2".parse::<Faults>().is_err());
        assert!("rename=0.1".parse::<Faults>().is_err());
        assert!("read".parse::<Faults>().is_err());
    }

    #[test]
    fn faults_happen_at_about_their_rate_and_torn_reads_are_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Storage> = Arc::new(LocalStorage {
            root: dir.path().to_path_buf(),
        });
        inner.put("a", b"0123456789").unwrap();
        let s = FaultyStorage::new(
            inner.clone(),
            "read=0.2,truncate=0.2,write=0.3,seed=1".parse().unwrap(),
        );
        let (mut failed, mut torn, mut whole) = (0, 0, 0);
        for _ in 0..2000 {
            match s.get("a") {
                Err(_) => failed += 1,
                Ok(Some(b)) if b.len() < 10 => {
                    assert_eq!(&b[..], &b"0123456789"[..b.len()]);
                    torn += 1;
                }
                Ok(Some(_)) => whole += 1,
                Ok(None) => panic!("the object is there"),
            }
        }
        assert!((300..500).contains(&failed), "{failed}");
        assert!((240..400).contains(&torn), "{torn}");
        assert_eq!(failed + torn + whole, 2000);
        let mut written_anyway = 0;
        for k in 0..400 {
            let key = format!("k{k}");
            if s.put(&key, b"x").is_err() && inner.get(&key).unwrap().is_some() {
                written_anyway += 1;
            }
        }
        assert!((30..100).contains(&written_anyway), "{written_anyway}");
    }
}
