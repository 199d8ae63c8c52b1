//! Ember's engine core: everything the trainer and the UCI engine share.
//!
//! Data flow (see `docs/architecture.md` and `docs/conventions.md`): every game is played
//! by the game runner ([`runner`]); every search is run by one driver
//! ([`mcts::driver`]). Self-play games ([`selfplay`]) run batched searches ([`mcts`])
//! whose leaves are encoded ([`encoding`]) into one batch and evaluated by one network
//! call ([`net`]); finished games become training samples in replay shards ([`replay`]),
//! which train the candidate ([`train`]). Every match, gating and the strength curve
//! included, goes through one match driver ([`matches`]) between [`players`], on the
//! clock of [`timeman`]. [`pipeline`] holds these steps as stages over a run folder.
//! The binaries are thin wrappers around this crate.

pub mod bench;
pub mod devicecheck;
pub mod encoding;
pub mod files;
pub mod game;
pub mod matches;
pub mod mcts;
pub mod minimax;
pub mod net;
pub mod phase_times;
pub mod pipeline;
pub mod players;
pub mod replay;
pub mod runner;
pub mod selfplay;
pub mod stats;
pub mod sys;
pub mod timeman;
pub mod train;

pub use game::{Game, GameOutcome, Termination};
pub use mcts::{Evaluator, Search, SearchParams};
pub use net::{DeviceChoice, NetConfig, Network, Precision};
