//! Parallel self-play: G games in flight; each round every game descends its own tree
//! (on all cores), the leaves of all games go to the evaluator in one call, and the
//! results are scattered back. Finished games yield training samples and a PGN.

use crate::encoding::move_to_index;
use crate::game::{Game, GameOutcome};
use crate::mcts::{EvalBatch, Evaluator, Search, SearchParams};
use crate::phase_times::PhaseTimes;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rayon::prelude::*;
use shakmaty::{Chess, Position};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SelfPlayConfig {
    /// Games to finish.
    pub games: usize,
    /// Games kept in flight at once.
    pub games_in_flight: usize,
    /// Root visits before each move (visits kept from the previous move count).
    pub simulations: u32,
    /// Leaves each game adds to a round's batch.
    pub leaves_per_game: usize,
    /// Plies after which a game is stopped and scored as a draw.
    pub max_plies: u32,
    /// Plies played with temperature 1 (sampled by visits); later moves are the most visited.
    pub temperature_plies: u32,
    /// Random legal moves played before the search takes over, so games differ.
    pub random_opening_plies: u32,
    pub search: SearchParams,
    pub seed: u64,
    /// Stop after this long even if games are unfinished (benchmarks); their plies count
    /// as positions but they yield no record.
    #[serde(skip)]
    pub time_limit: Option<Duration>,
    /// Double-buffer the games in flight against an evaluator on its own thread (see
    /// [`play_games`]): for a GPU, where the trees can be searched while it computes.
    #[serde(default)]
    pub pipeline: bool,
    /// The PGN `Round` of the first game (games are numbered from it in the order they
    /// started), so that games played in several calls number on.
    #[serde(default = "first_round")]
    pub first_round: usize,
}

fn first_round() -> usize {
    1
}

