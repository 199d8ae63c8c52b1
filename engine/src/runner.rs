//! The game runner: every game Ember plays outside the UCI engine is played here, by
//! self-play, the gating match, `trainer match`/`gauntlet` and the self-play benchmark.
//!
//! A runner keeps `in_flight` games going at once, each in a *lane*, between two
//! [`Side`]s:
//! - a [`SearchSide`] is a network searched by MCTS. Each round, every game whose mover
//!   is a search side descends its tree (games in parallel, on all cores), and the leaves
//!   of all games go to that side's evaluator in one call. The evaluator is shared by the
//!   games, and so is its evaluation cache ([`CachedEvaluator`], `cache_entries` positions,
//!   built here): a position that many
//!   games reach (the common openings) is evaluated once. In self-play one side plays
//!   both colours with one tree per game.
//! - a [`PlayerSide`] is anything else that picks a move (an external UCI engine, the
//!   random and greedy movers, Ember under a clock). Each lane holds its own player, and
//!   its moves are computed on a thread of their own while the searches go on. A player
//!   that fails a move (crashes, hangs, answers with an illegal or malformed move, runs
//!   out of time) loses that game with the reason recorded, and is started afresh for the
//!   lane's next game.
//!
//! The rules every game is played under are stated once, in [`Rules`] and here:
//! - **Openings.** A game starts from its opening position (the schedule's book, taken in
//!   turn; the standard position without one), then `random_opening_plies` uniformly
//!   random legal moves. In a paired schedule games `2k` and `2k+1` share the opening and
//!   its random plies, with colours swapped.
//! - **Temperature.** A search side plays a move drawn in proportion to the root visits
//!   while the game is younger than `temperature_plies` plies, otherwise the most visited.
//! - **Ply cap.** A game still going after `max_plies` plies (counted from the opening
//!   position) is adjudicated, unless the rules of chess ended it on that ply: by
//!   [`CapRule`], the side ahead by `material` pawns or more wins, else the side whose
//!   search last valued the position at `value` or more (root Q of the last searched
//!   move, for its mover) wins, else it is a draw (both off: always a draw).
//! - **Resignation** ([`Resign`], self-play): a search side whose root Q is below
//!   `-threshold` when it is to play resigns. In a `playthrough` fraction of the games
//!   nobody resigns; there the first side that would have resigned is noted, and the
//!   game's end says whether resigning would have been wrong (it did not lose).
//! - **Playout cap** ([`FastMoves`], self-play): each move is searched to the full node
//!   count with probability `full_fraction` and recorded as a training sample; the other
//!   moves get `nodes` visits and are not recorded, so every policy target comes from a
//!   full search while games go faster.
//! - **Stalls.** A search that adds no visit for two rounds in a row plays its best move
//!   so far (the first legal move when it has none), so no game can hang.
//! - **Seeding.** Everything random in game `i` (its random plies, temperature draws,
//!   root noise, the seeds of its players) comes from `seed` and `i` alone, so a seeded
//!   schedule replays move for move with a deterministic evaluator, however many games
//!   are in flight.
//!
//! Each finished game becomes a [`GameRecord`]: moves, result, termination and its
//! reason, per-move search statistics, the side names, training samples when asked for,
//! and its PGN (written here and nowhere else).

use crate::encoding::move_to_index;
use crate::game::{fen_of, material, Game, GameOutcome, Termination};
use crate::mcts::params::tree_nodes_for_visits;
use crate::mcts::{CachedEvaluator, EvalBatch, Evaluator, Search, SearchParams};
use crate::phase_times::PhaseTimes;
use crate::players::{Failure, MoveLimit, Player};
use anyhow::{anyhow, bail, Context, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rayon::prelude::*;
use shakmaty::{Chess, Color, KnownOutcome, Move, Position};
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
}

impl Opening {
    pub fn start() -> Opening {
        Opening {
            fen: fen_of(&Chess::default()),
            name: String::new(),
        }
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

/// A network searched by MCTS, its leaves batched over all games in flight.
pub struct SearchSide<'a> {
    pub name: String,
    pub evaluator: &'a mut dyn Evaluator,
    /// `max_batch` is the leaves one game adds to a round's batch; `cache_entries` the
    /// size of the network's evaluation cache, which the runner puts in front of
    /// `evaluator` and all the games share.
    pub params: SearchParams,
    /// Root visits before each move (visits kept from the previous move count).
    pub nodes: u32,
    /// Keep each searched position as a training sample.
    pub record_samples: bool,
    /// Playout-cap randomisation: most moves searched to fewer nodes and not recorded.
    pub fast: Option<FastMoves>,
}

/// Starts a player with a seed (one per lane of a runner).
pub type StartPlayer<'a> = dyn Fn(u64) -> Result<Box<dyn Player>> + Sync + 'a;

/// A player that picks its moves alone, one per lane, started by `start(seed)`.
pub struct PlayerSide<'a> {
    pub name: String,
    pub start: &'a StartPlayer<'a>,
}

pub enum Side<'a> {
    Search(SearchSide<'a>),
    Player(PlayerSide<'a>),
}

impl Side<'_> {
    pub fn name(&self) -> &str {
        match self {
            Side::Search(s) => &s.name,
            Side::Player(p) => &p.name,
        }
    }
}

