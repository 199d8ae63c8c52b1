//! Evaluation cache keyed by Zobrist hash: a transposition reached by another move order
//! gets its priors and value without a network call. Two generations approximate LRU:
//! when the current map is full it becomes the previous one and a new one starts; a hit
//! in the previous generation is moved forward.

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

    pub fn insert(&mut self, key: u64, wdl: [f32; 3], priors: &[f32]) {
        if self.capacity == 0 {
            return;
        }
        self.insert_entry(
            key,
            CachedEval {
                wdl,
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
