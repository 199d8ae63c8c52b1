//! What the engine says about a search: `info` lines (score, WDL, PV, MultiPV) and the
//! conversions behind them.
//!
//! Conventions:
//! - **Centipawns from Q** (Q in [-1, 1] for the side to move) use lc0's formula
//!   `cp = 90 * tan(1.5637541897 * Q)`: Q = 0.5 is about +0.9 pawns, Q = 0.9 about +5.5,
//!   and the tangent's pole sits just past |Q| = 1, so a won position reads as
//!   thousands of centipawns instead of an arbitrary cap. Clamped to ±20000 (the
//!   range below UCI mate scores that GUIs handle).
//! - **Mate**: the search proves mates in plies; UCI counts moves, `(plies + 1) / 2`,
//!   negative when the side to move is mated.
//! - **WDL** (per mille, summing to 1000) comes from the reported Q and the network's
//!   draw probability at the root `d0`: `d = min(d0, 1 - |Q|)`, `w = (1 + Q - d) / 2`,
//!   `l = (1 - Q - d) / 2`, so that `w - l = Q` exactly and the draw share is the
//!   network's as far as Q allows. A proven mate reads 1000/0/0 (or 0/0/1000).
//! - **nodes** counts playouts of this search (root visits added since `go`), **depth**
//!   is the rounded mean depth of those descents, **seldepth** the deepest one.
//! - **Verbose move stats** (`VerboseMoveStats`, lc0's format): one `info string` per
//!   root move, fewest visits first (so the most visited is printed last, next to
//!   `bestmove`), then one for the root ([`verbose_move_stats`]).
//! - Moves are written in the notation `UCI_Chess960` selects (castling e1g1 or e1h1).

use ember_engine::encoding::move_to_index;
use ember_engine::game::{hash_after, move_to_uci_in};
use ember_engine::mcts::Search;
use shakmaty::{CastlingMode, Move, Position};
use std::time::Duration;

/// Largest centipawn score reported.
pub const MAX_CP: i32 = 20_000;

/// lc0's Q -> centipawn mapping (see the module doc).
pub fn q_to_cp(q: f32) -> i32 {
    let cp = 90.0 * (1.563_754_189_7_f64 * q.clamp(-1.0, 1.0) as f64).tan();
    cp.round().clamp(-(MAX_CP as f64), MAX_CP as f64) as i32
}

/// UCI mate distance in moves from a proven mate in plies (positive: the side to move
/// mates).
pub fn mate_in_moves(plies: i32) -> i32 {
    let moves = (plies.abs() + 1) / 2;
    if plies >= 0 {
        moves.max(1)
    } else {
        -moves.max(1)
    }
}

/// Win/draw/loss per mille for the side to move from Q and the network's draw
/// probability (see the module doc). The three always sum to 1000.
pub fn wdl_permille(q: f32, draw: f32) -> [u32; 3] {
    let q = q.clamp(-1.0, 1.0) as f64;
    let d = (draw.clamp(0.0, 1.0) as f64).min(1.0 - q.abs());
    let w = ((1.0 + q - d) / 2.0 * 1000.0).round().max(0.0) as u32;
    let l = ((1.0 - q - d) / 2.0 * 1000.0).round().max(0.0) as u32;
    let (w, l) = if w + l > 1000 {
        if w >= l {
            (1000 - l, l)
        } else {
            (w, 1000 - w)
        }
    } else {
        (w, l)
    };
    [w, 1000 - w - l, l]
}

/// A score as UCI prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Score {
    Cp(i32),
    Mate(i32),
}

/// One line of a search report (one per MultiPV entry).
#[derive(Clone, Debug)]
pub struct PvLine {
    pub score: Score,
    pub wdl: Option<[u32; 3]>,
    pub pv: Vec<Move>,
}

/// Search-wide figures shared by the lines of one report.
#[derive(Clone, Copy, Debug)]
pub struct SearchFigures {
    pub depth: u32,
    pub seldepth: u32,
    pub nodes: u64,
    pub elapsed: Duration,
    pub hashfull: u32,
}

impl SearchFigures {
    pub fn nps(&self) -> u64 {
        let ms = self.elapsed.as_millis().max(1) as u64;
        self.nodes.saturating_mul(1000) / ms
    }
}

