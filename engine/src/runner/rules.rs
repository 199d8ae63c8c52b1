//! The rules every game is played under (see the runner's documentation): ply cap and
//! its adjudication, resignation, the playout cap, openings, the player sides' limit, and
//! the schedule of games.

use crate::game::{fen_of, material, Game, GameOutcome, Termination};
use anyhow::{Context, Result};
use shakmaty::{CastlingMode, Chess, Color, KnownOutcome};
use std::time::Duration;

/// How every game is played (see the module documentation).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rules {
    /// Plies after which a game is adjudicated a draw.
    pub max_plies: u32,
    /// Random legal moves played from the opening position before the sides take over.
    pub random_opening_plies: u32,
    /// Plies during which a search side samples its move by visits.
    pub temperature_plies: u32,
    /// How a game stopped at the ply cap is scored.
    #[serde(default)]
    pub cap: CapRule,
    /// Resignation of search sides; `None`: every game is played out.
    #[serde(default)]
    pub resign: Option<Resign>,
    /// The Q difference past which a played move counts as a blunder for the value
    /// targets of the positions before it ([`super::record::value_targets`]); 0: off.
    #[serde(default)]
    pub deblunder: f32,
}

impl Rules {
    /// The plain rules: no adjudication beyond a draw at the cap, no resignation.
    pub fn plain(max_plies: u32, random_opening_plies: u32, temperature_plies: u32) -> Rules {
        Rules {
            max_plies,
            random_opening_plies,
            temperature_plies,
            cap: CapRule::default(),
            resign: None,
            deblunder: 0.0,
        }
    }
}

/// Scoring at the ply cap (see the module documentation); zeros: a draw.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CapRule {
    /// Material lead in pawns that wins (pawn 1, minor 3, rook 5, queen 9); 0: off.
    pub material: u32,
    /// Root Q (for the mover of the last searched move, in (0, 1]) that wins; 0: off.
    pub value: f32,
}

impl CapRule {
    /// The outcome of `game`, stopped at the cap, `last_q` the root Q of the last
    /// searched move for the side that played it.
    pub fn adjudicate(&self, game: &Game, last_q: Option<(Color, f32)>) -> GameOutcome {
        let position = game.position();
        let lead = material(position, Color::White) - material(position, Color::Black);
        let won = |winner: Color, termination| GameOutcome {
            result: KnownOutcome::Decisive { winner },
            termination,
        };
        if self.material > 0 && lead.unsigned_abs() >= self.material {
            let winner = if lead > 0 { Color::White } else { Color::Black };
            return won(winner, Termination::AdjudicatedMaterial);
        }
        if let (true, Some((mover, q))) = (self.value > 0.0, last_q) {
            if q >= self.value {
                return won(mover, Termination::AdjudicatedValue);
            }
            if q <= -self.value {
                return won(!mover, Termination::AdjudicatedValue);
            }
        }
        GameOutcome {
            result: KnownOutcome::Draw,
            termination: Termination::MaxPlies,
        }
    }
}

/// Resignation of search sides (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resign {
    /// Resign when the root Q is below minus this (in (0, 1)).
    pub threshold: f32,
    /// Fraction of games played out to check the resignations that would have happened.
    pub playthrough: f32,
}

/// Playout-cap randomisation of a search side (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FastMoves {
    /// Root visits of a move that is not recorded.
    pub nodes: u32,
    /// Probability that a move gets the full search and is recorded.
    pub full_fraction: f32,
}

/// A position games start from.
#[derive(Clone, Debug, PartialEq)]
pub struct Opening {
    pub fen: String,
    /// Where it came from, for the PGN (`ember-007`, `book.pgn #3`).
    pub name: String,
    /// How the FEN's castling rights are read and castling moves are written: standard
    /// chess, or Chess960 (any rook; an external engine gets `UCI_Chess960`).
    pub castling: CastlingMode,
}

impl Opening {
    pub fn start() -> Opening {
        Opening {
            fen: fen_of(&Chess::default()),
            name: String::new(),
            castling: CastlingMode::Standard,
        }
    }

    /// A game at this opening's position.
    pub fn game(&self) -> Result<Game> {
        Game::from_fen_in(&self.fen, self.castling)
            .with_context(|| format!("opening {:?}", self.fen))
    }
}

/// The limit a [`PlayerSide`] moves under (search sides have their own node count).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    Nodes(u64),
    MoveTime(u64),
    /// Base time and increment per game, milliseconds.
    Clock {
        base_ms: u64,
        inc_ms: u64,
    },
}

impl std::str::FromStr for Limit {
    type Err = String;
    /// A time control `BASE+INC` in seconds (`10+0.1`, `60`).
    fn from_str(s: &str) -> Result<Limit, String> {
        let (base, inc) = s.split_once('+').unwrap_or((s, "0"));
        let secs = |x: &str| {
            x.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("--tc {s:?}: expected BASE+INC in seconds, e.g. 10+0.1"))
        };
        let (base, inc) = (secs(base)?, secs(inc)?);
        if base <= 0.0 {
            return Err(format!("--tc {s:?}: the base time must be above 0"));
        }
        Ok(Limit::Clock {
            base_ms: (base * 1000.0).round() as u64,
            inc_ms: (inc * 1000.0).round() as u64,
        })
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Nodes(n) => write!(f, "{n} nodes/move"),
            Limit::MoveTime(ms) => write!(f, "{ms} ms/move"),
            Limit::Clock { base_ms, inc_ms } => {
                write!(
                    f,
                    "{}+{}",
                    *base_ms as f64 / 1000.0,
                    *inc_ms as f64 / 1000.0
                )
            }
        }
    }
}

/// Which games are played, and how many at once.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub games: usize,
    pub in_flight: usize,
    /// Opening positions, taken in turn (by pair when paired); empty: the standard one.
    pub openings: Vec<Opening>,
    /// Games `2k` and `2k+1` share an opening with colours swapped; otherwise side 0 has
    /// White in every game.
    pub paired: bool,
    pub seed: u64,
    /// The PGN `Round` of game 0, so that games played in several calls number on.
    pub first_round: usize,
    /// The PGN `Event`.
    pub event: String,
    /// The limit of the player sides (and the PGN's `TimeControl`).
    pub limit: Limit,
    /// Stop after this long (benchmarks): unfinished games are abandoned, their plies
    /// counted as positions, and they yield no record.
    pub time_limit: Option<Duration>,
    /// Self-play on a GPU: the games form two groups and the evaluator runs on its own
    /// thread, so one group's trees are searched while the other's leaves are evaluated.
    pub pipeline: bool,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            games: 2,
            in_flight: 2,
            openings: Vec::new(),
            paired: false,
            seed: 1,
            first_round: 1,
            event: "Ember".to_string(),
            limit: Limit::Nodes(800),
            time_limit: None,
            pipeline: false,
        }
    }
}
