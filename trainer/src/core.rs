//! The engine's training core as the trainer sees it: training steps, replay shards and
//! the arena. One line to switch between the engine's modules and the stand-in.

pub use crate::standin::{arena, replay, train};
