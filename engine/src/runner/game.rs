//! One game in play: its position, its trees and their drivers, the rules applied after
//! each move (ply cap, adjudication, resignation, playout cap), its samples, and the
//! [`GameRecord`] it becomes.

use super::record::{plies_left, value_targets, GameRecord, MoveStats, Sample};
use super::rules::{Limit, Opening, Rules, Schedule};
use crate::encoding::move_to_index;
use crate::game::{fen_of, Game, GameOutcome, Termination};
use crate::mcts::{Driver, EvalBatch, Limits, Search, SearchParams};
use crate::phase_times::PhaseTimes;
use crate::players::{Failure, MoveLimit};
use anyhow::Result;
use rand::{rngs::StdRng, Rng, SeedableRng};
use shakmaty::{Chess, Color, KnownOutcome, Move, Position};
use std::time::Duration;

/// What a seat (side 0 or 1) is, as the lanes see it.
#[derive(Clone, Copy)]
pub(super) enum Seat {
    /// Searched with tree `tree` (self-play: both seats share tree 0).
    Search {
        tree: usize,
        nodes: u32,
        record: bool,
        /// Playout cap: visits of a fast move (0: every move is full) and the chance of
        /// a full one.
        fast_nodes: u32,
        full_fraction: f32,
    },
    Player,
}

/// A searched position waiting for its game's result: position, visits, root Q, and the
/// ply it was searched at.
type PendingSample = (Chess, Vec<(u16, f32)>, f32, usize);

/// One game being played.
pub(super) struct InPlay {
    pub(super) index: usize,
    white: usize,
    opening: Opening,
    start_fen: String,
    pub(super) game: Game,
    pub(super) searches: [Option<Search>; 2],
    /// The tree whose leaves are in `batch`.
    pub(super) gathered_by: usize,
    pub(super) batch: EvalBatch,
    pub(super) timing: PhaseTimes,
    rng: StdRng,
    outcome: Option<GameOutcome>,
    failure: Option<(usize, Termination, String)>,
    /// The driver of the mover's search for the coming move (made when it is first
    /// needed, dropped when a move is played).
    driver: Option<Driver>,
    /// Player sides' clocks (ms left) under a game clock.
    clock: [i64; 2],
    samples: Vec<PendingSample>,
    pub(super) searched: Vec<Option<MoveStats>>,
    /// The current move gets the full search (playout cap).
    full: bool,
    /// Root Q of the last searched move, for its mover.
    last_q: Option<(Color, f32)>,
    /// Nobody resigns in this game; the first would-be resigner is noted.
    playthrough: bool,
    would_resign: Option<Color>,
}

/// The seed of everything random in `stream` of game (or pair) `n`.
pub(super) fn derive_seed(seed: u64, stream: u64, n: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(n as u64)
}

impl InPlay {
    pub(super) fn new(
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
        let mut game = opening.game()?;
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
            driver: None,
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

    pub(super) fn done(&self) -> bool {
        self.outcome.is_some()
    }

    /// The seat (side) to move.
    pub(super) fn mover(&self) -> usize {
        let white_to_move = self.game.position().turn() == Color::White;
        if white_to_move == (self.white == 0) {
            0
        } else {
            1
        }
    }

    /// For a search side to move: plays its move if its driver says the search is done,
    /// then gathers this round's leaves of whichever search side is then to move.
    pub(super) fn step(&mut self, seats: &[Seat; 2], rules: &Rules) {
        self.batch.clear();
        if self.done() {
            return;
        }
        let Some(tree) = self.search_driver(seats) else {
            return;
        };
        let search = self.searches[tree]
            .as_ref()
            .expect("search side has a tree");
        if self.driver.as_ref().expect("made above").finished(search) {
            self.play_searched(seats, rules);
            if self.done() {
                return;
            }
        }
        let Some(tree) = self.search_driver(seats) else {
            return;
        };
        let search = self.searches[tree]
            .as_mut()
            .expect("search side has a tree");
        let driver = self.driver.as_mut().expect("made above");
        driver.gather(search, &mut self.batch, &mut self.timing);
        self.gathered_by = tree;
    }

    /// The mover's tree when a search side is to move, its driver made for the coming
    /// move's visits if it has none yet.
    fn search_driver(&mut self, seats: &[Seat; 2]) -> Option<usize> {
        let seat = seats[self.mover()];
        let Seat::Search { tree, .. } = seat else {
            return None;
        };
        if self.driver.is_none() {
            let nodes = self.target_nodes(seat);
            let search = self.searches[tree]
                .as_mut()
                .expect("search side has a tree");
            self.driver = Some(Driver::new(search, Limits::visits(nodes)));
        }
        Some(tree)
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
        let ranked = search.ranked_children();
        let visited = |c: &&crate::mcts::ChildStats| c.visits > 0;
        let stats = MoveStats {
            nodes: search.root_visits(),
            q: search.root_q(),
            full: self.full,
            best_q: ranked.iter().find(visited).map_or(search.root_q(), |c| c.q),
            played_q: ranked
                .iter()
                .filter(visited)
                .find(|c| c.mv == mv)
                .map(|c| c.q),
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
                .policy_target()
                .into_iter()
                .map(|(m, p)| (move_to_index(&m, turn) as u16, p))
                .collect();
            if visits.iter().any(|(_, p)| *p > 0.0) {
                self.samples.push((
                    self.game.position().clone(),
                    visits,
                    stats.q,
                    self.game.ply(),
                ));
            }
        }
        self.searched.push(Some(stats));
        self.play(mv, seats, rules);
    }

    fn play(&mut self, mv: Move, seats: &[Seat; 2], rules: &Rules) {
        self.driver = None;
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
    pub(super) fn player_limit(&self, limit: Limit) -> MoveLimit {
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
    pub(super) fn answer(
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

    pub(super) fn forfeit(&mut self, seat: usize, termination: Termination, why: String) {
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

    pub(super) fn finish(self, names: &[String; 2], sched: &Schedule, rules: &Rules) -> GameRecord {
        let outcome = self.outcome.expect("finished game has an outcome");
        let targets = value_targets(
            outcome.value_for(Color::White),
            self.game.start_position().turn(),
            &self.searched,
            rules.deblunder,
        );
        let moves = self.game.moves();
        let game_plies = self.game.ply();
        let samples = self
            .samples
            .into_iter()
            .map(|(position, visits, root_q, ply)| {
                let white = targets.get(ply).copied().unwrap_or(0.0);
                let reply = moves
                    .get(ply + 1)
                    .map(|m| move_to_index(m, !position.turn()) as u16);
                Sample {
                    result: if position.turn() == Color::White {
                        white
                    } else {
                        -white
                    },
                    position,
                    visits,
                    root_q,
                    reply,
                    plies_left: plies_left(outcome.termination, game_plies, ply),
                }
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
