//! One `go`, run on a worker thread: the search loop (`gather` -> network -> `apply`,
//! one small batch at a time so that `stop` is seen within one network call), its limits
//! (nodes, depth, mate, clock, movetime, smart pruning), the periodic `info` lines, and
//! the single `bestmove`.
//!
//! [`Core`] is everything a search needs that outlives it: the network, the tree (kept
//! between moves) and its evaluation cache. The input thread hands the core to the
//! worker for the duration of one `go` and gets it back when the worker ends; it talks to
//! a running search only through [`Control`]'s flags.

use crate::input::GoCommand;
use crate::network::LoadedNet;
use crate::options::Options;
use crate::output::emit;
use crate::report::{
    info_lines, mate_in_moves, q_to_cp, wdl_permille, PvLine, Score, SearchFigures,
};
use ember_engine::game::{move_to_uci, parse_uci_move};
use ember_engine::mcts::node::NODE_BYTES;
use ember_engine::mcts::{EvalBatch, Search, SearchStats};
use ember_engine::phase_times::PhaseTimes;
use ember_engine::timeman::{self, Budget, Clock};
use ember_engine::{Evaluator, Game};
use rand::rngs::StdRng;
use rand::SeedableRng;
use shakmaty::{Color, Move, Position};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a running search prints `info`.
const INFO_INTERVAL: Duration = Duration::from_secs(1);
/// A search trusts its own playouts-per-second figure once it has run this long.
const NPS_MIN_SAMPLE: Duration = Duration::from_millis(50);
/// How long an unlimited search with nothing left to search sleeps between checks.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// What outlives a search.
pub struct Core {
    pub net: LoadedNet,
    /// The tree of the last search (reused when the game continues) and its cache.
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
    let mut line = format!(
        "bestmove {}",
        best.map_or_else(|| "0000".to_string(), move_to_uci)
    );
    if let (Some(_), Some(p)) = (best, ponder) {
        line.push_str(&format!(" ponder {}", move_to_uci(p)));
    }
    emit(&line);
}

fn fallback_move(job: &Job) -> Option<Move> {
    job.game.position().legal_moves().first().copied()
}

/// The limits of one `go`.
struct Limits {
    /// Runs until `stop` (`go infinite`, or `go` with no limit at all).
    infinite: bool,
    nodes: Option<u64>,
    depth: Option<u32>,
    mate: Option<u32>,
    /// Thinking time, counted from `go` (or from `ponderhit` when pondering).
    budget: Option<Budget>,
}

impl Limits {
    fn of(go: &GoCommand, side: Color, overhead: Duration) -> Limits {
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
        Limits {
            infinite: go.infinite || go.is_unlimited(),
            nodes: go.nodes,
            depth: go.depth,
            mate: go.mate,
            budget,
        }
    }
}

