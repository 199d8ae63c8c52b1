//! The one search driver: rounds of `gather` -> evaluator -> `apply` on a [`Search`]
//! until a [`Limits`] is reached. Every search Ember runs goes through it: the UCI
//! engine's `go` and `bench`, an Ember player in a match, [`Search::run_until_visits`],
//! and the game runner, whose rounds gather the leaves of many games' drivers into one
//! evaluator call.
//!
//! A driver knows the search's budget before the first simulation and tells the search
//! ([`Search::begin`]), so a root rule that plans its simulations (sequential halving)
//! has it where it needs it.
//!
//! Limits, checked between rounds:
//! - `visits`: the root's visits, counting those a reused subtree kept (self-play and
//!   matches at fixed nodes). Checked before the first round too: a reused subtree that
//!   already has them is played at once.
//! - `playouts` (visits this search adds), `depth` (mean descent depth), `mate` (a proven
//!   mate in that many moves or fewer) and a time `budget` from [`crate::timeman`], with
//!   its smart pruning and extension: checked from the second round on, so that the root
//!   is always expanded and even an instant stop answers with a searched move.
//! - `infinite`, and pondering ([`Watch::pondering`]): only [`Watch::stopped`] ends the
//!   search; the clock of the budget starts when pondering ends.
//! - A search that adds no visit for [`STALL_ROUNDS`] rounds has nothing left to search
//!   (every line decided) and ends, unless it is infinite or pondering: then it waits for
//!   the stop.

use super::evaluator::{EvalBatch, Evaluator};
use super::search::Search;
use crate::phase_times::PhaseTimes;
use crate::timeman::{self, Budget};
use std::time::{Duration, Instant};

/// Rounds without a new visit after which a search has nothing left to search.
pub const STALL_ROUNDS: u32 = 2;
/// A speed figure is trusted once the search has run this long.
const NPS_MIN_SAMPLE: Duration = Duration::from_millis(50);
/// How long a search waiting for its stop sleeps between looks.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// What ends a search (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub visits: Option<u32>,
    pub playouts: Option<u64>,
    pub depth: Option<u32>,
    pub mate: Option<u32>,
    pub budget: Option<Budget>,
    pub infinite: bool,
}

impl Limits {
    /// Until the root has `n` visits.
    pub fn visits(n: u32) -> Limits {
        Limits {
            visits: Some(n),
            ..Limits::default()
        }
    }

    /// Until the search has added `n` visits.
    pub fn playouts(n: u64) -> Limits {
        Limits {
            playouts: Some(n),
            ..Limits::default()
        }
    }

    /// Until the time budget is spent.
    pub fn time(budget: Budget) -> Limits {
        Limits {
            budget: Some(budget),
            ..Limits::default()
        }
    }