/// Who plays: one search side against itself, or two sides.
pub enum Contest<'a> {
    SelfPlay(SearchSide<'a>),
    Match([Side<'a>; 2]),
}

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
    /// In a game played out under [`Resign`]: the colour that would have resigned first.
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

/// What a seat (side 0 or 1) is, as the lanes see it.
#[derive(Clone, Copy)]
enum Seat {
    /// Searched with tree `tree` (self-play: both seats share tree 0).
    Search {
        tree: usize,
        nodes: u32,
        max_batch: usize,
        record: bool,
        /// Playout cap: visits of a fast move (0: every move is full) and the chance of
        /// a full one.
        fast_nodes: u32,
        full_fraction: f32,
    },
    Player,
}

/// A searched position waiting for its game's result: position, visits, root Q.
type PendingSample = (Chess, Vec<(u16, f32)>, f32);

/// One game being played.
struct InPlay {
    index: usize,
    white: usize,
    opening: Opening,
    start_fen: String,
    game: Game,
    searches: [Option<Search>; 2],
    /// The tree whose leaves are in `batch`.
    gathered_by: usize,
    batch: EvalBatch,
    timing: PhaseTimes,
    rng: StdRng,
    outcome: Option<GameOutcome>,
    failure: Option<(usize, Termination, String)>,
    stalled: u32,
    /// Player sides' clocks (ms left) under a game clock.
    clock: [i64; 2],
    samples: Vec<PendingSample>,
    searched: Vec<Option<MoveStats>>,
    /// The current move gets the full search (playout cap).
    full: bool,
    /// Root Q of the last searched move, for its mover.
    last_q: Option<(Color, f32)>,
    /// Nobody resigns in this game; the first would-be resigner is noted.
    playthrough: bool,
    would_resign: Option<Color>,
}

/// The seed of everything random in `stream` of game (or pair) `n`.
fn derive_seed(seed: u64, stream: u64, n: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(n as u64)
}

impl InPlay {
    fn new(
        index: usize,
        rules: &Rules,
        sched: &Schedule,
        seats: &[Seat; 2],
        params: &[Option<SearchParams>; 2],
    ) -> Result<InPlay> {
        let pair = if sched.paired { index / 2 } else { index };
        let opening = if sched.openings.is_empty() {
            Opening::start()
        } else {
            sched.openings[pair % sched.openings.len()].clone()
        };
        let mut game =
            Game::from_fen(&opening.fen).with_context(|| format!("opening {:?}", opening.fen))?;
        let mut opening_rng = StdRng::seed_from_u64(derive_seed(sched.seed, 1, pair));
        for _ in 0..rules.random_opening_plies {
            let moves = game.position().legal_moves();
            if moves.is_empty() || game.outcome().is_some() {
                break;
            }
            game.play(moves[opening_rng.random_range(0..moves.len())]);
        }
        let mut rng = StdRng::seed_from_u64(derive_seed(sched.seed, 2, index));
        let mut searches: [Option<Search>; 2] = [None, None];
        for seat in seats {
            if let Seat::Search { tree, .. } = *seat {
                if searches[tree].is_none() {
                    let p = params[tree].clone().expect("a search side has parameters");
                    let mut s = Search::new(&game, p);
                    s.seed_noise(rng.random());
                    searches[tree] = Some(s);
                }
            }
        }
        let white = if sched.paired { index % 2 } else { 0 };
        let clock = match sched.limit {
            Limit::Clock { base_ms, .. } => [base_ms as i64; 2],
            _ => [0; 2],
        };
        let outcome = game.outcome_with_ply_cap(rules.max_plies);
        let playthrough = rules
            .resign
            .is_some_and(|r| rng.random::<f32>() < r.playthrough);
        let mut game = InPlay {
            index,
            white,
            opening,
            start_fen: fen_of(game.position()),
            searched: vec![None; game.ply()],
            game,
            searches,
            gathered_by: 0,
            batch: EvalBatch::new(),
            timing: PhaseTimes::default(),
            rng,
            outcome,
            failure: None,
            stalled: 0,
            clock,
            samples: Vec::new(),
            full: true,
            last_q: None,
            playthrough,
            would_resign: None,
        };
        game.draw_full(seats);
        Ok(game)
    }

    /// Whether the coming move gets the full search (playout cap of the mover's side).
    fn draw_full(&mut self, seats: &[Seat; 2]) {
        self.full = match seats[self.mover()] {
            Seat::Search {
                fast_nodes,
                full_fraction,
                ..
            } if fast_nodes > 0 => self.rng.random::<f32>() < full_fraction,
            _ => true,
        };
    }

    /// Root visits the coming move of a search side gets.
    fn target_nodes(&self, seat: Seat) -> u32 {
        match seat {
            Seat::Search {
                nodes, fast_nodes, ..
            } if !self.full && fast_nodes > 0 => fast_nodes.min(nodes),
            Seat::Search { nodes, .. } => nodes,
            Seat::Player => 0,
        }
    }

    fn done(&self) -> bool {
        self.outcome.is_some()
    }

    /// The seat (side) to move.
    fn mover(&self) -> usize {
        let white_to_move = self.game.position().turn() == Color::White;
        if white_to_move == (self.white == 0) {
            0
        } else {
            1
        }
    }

    /// For a search side to move: plays its move if its search is done, then gathers
    /// this round's leaves of whichever search side is then to move.
    fn step(&mut self, seats: &[Seat; 2], rules: &Rules) {
        self.batch.clear();
        if self.done() {
            return;
        }
        let seat = seats[self.mover()];
        let Seat::Search { tree, .. } = seat else {
            return;
        };
        let nodes = self.target_nodes(seat);
        let search = self.searches[tree]
            .as_ref()
            .expect("search side has a tree");
        if search.root_visits() >= nodes || search.root_terminal().is_some() || self.stalled >= 2 {
            self.play_searched(seats, rules);
            if self.done() {
                return;
            }
        }
        let seat = seats[self.mover()];
        let Seat::Search {
            tree, max_batch, ..
        } = seat
        else {
            return;
        };
        let nodes = self.target_nodes(seat);
        let search = self.searches[tree]
            .as_mut()
            .expect("search side has a tree");
        let before = search.root_visits();
        let want = max_batch.min(nodes.saturating_sub(before) as usize).max(1);
        search.gather(want, &mut self.batch, &mut self.timing);
        self.gathered_by = tree;
        if self.batch.is_empty() && search.root_visits() == before {
            self.stalled += 1;
        } else {
            self.stalled = 0;
        }
    }

    fn play_searched(&mut self, seats: &[Seat; 2], rules: &Rules) {
        let Seat::Search { tree, record, .. } = seats[self.mover()] else {
            return;
        };
        let search = self.searches[tree]
            .as_ref()
            .expect("search side has a tree");
        let temperature = if (self.game.ply() as u32) < rules.temperature_plies {
            1.0
        } else {
            0.0
        };
        let chosen = search
            .choose_move(temperature, &mut self.rng)
            .or_else(|| self.game.position().legal_moves().first().copied());
        let Some(mv) = chosen else {
            self.outcome = self.game.outcome();
            return;
        };
        let stats = MoveStats {
            nodes: search.root_visits(),
            q: search.root_q(),
            full: self.full,
        };
        let turn = self.game.position().turn();
        if let Some(r) = rules.resign {
            if stats.q < -r.threshold {
                if !self.playthrough {
                    self.outcome = Some(GameOutcome {
                        result: KnownOutcome::Decisive { winner: !turn },
                        termination: Termination::Resignation,
                    });
                    return;
                }
                self.would_resign.get_or_insert(turn);
            }
        }
        self.last_q = Some((turn, stats.q));
        if record && self.full {
            let visits: Vec<(u16, f32)> = search
                .visit_distribution()
                .into_iter()
                .map(|(m, p)| (move_to_index(&m, turn) as u16, p))
                .collect();
            if visits.iter().any(|(_, p)| *p > 0.0) {
                self.samples
                    .push((self.game.position().clone(), visits, stats.q));
            }
        }
        self.searched.push(Some(stats));
        self.play(mv, seats, rules);
    }

    fn play(&mut self, mv: Move, seats: &[Seat; 2], rules: &Rules) {
        self.stalled = 0;
        self.game.play(mv);
        for s in self.searches.iter_mut().flatten() {
            s.advance_to(&self.game);
        }
        self.outcome = self.game.outcome_with_ply_cap(rules.max_plies);
        if self
            .outcome
            .is_some_and(|o| o.termination == Termination::MaxPlies)
        {
            self.outcome = Some(rules.cap.adjudicate(&self.game, self.last_q));
        }
        self.draw_full(seats);
    }

    /// The limit of the player to move.
    fn player_limit(&self, limit: Limit) -> MoveLimit {
        let seat = self.mover();
        match limit {
            Limit::Nodes(n) => MoveLimit::Nodes(n),
            Limit::MoveTime(ms) => MoveLimit::MoveTime(ms),
            Limit::Clock { inc_ms, .. } => MoveLimit::Clock {
                own_ms: self.clock[seat].max(0) as u64,
                own_inc_ms: inc_ms,
                other_ms: self.clock[1 - seat].max(0) as u64,
                other_inc_ms: inc_ms,
            },
        }
    }

    /// A player's answer: the move, or the game lost (failure, time).
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        seat: usize,
        name: &str,
        chosen: &Result<Move, Failure>,
        spent: Duration,
        limit: Limit,
        seats: &[Seat; 2],
        rules: &Rules,
    ) {
        let over = match limit {
            Limit::Clock { inc_ms, .. } => {
                self.clock[seat] -= spent.as_millis() as i64;
                let out = self.clock[seat] < 0;
                self.clock[seat] += inc_ms as i64;
                out
            }
            // A move time is kept if the move comes within half of it again (and at
            // least 200 ms) past it.
            Limit::MoveTime(ms) => spent > Duration::from_millis(ms + (ms / 2).max(200)),
            Limit::Nodes(_) => false,
        };
        // A hung engine is reported as hung, not as out of time.
        if over && !matches!(chosen, Err(Failure::Hung(_))) {
            let why = format!(
                "{name} ran out of time ({:.2}s for a move)",
                spent.as_secs_f64()
            );
            self.forfeit(seat, Termination::TimeForfeit, why);
            return;
        }
        match chosen {
            Ok(mv) if self.game.position().is_legal(*mv) => {
                self.searched.push(None);
                self.play(*mv, seats, rules);
            }
            Ok(mv) => {
                let why = format!("{name} {}", Failure::Illegal(crate::game::move_to_uci(*mv)));
                self.forfeit(seat, Termination::Forfeit, why);
            }
            Err(f) => self.forfeit(seat, Termination::Forfeit, format!("{name} {f}")),
        }
    }

    fn forfeit(&mut self, seat: usize, termination: Termination, why: String) {
        let loser_white = seat == self.white;
        self.outcome = Some(GameOutcome {
            result: KnownOutcome::Decisive {
                winner: if loser_white {
                    Color::Black
                } else {
                    Color::White
                },
            },
            termination,
        });
        self.failure = Some((seat, termination, why));
    }

    fn finish(self, names: &[String; 2], sched: &Schedule) -> GameRecord {
        let outcome = self.outcome.expect("finished game has an outcome");
        let samples = self
            .samples
            .into_iter()
            .map(|(position, visits, root_q)| Sample {
                result: outcome.value_for(position.turn()),
                position,
                visits,
                root_q,
            })
            .collect();
        let reason = self.failure.map(|(_, _, why)| why);
        let (white, black) = (&names[self.white], &names[1 - self.white]);
        let mut tags = vec![
            ("Event", sched.event.clone()),
            ("Round", (sched.first_round + self.index).to_string()),
            ("White", white.clone()),
            ("Black", black.clone()),
        ];
        if !self.opening.name.is_empty() {
            tags.push(("Opening", self.opening.name.clone()));
        }
        tags.push(("TimeControl", sched.limit.to_string()));
        tags.push(("PlyCount", self.game.ply().to_string()));
        if let Some(why) = &reason {
            tags.push(("TerminationDetails", why.replace('"', "'")));
        }
        let pgn = self.game.to_pgn(Some(outcome), &tags);
        GameRecord {
            index: self.index,
            white: self.white,
            names: names.clone(),
            opening: self.opening,
            start_fen: self.start_fen,
            moves: self.game.moves().to_vec(),
            searched: self.searched,
            outcome,
            reason,
            would_resign: self.would_resign,
            plies: self.game.ply(),
            samples,
            pgn,
        }
    }
}

/// A lane: a game in flight and the players that outlive it.
struct Lane {
    id: usize,
    players: [Option<Box<dyn Player>>; 2],
    game: Option<InPlay>,
    /// A player's thread has this lane's mover.
    thinking: bool,
}

/// A player's answer from its thread.
struct Answer {
    lane: usize,
    seat: usize,
    player: Box<dyn Player>,
    chosen: Result<Move, Failure>,
    spent: Duration,
}

/// Plays `schedule.games` games of `contest` under `rules`, calling `on_game` as each
/// finishes; `ControlFlow::Break` from it stops the call (games in flight are abandoned).
pub fn play(
    contest: Contest<'_>,
    rules: &Rules,
    schedule: &Schedule,
    mut on_game: impl FnMut(GameRecord) -> ControlFlow<()>,
) -> Result<PlayStats> {
    let start = Instant::now();
    let mut networks: Vec<SearchSide<'_>> = Vec::new();
    let mut seats = [Seat::Player; 2];
    let mut names: [String; 2] = [String::new(), String::new()];
    let mut starters: [Option<&StartPlayer<'_>>; 2] = [None, None];
    let search_seat = |s: &SearchSide, tree: usize| Seat::Search {
        tree,
        nodes: s.nodes.max(1),
        max_batch: s.params.max_batch.max(1),
        record: s.record_samples,
        fast_nodes: s.fast.map_or(0, |f| f.nodes.max(1)),
        full_fraction: s.fast.map_or(1.0, |f| f.full_fraction),
    };
    match contest {
        Contest::SelfPlay(s) => {
            seats = [search_seat(&s, 0); 2];
            names = [s.name.clone(), s.name.clone()];
            networks.push(s);
        }
        Contest::Match(sides) => {
            for (k, side) in sides.into_iter().enumerate() {
                names[k] = side.name().to_string();
                match side {
                    Side::Search(s) => {
                        seats[k] = search_seat(&s, networks.len());
                        networks.push(s);
                    }
                    Side::Player(p) => starters[k] = Some(p.start),
                }
            }
        }
    }
    // One evaluation cache per network, in front of its evaluator and shared by all its
    // games (`cache_entries` of its side); the searches themselves keep none. Each tree is
    // bounded by the visits its moves get ([`tree_nodes_for_visits`]).
    let mut params: [Option<SearchParams>; 2] = [None, None];
    let mut evaluators: Vec<CachedEvaluator<&mut dyn Evaluator>> = Vec::new();
    for (tree, s) in networks.into_iter().enumerate() {
        params[tree] = Some(SearchParams {
            cache_entries: 0,
            max_nodes: s
                .params
                .max_nodes
                .min(tree_nodes_for_visits(u64::from(s.nodes))),
            ..s.params.clone()
        });
        evaluators.push(CachedEvaluator::new(s.evaluator, s.params.cache_entries));
    }
    if schedule.pipeline
        && (evaluators.len() != 1 || seats.iter().any(|s| matches!(s, Seat::Player)))
    {
        bail!("pipelined play needs one search side for both colours (self-play)");
    }
    let mut runner = Runner {
        rules,
        schedule,
        seats,
        params,
        names,
        starters,
        stats: PlayStats::default(),
        next_index: 0,
        stopped: false,
    };
    let mut eval_timing = PhaseTimes::default();
    if schedule.pipeline {
        let mut evaluator = evaluators.pop().expect("one evaluator");
        runner.run_pipelined(&mut evaluator, &mut eval_timing, &mut on_game)?;
    } else {
        let mut evaluators: Vec<&mut dyn Evaluator> = evaluators
            .iter_mut()
            .map(|e| e as &mut dyn Evaluator)
            .collect();
        runner.run(&mut evaluators, &mut eval_timing, &mut on_game)?;
    }
    let mut stats = runner.stats;
    stats.timing += eval_timing;
    stats.evaluations = stats.timing.evaluated;
    stats.cache_hits += stats.timing.cached;
    stats.wall = start.elapsed();
    Ok(stats)
}

struct Runner<'r> {
    rules: &'r Rules,
    schedule: &'r Schedule,
    seats: [Seat; 2],
    params: [Option<SearchParams>; 2],
    names: [String; 2],
    starters: [Option<&'r StartPlayer<'r>>; 2],
    stats: PlayStats,
    next_index: usize,
    /// `on_game` asked to stop, or the time is up: no new games.
    stopped: bool,
}

impl Runner<'_> {
    fn time_up(&self, start: Instant) -> bool {
        self.schedule
            .time_limit
            .is_some_and(|t| start.elapsed() >= t)
    }

    /// Starts the next game in `lane` (its players started or told of a new game), if
    /// any is left. A player that cannot start loses the game at once.
    fn start_game(&mut self, lane: &mut Lane) -> Result<()> {
        if self.stopped || self.next_index >= self.schedule.games {
            return Ok(());
        }
        let index = self.next_index;
        self.next_index += 1;
        let mut game = InPlay::new(index, self.rules, self.schedule, &self.seats, &self.params)?;
        for seat in 0..2 {
            let Some(start) = self.starters[seat] else {
                continue;
            };
            if lane.players[seat].is_none() {
                let seed = derive_seed(self.schedule.seed, 3 + seat as u64, index);
                match start(seed) {
                    Ok(p) => lane.players[seat] = Some(p),
                    Err(e) => {
                        game.forfeit(
                            seat,
                            Termination::Forfeit,
                            format!("{} could not start: {e:#}", self.names[seat]),
                        );
                        break;
                    }
                }
            }
            let player = lane.players[seat].as_mut().expect("started above");
            if let Err(f) = player.new_game() {
                lane.players[seat] = None;
                game.forfeit(
                    seat,
                    Termination::Forfeit,
                    format!("{} {f}", self.names[seat]),
                );
                break;
            }
        }
        lane.game = Some(game);
        Ok(())
    }

    /// Records a finished game and counts it.
    fn retire(&mut self, game: InPlay, on_game: &mut dyn FnMut(GameRecord) -> ControlFlow<()>) {
        if self.stopped {
            // Finished in the round in which `on_game` asked to stop: not reported.
            return;
        }
        let stats = &mut self.stats;
        stats.timing += game.timing;
        for s in game.searches.iter().flatten() {
            stats.collisions += s.stats.collisions;
            stats.cache_hits += s.stats.cache_hits;
        }
        let record = game.finish(&self.names, self.schedule);
        stats.games += 1;
        stats.positions += record.searched.iter().filter(|s| s.is_some()).count();
        stats.finished_plies += record.plies;
        match record.outcome.result {
            KnownOutcome::Decisive {
                winner: Color::White,
            } => stats.white_wins += 1,
            KnownOutcome::Decisive { .. } => stats.black_wins += 1,
            KnownOutcome::Draw => stats.draws += 1,
        }
        if record.outcome.termination == Termination::Resignation {
            stats.resigned += 1;
        }
        if let Some(wrong) = record.resign_false_positive() {
            stats.resign_checked += 1;
            stats.resign_false_positives += usize::from(wrong);
        }
        if on_game(record).is_break() {
            self.stopped = true;
        }
    }

    /// Counts an unfinished game at a time limit.
    fn abandon(&mut self, game: &InPlay) {
        self.stats.positions += game.searched.iter().filter(|s| s.is_some()).count();
        self.stats.timing += game.timing;
        for s in game.searches.iter().flatten() {
            self.stats.collisions += s.stats.collisions;
        }
    }

    /// The plain loop: rounds of searching and evaluating, player moves on their own
    /// threads in between.
    fn run(
        &mut self,
        evaluators: &mut [&mut dyn Evaluator],
        eval_timing: &mut PhaseTimes,
        on_game: &mut dyn FnMut(GameRecord) -> ControlFlow<()>,
    ) -> Result<()> {
        let start = Instant::now();
        let lanes_n = self.schedule.in_flight.clamp(1, self.schedule.games.max(1));
        let mut lanes: Vec<Lane> = (0..lanes_n)
            .map(|id| Lane {
                id,
                players: [None, None],
                game: None,
                thinking: false,
            })
            .collect();
        let mut batches: Vec<EvalBatch> = evaluators.iter().map(|_| EvalBatch::new()).collect();
        let mut offsets: Vec<usize> = Vec::new();
        let (seats, rules, limit) = (self.seats, self.rules, self.schedule.limit);
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = mpsc::channel::<Answer>();
            let mut thinking = 0usize;
            loop {
                if self.time_up(start) && !self.stopped {
                    self.stopped = true;
                    for lane in &mut lanes {
                        if let Some(g) = lane.game.take() {
                            self.abandon(&g);
                        }
                    }
                }
                // Finished games out, new ones in.
                for lane in &mut lanes {
                    if lane.thinking {
                        continue;
                    }
                    if lane.game.as_ref().is_some_and(InPlay::done) {
                        let g = lane.game.take().expect("checked");
                        self.retire(g, on_game);
                    }
                    if self.stopped {
                        lane.game = None;
                    } else if lane.game.is_none() {
                        self.start_game(lane)?;
                    }
                }
                if lanes.iter().all(|l| l.game.is_none() && !l.thinking) {
                    return Ok(());
                }
                // Player moves go to their threads.
                for lane in &mut lanes {
                    let Some(g) = lane.game.as_ref() else {
                        continue;
                    };
                    let seat = g.mover();
                    if lane.thinking || g.done() || !matches!(seats[seat], Seat::Player) {
                        continue;
                    }
                    let mut player = lane.players[seat].take().expect("player seats are filled");
                    let (position, move_limit) = (g.game.clone(), g.player_limit(limit));
                    let (tx, id) = (tx.clone(), lane.id);
                    lane.thinking = true;
                    thinking += 1;
                    scope.spawn(move || {
                        let t0 = Instant::now();
                        let chosen = player.choose(&position, move_limit);
                        let spent = t0.elapsed();
                        let _ = tx.send(Answer {
                            lane: id,
                            seat,
                            player,
                            chosen,
                            spent,
                        });
                    });
                }
                // One round of the searches.
                lanes.par_iter_mut().for_each(|l| {
                    if let (Some(g), false) = (l.game.as_mut(), l.thinking) {
                        g.step(&seats, rules);
                    } else if let Some(g) = l.game.as_mut() {
                        g.batch.clear();
                    }
                });
                for b in &mut batches {
                    b.clear();
                }
                offsets.clear();
                let mut searched = false;
                for lane in &lanes {
                    let off = match &lane.game {
                        Some(g) if !g.batch.is_empty() => {
                            searched = true;
                            batches[g.gathered_by].append(&g.batch)
                        }
                        _ => 0,
                    };
                    offsets.push(off);
                }
                if searched {
                    for (k, batch) in batches.iter_mut().enumerate() {
                        if !batch.is_empty() {
                            evaluators[k]
                                .evaluate(batch, eval_timing)
                                .with_context(|| format!("evaluating for {}", self.tree_name(k)))?;
                        }
                    }
                    let batches = &batches;
                    lanes
                        .par_iter_mut()
                        .zip(offsets.par_iter())
                        .for_each(|(l, &off)| {
                            if let Some(g) = l.game.as_mut() {
                                if !g.batch.is_empty() {
                                    let tree = g.gathered_by;
                                    let s = g.searches[tree].as_mut().expect("gathered by a tree");
                                    s.apply(&batches[tree], off, &mut g.timing);
                                }
                            }
                        });
                }
                // Player answers: wait for one when nothing else can go on.
                let any_search_mover = lanes.iter().any(|l| {
                    l.game.as_ref().is_some_and(|g| {
                        !l.thinking && !g.done() && matches!(seats[g.mover()], Seat::Search { .. })
                    })
                });
                let mut answers = Vec::new();
                if thinking > 0
                    && !any_search_mover
                    && !lanes
                        .iter()
                        .any(|l| l.game.as_ref().is_some_and(InPlay::done))
                {
                    answers.push(
                        rx.recv()
                            .map_err(|_| anyhow!("a player's thread stopped"))?,
                    );
                }
                answers.extend(rx.try_iter());
                for a in answers {
                    thinking -= 1;
                    let lane = &mut lanes[a.lane];
                    lane.thinking = false;
                    if !matches!(a.chosen, Err(Failure::Crashed(_) | Failure::Hung(_))) {
                        lane.players[a.seat] = Some(a.player);
                    }
                    if let Some(g) = lane.game.as_mut() {
                        g.answer(
                            a.seat,
                            &self.names[a.seat],
                            &a.chosen,
                            a.spent,
                            limit,
                            &seats,
                            rules,
                        );
                    }
                }
            }
        })
    }

    fn tree_name(&self, tree: usize) -> &str {
        let seat = (0..2)
            .find(|&s| matches!(self.seats[s], Seat::Search { tree: t, .. } if t == tree))
            .unwrap_or(0);
        &self.names[seat]
    }

    /// Self-play with the evaluator on its own thread and the games in two groups: while
    /// it evaluates one group's batch, the trees of the other group are searched (double
    /// buffering), so neither the device nor the cores wait for each other.
    fn run_pipelined(
        &mut self,
        evaluator: &mut dyn Evaluator,
        eval_timing: &mut PhaseTimes,
        on_game: &mut dyn FnMut(GameRecord) -> ControlFlow<()>,
    ) -> Result<()> {
        let start = Instant::now();
        let lanes_n = self.schedule.in_flight.clamp(1, self.schedule.games.max(1));
        let mut groups: [Group; 2] = [Group::default(), Group::default()];
        for k in 0..lanes_n {
            let mut lane = Lane {
                id: k,
                players: [None, None],
                game: None,
                thinking: false,
            };
            self.start_game(&mut lane)?;
            if lane.game.is_some() {
                groups[k % 2].lanes.push(lane);
            }
        }
        let (seats, rules) = (self.seats, self.rules);
        std::thread::scope(|scope| -> Result<()> {
            let (to_eval, requests) = mpsc::channel::<EvalBatch>();
            let (answer, answers) = mpsc::channel::<Result<(EvalBatch, PhaseTimes)>>();
            scope.spawn(move || {
                for mut batch in requests {
                    let mut t = PhaseTimes::default();
                    let r = evaluator.evaluate(&mut batch, &mut t).map(|()| (batch, t));
                    if answer.send(r).is_err() {
                        break;
                    }
                }
            });
            let (a, b) = groups.split_at_mut(1);
            let (mut busy, mut idle) = (&mut a[0], &mut b[0]);
            busy.gather(&seats, rules);
            to_eval.send(std::mem::take(&mut busy.batch))?;
            loop {
                let stop = self.time_up(start);
                if !stop {
                    idle.gather(&seats, rules);
                }
                let (batch, t) = answers
                    .recv()
                    .map_err(|_| anyhow!("the evaluator thread stopped"))??;
                *eval_timing += t;
                busy.batch = batch;
                busy.apply();
                self.retire_group(busy, on_game)?;
                if stop {
                    for g in [&*busy, &*idle] {
                        for l in &g.lanes {
                            if let Some(game) = &l.game {
                                self.abandon(game);
                            }
                        }
                    }
                    return Ok(());
                }
                if busy.lanes.is_empty() && idle.lanes.is_empty() {
                    return Ok(());
                }
                to_eval.send(std::mem::take(&mut idle.batch))?;
                std::mem::swap(&mut busy, &mut idle);
            }
        })
    }

    /// Records the finished games of `group` and starts new ones in their lanes.
    fn retire_group(
        &mut self,
        group: &mut Group,
        on_game: &mut dyn FnMut(GameRecord) -> ControlFlow<()>,
    ) -> Result<()> {
        for lane in &mut group.lanes {
            if lane.game.as_ref().is_some_and(InPlay::done) {
                let g = lane.game.take().expect("checked");
                self.retire(g, on_game);
                self.start_game(lane)?;
            }
        }
        group.lanes.retain(|l| l.game.is_some());
        Ok(())
    }
}

