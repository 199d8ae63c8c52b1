//! One `go`, run on a worker thread: the `go` command's limits for the engine's search
//! driver ([`ember_engine::mcts::driver`], which runs the search one small batch at a
//! time so that `stop` is seen within one network call, and applies the clock from
//! `timeman`), ponder, the periodic `info` lines, and the single `bestmove`.
//!
//! [`Core`] is everything a search needs that outlives it: the network behind its
//! evaluation cache, and the tree (kept between moves). The input thread hands the core to the
//! worker for the duration of one `go` and gets it back when the worker ends; it talks to
//! a running search only through [`Control`]'s flags.

use crate::input::GoCommand;
use crate::network::LoadedNet;
use crate::options::Options;
use crate::output::emit;
use crate::report::{
    info_lines, mate_in_moves, q_to_cp, verbose_move_stats, wdl_permille, PvLine, Score,
    SearchFigures,
};
use ember_engine::game::{move_to_uci_in, parse_uci_move};
use ember_engine::mcts::node::NODE_BYTES;
use ember_engine::mcts::{CachedEvaluator, Driver, EvalBatch, NetEvaluator, Search, SearchStats};
use ember_engine::mcts::{Limits as SearchLimits, Watch};
use ember_engine::phase_times::PhaseTimes;
use ember_engine::timeman::{self, Clock};
use ember_engine::{Evaluator, Game};
use rand::rngs::StdRng;
use rand::SeedableRng;
use shakmaty::{Color, Move, Position};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a running search prints `info`.
const INFO_INTERVAL: Duration = Duration::from_secs(1);
/// Searches trust the playouts-per-second figure of earlier ones once they have run
/// this long in all.
const NPS_MIN_SAMPLE: Duration = Duration::from_millis(50);
/// How long `go infinite` or `go ponder` with no legal move sleeps between checks.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// What outlives a search.
pub struct Core {
    /// The network; its evaluator has the engine's evaluation cache in front of it.
    pub net: LoadedNet,
    /// The tree of the last search (reused when the game continues).
    pub search: Option<Search>,
    /// Playouts and thinking time of every search so far: the speed estimate (for smart
    /// pruning and for sizing the last batch of a short budget) until the current search
    /// has measured its own. Summed, so a game of 10 ms moves measures it too.
    searched_playouts: u64,
    searched_time: Duration,
    /// Move sampling when `Temperature` > 0.
    pub rng: StdRng,
}

impl Core {
    pub fn new(net: LoadedNet) -> Core {
        Core {
            net,
            search: None,
            searched_playouts: 0,
            searched_time: Duration::ZERO,
            rng: StdRng::from_os_rng(),
        }
    }

    /// Playouts per second over all searches so far (0 before the first).
    pub fn nps_estimate(&self) -> f64 {
        if self.searched_time >= NPS_MIN_SAMPLE {
            self.searched_playouts as f64 / self.searched_time.as_secs_f64()
        } else {
            0.0
        }
    }

    /// Forgets the tree and the cache (`ucinewgame`, a new network, a new cache size).
    pub fn clear(&mut self) {
        self.search = None;
        self.net.evaluator.clear_cache();
    }
}

/// Flags the input thread sets while a search runs.
#[derive(Default)]
pub struct Control {
    pub stop: AtomicBool,
    pub ponderhit: AtomicBool,
}