    /// Visits the search will add if no other limit ends it first (`None` when only time
    /// or a stop ends it).
    pub fn planned_playouts(&self, root_visits: u32) -> Option<u32> {
        if self.infinite {
            return None;
        }
        let by_visits = self.visits.map(|v| v.saturating_sub(root_visits));
        let by_playouts = self.playouts.map(|p| p.min(u32::MAX as u64) as u32);
        match (by_visits, by_playouts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What a driver asks its owner while it runs (the UCI engine's `stop`, `ponderhit` and
/// `info` lines), with the evaluator `E` in hand between rounds (its cache's fill, for
/// `hashfull`). Everything has a default: `&mut ()` watches nothing.
pub trait Watch<E: ?Sized = dyn Evaluator> {
    /// Whether to stop now (checked from the second round on).
    fn stopped(&mut self) -> bool {
        false
    }
    /// Whether the search is pondering (its clock not yet running).
    fn pondering(&mut self) -> bool {
        false
    }
    /// After every round, and every look while waiting for the stop.
    fn round(&mut self, _search: &mut Search, _driver: &Driver, _evaluator: &mut E) {}
}

impl<E: ?Sized> Watch<E> for () {}

/// One search towards its limits.
pub struct Driver {
    limits: Limits,
    start: Instant,
    /// When the budget's clock started (`start`, or the end of pondering).
    clock_start: Instant,
    base_visits: u32,
    rounds: u64,
    stalled: u32,
    pondering: bool,
    /// Visits per second of earlier searches, until this one has measured its own.
    speed_estimate: f64,
    /// The search may play one root move only (a budget is then not spent).
    only_move: bool,
}

impl Driver {
    /// Starts a search of `search`'s root towards `limits`.
    pub fn new(search: &mut Search, limits: Limits) -> Driver {
        let now = Instant::now();
        let base_visits = search.root_visits();
        search.begin(limits.planned_playouts(base_visits));
        let only_move = limits.budget.is_some() && search.allowed_root_moves().len() == 1;
        Driver {
            limits,
            start: now,
            clock_start: now,
            base_visits,
            rounds: 0,
            stalled: 0,
            pondering: false,
            speed_estimate: 0.0,
            only_move,
        }
    }

    /// Visits per second of earlier searches: sizes the last batch of a short budget and
    /// smart pruning until this search has run [`NPS_MIN_SAMPLE`].
    pub fn with_speed_estimate(mut self, nps: f64) -> Driver {
        self.speed_estimate = nps;
        self
    }

    /// Counts the search's time from `start` (the UCI engine's `go`, before the tree was
    /// prepared).
    pub fn started_at(mut self, start: Instant) -> Driver {
        self.start = start;
        self.clock_start = start;
        self
    }

    /// Starts the search pondering: its clock waits for [`Self::set_pondering`]`(false)`.
    pub fn pondering(mut self, pondering: bool) -> Driver {
        self.pondering = pondering;
        self
    }

    /// Ends or starts pondering; the budget's clock starts when pondering ends.
    pub fn set_pondering(&mut self, pondering: bool) {
        if self.pondering && !pondering {
            self.clock_start = Instant::now();
        }
        self.pondering = pondering;
    }

    /// Visits this search added.
    pub fn playouts(&self, search: &Search) -> u64 {
        search.root_visits().saturating_sub(self.base_visits) as u64
    }

    /// Time since the search began.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Nothing is left to search (every line decided).
    pub fn stalled(&self) -> bool {
        self.stalled >= STALL_ROUNDS
    }

    /// Visits per second: this search's own once it has run long enough, else the
    /// estimate it was given.
    pub fn nps(&self, search: &Search) -> f64 {
        let since = self.start.elapsed();
        let playouts = self.playouts(search);
        if since >= NPS_MIN_SAMPLE && playouts > 0 {
            playouts as f64 / since.as_secs_f64()
        } else {
            self.speed_estimate
        }
    }

    /// Whether a limit is reached: the search should end before another round.
    pub fn finished(&self, search: &Search) -> bool {
        let l = &self.limits;
        let unlimited = l.infinite || self.pondering;
        if self.stalled() && !unlimited {
            return true;
        }
        if let Some(v) = l.visits {
            if search.root_visits() >= v || search.root_terminal().is_some() {
                return true;
            }
        }
        if self.rounds == 0 || unlimited {
            return false;
        }
        let playouts = self.playouts(search);
        if l.playouts.is_some_and(|n| playouts >= n) {
            return true;
        }
        if l.depth
            .is_some_and(|d| search.mean_depth().round() as u32 >= d)
        {
            return true;
        }
        if let Some(m) = l.mate {
            if let Some(p) = search.proven_mate(None) {
                // Plies to moves, for the side to move at the root.
                if p > 0 && ((p + 1) / 2) as u32 <= m.max(1) {
                    return true;
                }
            }
        }
        match l.budget {
            Some(budget) => self.time_is_up(search, budget),
            None => false,
        }
    }

    fn time_is_up(&self, search: &Search, budget: Budget) -> bool {
        if self.only_move {
            return true;
        }
        let elapsed = self.clock_start.elapsed();
        let ranked = search.ranked_children();
        if elapsed >= budget.target {
            let unsettled = match ranked.as_slice() {
                [a, b, ..] => timeman::should_extend(a.visits, a.q, b.visits, b.q),
                _ => false,
            };
            return !unsettled || elapsed >= timeman::extended_limit(budget);
        }
        let (best, second) = match ranked.as_slice() {
            [a, b, ..] => (a.visits, b.visits),
            [a] => (a.visits, 0),
            [] => return false,
        };
        let nps = self.nps(search);
        nps > 0.0 && timeman::can_stop_early(best, second, elapsed, budget.target, nps)
    }

    /// Leaves to ask for in the next round: a batch, no more than the visit limits still
    /// need, and near the end of a short budget only what fits in the time left.
    pub fn want(&self, search: &Search) -> usize {
        let l = &self.limits;
        let mut want = search.params.max_batch.max(1);
        if let Some(v) = l.visits {
            want = want
                .min(v.saturating_sub(search.root_visits()) as usize)
                .max(1);
        }
        if l.infinite {
            return want;
        }
        if let Some(n) = l.playouts {
            want = want.min(n.saturating_sub(self.playouts(search)).max(1) as usize);
        }
        if let (Some(budget), false) = (l.budget, self.pondering) {
            let nps = self.nps(search);
            let left = budget.target.saturating_sub(self.clock_start.elapsed());
            if nps > 0.0 {
                want = want.min((nps * left.as_secs_f64()).ceil().max(1.0) as usize);
            }
        }
        want
    }

    /// One round's descents into `batch` (shared with other searches when the runner
    /// drives many); returns the leaves added. The caller evaluates `batch` and calls
    /// [`Search::apply`] when any were.
    pub fn gather(
        &mut self,
        search: &mut Search,
        batch: &mut EvalBatch,
        timing: &mut PhaseTimes,
    ) -> usize {
        let want = self.want(search);
        let before = search.root_visits();
        let added = search.gather(want, batch, timing);
        self.rounds += 1;
        if added == 0 && search.root_visits() == before {
            self.stalled += 1;
        } else {
            self.stalled = 0;
        }
        added
    }

    /// Runs rounds with `evaluator` until a limit is reached or `watch` stops it.
    pub fn run<E: Evaluator + ?Sized>(
        &mut self,
        search: &mut Search,
        evaluator: &mut E,
        timing: &mut PhaseTimes,
        watch: &mut dyn Watch<E>,
    ) -> anyhow::Result<()> {
        let mut batch = EvalBatch::new();
        loop {
            if self.rounds > 0 {
                if watch.stopped() {
                    return Ok(());
                }
                self.set_pondering(watch.pondering());
            }
            if self.finished(search) {
                return Ok(());
            }
            if self.stalled() {
                // Infinite or pondering with nothing left to search: wait for the stop.
                watch.round(search, self, evaluator);
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            batch.clear();
            self.gather(search, &mut batch, timing);
            if !batch.is_empty() {
                evaluator.evaluate(&mut batch, timing)?;
                search.apply(&batch, 0, timing);
            }
            watch.round(search, self, evaluator);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::Game;
    use crate::mcts::{SearchParams, UniformEvaluator};

    fn run(
        game: &Game,
        limits: Limits,
        watch: &mut dyn Watch<UniformEvaluator>,
    ) -> (Search, Driver) {
        let mut search = Search::new(
            game,
            SearchParams {
                max_batch: 8,
                ..SearchParams::default()
            },
        );
        let mut driver = Driver::new(&mut search, limits);
        driver
            .run(
                &mut search,
                &mut UniformEvaluator,
                &mut PhaseTimes::default(),
                watch,
            )
            .unwrap();
        (search, driver)
    }

    #[test]
    fn visit_and_playout_limits_are_met_exactly() {
        let game = Game::new();
        let (s, _) = run(&game, Limits::visits(37), &mut ());
        assert_eq!(s.root_visits(), 37);
        let (s, d) = run(&game, Limits::playouts(53), &mut ());
        assert_eq!(d.playouts(&s), 53);
    }

    #[test]
    fn a_reused_tree_with_enough_visits_is_not_searched_again() {
        let game = Game::new();
        let mut search = Search::new(&game, SearchParams::default());
        search
            .run_until_visits(&mut UniformEvaluator, 40, &mut PhaseTimes::default())
            .unwrap();
        let mut driver = Driver::new(&mut search, Limits::visits(30));
        assert!(driver.finished(&search));
        driver
            .run(
                &mut search,
                &mut UniformEvaluator,
                &mut PhaseTimes::default(),
                &mut (),
            )
            .unwrap();
        assert_eq!((search.root_visits(), driver.rounds()), (40, 0));
    }

    #[test]
    fn the_planned_playouts_reach_the_search_before_the_first_round() {
        assert_eq!(Limits::visits(100).planned_playouts(30), Some(70));
        assert_eq!(Limits::playouts(64).planned_playouts(30), Some(64));
        let both = Limits {
            playouts: Some(10),
            ..Limits::visits(100)
        };
        assert_eq!(both.planned_playouts(30), Some(10));
        let infinite = Limits {
            infinite: true,
            ..Limits::visits(100)
        };
        assert_eq!(infinite.planned_playouts(0), None);
        assert_eq!(
            Limits::time(timeman::for_movetime(
                Duration::from_millis(5),
                Duration::ZERO
            ))
            .planned_playouts(0),
            None
        );
        let game = Game::new();
        let mut search = Search::new(&game, SearchParams::default());
        Driver::new(&mut search, Limits::visits(24));
        assert_eq!(search.planned_playouts(), Some(24));
    }

    #[test]
    fn a_time_budget_ends_the_search_and_a_single_legal_move_spends_none() {
        let game = Game::new();
        let budget = timeman::for_movetime(Duration::from_millis(30), Duration::ZERO);
        let (s, d) = run(&game, Limits::time(budget), &mut ());
        assert!(d.elapsed() >= Duration::from_millis(1));
        assert!(s.root_visits() > 8, "more than one round in 30 ms");
        // Black to move has one legal move (Kxa7 is its only way out of check).
        let only = Game::from_fen("k7/Q7/8/8/8/8/8/6K1 b - - 0 1").unwrap();
        let (_, d) = run(&only, Limits::time(budget), &mut ());
        assert_eq!(d.rounds(), 1);
    }

    /// Stops after `stop_after` rounds; pondering for the first `ponder_rounds`.
    struct Scripted {
        rounds: u64,
        stop_after: u64,
        ponder_rounds: u64,
    }

    impl Watch<UniformEvaluator> for Scripted {
        fn stopped(&mut self) -> bool {
            self.rounds >= self.stop_after
        }
        fn pondering(&mut self) -> bool {
            self.rounds < self.ponder_rounds
        }
        fn round(&mut self, _: &mut Search, _: &Driver, _: &mut UniformEvaluator) {
            self.rounds += 1;
        }
    }

    #[test]
    fn an_infinite_search_ends_at_the_stop_and_only_there() {
        let game = Game::new();
        let limits = Limits {
            infinite: true,
            ..Limits::playouts(1)
        };
        let mut watch = Scripted {
            rounds: 0,
            stop_after: 20,
            ponder_rounds: 0,
        };
        let (s, d) = run(&game, limits, &mut watch);
        assert_eq!(d.rounds(), 20);
        assert!(d.playouts(&s) > 1, "the playout limit does not end it");
    }

    #[test]
    fn pondering_holds_the_limits_until_it_ends() {
        let game = Game::new();
        let mut watch = Scripted {
            rounds: 0,
            stop_after: u64::MAX,
            ponder_rounds: 12,
        };
        let mut search = Search::new(
            &game,
            SearchParams {
                max_batch: 1,
                ..SearchParams::default()
            },
        );
        let mut driver = Driver::new(&mut search, Limits::playouts(3)).pondering(true);
        driver
            .run(
                &mut search,
                &mut UniformEvaluator,
                &mut PhaseTimes::default(),
                &mut watch,
            )
            .unwrap();
        // Twelve rounds of pondering, then the playout limit (already passed) ends it.
        assert_eq!(driver.rounds(), 12);
    }
}
