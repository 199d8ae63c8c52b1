//! Commands engine authors expect beyond UCI: `d` (board, FEN, hash), `eval` (the
//! network's value, WDL and favourite moves for the current position) and `bench` (a
//! fixed number of playouts on a fixed set of positions, for regression checks of speed
//! and behaviour).

use crate::options::Options;
use crate::output::emit;
use crate::report::q_to_cp;
use crate::searcher::{Control, Core};
use ember_engine::game::{fen_of, move_to_uci, move_to_uci_in};
use ember_engine::mcts::{Driver, EvalBatch, Limits, Search, Watch};
use ember_engine::phase_times::PhaseTimes;
use ember_engine::{Evaluator, Game};
use shakmaty::{CastlingMode, Color, Position, Square};
use std::time::Instant;

/// Playouts per position of a plain `bench`.
pub const BENCH_NODES: u64 = 1000;

/// Start position, Kiwipete and the other perft positions of the chess programming wiki:
/// openings, castling both ways, en passant, promotions, a pawn endgame.
pub const BENCH_POSITIONS: [&str; 6] = [
    "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
    "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1",
    "8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - - 0 1",
    "r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1",
    "rnbq1k1r/pp1Pbppp/2p5/8/2B5/8/PPP1NnPP/RNBQK2R w KQ - 1 8",
    "r1bqkb1r/pppp1ppp/2n2n2/4p3/2B1P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 4 4",
];

/// `d`: the board from White's side, then `Fen:` and `Key:` lines.
pub fn display(game: &Game) -> Vec<String> {
    let position = game.position();
    let board = position.board();
    let mut lines = vec![
        String::new(),
        " +---+---+---+---+---+---+---+---+".to_string(),
    ];
    for rank in (0..8u32).rev() {
        let mut row = String::from(" |");
        for file in 0..8u32 {
            let square = Square::new(rank * 8 + file);
            let c = board.piece_at(square).map_or(' ', |p| p.char());
            row.push_str(&format!(" {c} |"));
        }
        row.push_str(&format!(" {}", rank + 1));
        lines.push(row);
        lines.push(" +---+---+---+---+---+---+---+---+".to_string());
    }
    lines.push("   a   b   c   d   e   f   g   h".to_string());
    lines.push(String::new());
    lines.push(format!("Fen: {}", fen_of(position)));
    lines.push(format!("Key: {:016X}", game.hash()));
    let side = if position.turn() == Color::White {
        "white"
    } else {
        "black"
    };
    let checkers: Vec<String> = position
        .checkers()
        .into_iter()
        .map(|s| s.to_string())
        .collect();
    lines.push(format!(
        "Side to move: {side}; checkers: {}",
        if checkers.is_empty() {
            "none".into()
        } else {
            checkers.join(" ")
        }
    ));
    lines
}

/// `eval`: one network call on the current position, as `info string` lines (moves in
/// the notation `castling` says).
pub fn eval(core: &mut Core, game: &Game, castling: CastlingMode) -> anyhow::Result<Vec<String>> {
    let position = game.position();
    let moves = position.legal_moves();
    if moves.is_empty() {
        let why = if position.is_check() {
            "checkmate"
        } else {
            "stalemate"
        };
        return Ok(vec![format!("info string eval: no legal moves ({why})")]);
    }
    let mut batch = EvalBatch::new();
    batch.push(position, &moves);
    core.net
        .evaluator
        .evaluate(&mut batch, &mut PhaseTimes::default())?;
    let [w, d, l] = batch.wdl(0);
    let q = w - l;
    let mut lines = vec![
        format!("info string eval network {}", core.net.description),
        format!(
            "info string eval value {q:+.4} (side to move) cp {}",
            q_to_cp(q)
        ),
        format!(
            "info string eval wdl win {:.1}% draw {:.1}% loss {:.1}%",
            100.0 * w,
            100.0 * d,
            100.0 * l
        ),
    ];
    let mut ranked: Vec<(String, f32)> = moves
        .iter()
        .zip(batch.priors(0))
        .map(|(m, p)| (move_to_uci_in(*m, castling), *p))
        .collect();
    ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    for (k, (mv, p)) in ranked.iter().take(5).enumerate() {
        lines.push(format!(
            "info string eval policy {} {mv} {:.2}%",
            k + 1,
            100.0 * p
        ));
    }
    Ok(lines)
}

