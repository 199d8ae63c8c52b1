//! What a game leaves behind: its [`GameRecord`] (moves, result, per-move search
//! statistics, training samples, PGN) and the counters of a runner call ([`PlayStats`]).

use super::rules::Opening;
use crate::game::GameOutcome;
use crate::phase_times::PhaseTimes;
use shakmaty::{Chess, Color, Move};
use std::time::Duration;

/// One training sample: the position, the visit distribution over its legal moves (by
/// policy index), the final result for the side to move, and the root's Q.
#[derive(Clone, Debug)]
pub struct Sample {
    pub position: Chess,
    /// The search's visit distribution over the legal moves: (policy index, share).
    pub visits: Vec<(u16, f32)>,
    pub result: f32,
    pub root_q: f32,
}

/// What the search knew when a search side played a move.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoveStats {
    /// Root visits.
    pub nodes: u32,
    /// The root's value for the mover, in [-1, 1].
    pub q: f32,
    /// A full search (recorded when the side records samples), not a fast one.
    pub full: bool,
}

/// A finished game.
#[derive(Clone, Debug)]
pub struct GameRecord {
    /// Game number within the call, from 0.
    pub index: usize,
    /// The side playing White (0 or 1).
    pub white: usize,
    /// The sides' names, side 0 first.
    pub names: [String; 2],
    pub opening: Opening,
    /// The position the sides started from (after the random opening plies).
    pub start_fen: String,
    /// Every move from the opening position, random plies included.
    pub moves: Vec<Move>,
    /// Aligned with `moves`: the search's statistics for the moves a search side played.
    pub searched: Vec<Option<MoveStats>>,
    pub outcome: GameOutcome,
    /// Why the loser lost, for forfeits ("... crashed (exited with ...)").
    pub reason: Option<String>,
    /// In a game played out under [`Resign`](super::Resign): the colour that would have resigned first.
    pub would_resign: Option<Color>,
    pub plies: usize,
    /// Training samples (search sides with `record_samples`).
    pub samples: Vec<Sample>,
    pub pgn: String,
}

impl GameRecord {
    /// Whether the resignation this played-out game would have had was wrong (the side
    /// that would have resigned did not lose); `None` when no one would have resigned.
    pub fn resign_false_positive(&self) -> Option<bool> {
        self.would_resign
            .map(|c| self.outcome.result.winner() != Some(!c))
    }

    /// `side`'s score: 1 win, 0.5 draw, 0 loss.
    pub fn score(&self, side: usize) -> f64 {
        let colour = if self.white == side {
            Color::White
        } else {
            Color::Black
        };
        (self.outcome.value_for(colour) as f64 + 1.0) / 2.0
    }
}

/// Counters of a runner call.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PlayStats {
    pub games: usize,
    /// Moves played by search sides (finished games, and unfinished ones at a time limit).
    pub positions: usize,
    /// Plies of the finished games.
    pub finished_plies: usize,
    /// Positions sent to a network.
    pub evaluations: u64,
    pub collisions: u64,
    /// Leaves answered by an evaluation cache.
    pub cache_hits: u64,
    pub wall: Duration,
    pub timing: PhaseTimes,
    pub white_wins: usize,
    pub black_wins: usize,
    pub draws: usize,
    /// Games ended by resignation.
    pub resigned: usize,
    /// Played-out games in which someone would have resigned, and those in which that
    /// side did not lose (resignation's false positives).
    pub resign_checked: usize,
    pub resign_false_positives: usize,
}

impl std::ops::AddAssign<&PlayStats> for PlayStats {
    fn add_assign(&mut self, s: &PlayStats) {
        self.games += s.games;
        self.positions += s.positions;
        self.finished_plies += s.finished_plies;
        self.evaluations += s.evaluations;
        self.collisions += s.collisions;
        self.cache_hits += s.cache_hits;
        self.wall += s.wall;
        self.timing += s.timing;
        self.white_wins += s.white_wins;
        self.black_wins += s.black_wins;
        self.draws += s.draws;
        self.resigned += s.resigned;
        self.resign_checked += s.resign_checked;
        self.resign_false_positives += s.resign_false_positives;
    }
}

impl PlayStats {
    pub fn positions_per_s(&self) -> f64 {
        self.positions as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    /// Finished games per wall-clock second.
    pub fn games_per_s(&self) -> f64 {
        self.games as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    pub fn mean_plies(&self) -> f64 {
        self.finished_plies as f64 / self.games.max(1) as f64
    }
    pub fn evals_per_position(&self) -> f64 {
        self.evaluations as f64 / self.positions.max(1) as f64
    }
}