/// The `info` lines of one report; `multipv` is printed when more than one line is asked.
pub fn info_lines(
    figures: &SearchFigures,
    lines: &[PvLine],
    multipv_requested: usize,
    castling: CastlingMode,
) -> Vec<String> {
    lines
        .iter()
        .enumerate()
        .map(|(k, line)| {
            let mut s = format!(
                "info depth {} seldepth {}",
                figures.depth.max(1),
                figures.seldepth.max(figures.depth).max(1)
            );
            if multipv_requested > 1 {
                s.push_str(&format!(" multipv {}", k + 1));
            }
            match line.score {
                Score::Cp(cp) => s.push_str(&format!(" score cp {cp}")),
                Score::Mate(m) => s.push_str(&format!(" score mate {m}")),
            }
            if let Some([w, d, l]) = line.wdl {
                s.push_str(&format!(" wdl {w} {d} {l}"));
            }
            s.push_str(&format!(
                " nodes {} nps {} hashfull {} time {}",
                figures.nodes,
                figures.nps(),
                figures.hashfull,
                figures.elapsed.as_millis()
            ));
            if !line.pv.is_empty() {
                s.push_str(" pv");
                for m in &line.pv {
                    s.push(' ');
                    s.push_str(&move_to_uci_in(*m, castling));
                }
            }
            s
        })
        .collect()
}