/// `bench [nodes]`: `nodes` playouts from each bench position with a fresh tree and
/// cache, printing one line per position and the totals. Stops early on `stop`/`quit`.
pub fn bench(
    core: &mut Core,
    options: &Options,
    nodes: u64,
    control: &Control,
) -> anyhow::Result<()> {
    let mut total_nodes = 0u64;
    let start = Instant::now();
    for (k, fen) in BENCH_POSITIONS.iter().enumerate() {
        if control.stopped() {
            break;
        }
        let game = Game::from_fen(fen)?;
        let mut search = Search::new(&game, options.search_params());
        core.net.evaluator.resize(search.params.cache_entries);
        core.net.evaluator.clear_cache();
        let t0 = Instant::now();
        let limit = Limits::visits(nodes.min(u32::MAX as u64) as u32);
        if !control.stopped() {
            Driver::new(&mut search, limit).run(
                &mut search,
                &mut core.net.evaluator,
                &mut PhaseTimes::default(),
                &mut StopOnly(control),
            )?;
        }
        let n = search.root_visits() as u64;
        let ms = t0.elapsed().as_millis().max(1) as u64;
        total_nodes += n;
        let best = search
            .best_move()
            .map_or_else(|| "0000".to_string(), move_to_uci);
        emit(&format!(
            "Position {}/{}: bestmove {best} playouts {n} in {ms} ms ({} per second) fen {fen}",
            k + 1,
            BENCH_POSITIONS.len(),
            n * 1000 / ms
        ));
    }
    let ms = start.elapsed().as_millis().max(1) as u64;
    let nps = total_nodes * 1000 / ms;
    emit("===========================");
    emit(&format!("Total time (ms) : {ms}"));
    emit(&format!("Nodes searched  : {total_nodes}"));
    emit(&format!("Nodes/second    : {nps}"));
    emit(&format!(
        "info string bench nodes {total_nodes} nps {nps} time {ms} network {}",
        core.net.description
    ));
    Ok(())
}

/// Watches a search for `stop` alone.
struct StopOnly<'a>(&'a Control);

impl<E: ?Sized> Watch<E> for StopOnly<'_> {
    fn stopped(&mut self) -> bool {
        self.0.stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_the_fen_and_a_key() {
        let mut game = Game::new();
        game.play_uci("e2e4").unwrap();
        let lines = display(&game);
        assert!(lines.contains(&format!("Fen: {}", fen_of(game.position()))));
        assert!(lines.iter().any(|l| l.starts_with("Key: ")));
        assert!(lines.iter().any(|l| l.contains("| P |")));
    }

    /// Below its RAM limit the search plays as it did without one: on every bench
    /// position, the same root statistics and move at the default limit, at 16 MB, and at
    /// a limit of exactly the nodes the unbounded search used.
    #[test]
    fn the_ram_limit_leaves_bench_play_unchanged_below_it() {
        let mut net =
            crate::network::load(crate::options::EMBEDDED, ember_engine::DeviceChoice::Cpu, 1)
                .unwrap();
        let run =
            |fen: &str, params: ember_engine::SearchParams, net: &mut crate::network::LoadedNet| {
                let mut s = Search::new(&Game::from_fen(fen).unwrap(), params);
                s.run_until_visits(&mut net.evaluator, 400, &mut PhaseTimes::default())
                    .unwrap();
                let stats: Vec<(u32, u32)> = s
                    .root_children()
                    .iter()
                    .map(|c| (c.visits, c.q.to_bits()))
                    .collect();
                (
                    s.best_move(),
                    stats,
                    s.tree().nodes.len(),
                    s.stats.not_expanded,
                )
            };
        let mut options = crate::options::Options::new(crate::options::EMBEDDED.into(), 1, false);
        for fen in BENCH_POSITIONS {
            let free = run(fen, options.search_params(), &mut net);
            options.set("RamLimitMb", Some("16")).unwrap();
            let small = run(fen, options.search_params(), &mut net);
            let exact = run(
                fen,
                ember_engine::SearchParams {
                    max_nodes: free.2,
                    ..options.search_params()
                },
                &mut net,
            );
            options.set("RamLimitMb", Some("1024")).unwrap();
            assert_eq!(free.3, 0, "{fen}");
            assert_eq!((&free.0, &free.1), (&small.0, &small.1), "{fen}");
            assert_eq!(
                (&free.0, &free.1, exact.3),
                (&exact.0, &exact.1, 0),
                "{fen}"
            );
        }
    }

    #[test]
    fn bench_positions_are_valid() {
        for fen in BENCH_POSITIONS {
            assert!(
                !Game::from_fen(fen)
                    .unwrap()
                    .position()
                    .legal_moves()
                    .is_empty(),
                "{fen}"
            );
        }
    }
}
