//! A material-only alpha-beta searcher: the `minimax:D` player, a rung of the strength
//! ladder between the one-ply greedy player and Stockfish's weakest level.
//!
//! Negamax with alpha-beta to `D` plies, then a capture search (stand pat, captures and
//! promotions only, most valuable victim first) so that the last ply's exchanges are
//! resolved. It knows material (pawn 100, knight and bishop 300, rook 500, queen 900),
//! checkmate (the faster mate preferred) and stalemate, nothing else; ties among the best
//! root moves are broken at random, so that its games differ.

use crate::game::piece_value;
use rand::seq::SliceRandom;
use rand::Rng;
use shakmaty::{Chess, Move, Position, Role};

const MATE: i32 = 1_000_000;
const INF: i32 = 2 * MATE;

/// Deepest search a `minimax:D` player accepts.
pub const MAX_DEPTH: u32 = 8;

fn value(role: Role) -> i32 {
    100 * piece_value(role) as i32
}

/// Material of the side to move minus the opponent's, in centipawns.
fn evaluate(pos: &Chess) -> i32 {
    let board = pos.board();
    let us = pos.turn();
    let mut score = 0;
    for role in Role::ALL {
        let of = board.by_role(role);
        let mine = (of & board.by_color(us)).count() as i32;
        let theirs = (of & board.by_color(!us)).count() as i32;
        score += value(role) * (mine - theirs);
    }
    score
}

/// Most valuable victim first, then least valuable attacker; quiet moves last.
fn order_key(m: &Move) -> i32 {
    let gain = m.capture().map_or(0, value) + m.promotion().map_or(0, value);
    if gain == 0 {
        return 0;
    }
    -(10 * gain - value(m.role()) / 100)
}

/// The searcher, with a count of the positions it visited.
#[derive(Default)]
pub struct Minimax {
    pub nodes: u64,
}

impl Minimax {
    /// The best move of `pos` at `depth` plies (at least 1), ties broken by `rng`; `None`
    /// when the game is over. Also returns its score for the side to move, in centipawns.
    pub fn best_move<R: Rng>(
        &mut self,
        pos: &Chess,
        depth: u32,
        rng: &mut R,
    ) -> Option<(Move, i32)> {
        let mut moves: Vec<Move> = pos.legal_moves().into_iter().collect();
        moves.shuffle(rng);
        // A stable sort: equally ordered moves keep their random order.
        moves.sort_by_key(order_key);
        let mut best: Option<(Move, i32)> = None;
        let mut alpha = -INF;
        for m in moves {
            let mut next = pos.clone();
            next.play_unchecked(m);
            let score = -self.search(&next, depth.max(1) - 1, 1, -INF, -alpha);
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((m, score));
                alpha = alpha.max(score);
            }
        }
        best
    }

    fn search(&mut self, pos: &Chess, depth: u32, ply: i32, mut alpha: i32, beta: i32) -> i32 {
        self.nodes += 1;
        let mut moves = pos.legal_moves();
        if moves.is_empty() {
            return if pos.is_check() { -MATE + ply } else { 0 };
        }
        if pos.is_insufficient_material() {
            return 0;
        }
        if depth == 0 {
            return self.captures(pos, ply, alpha, beta);
        }
        moves.sort_by_key(order_key);
        for m in moves {
            let mut next = pos.clone();
            next.play_unchecked(m);
            let score = -self.search(&next, depth - 1, ply + 1, -beta, -alpha);
            if score >= beta {
                return score;
            }
            alpha = alpha.max(score);
        }
        alpha
    }

    /// The capture search: the side to move may stand pat on the material or take.
    fn captures(&mut self, pos: &Chess, ply: i32, mut alpha: i32, beta: i32) -> i32 {
        self.nodes += 1;
        let stand = evaluate(pos);
        if stand >= beta {
            return stand;
        }
        alpha = alpha.max(stand);
        let mut moves: Vec<Move> = pos
            .capture_moves()
            .into_iter()
            .chain(
                pos.legal_moves()
                    .into_iter()
                    .filter(|m| m.is_promotion() && !m.is_capture()),
            )
            .collect();
        moves.sort_by_key(order_key);
        for m in moves {
            let mut next = pos.clone();
            next.play_unchecked(m);
            let score = -self.captures(&next, ply + 1, -beta, -alpha);
            if score >= beta {
                return score;
            }
            alpha = alpha.max(score);
        }
        alpha
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::{move_to_uci, Game};
    use rand::{rngs::StdRng, SeedableRng};

    fn best(fen: &str, depth: u32) -> (String, i32) {
        let pos = Game::from_fen(fen).unwrap().position().clone();
        let (m, s) = Minimax::default()
            .best_move(&pos, depth, &mut StdRng::seed_from_u64(1))
            .unwrap();
        (move_to_uci(m), s)
    }

    #[test]
    fn it_takes_a_hanging_queen_and_not_a_defended_one() {
        assert_eq!(best("4k3/8/8/3q4/8/8/3R4/4K3 w - - 0 1", 1).0, "d2d5");
        // A pawn defended by a pawn is not worth the rook.
        let (m, _) = best("4k3/8/4p3/3p4/8/8/3R4/4K3 w - - 0 1", 2);
        assert_ne!(m, "d2d5", "took a defended pawn with the rook");
    }

    #[test]
    fn the_capture_search_sees_a_threatened_queen() {
        // The knight on c6 attacks White's queen on d4. One ply and the capture search
        // see ...Nxd4 and keep the queen: the opponent's best reply then still leaves
        // Black a queen for a knight behind.
        let fen = "4k3/8/2n5/8/3Q4/8/8/4K3 w - - 0 1";
        let (m, s) = best(fen, 1);
        assert_eq!(s, 600, "{m}");
        let mut pos = Game::from_fen(fen).unwrap().position().clone();
        pos.play_unchecked(crate::game::parse_uci_move(&pos, &m).unwrap());
        let (_, reply) = Minimax::default()
            .best_move(&pos, 1, &mut StdRng::seed_from_u64(2))
            .unwrap();
        assert!(reply <= -600, "after {m} Black scores {reply}");
    }

    #[test]
    fn it_mates_in_one_and_in_two_at_enough_depth() {
        let (m, s) = best("6k1/5ppp/8/8/8/8/5PPP/3R2K1 w - - 0 1", 1);
        assert_eq!(m, "d1d8");
        assert_eq!(s, MATE - 1);
        // A ladder mate in two: 1.Rb7 Kg8 2.Ra8#.
        let fen = "7k/8/8/8/8/8/1R6/R5K1 w - - 0 1";
        let (_, s) = best(fen, 3);
        assert_eq!(s, MATE - 3, "mate in two found at depth 3");
        let (_, s) = best(fen, 1);
        assert!(s < MATE - 100);
    }

    #[test]
    fn ties_are_broken_at_random() {
        let pos = Chess::default();
        let picks: std::collections::HashSet<String> = (0..20)
            .map(|seed| {
                let (m, _) = Minimax::default()
                    .best_move(&pos, 2, &mut StdRng::seed_from_u64(seed))
                    .unwrap();
                move_to_uci(m)
            })
            .collect();
        assert!(picks.len() > 3, "{picks:?}");
    }
}