impl Default for SelfPlayConfig {
    fn default() -> Self {
        SelfPlayConfig {
            games: 16,
            games_in_flight: 64,
            simulations: 25,
            leaves_per_game: 4,
            max_plies: 150,
            temperature_plies: 30,
            random_opening_plies: 0,
            search: SearchParams {
                cache_entries: 4096,
                ..SearchParams::self_play()
            },
            seed: 1,
            time_limit: None,
            pipeline: false,
            first_round: 1,
        }
    }
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

#[derive(Clone, Debug)]
pub struct GameRecord {
    pub index: usize,
    pub samples: Vec<Sample>,
    pub pgn: String,
    pub outcome: GameOutcome,
    pub plies: usize,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SelfPlayStats {
    pub games: usize,
    pub positions: usize,
    /// Plies of the finished games (positions also counts unfinished ones at a time limit).
    pub finished_plies: usize,
    /// Positions sent to the network.
    pub evaluations: u64,
    pub collisions: u64,
    pub cache_hits: u64,
    pub wall: Duration,
    pub timing: PhaseTimes,
    pub white_wins: usize,
    pub black_wins: usize,
    pub draws: usize,
}

impl std::ops::AddAssign<&SelfPlayStats> for SelfPlayStats {
    fn add_assign(&mut self, s: &SelfPlayStats) {
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
    }
}

impl SelfPlayStats {
    pub fn positions_per_s(&self) -> f64 {
        self.positions as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    /// Finished games per wall-clock second.
    pub fn games_per_s(&self) -> f64 {
        self.games as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Games per second estimated under a time limit: positions per second over the mean
    /// length of the finished games once at least ten finished (a handful of early
    /// finishers are the short, decisive games), else over the ply cap.
    pub fn estimated_games_per_s(&self, max_plies: u32) -> f64 {
        let mean_plies = if self.games >= 10 {
            self.mean_plies()
        } else {
            max_plies as f64
        };
        self.positions_per_s() / mean_plies.max(1.0)
    }

    pub fn mean_plies(&self) -> f64 {
        self.finished_plies as f64 / self.games.max(1) as f64
    }
    pub fn evals_per_position(&self) -> f64 {
        self.evaluations as f64 / self.positions.max(1) as f64
    }
}

/// A searched position waiting for its game's result: position, visit distribution, root Q.
type PendingSample = (Chess, Vec<(u16, f32)>, f32);

struct GameInFlight {
    index: usize,
    game: Game,
    search: Search,
    samples: Vec<PendingSample>,
    batch: EvalBatch,
    timing: PhaseTimes,
    rng: StdRng,
    outcome: Option<GameOutcome>,
    /// Random plies played before the search took over.
    opening_plies: usize,
}

impl GameInFlight {
    fn new(index: usize, cfg: &SelfPlayConfig) -> GameInFlight {
        let mut rng = StdRng::seed_from_u64(
            cfg.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(index as u64),
        );
        let mut game = Game::new();
        for _ in 0..cfg.random_opening_plies {
            let moves = game.position().legal_moves();
            if moves.is_empty() || game.outcome().is_some() {
                break;
            }
            let m = moves[rng.random_range(0..moves.len())];
            game.play(m);
        }
        let mut search = Search::new(&game, cfg.search.clone());
        search.seed_noise(rng.random());
        let opening_plies = game.ply();
        let mut slot = GameInFlight {
            index,
            game,
            search,
            samples: Vec::new(),
            batch: EvalBatch::new(),
            timing: PhaseTimes::default(),
            opening_plies,
            rng,
            outcome: None,
        };
        slot.outcome = slot.game.outcome();
        slot
    }

    /// Plays a move if the search is done, then gathers this round's leaves.
    fn step(&mut self, cfg: &SelfPlayConfig) {
        self.batch.clear();
        if self.outcome.is_some() {
            return;
        }
        let decided = self.search.root_terminal().is_some();
        if self.search.root_visits() >= cfg.simulations || decided {
            self.play_move(cfg);
            if self.outcome.is_some() {
                return;
            }
        }
        let want = cfg
            .leaves_per_game
            .min((cfg.simulations - self.search.root_visits().min(cfg.simulations)) as usize)
            .max(1);
        self.search.gather(want, &mut self.batch, &mut self.timing);
    }

    fn play_move(&mut self, cfg: &SelfPlayConfig) {
        let turn = self.game.position().turn();
        let policy: Vec<(u16, f32)> = self
            .search
            .visit_distribution()
            .into_iter()
            .map(|(m, p)| (move_to_index(&m, turn) as u16, p))
            .collect();
        let temperature = if (self.game.ply() as u32) < cfg.temperature_plies {
            1.0
        } else {
            0.0
        };
        let Some(mv) = self.search.choose_move(temperature, &mut self.rng) else {
            self.outcome = self.game.outcome();
            if self.outcome.is_none() {
                // A root with no move although the game goes on: search it afresh.
                self.search.reset_tree(&self.game);
            }
            return;
        };
        if policy.iter().any(|(_, p)| *p > 0.0) {
            self.samples
                .push((self.game.position().clone(), policy, self.search.root_q()));
        }
        self.game.play(mv);
        self.search.advance_to(&self.game);
        self.outcome = self.game.outcome_with_ply_cap(cfg.max_plies);
    }

    fn finish(self, first_round: usize) -> GameRecord {
        let outcome = self.outcome.expect("finished game has an outcome");
        let samples = self
            .samples
            .into_iter()
            .map(|(position, policy, root_q)| {
                let result = outcome.value_for(position.turn());
                Sample {
                    position,
                    visits: policy,
                    result,
                    root_q,
                }
            })
            .collect();
        let pgn = self.game.to_pgn(
            Some(outcome),
            &[
                ("Event", "Ember self-play".to_string()),
                ("Round", (first_round + self.index).to_string()),
                ("White", "Ember".to_string()),
                ("Black", "Ember".to_string()),
                ("PlyCount", self.game.ply().to_string()),
            ],
        );
        GameRecord {
            index: self.index,
            samples,
            pgn,
            outcome,
            plies: self.game.ply(),
        }
    }
}

/// Games in flight that share a batch: each round their trees are searched (on all
/// cores), their leaves gathered into one batch, and the evaluator's answers applied.
#[derive(Default)]
struct Group {
    slots: Vec<GameInFlight>,
    batch: EvalBatch,
    offsets: Vec<usize>,
}

impl Group {
    /// Plays the moves whose search is done and gathers this round's leaves.
    fn gather(&mut self, cfg: &SelfPlayConfig) {
        self.slots.par_iter_mut().for_each(|s| s.step(cfg));
        let parts: Vec<&EvalBatch> = self.slots.iter().map(|s| &s.batch).collect();
        self.batch.assign_concat(&parts, &mut self.offsets);
    }

    /// Scatters the evaluated batch back into the trees.
    fn apply(&mut self) {
        let batch = &self.batch;
        self.slots
            .par_iter_mut()
            .zip(self.offsets.par_iter())
            .for_each(|(s, &off)| {
                if !s.batch.is_empty() {
                    s.search.apply(batch, off, &mut s.timing);
                }
            });
    }
}

/// The bookkeeping of a [`play_games`] call: stats, the next game's index, the callback.
struct Games<'a, F: FnMut(GameRecord)> {
    cfg: &'a SelfPlayConfig,
    stats: SelfPlayStats,
    next_index: usize,
    on_game: F,
}

impl<F: FnMut(GameRecord)> Games<'_, F> {
    fn new_slot(&mut self) -> Option<GameInFlight> {
        (self.next_index < self.cfg.games).then(|| {
            self.next_index += 1;
            GameInFlight::new(self.next_index - 1, self.cfg)
        })
    }

