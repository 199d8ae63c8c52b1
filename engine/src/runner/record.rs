//! What a game leaves behind: its [`GameRecord`] (moves, result, per-move search
//! statistics, training samples, PGN) and the counters of a runner call ([`PlayStats`]).

use super::rules::Opening;
use crate::game::{GameOutcome, Termination};
use crate::phase_times::PhaseTimes;
use shakmaty::{Chess, Color, KnownOutcome, Move};
use std::collections::BTreeMap;
use std::time::Duration;

/// One training sample: the position, the visit distribution over its legal moves (by
/// policy index), the value target for the side to move (the final result, or with
/// deblunder the best move's Q before a blunder: [`value_targets`]), and the root's Q.
#[derive(Clone, Debug)]
pub struct Sample {
    pub position: Chess,
    /// The search's visit distribution over the legal moves: (policy index, share).
    pub visits: Vec<(u16, f32)>,
    pub result: f32,
    pub root_q: f32,
    /// The opponent's reply, the move played next, as its policy index for the opponent
    /// (the reply head's target); none after the game's last move.
    pub reply: Option<u16>,
    /// Plies from this position to the game's end (the moves-left head's target); none
    /// where the game did not end by itself ([`plies_left`]).
    pub plies_left: Option<u16>,
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
    /// Q of the search's best move (the most visited), for the mover.
    pub best_q: f32,
    /// Q of the move played, for the mover, when the search visited it.
    pub played_q: Option<f32>,
}

/// The value target of the position before each ply, for White (`searched` aligned with
/// the game's moves, `start` the side to move before the first): the game's result
/// `result_white`, except that with `deblunder` > 0 a searched move whose Q fell short of
/// the best move's by more than `deblunder` (a move played for exploration that the
/// search itself judged worse) stops the result from reaching the positions before it:
/// from that position back to the previous such move, they learn the best move's Q (lc0's
/// deblunder). The positions after it keep the result their game had.
pub fn value_targets(
    result_white: f32,
    start: Color,
    searched: &[Option<MoveStats>],
    deblunder: f32,
) -> Vec<f32> {
    let mut z = result_white;
    let mut out = vec![0.0; searched.len()];
    for (ply, stats) in searched.iter().enumerate().rev() {
        if let Some(s) = stats {
            let blunder = s
                .played_q
                .is_some_and(|q| deblunder > 0.0 && s.best_q - q > deblunder);
            if blunder {
                let white_moves = (start == Color::White) == (ply % 2 == 0);
                z = if white_moves { s.best_q } else { -s.best_q };
            }
        }
        out[ply] = z;
    }
    out
}

/// The moves-left target of the position before ply `ply` of a game of `game_plies`
/// plies that ended by `termination`: the plies from it to the end, `game_plies - ply`.
/// A game stopped at the ply cap (scored a draw or adjudicated) did not end by itself:
/// its plies to the cap are only a lower bound, and one the network cannot see (the
/// input holds no ply count), so its positions have none and the moves-left loss skips
/// them. A resigned game ends where the resignation was (lc0's target: a position whose
/// side to move resigned has 0), as does a forfeit.
pub fn plies_left(termination: Termination, game_plies: usize, ply: usize) -> Option<u16> {
    let capped = matches!(
        termination,
        Termination::MaxPlies | Termination::AdjudicatedMaterial | Termination::AdjudicatedValue
    );
    if capped || ply > game_plies {
        return None;
    }
    u16::try_from(game_plies - ply)
        .ok()
        .filter(|&p| p != u16::MAX)
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

/// Counts of finished games: results, how they ended, their plies and resignations.
/// Every report of games embeds one (a runner call's [`PlayStats`], a worker's shard
/// record, an iteration's metrics line, the gating match): add a [`GameRecord`] with
/// [`GameTally::add`], another tally with `+=`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GameTally {
    #[serde(default)]
    pub games: usize,
    #[serde(default)]
    pub white_wins: usize,
    #[serde(default)]
    pub black_wins: usize,
    #[serde(default)]
    pub draws: usize,
    /// Games ended by resignation.
    #[serde(default)]
    pub resigned: usize,
    /// Played-out games in which someone would have resigned, and those in which that
    /// side did not lose (resignation's false positives).
    #[serde(default)]
    pub resign_checked: usize,
    #[serde(default)]
    pub resign_false_positives: usize,
    /// Games by how they ended (`checkmate`, `max_plies`, ...).
    #[serde(default)]
    pub terminations: BTreeMap<String, usize>,
    /// Plies of the games, summed (read also from a list of each game's plies).
    #[serde(default, deserialize_with = "plies_sum")]
    pub plies: usize,
}