/// Moves the tree to the job's position, reusing the subtree when the game went on by
/// one or two plies from the last search's root.
fn prepare_tree(core: &mut Core, job: &Job) -> Search {
    let params = job.options.search_params();
    // A tree larger than a lowered RAM limit is dropped, so that its memory goes too.
    let reusable = core.search.take().filter(|s| {
        s.cache().capacity() == params.cache_entries
            && s.tree().allocated_bytes() <= params.max_nodes * NODE_BYTES
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
    let mut pondering = job.go.ponder;
    let limits = Limits::of(
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
        wait_for_release(control, limits.infinite, pondering);
        return Ok((None, None));
    }
    let mut search = prepare_tree(core, job);
    // Set on every `go` (empty clears it), since a reused tree keeps the last setting.
    search.restrict_root(&parse_searchmoves(&position, &job.go.searchmoves));
    let allowed = search.allowed_root_moves();
    search.stats = SearchStats::default();
    let base_visits = search.root_visits();
    let mut batch = EvalBatch::new();
    let mut timing = PhaseTimes::default();
    let mut clock_start = start;
    let mut last_info = start;
    let mut batches = 0u64;

    loop {
        let playouts = (search.root_visits() - base_visits) as u64;
        // The first batch always runs: it expands the root, so even an instant `stop`
        // answers with a searched move.
        if batches > 0 {
            if control.stopped() {
                break;
            }
            if pondering && control.ponderhit.load(Ordering::Acquire) {
                pondering = false;
                clock_start = Instant::now();
            }
            if !limits.infinite
                && !pondering
                && limit_reached(
                    &search,
                    &limits,
                    &allowed,
                    playouts,
                    clock_start,
                    start,
                    core.nps_estimate(),
                )
            {
                break;
            }
        }
        let mut want = search.params.max_batch.max(1);
        if let (Some(n), false) = (limits.nodes, limits.infinite) {
            want = want.min(n.saturating_sub(playouts).max(1) as usize);
        }
        if let (Some(budget), false, false) = (limits.budget, limits.infinite, pondering) {
            // Near the end of a short budget a full batch would overrun it: ask only for
            // the leaves that fit in the time left at the measured speed.
            let nps = current_nps(playouts, start, core.nps_estimate());
            let left = budget.target.saturating_sub(clock_start.elapsed());
            if nps > 0.0 {
                want = want.min((nps * left.as_secs_f64()).ceil().max(1.0) as usize);
            }
        }
        batch.clear();
        let before = search.root_visits();
        search.gather(want, &mut batch, &mut timing);
        if !batch.is_empty() {
            core.net.evaluator.evaluate(&mut batch, &mut timing)?;
            search.apply(&batch, 0, &mut timing);
        }
        batches += 1;
        if search.root_visits() == before {
            // Every line is decided: only `stop` (or `ponderhit`) can end an unlimited search.
            if limits.infinite || pondering {
                if control.stopped() {
                    break;
                }
                if pondering && control.ponderhit.load(Ordering::Acquire) {
                    break;
                }
                if last_info.elapsed() >= INFO_INTERVAL {
                    last_info = Instant::now();
                    report(&mut search, &job.options, start, base_visits);
                }
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            break;
        }
        if last_info.elapsed() >= INFO_INTERVAL {
            last_info = Instant::now();
            report(&mut search, &job.options, start, base_visits);
        }
    }

    let elapsed = start.elapsed();
    let playouts = (search.root_visits() - base_visits) as f64;
    core.searched_playouts += playouts as u64;
    core.searched_time += elapsed;
    report(&mut search, &job.options, start, base_visits);
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

fn limit_reached(
    search: &Search,
    limits: &Limits,
    allowed: &[Move],
    playouts: u64,
    clock_start: Instant,
    start: Instant,
    nps_estimate: f64,
) -> bool {
    if let Some(n) = limits.nodes {
        if playouts >= n {
            return true;
        }
    }
    if let Some(d) = limits.depth {
        if (search.mean_depth().round() as u32) >= d {
            return true;
        }
    }
    if let Some(m) = limits.mate {
        if let Some(p) = search.proven_mate(None) {
            if p > 0 && mate_in_moves(p) as u32 <= m.max(1) {
                return true;
            }
        }
    }
    let Some(budget) = limits.budget else {
        return false;
    };
    let elapsed = clock_start.elapsed();
    if allowed.len() == 1 {
        return true;
    }
    let ranked = search.ranked_children();
    if elapsed >= budget.target {
        let unsettled = match ranked.as_slice() {
            [a, b, ..] => timeman::should_extend(a.visits, a.q, b.visits, b.q),
            _ => false,
        };
        return !unsettled || elapsed >= timeman::extended_limit(budget);
    }
    let nps = current_nps(playouts, start, nps_estimate);
    let (best, second) = match ranked.as_slice() {
        [a, b, ..] => (a.visits, b.visits),
        [a] => (a.visits, 0),
        [] => return false,
    };
    nps > 0.0 && timeman::can_stop_early(best, second, elapsed, budget.target, nps)
}

/// Playouts per second: this search's own once it has run long enough, else the last
/// search's (0 when there was none).
fn current_nps(playouts: u64, start: Instant, nps_estimate: f64) -> f64 {
    let since_go = start.elapsed();
    if since_go >= NPS_MIN_SAMPLE && playouts > 0 {
        playouts as f64 / since_go.as_secs_f64()
    } else {
        nps_estimate
    }
}

/// Prints the `info` lines for the current state of the search.
fn report(search: &mut Search, options: &Options, start: Instant, base_visits: u32) {
    let elapsed = start.elapsed();
    let stats = search.stats;
    let figures = SearchFigures {
        depth: search.mean_depth().round() as u32,
        seldepth: stats.max_depth,
        nodes: (search.root_visits() - base_visits) as u64,
        elapsed,
        hashfull: search.tree_permille().max(search.cache().permille_full()),
    };
    let root_hash = search.tree().root_hash;
    let draw = search.cache_mut().get(root_hash).map_or(0.0, |e| e.wdl[1]);
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
    for line in info_lines(&figures, &lines, options.multi_pv) {
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
        let white = Limits::of(&go, Color::White, Duration::from_millis(50))
            .budget
            .unwrap();
        let black = Limits::of(&go, Color::Black, Duration::from_millis(50))
            .budget
            .unwrap();
        assert!(white.target < black.target);
        assert!(white.hard < Duration::from_millis(1000));
    }

    #[test]
    fn movetime_wins_over_the_clock() {
        let go = parse_go(&["movetime", "500", "wtime", "100000"]);
        let b = Limits::of(&go, Color::White, Duration::from_millis(50))
            .budget
            .unwrap();
        assert_eq!(b.target, Duration::from_millis(450));
    }

    #[test]
    fn plain_go_is_infinite_and_go_nodes_is_not() {
        assert!(Limits::of(&parse_go(&[]), Color::White, Duration::ZERO).infinite);
        assert!(!Limits::of(&parse_go(&["nodes", "5"]), Color::White, Duration::ZERO).infinite);
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
