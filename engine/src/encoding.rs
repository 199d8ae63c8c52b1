//! The network's input and output encodings, both seen from the side to move.
//!
//! **Planes** (18, plane-major `[18][8][8]`, square = rank*8 + file after the mirror,
//! a1 = 0): 0-5 our P N B R Q K; 6-11 their P N B R Q K; 12 all ones if White is to move;
//! 13/14 our king-/queen-side castling right; 15/16 theirs; 17 the en-passant target
//! square, set only when an en-passant capture is legal. When Black is to move ranks are
//! mirrored (`s ^ 56`) and colours swapped.
//!
//! **Policy** (4672 = 73 planes x 64 from-squares, `index = plane*64 + from`, mirrored
//! frame): planes 0-55 are queen-like moves, direction d (N, NE, E, SE, S, SW, W, NW) and
//! distance k (1..=7) giving `d*7 + k-1`; planes 56-63 are knight jumps in the order of
//! [`KNIGHT_JUMPS`]; planes 64-72 are under-promotions `64 + 3*dir + piece`, dir in
//! capture-left (file -1), straight, capture-right (file +1), piece in N, B, R. Queen
//! promotions use the queen-like planes; castling is the king's two-square move, or in
//! Chess960 positions the king's move onto its rook ([`policy_to`]).

use shakmaty::{Chess, Color, Move, Piece, Position, Role, Square};

pub const INPUT_PLANES: usize = 18;
pub const SQUARES: usize = 64;
pub const PLANES_LEN: usize = INPUT_PLANES * SQUARES;
pub const POLICY_PLANES: usize = 73;
pub const POLICY_SIZE: usize = POLICY_PLANES * SQUARES;

/// (rank step, file step) of the eight queen-like directions, N first, clockwise.
pub const QUEEN_DIRECTIONS: [(i8, i8); 8] = [
    (1, 0),
    (1, 1),
    (0, 1),
    (-1, 1),
    (-1, 0),
    (-1, -1),
    (0, -1),
    (1, -1),
];
/// (rank step, file step) of the eight knight jumps, clockwise from north-north-east.
pub const KNIGHT_JUMPS: [(i8, i8); 8] = [
    (2, 1),
    (1, 2),
    (-1, 2),
    (-2, 1),
    (-2, -1),
    (-1, -2),
    (1, -2),
    (2, -1),
];
const UNDERPROMOTIONS: [Role; 3] = [Role::Knight, Role::Bishop, Role::Rook];

#[inline]
fn frame(sq: Square, turn: Color) -> usize {
    match turn {
        Color::White => sq as usize,
        Color::Black => sq as usize ^ 56,
    }
}

/// Writes the 18 input planes of `position` into `out` (length [`PLANES_LEN`]), as
/// f32 for the network or as bytes for a device upload (every value is 0 or 1).
/// Every element is written, so `out` may hold anything before.
pub fn encode_position<T: Copy + From<u8>>(position: &Chess, out: &mut [T]) {
    assert_eq!(
        out.len(),
        PLANES_LEN,
        "plane buffer must hold {PLANES_LEN} values"
    );
    let one = T::from(1);
    out.fill(T::from(0));
    let us = position.turn();
    let board = position.board();
    for (i, role) in Role::ALL.iter().enumerate() {
        for (side, base) in [(us, 0), (!us, 6)] {
            let plane = &mut out[(base + i) * SQUARES..(base + i + 1) * SQUARES];
            for sq in board.by_piece(Piece {
                color: side,
                role: *role,
            }) {
                plane[frame(sq, us)] = one;
            }
        }
    }
    let mut fill = |plane: usize, on: bool| {
        if on {
            out[plane * SQUARES..(plane + 1) * SQUARES].fill(one);
        }
    };
    fill(12, us == Color::White);
    let castles = position.castles();
    use shakmaty::CastlingSide::{KingSide, QueenSide};
    fill(13, castles.has(us, KingSide));
    fill(14, castles.has(us, QueenSide));
    fill(15, castles.has(!us, KingSide));
    fill(16, castles.has(!us, QueenSide));
    if let Some(ep) = position.legal_ep_square() {
        out[17 * SQUARES + frame(ep, us)] = one;
    }
}