/// Lanes whose leaves share a batch (pipelined self-play).
#[derive(Default)]
struct Group {
    lanes: Vec<Lane>,
    batch: EvalBatch,
    offsets: Vec<usize>,
}

impl Group {
    fn gather(&mut self, seats: &[Seat; 2], rules: &Rules) {
        self.lanes.par_iter_mut().for_each(|l| {
            if let Some(g) = l.game.as_mut() {
                g.step(seats, rules);
            }
        });
        let parts: Vec<&EvalBatch> = self
            .lanes
            .iter()
            .filter_map(|l| l.game.as_ref().map(|g| &g.batch))
            .collect();
        self.batch.assign_concat(&parts, &mut self.offsets);
    }

    fn apply(&mut self) {
        let batch = &self.batch;
        // Every lane of a group holds a game (see `retire_group`).
        self.lanes
            .par_iter_mut()
            .zip(self.offsets.par_iter())
            .for_each(|(l, &off)| {
                let g = l.game.as_mut().expect("a group's lanes hold games");
                if !g.batch.is_empty() {
                    let s = g.searches[0].as_mut().expect("self-play has one tree");
                    s.apply(batch, off, &mut g.timing);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcts::UniformEvaluator;
    use crate::players::RandomPlayer;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Uniform priors, a drawn value, and a count of the positions it was sent.
    #[derive(Default)]
    struct Counting {
        positions: usize,
    }

    impl Evaluator for Counting {
        fn evaluate(&mut self, batch: &mut EvalBatch, t: &mut PhaseTimes) -> Result<()> {
            self.positions += batch.len();
            UniformEvaluator.evaluate(batch, t)
        }
    }

    fn rules(max_plies: u32) -> Rules {
        Rules::plain(max_plies, 0, 6)
    }

    fn search_side<'a>(evaluator: &'a mut dyn Evaluator, nodes: u32) -> SearchSide<'a> {
        SearchSide {
            name: "search".into(),
            evaluator,
            params: SearchParams {
                max_batch: 4,
                cache_entries: 0,
                ..SearchParams::self_play()
            },
            nodes,
            record_samples: true,
            fast: None,
        }
    }

    /// Plays the whole schedule; the records in game order.
    fn play_all(
        contest: Contest<'_>,
        rules: &Rules,
        schedule: &Schedule,
    ) -> (Vec<GameRecord>, PlayStats) {
        let mut games = Vec::new();
        let stats = play(contest, rules, schedule, |r| {
            games.push(r);
            ControlFlow::Continue(())
        })
        .unwrap();
        games.sort_by_key(|r| r.index);
        (games, stats)
    }

    /// Six self-play games (index, PGN) with a cache of `cache_entries` positions.
    fn self_play(
        in_flight: usize,
        evaluator: &mut dyn Evaluator,
        cache_entries: usize,
    ) -> (Vec<(usize, String)>, PlayStats) {
        let schedule = Schedule {
            games: 6,
            in_flight,
            seed: 11,
            ..Schedule::default()
        };
        let mut side = search_side(evaluator, 8);
        side.params.cache_entries = cache_entries;
        let (games, stats) = play_all(Contest::SelfPlay(side), &rules(30), &schedule);
        (games.into_iter().map(|r| (r.index, r.pgn)).collect(), stats)
    }

    #[test]
    fn a_seeded_schedule_plays_the_same_games_whatever_the_games_in_flight() {
        let (one, _) = self_play(1, &mut UniformEvaluator, 0);
        let (many, _) = self_play(6, &mut UniformEvaluator, 0);
        assert_eq!(one.len(), 6);
        assert_eq!(one, many);
        assert_ne!(one[0].1, one[1].1, "games differ by their seeds");
    }

    #[test]
    fn the_shared_cache_sends_a_position_reached_by_many_games_to_the_network_once() {
        // Six games start from one position: without a cache, each round's batch holds
        // it six times; with one, the network sees it once.
        let mut plain = Counting::default();
        let (_, plain_stats) = self_play(6, &mut plain, 0);
        let mut counting = Counting::default();
        let (games, stats) = self_play(6, &mut counting, 10_000);
        assert_eq!(games, self_play(6, &mut UniformEvaluator, 0).0);
        assert_eq!(stats.cache_hits, stats.timing.cached);
        assert!(stats.cache_hits > 0);
        assert_eq!(plain_stats.cache_hits, 0);
        assert_eq!(
            counting.positions as u64 + stats.cache_hits,
            plain.positions as u64,
            "every leaf is answered by the network or the cache"
        );
        assert!(counting.positions < plain.positions);
    }

    /// Plays `games` games of a search side against players built by `start`.
    fn against(games: usize, limit: Limit, start: &StartPlayer) -> Vec<GameRecord> {
        let mut eval = UniformEvaluator;
        let mut side = search_side(&mut eval, 4);
        side.record_samples = false;
        let contest = Contest::Match([
            Side::Search(side),
            Side::Player(PlayerSide {
                name: "player".into(),
                start,
            }),
        ]);
        let schedule = Schedule {
            games,
            in_flight: 3,
            paired: true,
            limit,
            ..Schedule::default()
        };
        play_all(contest, &rules(40), &schedule).0
    }

    #[test]
    fn a_search_side_and_a_player_side_alternate_and_the_record_says_who_searched() {
        let start = |seed| -> Result<Box<dyn Player>> { Ok(Box::new(RandomPlayer::new(seed))) };
        let games = against(4, Limit::Nodes(1), &start);
        assert_eq!(games.len(), 4);
        for g in &games {
            assert_eq!(g.white, g.index % 2, "colours alternate within a pair");
            assert_eq!(g.moves.len(), g.plies);
            assert_eq!(g.searched.len(), g.plies);
            for (ply, s) in g.searched.iter().enumerate() {
                let search_to_move = (ply % 2 == 0) == (g.white == 0);
                assert_eq!(s.is_some(), search_to_move, "game {} ply {ply}", g.index);
                if let Some(s) = s {
                    assert!(s.nodes >= 4);
                }
            }
            assert!(g.pgn.contains(&format!("[Round \"{}\"]", g.index + 1)));
            assert!(g.samples.is_empty());
        }
    }

    /// Plays random moves, but fails its `fail_at`-th move of every game, and counts its
    /// starts.
    struct Failing {
        moves: usize,
        fail_at: usize,
        failure: Failure,
        sleep: Duration,
    }

    impl Player for Failing {
        fn name(&self) -> String {
            "failing".into()
        }
        fn new_game(&mut self) -> Result<(), Failure> {
            self.moves = 0;
            Ok(())
        }
        fn choose(&mut self, game: &Game, _: MoveLimit) -> Result<Move, Failure> {
            self.moves += 1;
            if self.moves == self.fail_at {
                std::thread::sleep(self.sleep);
                if self.sleep.is_zero() {
                    return Err(self.failure.clone());
                }
            }
            Ok(game.position().legal_moves()[0])
        }
    }

    #[test]
    fn a_player_that_crashes_loses_the_game_with_the_reason_and_is_started_again() {
        let starts = AtomicUsize::new(0);
        let start = |_| -> Result<Box<dyn Player>> {
            starts.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(Failing {
                moves: 0,
                fail_at: 3,
                failure: Failure::Crashed("exited".into()),
                sleep: Duration::ZERO,
            }))
        };
        let games = against(6, Limit::Nodes(1), &start);
        assert_eq!(games.len(), 6);
        for g in &games {
            assert_eq!(g.outcome.termination, Termination::Forfeit);
            assert_eq!(g.score(0), 1.0, "the search side wins game {}", g.index);
            let why = g.reason.as_deref().unwrap();
            assert!(why.contains("player crashed (exited)"), "{why}");
            assert!(g.pgn.contains("TerminationDetails"));
        }
        // A crashed player is dropped and started afresh for its lane's next game.
        assert_eq!(starts.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn a_player_over_its_clock_loses_on_time() {
        let start = |_| -> Result<Box<dyn Player>> {
            Ok(Box::new(Failing {
                moves: 0,
                fail_at: 2,
                failure: Failure::Other(String::new()),
                sleep: Duration::from_millis(300),
            }))
        };
        let games = against(
            2,
            Limit::Clock {
                base_ms: 200,
                inc_ms: 0,
            },
            &start,
        );
        for g in &games {
            assert_eq!(g.outcome.termination, Termination::TimeForfeit);
            assert_eq!(g.score(1), 0.0);
            assert!(g.reason.as_deref().unwrap().contains("ran out of time"));
        }
    }

    #[test]
    fn breaking_from_on_game_stops_the_schedule() {
        let mut seen = 0;
        let schedule = Schedule {
            games: 50,
            in_flight: 2,
            ..Schedule::default()
        };
        let stats = play(
            Contest::SelfPlay(search_side(&mut UniformEvaluator, 2)),
            &rules(10),
            &schedule,
            |_| {
                seen += 1;
                if seen == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .unwrap();
        assert_eq!((seen, stats.games), (3, 3));
    }

    #[test]
    fn the_ply_cap_and_random_opening_plies_follow_the_rules() {
        let schedule = Schedule {
            games: 4,
            in_flight: 4,
            paired: true,
            ..Schedule::default()
        };
        let rules = Rules::plain(12, 3, 0);
        let mut eval = UniformEvaluator;
        let side = search_side(&mut eval, 2);
        let (games, _) = play_all(Contest::SelfPlay(side), &rules, &schedule);
        for g in &games {
            assert!(g.plies <= 12);
            assert!(g.searched[..3].iter().all(Option::is_none), "random plies");
            assert!(g.searched[3..].iter().all(Option::is_some));
            if g.outcome.termination == Termination::MaxPlies {
                assert_eq!(g.plies, 12);
            }
        }
        assert_eq!(
            games[0].start_fen, games[1].start_fen,
            "a pair shares its opening"
        );
        assert_ne!(games[0].start_fen, games[2].start_fen);
    }

    #[test]
    fn the_cap_rule_scores_material_and_value_for_both_colours() {
        let capped = |fen: &str| Game::from_fen(fen).unwrap();
        // White is a rook up; then the same with colours swapped.
        let white_up = capped("4k3/8/8/8/8/8/8/R3K3 w - - 0 1");
        let black_up = capped("r3k3/8/8/8/8/8/8/4K3 b - - 0 1");
        let rule = CapRule {
            material: 3,
            value: 0.0,
        };
        let won = |g: &GameOutcome| (g.result.winner(), g.termination);
        let by_material = Termination::AdjudicatedMaterial;
        assert_eq!(
            won(&rule.adjudicate(&white_up, None)),
            (Some(Color::White), by_material)
        );
        assert_eq!(
            won(&rule.adjudicate(&black_up, None)),
            (Some(Color::Black), by_material)
        );
        let strict = CapRule {
            material: 6,
            value: 0.0,
        };
        assert_eq!(
            strict.adjudicate(&white_up, None).termination,
            Termination::MaxPlies
        );
        assert_eq!(
            strict.adjudicate(&white_up, None).result,
            KnownOutcome::Draw
        );
        // By value: the last mover's root Q decides, for it or against it.
        let even = capped("4k3/8/8/8/8/8/8/4K3 w - - 0 1");
        let by_value = CapRule {
            material: 3,
            value: 0.5,
        };
        let value = Termination::AdjudicatedValue;
        for (last, winner) in [
            ((Color::Black, 0.8), Some(Color::Black)),
            ((Color::Black, -0.8), Some(Color::White)),
            ((Color::White, 0.6), Some(Color::White)),
            ((Color::White, -0.6), Some(Color::Black)),
        ] {
            assert_eq!(
                won(&by_value.adjudicate(&even, Some(last))),
                (winner, value),
                "{last:?}"
            );
        }
        assert_eq!(
            by_value.adjudicate(&even, Some((Color::White, 0.3))).result,
            KnownOutcome::Draw
        );
        // Material comes first.
        assert_eq!(
            won(&by_value.adjudicate(&black_up, Some((Color::White, 0.9)))),
            (Some(Color::Black), by_material)
        );
        assert_eq!(
            CapRule::default()
                .adjudicate(&white_up, Some((Color::White, 1.0)))
                .result,
            KnownOutcome::Draw
        );
    }

    /// Uniform priors, and Black winning every position.
    struct BlackWins;

    impl Evaluator for BlackWins {
        fn evaluate(&mut self, batch: &mut EvalBatch, t: &mut PhaseTimes) -> Result<()> {
            UniformEvaluator.evaluate(batch, t)?;
            for i in 0..batch.len() {
                let white = batch.position(i).turn() == Color::White;
                batch.set_wdl(
                    i,
                    if white {
                        [0.0, 0.0, 1.0]
                    } else {
                        [1.0, 0.0, 0.0]
                    },
                );
            }
            Ok(())
        }
    }

    fn resigning(playthrough: f32) -> (Vec<GameRecord>, PlayStats) {
        let rules = Rules {
            resign: Some(Resign {
                threshold: 0.9,
                playthrough,
            }),
            ..Rules::plain(10, 0, 0)
        };
        let schedule = Schedule {
            games: 4,
            in_flight: 4,
            ..Schedule::default()
        };
        play_all(
            Contest::SelfPlay(search_side(&mut BlackWins, 8)),
            &rules,
            &schedule,
        )
    }

    #[test]
    fn a_hopeless_side_resigns_and_played_out_games_count_false_positives() {
        let (games, stats) = resigning(0.0);
        for g in &games {
            assert_eq!(g.outcome.termination, Termination::Resignation);
            assert_eq!(g.outcome.result.winner(), Some(Color::Black));
            assert_eq!(g.plies, 0, "White resigns at its first move");
            assert!(g.samples.iter().all(|s| s.result == -1.0));
        }
        assert_eq!((stats.resigned, stats.resign_checked), (4, 0));

        // Played out, White would have resigned, but the game reaches the cap and is
        // drawn: every such resignation would have been wrong.
        let (games, stats) = resigning(1.0);
        for g in &games {
            assert_eq!(g.would_resign, Some(Color::White));
            assert_eq!(g.outcome.result, KnownOutcome::Draw);
            assert_eq!(g.resign_false_positive(), Some(true));
        }
        assert_eq!(stats.resigned, 0);
        assert_eq!((stats.resign_checked, stats.resign_false_positives), (4, 4));
    }

    #[test]
    fn with_a_playout_cap_only_full_searches_are_recorded() {
        let mut eval = UniformEvaluator;
        let mut side = search_side(&mut eval, 16);
        side.fast = Some(FastMoves {
            nodes: 2,
            full_fraction: 0.3,
        });
        let schedule = Schedule {
            games: 4,
            in_flight: 4,
            ..Schedule::default()
        };
        let (games, _) = play_all(Contest::SelfPlay(side), &rules(40), &schedule);
        let (mut full, mut fast) = (0, 0);
        for g in &games {
            let searched: Vec<&MoveStats> = g.searched.iter().flatten().collect();
            let full_moves = searched.iter().filter(|s| s.full).count();
            assert_eq!(g.samples.len(), full_moves, "one sample per full search");
            for s in &searched {
                if s.full {
                    assert!(s.nodes >= 16, "{s:?}");
                }
            }
            full += full_moves;
            fast += searched.len() - full_moves;
        }
        assert!(full > 0 && fast > full, "{full} full, {fast} fast");
    }
}
