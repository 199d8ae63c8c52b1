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

use ember_engine::game::move_to_uci;
use shakmaty::Move;
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
                    s.push_str(&move_to_uci(*m));
                }
            }
            s
        })
        .collect()
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
        let one = info_lines(&figures, std::slice::from_ref(&line), 1);
        assert_eq!(one[0], "info depth 3 seldepth 7 score cp 25 wdl 400 350 250 nodes 500 nps 2000 hashfull 12 time 250");
        let two = info_lines(&figures, &[line.clone(), line], 2);
        assert!(two[1].contains(" multipv 2 "), "{}", two[1]);
    }
}