/// The square a move's policy index points to: its destination, except for castling.
/// Castling with the king on the e-file and the rook on the a- or h-file is the king's
/// two-square move (e1g1), as in standard chess. Any other castling (Chess960) is the
/// king's move onto its own rook (b1a1, f1h1): the king's two-square move would be no
/// move at all for a king on g1, and the same square as a plain king move for one on b1,
/// d1 or f1, while no other move of the king reaches its own rook's square.
#[inline]
pub fn policy_to(mv: &Move) -> Square {
    match *mv {
        Move::Castle { king, rook }
            if king.file() == shakmaty::File::E
                && matches!(rook.file(), shakmaty::File::A | shakmaty::File::H) =>
        {
            let file = if rook.file() > king.file() {
                shakmaty::File::G
            } else {
                shakmaty::File::C
            };
            Square::from_coords(file, king.rank())
        }
        Move::Castle { rook, .. } => rook,
        _ => mv.to(),
    }
}

/// Policy index of a legal move played by `turn`.
pub fn move_to_index(mv: &Move, turn: Color) -> usize {
    let from = frame(mv.from().expect("chess moves have an origin"), turn);
    let to = frame(policy_to(mv), turn);
    let dr = (to / 8) as i8 - (from / 8) as i8;
    let df = (to % 8) as i8 - (from % 8) as i8;
    let plane = match mv.promotion() {
        Some(role) if role != Role::Queen => {
            let piece = UNDERPROMOTIONS
                .iter()
                .position(|&r| r == role)
                .expect("under-promotion role");
            64 + 3 * (df + 1) as usize + piece
        }
        _ => {
            if let Some(k) = KNIGHT_JUMPS.iter().position(|&j| j == (dr, df)) {
                56 + k
            } else {
                let dist = dr.abs().max(df.abs());
                let dir = (dr.signum(), df.signum());
                let d = QUEEN_DIRECTIONS
                    .iter()
                    .position(|&q| q == dir)
                    .expect("queen-like direction");
                d * 7 + (dist as usize - 1)
            }
        }
    };
    plane * SQUARES + from
}

