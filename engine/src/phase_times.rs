//! Per-phase time counters for the search and self-play loops.
//!
//! Phases: `select` (descending the tree, virtual loss), `movegen` (legal moves and
//! terminal checks at new leaves), `encode` (writing input planes), `network` (the
//! forward pass), `backup` (expanding leaves and backing values up). Work done on several
//! threads at once is summed, so the counters are thread time, not wall time.

use serde::Serialize;
use std::ops::AddAssign;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PhaseTimes {
    pub select: Duration,
    pub movegen: Duration,
    pub encode: Duration,
    pub network: Duration,
    pub backup: Duration,
    /// Network calls made and positions they evaluated.
    pub batches: u64,
    pub evaluated: u64,
    /// Positions answered by an evaluation cache instead of the network.
    pub cached: u64,
}

impl AddAssign for PhaseTimes {
    fn add_assign(&mut self, o: PhaseTimes) {
        self.select += o.select;
        self.movegen += o.movegen;
        self.encode += o.encode;
        self.network += o.network;
        self.backup += o.backup;
        self.batches += o.batches;
        self.evaluated += o.evaluated;
        self.cached += o.cached;
    }
}

impl PhaseTimes {
    pub fn total(&self) -> Duration {
        self.select + self.movegen + self.encode + self.network + self.backup
    }

    /// One line for logs: each phase's seconds and share of the total.
    pub fn summary(&self) -> String {
        let total = self.total().as_secs_f64().max(1e-9);
        let part = |name: &str, d: Duration| {
            format!(
                "{name} {:.2}s ({:.0}%)",
                d.as_secs_f64(),
                100.0 * d.as_secs_f64() / total
            )
        };
        format!(
            "{} | {} | {} | {} | {} | {} batches, mean {:.1} positions",
            part("select", self.select),
            part("movegen", self.movegen),
            part("encode", self.encode),
            part("network", self.network),
            part("backup", self.backup),
            self.batches,
            self.evaluated as f64 / self.batches.max(1) as f64
        )
    }
}

/// Adds the time since `start` to `slot` and returns now, for chaining phases.
#[inline]
pub fn lap(slot: &mut Duration, start: Instant) -> Instant {
    let now = Instant::now();
    *slot += now - start;
    now
}