/// lc0's verbose move stats of the search's root, as `info string` lines: for every
/// allowed root move, fewest visits first (ties: lower prior first),
///
/// `info string e2e4  ( 322) N:     120 (+ 0) (P: 12.34%) (Q:  0.04512) (U:  0.03120) (Q+U:  0.07632) (V:  0.0412)`
///
/// with the move's policy index, its visits and the descents in flight, its prior as
/// the search uses it, and the terms of PUCT for the next descent (Q for the side to
/// move at the root, first-play urgency when unvisited; U the exploration term; the
/// move with the largest Q+U is descended next); `(T)` marks a move the tree proves won
/// or lost. V is the network's value of the position after the move for the side to move
/// at the root, `-.----` when `value_of` does not know it. A last line `node` gives the
/// root's visits, Q and value. `value_of(hash)` is the network's value of a position
/// for its side to move.
///
/// Where the network has the moves-left head, each line also gives M, the plies left
/// from the position after the move (lc0's `(M: 12.3)`, ` -.-` for an unvisited move),
/// and the moves-left utility PUCT adds (`MU`), so that the score of the next descent
/// reads `(Q+U+MU: ...)`; the `node` line gives the root's M:
///
/// `info string e2e4  ( 322) N:     120 (+ 0) (P: 12.34%) (M:  61.5) (Q:  0.04512) (U:  0.03120) (MU:  0.00000) (Q+U+MU:  0.07632) (V:  0.0412)`
pub fn verbose_move_stats(
    search: &Search,
    mut value_of: impl FnMut(u64) -> Option<f32>,
    castling: CastlingMode,
) -> Vec<String> {
    let root = search.root_position();
    let root_hash = search.tree().root_hash;
    let mut moves = search.root_puct_terms();
    moves.sort_by(|a, b| a.visits.cmp(&b.visits).then(a.prior.total_cmp(&b.prior)));
    let value = |v: Option<f32>| v.map_or_else(|| "-.----".to_string(), |v| format!("{v:>7.4}"));
    let head = search.plies_left_known();
    let plies = |m: Option<f32>| match (head, m) {
        (false, _) => String::new(),
        (true, Some(m)) => format!(" (M: {m:>5.1})"),
        (true, None) => " (M:   -.-)".to_string(),
    };
    let mut lines: Vec<String> = moves
        .iter()
        .map(|m| {
            let mut after = root.clone();
            after.play_unchecked(m.mv);
            let v = value_of(hash_after(root, root_hash, m.mv, &after)).map(|v| -v);
            let score = if head {
                format!("(MU: {:>8.5}) (Q+U+MU: {:>8.5})", m.m, m.q + m.u + m.m)
            } else {
                format!("(Q+U: {:>8.5})", m.q + m.u)
            };
            format!(
                "info string {:<5} ({:>4}) N: {:>7} (+{:>2}) (P: {:>6.2}%){} (Q: {:>8.5}) (U: {:>8.5}) {score} (V: {}){}",
                move_to_uci_in(m.mv, castling),
                move_to_index(&m.mv, root.turn()),
                m.visits,
                m.in_flight,
                100.0 * m.prior,
                plies(m.plies_left),
                m.q,
                m.u,
                value(v),
                if m.decided != 0 { " (T)" } else { "" }
            )
        })
        .collect();
    let node = search.tree().root();
    lines.push(format!(
        "info string node  (----) N: {:>7} (+{:>2}) (P: {:>6.2}%){} (Q: {:>8.5}) (V: {})",
        node.visits,
        node.in_flight,
        100.0,
        plies(search.root_plies_left()),
        search.root_q(),
        value(value_of(root_hash))
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_is_zero_for_an_even_position_and_odd_in_q() {
        assert_eq!(q_to_cp(0.0), 0);
        assert_eq!(q_to_cp(0.3), -q_to_cp(-0.3));
    }

    #[test]
    fn cp_follows_lc0s_tangent_formula() {
        assert_eq!(
            q_to_cp(0.5),
            (90.0 * (1.5637541897f64 * 0.5).tan()).round() as i32
        );
        assert!(q_to_cp(0.9) > 500 && q_to_cp(0.9) < 600, "{}", q_to_cp(0.9));
    }

    #[test]
    fn cp_is_clamped_for_decided_positions() {
        assert!(q_to_cp(1.0) <= MAX_CP && q_to_cp(1.0) > 5_000);
        assert!(q_to_cp(-1.0) >= -MAX_CP);
    }

    #[test]
    fn mate_plies_convert_to_moves() {
        assert_eq!(mate_in_moves(1), 1);
        assert_eq!(mate_in_moves(3), 2);
        assert_eq!(mate_in_moves(-2), -1);
        assert_eq!(mate_in_moves(-4), -2);
    }

    #[test]
    fn wdl_sums_to_1000_and_keeps_q() {
        for &(q, d) in &[
            (0.0, 0.3),
            (0.5, 0.9),
            (-0.7, 0.1),
            (1.0, 0.5),
            (-1.0, 0.0),
            (0.333, 0.333),
        ] {
            let [w, dr, l] = wdl_permille(q, d);
            assert_eq!(w + dr + l, 1000, "q {q} d {d}");
            assert!(
                ((w as f32 - l as f32) / 1000.0 - q).abs() < 0.002,
                "q {q}: {w} {dr} {l}"
            );
        }
    }

    #[test]
    fn wdl_takes_the_draw_share_from_the_network() {
        assert_eq!(wdl_permille(0.0, 0.4), [300, 400, 300]);
    }

    #[test]
    fn info_line_has_every_field_and_multipv_only_when_asked() {
        let figures = SearchFigures {
            depth: 3,
            seldepth: 7,
            nodes: 500,
            elapsed: Duration::from_millis(250),
            hashfull: 12,
        };
        let line = PvLine {
            score: Score::Cp(25),
            wdl: Some([400, 350, 250]),
            pv: vec![],
        };
        let one = info_lines(
            &figures,
            std::slice::from_ref(&line),
            1,
            CastlingMode::Standard,
        );
        assert_eq!(one[0], "info depth 3 seldepth 7 score cp 25 wdl 400 350 250 nodes 500 nps 2000 hashfull 12 time 250");
        let two = info_lines(&figures, &[line.clone(), line], 2, CastlingMode::Standard);
        assert!(two[1].contains(" multipv 2 "), "{}", two[1]);
    }

    /// The number after `key` in a verbose move stats line (`N:`, `(P:`, ...).
    fn field(line: &str, key: &str) -> f64 {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
        let token = rest.split_whitespace().next().unwrap();
        token.trim_end_matches([')', '%']).parse().unwrap()
    }

    #[test]
    fn verbose_move_stats_give_every_root_move_fewest_visits_first_then_the_root() {
        use ember_engine::mcts::{CachedEvaluator, NetEvaluator};
        use ember_engine::phase_times::PhaseTimes;
        let net =
            crate::network::load(crate::options::EMBEDDED, ember_engine::DeviceChoice::Cpu, 1)
                .unwrap();
        let mut evaluator: CachedEvaluator<NetEvaluator> = net.evaluator;
        let game = ember_engine::Game::new();
        let mut search = Search::new(&game, ember_engine::SearchParams::default());
        search
            .run_until_visits(&mut evaluator, 200, &mut PhaseTimes::default())
            .unwrap();
        let lines = verbose_move_stats(
            &search,
            |h| evaluator.cached(h).map(|e| e.wdl[0] - e.wdl[2]),
            CastlingMode::Standard,
        );
        assert_eq!(lines.len(), 20 + 1);
        let (node, moves) = lines.split_last().unwrap();
        assert!(
            node.starts_with("info string node  (----) N:     200 (+ 0) (P: 100.00%)"),
            "{node}"
        );
        let visits: Vec<f64> = moves.iter().map(|l| field(l, "N:")).collect();
        assert!(visits.windows(2).all(|w| w[0] <= w[1]), "{visits:?}");
        // The root's first visit was its own evaluation.
        assert_eq!(visits.iter().sum::<f64>(), 199.0);
        let best = ember_engine::game::move_to_uci(search.best_move().unwrap());
        assert!(moves
            .last()
            .unwrap()
            .starts_with(&format!("info string {best:<5} (")));
        let priors: f64 = moves.iter().map(|l| field(l, "(P:")).sum();
        assert!((priors - 100.0).abs() < 0.1, "{priors}");
        for line in moves {
            let (q, u, s) = (field(line, "(Q:"), field(line, "(U:"), field(line, "(Q+U:"));
            assert!((q + u - s).abs() < 2e-5, "{line}");
            assert!(u > 0.0 && !line.contains("(M:"), "{line}");
            // The network evaluated every visited move's position (and the cache kept it).
            assert_eq!(
                field(line, "N:") > 0.0,
                !line.contains("(V: -.----)"),
                "{line}"
            );
        }
    }

    /// Uniform priors, a drawn value and 42 plies left everywhere: a network with the
    /// moves-left head, as far as the search can tell.
    struct FortyTwoPliesLeft;

    impl ember_engine::mcts::Evaluator for FortyTwoPliesLeft {
        fn evaluate(
            &mut self,
            batch: &mut ember_engine::mcts::EvalBatch,
            _t: &mut ember_engine::phase_times::PhaseTimes,
        ) -> anyhow::Result<()> {
            for i in 0..batch.len() {
                let p = batch.priors_mut(i);
                let u = 1.0 / p.len() as f32;
                p.fill(u);
                batch.set_wdl(i, [0.0, 1.0, 0.0]);
                batch.set_moves_left(i, Some(42.0));
            }
            Ok(())
        }
    }

    #[test]
    fn verbose_move_stats_give_each_moves_plies_left_where_the_network_has_the_moves_left_head() {
        use ember_engine::phase_times::PhaseTimes;
        let game = ember_engine::Game::new();
        let mut search = Search::new(&game, ember_engine::SearchParams::default());
        search
            .run_until_visits(&mut FortyTwoPliesLeft, 12, &mut PhaseTimes::default())
            .unwrap();
        let lines = verbose_move_stats(&search, |_| None, CastlingMode::Standard);
        let (node, moves) = lines.split_last().unwrap();
        // The root's M: its own 42, and 43 or more for every visit below it.
        let root_m = field(node, "(M:");
        assert!(root_m > 42.0 && root_m < 45.0, "{node}");
        let mut unvisited = 0;
        for line in moves {
            if field(line, "N:") == 0.0 {
                assert!(line.contains("(M:   -.-)"), "{line}");
                unvisited += 1;
            } else {
                let m = field(line, "(M:");
                assert!((42.0..44.0).contains(&m), "{line}");
            }
            let (q, u, mu) = (field(line, "(Q:"), field(line, "(U:"), field(line, "(MU:"));
            let s = field(line, "(Q+U+MU:");
            assert!((q + u + mu - s).abs() < 2e-5, "{line}");
            // A drawn position is below the threshold: no utility.
            assert_eq!(mu, 0.0, "{line}");
            assert!(!line.contains("(Q+U:"), "{line}");
        }
        assert!(unvisited > 0, "20 moves and 11 visits: some unvisited");
    }

    #[test]
    fn verbose_move_stats_write_chess960_castling_as_king_takes_rook() {
        use ember_engine::mcts::UniformEvaluator;
        use ember_engine::phase_times::PhaseTimes;
        let fen = "qnbnr1kr/1p3ppp/B1pbp3/p2p2B1/3PP3/2N5/PPP2PPP/QN2R1KR w KQkq - 2 6";
        let position =
            ember_engine::game::position_from_fen_in(fen, CastlingMode::Chess960).unwrap();
        let game = ember_engine::Game::from_position(position);
        let mut search = Search::new(&game, ember_engine::SearchParams::default());
        search
            .run_until_visits(&mut UniformEvaluator, 100, &mut PhaseTimes::default())
            .unwrap();
        let lines = verbose_move_stats(&search, |_| None, CastlingMode::Chess960);
        for castling in ["g1h1", "g1e1"] {
            let prefix = format!("info string {castling}  (");
            assert!(lines.iter().any(|l| l.starts_with(&prefix)), "{castling}");
        }
    }
}