impl Control {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// One `go`.
pub struct Job {
    pub game: Game,
    pub go: GoCommand,
    pub options: Options,
}

/// Runs `job` to its `bestmove`, which it prints exactly once, also if the search fails
/// or panics (then with the best move known, or the first legal one).
pub fn run(core: &mut Core, job: &Job, control: &Control) {
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| think(core, job, control)));
    let (best, ponder) = match result {
        Ok(Ok(moves)) => moves,
        Ok(Err(e)) => {
            emit(&format!("info string error: search failed: {e:#}"));
            core.clear();
            (fallback_move(job), None)
        }
        Err(_) => {
            emit("info string error: internal error in the search; playing a legal move");
            core.clear();
            (fallback_move(job), None)
        }
    };
    let castling = job.options.castling_mode();
    let mut line = format!(
        "bestmove {}",
        best.map_or_else(|| "0000".to_string(), |m| move_to_uci_in(m, castling))
    );
    if let (Some(_), Some(p)) = (best, ponder) {
        line.push_str(&format!(" ponder {}", move_to_uci_in(p, castling)));
    }
    emit(&line);
}

fn fallback_move(job: &Job) -> Option<Move> {
    job.game.position().legal_moves().first().copied()
}

/// The search limits of one `go`: `go infinite` (or `go` with no limit at all) runs
/// until `stop`; `movetime`, or the clock of the side to move, gives a time budget.
fn limits_of(go: &GoCommand, side: Color, overhead: Duration) -> SearchLimits {
    let (time, inc) = match side {
        Color::White => (go.wtime, go.winc),
        Color::Black => (go.btime, go.binc),
    };
    let budget = match (go.movetime, time) {
        (Some(t), _) => Some(timeman::for_movetime(t, overhead)),
        (None, Some(remaining)) => Some(timeman::for_clock(
            Clock {
                remaining,
                increment: inc.unwrap_or_default(),
                moves_to_go: go.movestogo,
            },
            overhead,
        )),
        (None, None) => None,
    };
    SearchLimits {
        infinite: go.infinite || go.is_unlimited(),
        playouts: go.nodes,
        depth: go.depth,
        mate: go.mate,
        budget,
        visits: None,
    }
}

/// What the driver asks the UCI engine while it searches: `stop`, `ponderhit`, and the
/// `info` lines once a second.
struct UciWatch<'a> {
    control: &'a Control,
    options: &'a Options,
    pondering: bool,
    last_info: Instant,
}

impl Watch<CachedEvaluator<NetEvaluator>> for UciWatch<'_> {
    fn stopped(&mut self) -> bool {
        self.control.stopped()
    }
    fn pondering(&mut self) -> bool {
        if self.pondering && self.control.ponderhit.load(Ordering::Acquire) {
            self.pondering = false;
        }
        self.pondering
    }
    fn round(
        &mut self,
        search: &mut Search,
        driver: &Driver,
        evaluator: &mut CachedEvaluator<NetEvaluator>,
    ) {
        if self.last_info.elapsed() >= INFO_INTERVAL {
            self.last_info = Instant::now();
            report(search, driver, evaluator, self.options);
        }
    }
}

/// Moves the tree to the job's position, reusing the subtree when the game went on by
/// one or two plies from the last search's root.
fn prepare_tree(core: &mut Core, job: &Job) -> Search {
    let params = job.options.search_params();
    // A tree larger than a lowered RAM limit is dropped, so that its memory goes too.
    core.net.evaluator.resize(params.cache_entries);
    // So does a tree whose priors were made at another policy temperature.
    let reusable = core.search.take().filter(|s| {
        s.tree().allocated_bytes() <= params.max_nodes * NODE_BYTES
            && s.params.policy_temperature == params.policy_temperature
    });
    let Some(mut search) = reusable else {
        return Search::new(&job.game, params);
    };
    search.params = params;
    let game = &job.game;
    let history = game.history();
    let n = history.len();
    if n >= 3 && game.moves().len() >= 2 && history[n - 3] == search.tree().root_hash {
        let mut before_reply = Game::from_position(game.start_position().clone());
        for &mv in &game.moves()[..game.moves().len() - 1] {
            before_reply.play(mv);
        }
        if search.advance_to(&before_reply) {
            if search.advance_to(game) {
                log::debug!(
                    "tree reuse over two plies: {} visits kept",
                    search.root_visits()
                );
            }
            return search;
        }
    }
    if search.advance_to(game) {
        log::debug!(
            "tree reuse over one ply: {} visits kept",
            search.root_visits()
        );
    }
    search
}

