//! The training iteration as stages, each of which runs on its own:
//!
//! ```text
//!             best network                       candidate (trained on)
//!                  |                                   |
//!   self-play stage --> replay/iter-N.shard --> replay window (memory) --> training stage
//!   (games, PGN)                                                              |
//!                                      gating stage: candidate vs best <------+
//!                                              |
//!                         commit: checkpoints -> metrics -> state.json -> rename into place
//! ```
//!
//! - [`selfplay_stage`] plays games with a network and writes a replay shard and PGN:
//!   all a self-play worker needs.
//! - [`crate::replay::ReplayWindow`] holds the newest positions in memory, already
//!   encoded; it grows by whole shards.
//! - [`training_stage`] takes minibatch steps of a [`crate::train::Trainer`] over the window.
//! - [`gating_stage`] plays the candidate against the best network and decides promotion.
//! - [`strength_stage`] plays the network against fixed anchors (random, greedy, the
//!   run's iteration-0 network, UCI engines): the run's strength curve.
//! - [`publish_stage`] plays the run's best network against the one `ember` would
//!   otherwise play; only a network that wins replaces it.
//! - [`exchange`] is the run folder seen by distributed self-play: workers take the
//!   published network from it and put shards into it, and a learner trains on them;
//!   [`learner`] is the learner's side: its claim, the shards it collects into each
//!   iteration, and the networks it publishes.
//! - [`commit`] makes an iteration durable in the run folder ([`run`]), whose
//!   `state.json` is the commit record, and appends its [`metrics`].
//!
//! The trainer binary only wires these together and reports. Stages report progress
//! through an [`Observer`] (the trainer draws progress bars from it) and log through `log`.

pub mod commit;
pub mod exchange;
pub mod faults;
pub mod gating_stage;
pub mod learner;
pub mod metrics;
pub mod publish_stage;
pub mod run;
pub mod selfplay_stage;
pub mod settings;
pub mod strength_stage;
pub mod training_stage;

/// What a stage says as it goes: a phase with a known amount of work, its steps, its end.
pub trait Observer {
    fn start(&mut self, phase: &'static str, total: u64, unit: &'static str);
    /// One unit done; `detail` (called only when shown) describes it.
    fn advance(&mut self, detail: &dyn Fn() -> String);
    fn finish(&mut self);
}

/// An observer that shows nothing.
pub struct Quiet;

impl Observer for Quiet {
    fn start(&mut self, _: &'static str, _: u64, _: &'static str) {}
    fn advance(&mut self, _: &dyn Fn() -> String) {}
    fn finish(&mut self) {}
}

/// `Termination::MaxPlies` -> `max_plies`: the key games are counted under in metrics.
pub use crate::runner::termination_key;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_keys_are_snake_case() {
        assert_eq!(termination_key(crate::Termination::MaxPlies), "max_plies");
        assert_eq!(termination_key(crate::Termination::Checkmate), "checkmate");
    }
}