    /// Records the finished games of `group` and starts new ones in their place.
    fn retire(&mut self, group: &mut Group) {
        let mut i = 0;
        while i < group.slots.len() {
            if group.slots[i].outcome.is_none() {
                i += 1;
                continue;
            }
            let mut slot = group.slots.swap_remove(i);
            let stats = &mut self.stats;
            stats.timing += slot.timing;
            stats.collisions += slot.search.stats.collisions;
            stats.cache_hits += slot.search.stats.cache_hits;
            slot.timing = PhaseTimes::default();
            let record = slot.finish(self.cfg.first_round);
            stats.games += 1;
            stats.positions += record.samples.len();
            stats.finished_plies += record.plies;
            match record.outcome.result.winner() {
                Some(shakmaty::Color::White) => stats.white_wins += 1,
                Some(shakmaty::Color::Black) => stats.black_wins += 1,
                None => stats.draws += 1,
            }
            (self.on_game)(record);
            if let Some(s) = self.new_slot() {
                group.slots.push(s);
            }
        }
    }

    /// Counts the unfinished games at a time limit (their plies as positions).
    fn abandon(&mut self, group: &Group) {
        for s in &group.slots {
            self.stats.positions += s.game.ply() - s.opening_plies;
            self.stats.timing += s.timing;
            self.stats.collisions += s.search.stats.collisions;
        }
    }
}

/// Plays `cfg.games` games, calling `on_game` as each finishes.
///
/// With [`SelfPlayConfig::pipeline`] the games in flight form two groups and the
/// evaluator runs on its own thread: while it evaluates one group's batch, the trees of
/// the other group are searched (double buffering), so neither the device nor the cores
/// wait for each other. Without it, one group alternates search and evaluation.
pub fn play_games(
    cfg: &SelfPlayConfig,
    evaluator: &mut dyn Evaluator,
    on_game: impl FnMut(GameRecord),
) -> anyhow::Result<SelfPlayStats> {
    let start = Instant::now();
    let mut games = Games {
        cfg,
        stats: SelfPlayStats::default(),
        next_index: 0,
        on_game,
    };
    let groups = if cfg.pipeline { 2 } else { 1 };
    let mut group: Vec<Group> = (0..groups).map(|_| Group::default()).collect();
    for k in 0..cfg.games_in_flight.max(1) {
        match games.new_slot() {
            Some(s) => group[k % groups].slots.push(s),
            None => break,
        }
    }
    let time_up = || cfg.time_limit.is_some_and(|t| start.elapsed() >= t);
    let mut eval_timing = PhaseTimes::default();
    if !cfg.pipeline {
        let g = &mut group[0];
        while !g.slots.is_empty() {
            if time_up() {
                games.abandon(g);
                break;
            }
            g.gather(cfg);
            if !g.batch.is_empty() {
                evaluator.evaluate(&mut g.batch, &mut eval_timing)?;
                g.apply();
            }
            games.retire(g);
        }
    } else {
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let (to_eval, requests) = std::sync::mpsc::channel::<EvalBatch>();
            let (answer, answers) =
                std::sync::mpsc::channel::<anyhow::Result<(EvalBatch, PhaseTimes)>>();
            scope.spawn(move || {
                for mut batch in requests {
                    let mut t = PhaseTimes::default();
                    let r = evaluator.evaluate(&mut batch, &mut t).map(|()| (batch, t));
                    if answer.send(r).is_err() {
                        break;
                    }
                }
            });
            let (a, b) = group.split_at_mut(1);
            let (mut busy, mut idle) = (&mut a[0], &mut b[0]);
            busy.gather(cfg);
            to_eval.send(std::mem::take(&mut busy.batch))?;
            loop {
                // The idle group's trees are searched while the busy group's batch is
                // on the evaluator.
                let stop = time_up();
                if !stop {
                    idle.gather(cfg);
                }
                let (batch, t) = answers
                    .recv()
                    .map_err(|_| anyhow::anyhow!("the evaluator thread stopped"))??;
                eval_timing += t;
                busy.batch = batch;
                busy.apply();
                games.retire(busy);
                if stop {
                    games.abandon(busy);
                    games.abandon(idle);
                    break;
                }
                if busy.slots.is_empty() && idle.slots.is_empty() {
                    break;
                }
                to_eval.send(std::mem::take(&mut idle.batch))?;
                std::mem::swap(&mut busy, &mut idle);
            }
            Ok(())
        })?;
    }
    let mut stats = games.stats;
    stats.timing += eval_timing;
    stats.evaluations = stats.timing.evaluated;
    stats.wall = start.elapsed();
    Ok(stats)
}