/// The search proper; returns (bestmove, ponder move).
fn think(
    core: &mut Core,
    job: &Job,
    control: &Control,
) -> anyhow::Result<(Option<Move>, Option<Move>)> {
    let start = Instant::now();
    let position = job.game.position().clone();
    let legal = position.legal_moves();
    let limits = limits_of(
        &job.go,
        position.turn(),
        Duration::from_millis(job.options.move_overhead_ms),
    );
    if !job.go.ignored.is_empty() {
        emit(&format!(
            "info string ignored go tokens: {}",
            job.go.ignored.join(" ")
        ));
    }

    if legal.is_empty() {
        let why = if position.is_check() {
            "checkmate"
        } else {
            "stalemate"
        };
        emit(&format!("info string no legal moves ({why})"));
        wait_for_release(control, limits.infinite, job.go.ponder);
        return Ok((None, None));
    }
    let mut search = prepare_tree(core, job);
    // Set on every `go` (empty clears it), since a reused tree keeps the last setting.
    search.restrict_root(&parse_searchmoves(&position, &job.go.searchmoves));
    let allowed = search.allowed_root_moves();
    search.stats = SearchStats::default();
    let mut driver = Driver::new(&mut search, limits)
        .started_at(start)
        .with_speed_estimate(core.nps_estimate())
        .pondering(job.go.ponder);
    let mut watch = UciWatch {
        control,
        options: &job.options,
        pondering: job.go.ponder,
        last_info: start,
    };
    driver.run(
        &mut search,
        &mut core.net.evaluator,
        &mut PhaseTimes::default(),
        &mut watch,
    )?;

    core.searched_playouts += driver.playouts(&search);
    core.searched_time += start.elapsed();
    report(&mut search, &driver, &mut core.net.evaluator, &job.options);
    if job.options.verbose_move_stats {
        let evaluator = &mut core.net.evaluator;
        let value_of = |hash| evaluator.cached(hash).map(|e| e.wdl[0] - e.wdl[2]);
        for line in verbose_move_stats(&search, value_of, job.options.castling_mode()) {
            emit(&line);
        }
    }
    let best = search
        .choose_move(job.options.temperature, &mut core.rng)
        .or_else(|| best_prior_move(core, &position, &allowed))
        .or_else(|| allowed.first().copied());
    let ponder = best.and_then(|b| search.principal_variation(Some(b)).get(1).copied());
    core.search = Some(search);
    Ok((best, ponder))
}

/// `go infinite` / `go ponder` must not answer before `stop` (or `ponderhit`).
fn wait_for_release(control: &Control, infinite: bool, pondering: bool) {
    while (infinite || pondering)
        && !control.stopped()
        && !(pondering && control.ponderhit.load(Ordering::Acquire))
    {
        std::thread::sleep(IDLE_POLL);
    }
}

/// The legal moves among `searchmoves` (an illegal or malformed one is reported and left
/// out); the search treats an empty list as every legal move.
fn parse_searchmoves(position: &shakmaty::Chess, searchmoves: &[String]) -> Vec<Move> {
    let mut chosen = Vec::new();
    for text in searchmoves {
        match parse_uci_move(position, text) {
            Ok(m) => chosen.push(m),
            Err(e) => emit(&format!("info string error: searchmoves: {e:#}")),
        }
    }
    chosen
}

