//! Evaluation cache keyed by Zobrist hash: a transposition reached by another move order
//! gets its priors and value without a network call. Two generations approximate LRU:
//! when the current map is full it becomes the previous one and a new one starts; a hit
//! in the previous generation is moved forward.

use super::evaluator::{EvalBatch, Evaluator};
use crate::game::position_hash;
use crate::phase_times::PhaseTimes;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Zobrist keys are already uniformly random: hash them as they are.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

#[derive(Clone, Debug)]
pub struct CachedEval {
    pub wdl: [f32; 3],
    /// The plies left, from a network with the moves-left head.
    pub moves_left: Option<f32>,
    /// Priors over the legal moves in shakmaty's generation order.
    pub priors: Box<[f32]>,
}

#[derive(Default)]
pub struct EvalCache {
    capacity: usize,
    current: KeyMap<CachedEval>,
    previous: KeyMap<CachedEval>,
    pub hits: u64,
    pub misses: u64,
}

impl EvalCache {
    /// A cache holding up to about `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> Self {
        EvalCache {
            capacity,
            ..Default::default()
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fraction of the capacity in use, in per mille (UCI `hashfull`).
    pub fn permille_full(&self) -> u32 {
        if self.capacity == 0 {
            return 0;
        }
        ((self.current.len() as u64 * 1000) / (self.capacity as u64 / 2).max(1)).min(1000) as u32
    }

    pub fn get(&mut self, key: u64) -> Option<&CachedEval> {
        if self.capacity == 0 {
            return None;
        }
        if self.current.contains_key(&key) {
            self.hits += 1;
            return self.current.get(&key);
        }
        if let Some(e) = self.previous.remove(&key) {
            self.hits += 1;
            self.insert_entry(key, e);
            return self.current.get(&key);
        }
        self.misses += 1;
        None
    }

    pub fn insert(&mut self, key: u64, wdl: [f32; 3], moves_left: Option<f32>, priors: &[f32]) {
        if self.capacity == 0 {
            return;
        }
        self.insert_entry(
            key,
            CachedEval {
                wdl,
                moves_left,
                priors: priors.into(),
            },
        );
    }

    fn insert_entry(&mut self, key: u64, e: CachedEval) {
        if self.current.len() >= (self.capacity / 2).max(1) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, e);
    }

    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }
}

/// An evaluator with an evaluation cache in front: the one cache of a network, shared by
/// every search that sends it leaves (all the games in flight of a runner). A position
/// found in the cache is answered from it; a position that several leaves of one batch
/// share (the same opening reached by many games) goes to the network once.
pub struct CachedEvaluator<E> {
    inner: E,
    cache: EvalCache,
    misses: EvalBatch,
    /// For each leaf of the batch: its row in `misses`, or `None` when the cache answered.
    rows: Vec<Option<usize>>,
    keys: Vec<u64>,
    seen: KeyMap<usize>,
}

impl<E: Evaluator> CachedEvaluator<E> {
    /// `inner` behind a cache of about `capacity` positions (0: no cache).
    pub fn new(inner: E, capacity: usize) -> Self {
        CachedEvaluator {
            inner,
            cache: EvalCache::new(capacity),
            misses: EvalBatch::new(),
            rows: Vec::new(),
            keys: Vec::new(),
            seen: KeyMap::default(),
        }
    }

    pub fn cache(&self) -> &EvalCache {
        &self.cache
    }

    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.inner
    }

    /// Forgets every cached position (a new game, a new network).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// A cache of about `capacity` positions from now on (emptied when it changes).
    pub fn resize(&mut self, capacity: usize) {
        if capacity != self.cache.capacity() {
            self.cache = EvalCache::new(capacity);
        }
    }

    /// The cached answer for a position, if any (the UCI engine's draw share of the root).
    pub fn cached(&mut self, key: u64) -> Option<&CachedEval> {
        self.cache.get(key)
    }
}

impl<E: Evaluator> Evaluator for CachedEvaluator<E> {
    fn evaluate(&mut self, batch: &mut EvalBatch, timing: &mut PhaseTimes) -> anyhow::Result<()> {
        if self.cache.capacity() == 0 {
            return self.inner.evaluate(batch, timing);
        }
        self.misses.clear();
        self.rows.clear();
        self.keys.clear();
        self.seen.clear();
        let mut cached = 0;
        for i in 0..batch.len() {
            let key = position_hash(batch.position(i));
            if let Some(hit) = self.cache.get(key) {
                if hit.priors.len() == batch.moves(i).len() {
                    let (wdl, moves_left) = (hit.wdl, hit.moves_left);
                    batch.priors_mut(i).copy_from_slice(&hit.priors);
                    batch.set_wdl(i, wdl);
                    batch.set_moves_left(i, moves_left);
                    self.rows.push(None);
                    cached += 1;
                    continue;
                }
            }
            let row = match self.seen.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    cached += 1;
                    *e.get()
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    self.keys.push(key);
                    *e.insert(self.misses.push(batch.position(i), batch.moves(i)))
                }
            };
            self.rows.push(Some(row));
        }
        if !self.misses.is_empty() {
            self.inner.evaluate(&mut self.misses, timing)?;
        }
        for (i, row) in self.rows.iter().enumerate() {
            if let Some(r) = *row {
                batch.priors_mut(i).copy_from_slice(self.misses.priors(r));
                batch.set_wdl(i, self.misses.wdl(r));
                batch.set_moves_left(i, self.misses.moves_left(r));
            }
        }
        for (r, &key) in self.keys.iter().enumerate() {
            let m = &self.misses;
            self.cache
                .insert(key, m.wdl(r), m.moves_left(r), m.priors(r));
        }
        timing.cached += cached;
        Ok(())
    }
}