/// The plies field as a sum, or as a list of each game's plies (summed).
fn plies_sum<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Plies {
        Sum(usize),
        Each(Vec<usize>),
    }
    Ok(match <Plies as serde::Deserialize>::deserialize(d)? {
        Plies::Sum(n) => n,
        Plies::Each(v) => v.iter().sum(),
    })
}

impl GameTally {
    /// Counts one finished game.
    pub fn add(&mut self, record: &GameRecord) {
        self.games += 1;
        self.plies += record.plies;
        match record.outcome.result {
            KnownOutcome::Decisive {
                winner: Color::White,
            } => self.white_wins += 1,
            KnownOutcome::Decisive { .. } => self.black_wins += 1,
            KnownOutcome::Draw => self.draws += 1,
        }
        if record.outcome.termination == Termination::Resignation {
            self.resigned += 1;
        }
        if let Some(wrong) = record.resign_false_positive() {
            self.resign_checked += 1;
            self.resign_false_positives += usize::from(wrong);
        }
        *self
            .terminations
            .entry(termination_key(record.outcome.termination))
            .or_default() += 1;
    }

    pub fn mean_plies(&self) -> f64 {
        self.plies as f64 / self.games.max(1) as f64
    }

    /// "checkmate 3, max_plies 2", for logs.
    pub fn describe_terminations(&self) -> String {
        let ends: Vec<String> = self
            .terminations
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        ends.join(", ")
    }
}

impl std::ops::AddAssign<&GameTally> for GameTally {
    fn add_assign(&mut self, t: &GameTally) {
        self.games += t.games;
        self.white_wins += t.white_wins;
        self.black_wins += t.black_wins;
        self.draws += t.draws;
        self.resigned += t.resigned;
        self.resign_checked += t.resign_checked;
        self.resign_false_positives += t.resign_false_positives;
        for (k, n) in &t.terminations {
            *self.terminations.entry(k.clone()).or_default() += n;
        }
        self.plies += t.plies;
    }
}

/// The snake-case name of a termination, as tallies and metrics key it.
pub fn termination_key(t: Termination) -> String {
    let name = format!("{t:?}");
    let mut key = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            key.push('_');
        }
        key.push(c.to_ascii_lowercase());
    }
    key
}

/// Counters of a runner call.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PlayStats {
    /// The finished games.
    #[serde(flatten)]
    pub tally: GameTally,
    /// Moves played by search sides (finished games, and unfinished ones at a time limit).
    pub positions: usize,
    /// Positions sent to a network.
    pub evaluations: u64,
    pub collisions: u64,
    /// Leaves answered by an evaluation cache.
    pub cache_hits: u64,
    pub wall: Duration,
    pub timing: PhaseTimes,
}

impl std::ops::AddAssign<&PlayStats> for PlayStats {
    fn add_assign(&mut self, s: &PlayStats) {
        self.tally += &s.tally;
        self.positions += s.positions;
        self.evaluations += s.evaluations;
        self.collisions += s.collisions;
        self.cache_hits += s.cache_hits;
        self.wall += s.wall;
        self.timing += s.timing;
    }
}

impl PlayStats {
    pub fn positions_per_s(&self) -> f64 {
        self.positions as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    /// Finished games per wall-clock second.
    pub fn games_per_s(&self) -> f64 {
        self.tally.games as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    pub fn mean_plies(&self) -> f64 {
        self.tally.mean_plies()
    }
    pub fn evals_per_position(&self) -> f64 {
        self.evaluations as f64 / self.positions.max(1) as f64
    }
}