/// Prints the `info` lines for the current state of the search.
fn report(
    search: &mut Search,
    driver: &Driver,
    evaluator: &mut CachedEvaluator<NetEvaluator>,
    options: &Options,
) {
    let stats = search.stats;
    let figures = SearchFigures {
        depth: search.mean_depth().round() as u32,
        seldepth: stats.max_depth,
        nodes: driver.playouts(search),
        elapsed: driver.elapsed(),
        hashfull: search
            .tree_permille()
            .max(evaluator.cache().permille_full()),
    };
    let root_hash = search.tree().root_hash;
    let draw = evaluator.cached(root_hash).map_or(0.0, |e| e.wdl[1]);
    let root_q = search.root_q();
    let lines: Vec<PvLine> = search
        .ranked_children()
        .iter()
        .take(options.multi_pv.max(1))
        .map(|child| {
            let q = if child.visits > 0 { child.q } else { root_q };
            let (score, wdl) = match search.proven_mate(Some(child.mv)) {
                Some(p) => {
                    let m = mate_in_moves(p);
                    (
                        Score::Mate(m),
                        if m > 0 { [1000, 0, 0] } else { [0, 0, 1000] },
                    )
                }
                None => (Score::Cp(q_to_cp(q)), wdl_permille(q, draw)),
            };
            let mut pv = search.principal_variation(Some(child.mv));
            if pv.is_empty() {
                pv.push(child.mv);
            }
            PvLine {
                score,
                wdl: options.show_wdl.then_some(wdl),
                pv,
            }
        })
        .collect();
    for line in info_lines(&figures, &lines, options.multi_pv, options.castling_mode()) {
        emit(&line);
    }
}

/// When the tree has no children (the root is decided by the rules, e.g. a fifty-move
/// draw that still has legal moves), the network's favourite allowed move.
fn best_prior_move(core: &mut Core, position: &shakmaty::Chess, allowed: &[Move]) -> Option<Move> {
    let mut batch = EvalBatch::new();
    batch.push(position, allowed);
    core.net
        .evaluator
        .evaluate(&mut batch, &mut PhaseTimes::default())
        .ok()?;
    let priors = batch.priors(0);
    allowed
        .iter()
        .zip(priors)
        .max_by(|a, b| a.1.partial_cmp(b.1).unwrap_or(std::cmp::Ordering::Equal))
        .map(|(m, _)| *m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_go;
    use std::time::Duration;

    #[test]
    fn clock_of_the_side_to_move_sets_the_budget() {
        let go = parse_go(&["wtime", "1000", "btime", "600000"]);
        let white = limits_of(&go, Color::White, Duration::from_millis(50))
            .budget
            .unwrap();
        let black = limits_of(&go, Color::Black, Duration::from_millis(50))
            .budget
            .unwrap();
        assert!(white.target < black.target);
        assert!(white.hard < Duration::from_millis(1000));
    }

    #[test]
    fn movetime_wins_over_the_clock() {
        let go = parse_go(&["movetime", "500", "wtime", "100000"]);
        let b = limits_of(&go, Color::White, Duration::from_millis(50))
            .budget
            .unwrap();
        assert_eq!(b.target, Duration::from_millis(450));
    }

    #[test]
    fn plain_go_is_infinite_and_go_nodes_is_not() {
        assert!(limits_of(&parse_go(&[]), Color::White, Duration::ZERO).infinite);
        assert!(!limits_of(&parse_go(&["nodes", "5"]), Color::White, Duration::ZERO).infinite);
    }

    #[test]
    fn illegal_searchmoves_fall_back_to_all_legal_moves() {
        let game = ember_engine::Game::new();
        let mut search = Search::new(&game, ember_engine::SearchParams::default());
        let allowed = |search: &mut Search, moves: &[&str]| {
            let texts: Vec<String> = moves.iter().map(|m| m.to_string()).collect();
            search.restrict_root(&parse_searchmoves(game.position(), &texts));
            search.allowed_root_moves().len()
        };
        assert_eq!(allowed(&mut search, &["e2e5"]), 20);
        assert_eq!(allowed(&mut search, &["e2e4", "e2e4"]), 1);
        assert_eq!(allowed(&mut search, &["e2e4", "d2d4"]), 2);
        assert_eq!(allowed(&mut search, &[]), 20);
    }
}
