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

//!
//! The folder: `rules` (how every game is played, the schedule), `game` (one game in
//! play and its drivers), `record` (what a game leaves: records, samples, tallies), and
//! here the sides, the lanes and the one round loop that the plain and the pipelined
//! runner share: every game in the round steps its driver, the leaves of all of them
//! go to each network in one call, and every search applies its answers.

mod game;
mod record;
mod rules;
#[cfg(test)]
mod tests;

pub use record::{
    plies_left, termination_key, value_targets, GameRecord, GameTally, MoveStats, PlayStats, Sample,
};
pub use rules::{CapRule, FastMoves, Limit, Opening, Resign, Rules, Schedule};

use crate::game::Termination;
use crate::mcts::params::tree_nodes_for_visits;
use crate::mcts::{CachedEvaluator, EvalBatch, Evaluator, SearchParams};
use crate::phase_times::PhaseTimes;
use crate::players::{Failure, Player};
use anyhow::{anyhow, bail, Result};
use game::{derive_seed, InPlay, Seat};
use rayon::prelude::*;
use shakmaty::Move;
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
        }
        let record = game.finish(&self.names, self.schedule, self.rules);
        stats.tally.add(&record);
        stats.positions += record.searched.iter().filter(|s| s.is_some()).count();
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

    /// The lanes of this call: as many as games in flight (no more than games).
    fn lanes(&self) -> Vec<Lane> {
        let n = self.schedule.in_flight.clamp(1, self.schedule.games.max(1));
        (0..n)
            .map(|id| Lane {
                id,
                players: [None, None],
                game: None,
                thinking: false,
            })
            .collect()
    }

    /// At a time limit, abandons every game of `lanes` and starts none.
    fn stop_at_time_limit(&mut self, start: Instant, lanes: &mut [Lane]) -> bool {
        if !self.time_up(start) {
            return false;
        }
        self.stopped = true;
        for lane in lanes {
            if let Some(g) = lane.game.take() {
                self.abandon(&g);
            }
        }
        true
    }

    /// Records the finished games of `lanes` whose mover is not thinking and starts the
    /// next ones in their lanes.
    fn retire_finished(
        &mut self,
        lanes: &mut [Lane],
        on_game: &mut dyn FnMut(GameRecord) -> ControlFlow<()>,
    ) -> Result<()> {
        for lane in lanes {
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
        Ok(())
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
        let mut lanes = self.lanes();
        let mut round = Round::new(evaluators.len());
        let (seats, rules, limit) = (self.seats, self.rules, self.schedule.limit);
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = mpsc::channel::<Answer>();
            let mut thinking = 0usize;
            loop {
                if !self.stopped {
                    self.stop_at_time_limit(start, &mut lanes);
                }
                self.retire_finished(&mut lanes, on_game)?;
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
                round.gather(&mut lanes, &seats, rules);
                if !round.is_empty() {
                    round.evaluate(evaluators, eval_timing, |k| self.tree_name(k))?;
                    round.apply(&mut lanes);
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

    /// Self-play with the evaluator on its own thread and the games in two groups of
    /// lanes, each with its own round: while it evaluates one group's batch, the trees of
    /// the other group are searched (double buffering), so neither the device nor the
    /// cores wait for each other.
    fn run_pipelined(
        &mut self,
        evaluator: &mut dyn Evaluator,
        eval_timing: &mut PhaseTimes,
        on_game: &mut dyn FnMut(GameRecord) -> ControlFlow<()>,
    ) -> Result<()> {
        let start = Instant::now();
        let mut groups: [(Vec<Lane>, Round); 2] =
            [(Vec::new(), Round::new(1)), (Vec::new(), Round::new(1))];
        for (k, mut lane) in self.lanes().into_iter().enumerate() {
            self.start_game(&mut lane)?;
            groups[k % 2].0.push(lane);
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
            busy.1.gather(&mut busy.0, &seats, rules);
            to_eval.send(busy.1.take_batch())?;
            loop {
                let stop = self.time_up(start);
                if !stop {
                    idle.1.gather(&mut idle.0, &seats, rules);
                }
                let (batch, t) = answers
                    .recv()
                    .map_err(|_| anyhow!("the evaluator thread stopped"))??;
                *eval_timing += t;
                busy.1.put_batch(batch);
                busy.1.apply(&mut busy.0);
                if stop {
                    self.stop_at_time_limit(start, &mut busy.0);
                    self.stop_at_time_limit(start, &mut idle.0);
                    return Ok(());
                }
                self.retire_finished(&mut busy.0, on_game)?;
                busy.0.retain(|l| l.game.is_some());
                if busy.0.is_empty() && idle.0.is_empty() {
                    return Ok(());
                }
                to_eval.send(idle.1.take_batch())?;
                std::mem::swap(&mut busy, &mut idle);
            }
        })
    }
}

/// One round's leaves of a set of lanes: a batch per tree (network), and where each
/// lane's leaves start in its tree's batch.
struct Round {
    batches: Vec<EvalBatch>,
    offsets: Vec<usize>,
    starts: Vec<usize>,
}

impl Round {
    fn new(trees: usize) -> Round {
        Round {
            batches: (0..trees).map(|_| EvalBatch::new()).collect(),
            offsets: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// Every game of `lanes` whose mover is not a thinking player steps its driver (in
    /// parallel); their leaves are joined, tree by tree.
    fn gather(&mut self, lanes: &mut [Lane], seats: &[Seat; 2], rules: &Rules) {
        lanes
            .par_iter_mut()
            .for_each(|l| match (l.game.as_mut(), l.thinking) {
                (Some(g), false) => g.step(seats, rules),
                (Some(g), true) => g.batch.clear(),
                (None, _) => {}
            });
        self.offsets.clear();
        self.offsets.resize(lanes.len(), 0);
        for tree in 0..self.batches.len() {
            let mut from = Vec::new();
            let mut parts = Vec::new();
            for (k, l) in lanes.iter().enumerate() {
                if let Some(g) = &l.game {
                    if !g.batch.is_empty() && g.gathered_by == tree {
                        from.push(k);
                        parts.push(&g.batch);
                    }
                }
            }
            self.batches[tree].assign_concat(&parts, &mut self.starts);
            for (&k, &s) in from.iter().zip(&self.starts) {
                self.offsets[k] = s;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.batches.iter().all(EvalBatch::is_empty)
    }

    /// Each tree's batch to its evaluator (`name` of a tree for errors).
    fn evaluate<'n>(
        &mut self,
        evaluators: &mut [&mut dyn Evaluator],
        timing: &mut PhaseTimes,
        name: impl Fn(usize) -> &'n str,
    ) -> Result<()> {
        for (k, batch) in self.batches.iter_mut().enumerate() {
            if !batch.is_empty() {
                evaluators[k]
                    .evaluate(batch, timing)
                    .map_err(|e| e.context(format!("evaluating for {}", name(k))))?;
            }
        }
        Ok(())
    }

    /// Every search that gathered leaves takes its answers (in parallel).
    fn apply(&self, lanes: &mut [Lane]) {
        let batches = &self.batches;
        lanes
            .par_iter_mut()
            .zip(self.offsets.par_iter())
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

    /// The single tree's batch, for an evaluator on another thread.
    fn take_batch(&mut self) -> EvalBatch {
        std::mem::take(&mut self.batches[0])
    }

    fn put_batch(&mut self, batch: EvalBatch) {
        self.batches[0] = batch;
    }
}