/// The legal move of `position` with policy index `index`, if any.
pub fn index_to_move(position: &Chess, index: usize) -> Option<Move> {
    let turn = position.turn();
    position
        .legal_moves()
        .into_iter()
        .find(|m| move_to_index(m, turn) == index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::position_from_fen;
    use std::collections::HashSet;

    const KIWIPETE: &str = "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1";
    /// (FEN, perft 1, 2, 3) from the standard perft suite (chessprogramming.org).
    const PERFT_POSITIONS: [(&str, [u64; 3]); 5] = [
        (
            "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
            [20, 400, 8902],
        ),
        (KIWIPETE, [48, 2039, 97862]),
        ("8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - - 0 1", [14, 191, 2812]),
        (
            "r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1",
            [6, 264, 9467],
        ),
        (
            "rnbq1k1r/pp1Pbppp/2p5/8/2B5/8/PPP1NnPP/RNBQK2R w KQ - 1 8",
            [44, 1486, 62379],
        ),
    ];

    /// Walks every position to `depth`, checking each position's legal moves map to
    /// distinct indices that decode back to the same move; returns the perft count.
    fn perft_checking_indices(pos: &Chess, depth: usize) -> u64 {
        let moves = pos.legal_moves();
        let mut seen = HashSet::new();
        for m in &moves {
            let idx = move_to_index(m, pos.turn());
            assert!(idx < POLICY_SIZE);
            assert!(
                seen.insert(idx),
                "index {idx} used twice in {}",
                crate::game::fen_of(pos)
            );
            assert_eq!(index_to_move(pos, idx).as_ref(), Some(m));
        }
        if depth == 1 {
            return moves.len() as u64;
        }
        moves
            .iter()
            .map(|m| {
                let mut next = pos.clone();
                next.play_unchecked(*m);
                perft_checking_indices(&next, depth - 1)
            })
            .sum()
    }

    #[test]
    fn every_legal_move_in_perft_trees_maps_to_a_unique_index_and_back() {
        for (fen, counts) in PERFT_POSITIONS {
            let pos = position_from_fen(fen).unwrap();
            for depth in 1..=3 {
                assert_eq!(
                    perft_checking_indices(&pos, depth),
                    counts[depth - 1],
                    "perft {depth} of {fen}"
                );
            }
        }
    }

    /// Chess960 positions where castling both ways is legal: a king on g1 that castles
    /// short without moving, kings on b1, d1 and f1 whose castling lands on a square a
    /// plain king move reaches too, and a position from a game of Chess960 (X-FEN).
    const CHESS960_CASTLING: [&str; 5] = [
        "1r4kr/pppppppp/8/8/8/8/PPPPPPPP/1R4KR w HBhb - 0 1",
        "rk4r1/pppppppp/8/8/8/8/PPPPPPPP/RK4R1 w GAga - 0 1",
        "r2k3r/pppppppp/8/8/8/8/PPPPPPPP/R2K3R w HAha - 0 1",
        "r4k1r/pppppppp/8/8/8/8/PPPPPPPP/R4K1R w HAha - 0 1",
        "qnbnr1kr/1p3ppp/B1pbp3/p2p2B1/3PP3/2N5/PPP2PPP/QN2R1KR w KQkq - 2 6",
    ];
    /// Two positions of the Chess960 perft suite (chessprogramming.org).
    const CHESS960_PERFT: [&str; 2] = [
        "bqnb1rkr/pp3ppp/3ppn2/2p5/5P2/P2P4/NPP1P1PP/BQ1BNRKR w HFhf - 2 9",
        "2nnrbkr/p1qppppp/8/1ppb4/6PP/3PP3/PPP2P2/BQNNRBKR w HEhe - 1 9",
    ];

    #[test]
    fn every_legal_move_of_chess960_positions_maps_to_a_unique_index_and_back() {
        use crate::game::position_from_fen_in;
        use shakmaty::CastlingMode;
        for fen in CHESS960_CASTLING.iter().chain(&CHESS960_PERFT) {
            let pos = position_from_fen_in(fen, CastlingMode::Chess960).unwrap();
            let castles = pos.legal_moves().iter().filter(|m| m.is_castle()).count();
            if CHESS960_CASTLING.contains(fen) {
                assert_eq!(castles, 2, "both castlings are legal in {fen}");
            }
            for depth in 1..=3 {
                assert_eq!(
                    perft_checking_indices(&pos, depth),
                    shakmaty::perft(&pos, depth as u32),
                    "perft {depth} of {fen}"
                );
            }
        }
    }

    #[test]
    fn chess960_castling_points_at_the_rook_and_standard_castling_stays_two_squares() {
        use crate::game::{parse_uci_move, position_from_fen_in};
        use shakmaty::CastlingMode;
        let pos = position_from_fen_in(CHESS960_CASTLING[0], CastlingMode::Chess960).unwrap();
        // Short castling of the king on g1: its rook's square h1, east 1 -> plane 2*7.
        let short = parse_uci_move(&pos, "g1h1").unwrap();
        assert!(short.is_castle());
        assert_eq!(move_to_index(&short, Color::White), 14 * 64 + 6);
        // Long castling onto b1: west 5 -> plane 6*7 + 4.
        let long = parse_uci_move(&pos, "g1b1").unwrap();
        assert_eq!(move_to_index(&long, Color::White), (6 * 7 + 4) * 64 + 6);
        // A standard position read as Chess960 keeps its two-square indices.
        let kiwi = position_from_fen_in(KIWIPETE, CastlingMode::Chess960).unwrap();
        let m = parse_uci_move(&kiwi, "e1h1").unwrap();
        assert_eq!(move_to_index(&m, Color::White), 15 * 64 + 4);
    }

    #[test]
    fn under_promotions_and_castling_have_their_own_planes() {
        let pos = position_from_fen("r1b1k2r/1P6/8/8/8/8/8/R3K2R w KQkq - 0 1").unwrap();
        let planes: HashSet<usize> = pos
            .legal_moves()
            .iter()
            .map(|m| move_to_index(m, Color::White) / 64)
            .collect();
        for p in [64 + 3, 64 + 3 + 1, 64 + 3 + 2, 64 + 6, 64 + 7, 64 + 8] {
            assert!(planes.contains(&p), "plane {p} missing");
        }
        // b7xa8=N is capture-left: 64 + 0*3 + 0.
        let m = crate::game::parse_uci_move(&pos, "b7a8n").unwrap();
        assert_eq!(move_to_index(&m, Color::White), (64 * 64) + 49);
        // e1g1: east, distance 2 -> plane 2*7 + 1 = 15.
        let m = crate::game::parse_uci_move(&pos, "e1g1").unwrap();
        assert_eq!(move_to_index(&m, Color::White), 15 * 64 + 4);
        let m = crate::game::parse_uci_move(&pos, "e1c1").unwrap();
        assert_eq!(move_to_index(&m, Color::White), (6 * 7 + 1) * 64 + 4);
    }

    #[test]
    fn mirrored_twins_give_identical_planes_and_mirrored_move_indices() {
        for (fen, _) in PERFT_POSITIONS {
            let pos = position_from_fen(fen).unwrap();
            let twin: Chess = pos
                .to_setup(shakmaty::EnPassantMode::Legal)
                .into_mirrored()
                .position(shakmaty::CastlingMode::Standard)
                .expect("the mirror of a legal position is legal");
            assert_ne!(pos.turn(), twin.turn());
            let (mut a, mut b) = (vec![0.0; PLANES_LEN], vec![0.0; PLANES_LEN]);
            encode_position(&pos, &mut a);
            encode_position(&twin, &mut b);
            // Plane 12 (White to move) is the one plane that tells the twins apart.
            for p in (0..INPUT_PLANES).filter(|&p| p != 12) {
                assert_eq!(
                    a[p * 64..(p + 1) * 64],
                    b[p * 64..(p + 1) * 64],
                    "plane {p} of {fen}"
                );
            }
            let idx = |p: &Chess| -> Vec<usize> {
                let mut v: Vec<usize> = p
                    .legal_moves()
                    .iter()
                    .map(|m| move_to_index(m, p.turn()))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(idx(&pos), idx(&twin), "{fen}");
            for m in pos.legal_moves() {
                let from = m.from().unwrap().flip_vertical();
                let to = policy_to(&m).flip_vertical();
                let twin_move = twin
                    .legal_moves()
                    .into_iter()
                    .find(|t| {
                        t.from() == Some(from)
                            && policy_to(t) == to
                            && t.promotion() == m.promotion()
                    })
                    .expect("mirrored move is legal in the twin");
                assert_eq!(
                    move_to_index(&m, pos.turn()),
                    move_to_index(&twin_move, twin.turn())
                );
            }
        }
    }

    #[test]
    fn planes_follow_the_documented_layout() {
        let pos = position_from_fen("4k3/8/8/3pP3/8/8/8/R3K3 w Q d6 0 2").unwrap();
        let mut p = vec![0.0; PLANES_LEN];
        encode_position(&pos, &mut p);
        let at = |plane: usize, sq: &str| p[plane * 64 + sq.parse::<Square>().unwrap() as usize];
        assert_eq!(at(0, "e5"), 1.0); // our pawn
        assert_eq!(at(3, "a1"), 1.0); // our rook
        assert_eq!(at(5, "e1"), 1.0); // our king
        assert_eq!(at(6, "d5"), 1.0); // their pawn
        assert_eq!(at(11, "e8"), 1.0); // their king
        assert!(p[12 * 64..13 * 64].iter().all(|&x| x == 1.0));
        assert!(p[13 * 64..14 * 64].iter().all(|&x| x == 0.0));
        assert!(p[14 * 64..15 * 64].iter().all(|&x| x == 1.0));
        assert_eq!(at(17, "d6"), 1.0);
        assert_eq!(p[17 * 64..].iter().sum::<f32>(), 1.0);
        // Black to move: mirrored, so Black's king on e8 appears on e1 in plane 5.
        let pos = position_from_fen("4k3/8/8/8/3Pp3/8/8/4K3 b - d3 0 2").unwrap();
        encode_position(&pos, &mut p);
        let at = |plane: usize, sq: &str| p[plane * 64 + sq.parse::<Square>().unwrap() as usize];
        assert_eq!(at(5, "e1"), 1.0);
        assert_eq!(at(11, "e8"), 1.0);
        assert_eq!(at(0, "e5"), 1.0);
        assert_eq!(at(17, "d6"), 1.0);
        assert!(p[12 * 64..13 * 64].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn en_passant_plane_is_empty_when_the_capture_is_not_legal() {
        let pos = position_from_fen("4k3/8/8/8/4P3/8/8/4K3 b - e3 0 1").unwrap();
        let mut p = vec![0.0; PLANES_LEN];
        encode_position(&pos, &mut p);
        assert!(p[17 * 64..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn kiwipete_indices_cover_all_plane_kinds() {
        let pos = position_from_fen(KIWIPETE).unwrap();
        let planes: HashSet<usize> = pos
            .legal_moves()
            .iter()
            .map(|m| move_to_index(m, pos.turn()) / 64)
            .collect();
        assert!(planes.iter().any(|&p| p < 56));
        assert!(planes.iter().any(|&p| (56..64).contains(&p)));
    }
}
