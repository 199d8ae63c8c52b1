//! Game state over shakmaty: the position, the Zobrist history that repetition needs,
//! the draw rules shakmaty leaves to the caller (fifty moves, threefold repetition),
//! FEN and UCI move strings in and out, and PGN export.
//!
//! shakmaty's `outcome()` knows checkmate, stalemate and insufficient material only;
//! [`Game::outcome`] adds repetition and the fifty-move rule.

use anyhow::{anyhow, Context, Result};
use shakmaty::{
    fen::Fen, san::SanPlus, uci::UciMove, zobrist::Zobrist64, CastlingMode, Chess, Color,
    EnPassantMode, KnownOutcome, Move, Position,
};

/// Zobrist hash of a position (en passant counted only when the capture is legal, so
/// transpositions hash equal).
pub fn position_hash(position: &Chess) -> u64 {
    position.zobrist_hash::<Zobrist64>(EnPassantMode::Legal).0
}

/// Hash after playing `mv`, incrementally where shakmaty can, from scratch otherwise.
/// `after` must be the position `before` with `mv` played.
pub fn hash_after(before: &Chess, before_hash: u64, mv: Move, after: &Chess) -> u64 {
    match before.update_zobrist_hash::<Zobrist64>(Zobrist64(before_hash), mv, EnPassantMode::Legal)
    {
        Some(h) => h.0,
        None => position_hash(after),
    }
}

/// Parses a FEN of standard chess, with a message that names the problem.
pub fn position_from_fen(fen: &str) -> Result<Chess> {
    position_from_fen_in(fen, CastlingMode::Standard)
}

/// Parses a FEN whose castling rights are read as `mode` says: in
/// [`CastlingMode::Chess960`] Shredder-FEN (`HAha`) and X-FEN (`KQkq` for the outermost
/// rooks, a file letter for an inner one) name any rook; in standard chess only the a-
/// and h-file rooks with the king on e can castle.
pub fn position_from_fen_in(fen: &str, mode: CastlingMode) -> Result<Chess> {
    let parsed: Fen = fen
        .trim()
        .parse()
        .map_err(|e| anyhow!("invalid FEN {fen:?}: {e}"))?;
    parsed
        .into_position(mode)
        .map_err(|e| anyhow!("illegal position in FEN {fen:?}: {e}"))
}

pub fn fen_of(position: &Chess) -> String {
    Fen::from_position(position, EnPassantMode::Legal).to_string()
}

/// UCI move string in standard notation (castling as the king's two-square move, e1g1).
pub fn move_to_uci(mv: Move) -> String {
    move_to_uci_in(mv, CastlingMode::Standard)
}

/// UCI move string with castling written as `mode` says: the king's two-square move
/// (e1g1) in standard chess, the king taking its own rook (e1h1) in Chess960.
pub fn move_to_uci_in(mv: Move, mode: CastlingMode) -> String {
    mv.to_uci(mode).to_string()
}

/// Parses a UCI move string and checks it is legal in `position`. Castling is read in
/// either notation (e1g1 or e1h1): neither can be another legal move.
pub fn parse_uci_move(position: &Chess, text: &str) -> Result<Move> {
    let uci: UciMove = text
        .trim()
        .parse()
        .map_err(|_| anyhow!("not a UCI move: {text:?}"))?;
    uci.to_move(position)
        .map_err(|_| anyhow!("illegal move {text} in {}", fen_of(position)))
}

/// Why a game ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    Checkmate,
    Stalemate,
    InsufficientMaterial,
    FiftyMoveRule,
    Repetition,
    /// Stopped at the ply cap and scored as a draw.
    MaxPlies,
    /// Stopped at the ply cap and won by the side ahead in material.
    AdjudicatedMaterial,
    /// Stopped at the ply cap and won by the side the search's value favours.
    AdjudicatedValue,
    /// The side to move gave up: its search saw no way to avoid losing.
    Resignation,
    /// A player ran out of its clock (matches with a time control).
    TimeForfeit,
    /// A player broke the protocol (an external engine that crashed, hung, or sent an
    /// illegal or malformed move) and lost the game.
    Forfeit,
}

impl Termination {
    /// Text for the PGN `Termination` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Termination::Checkmate => "checkmate",
            Termination::Stalemate => "stalemate",
            Termination::InsufficientMaterial => "insufficient material",
            Termination::FiftyMoveRule => "fifty-move rule",
            Termination::Repetition => "threefold repetition",
            Termination::MaxPlies => "adjudication: ply cap",
            Termination::AdjudicatedMaterial => "adjudication: material at the ply cap",
            Termination::AdjudicatedValue => "adjudication: search value at the ply cap",
            Termination::Resignation => "resignation",
            Termination::TimeForfeit => "time forfeit",
            Termination::Forfeit => "rules infraction",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GameOutcome {
    pub result: KnownOutcome,
    pub termination: Termination,
}

impl GameOutcome {
    /// The result from `side`'s point of view: +1 win, 0 draw, -1 loss.
    pub fn value_for(&self, side: Color) -> f32 {
        match self.result.winner() {
            Some(w) if w == side => 1.0,
            Some(_) => -1.0,
            None => 0.0,
        }
    }
}

/// A piece's value in pawns: pawn 1, knight and bishop 3, rook 5, queen 9, king 0.
pub fn piece_value(role: shakmaty::Role) -> u32 {
    use shakmaty::Role;
    match role {
        Role::Pawn => 1,
        Role::Knight | Role::Bishop => 3,
        Role::Rook => 5,
        Role::Queen => 9,
        Role::King => 0,
    }
}

/// Material of `colour` in pawns ([`piece_value`] summed over its pieces).
pub fn material(position: &Chess, colour: Color) -> i32 {
    let board = position.board();
    let ours = board.by_color(colour);
    shakmaty::Role::ALL
        .iter()
        .map(|&role| piece_value(role) as i32 * (board.by_role(role) & ours).count() as i32)
        .sum()
}

/// Whether `mv` (legal in `position`) checkmates.
pub fn is_mating_move(position: &Chess, mv: Move) -> bool {
    let mut after = position.clone();
    after.play_unchecked(mv);
    after.is_check() && after.legal_moves().is_empty()
}

/// Outcome decided by the rules alone for a position with its legal-move count known,
/// the number of earlier occurrences of the same position being supplied by the caller.
pub fn rules_outcome(
    position: &Chess,
    has_legal_moves: bool,
    earlier_occurrences: usize,
) -> Option<GameOutcome> {
    let termination = if !has_legal_moves {
        if position.is_check() {
            return Some(GameOutcome {
                result: KnownOutcome::Decisive {
                    winner: !position.turn(),
                },
                termination: Termination::Checkmate,
            });
        }
        Termination::Stalemate
    } else if position.is_insufficient_material() {
        Termination::InsufficientMaterial
    } else if position.halfmoves() >= 100 {
        Termination::FiftyMoveRule
    } else if earlier_occurrences >= 2 {
        Termination::Repetition
    } else {
        return None;
    };
    Some(GameOutcome {
        result: KnownOutcome::Draw,
        termination,
    })
}

/// A game: start position, moves played, and the hash of every position reached.
#[derive(Clone, Debug)]
pub struct Game {
    start: Chess,
    position: Chess,
    moves: Vec<Move>,
    /// Hash of every position from the start to the current one (inclusive).
    history: Vec<u64>,
}

impl Default for Game {
    fn default() -> Self {
        Game::from_position(Chess::default())
    }
}

impl Game {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_position(position: Chess) -> Self {
        let h = position_hash(&position);
        Game {
            start: position.clone(),
            position,
            moves: Vec::new(),
            history: vec![h],
        }
    }

    pub fn from_fen(fen: &str) -> Result<Self> {
        Ok(Self::from_position(position_from_fen(fen)?))
    }

    /// A game from a FEN whose castling rights are read as `mode` says
    /// ([`position_from_fen_in`]).
    pub fn from_fen_in(fen: &str, mode: CastlingMode) -> Result<Self> {
        Ok(Self::from_position(position_from_fen_in(fen, mode)?))
    }

    /// Standard chess or Chess960: how the game's castling moves are written.
    pub fn castling_mode(&self) -> CastlingMode {
        self.start.castles().mode()
    }

    pub fn position(&self) -> &Chess {
        &self.position
    }

    pub fn start_position(&self) -> &Chess {
        &self.start
    }

    pub fn moves(&self) -> &[Move] {
        &self.moves
    }

    pub fn ply(&self) -> usize {
        self.moves.len()
    }

    pub fn hash(&self) -> u64 {
        *self
            .history
            .last()
            .expect("history holds the current position")
    }

    /// Hashes of every position so far, the current one last.
    pub fn history(&self) -> &[u64] {
        &self.history
    }

    /// Plays a move that the caller knows to be legal.
    pub fn play(&mut self, mv: Move) {
        let before = self.position.clone();
        self.position.play_unchecked(mv);
        let h = hash_after(&before, self.hash(), mv, &self.position);
        self.history.push(h);
        self.moves.push(mv);
    }

    /// Plays a UCI move string after checking it is legal; on error nothing changes.
    pub fn play_uci(&mut self, text: &str) -> Result<Move> {
        let mv = parse_uci_move(&self.position, text)?;
        self.play(mv);
        Ok(mv)
    }

    /// How many times the current position occurred before now.
    pub fn earlier_occurrences(&self) -> usize {
        let h = self.hash();
        self.history[..self.history.len() - 1]
            .iter()
            .filter(|&&x| x == h)
            .count()
    }

    /// The outcome by the rules, repetition and the fifty-move rule included.
    pub fn outcome(&self) -> Option<GameOutcome> {
        let has_moves = !self.position.legal_moves().is_empty();
        rules_outcome(&self.position, has_moves, self.earlier_occurrences())
    }

    /// The outcome by the rules, or a draw adjudicated at the ply cap once `max_plies`
    /// plies have been played without one.
    pub fn outcome_with_ply_cap(&self, max_plies: u32) -> Option<GameOutcome> {
        self.outcome().or_else(|| {
            (self.ply() as u32 >= max_plies).then_some(GameOutcome {
                result: KnownOutcome::Draw,
                termination: Termination::MaxPlies,
            })
        })
    }

    /// PGN of the game with the seven-tag roster, a `Termination` tag and any extra tags.
    pub fn to_pgn(&self, outcome: Option<GameOutcome>, tags: &[(&str, String)]) -> String {
        let result = outcome.map(|o| o.result.as_str()).unwrap_or("*");
        let mut out = String::new();
        let defaults = [
            ("Event", "Ember game"),
            ("Site", "?"),
            ("Date", "????.??.??"),
            ("Round", "-"),
            ("White", "?"),
            ("Black", "?"),
        ];
        for (k, v) in defaults {
            let v = tags
                .iter()
                .find(|(t, _)| *t == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or(v);
            out.push_str(&format!("[{k} \"{v}\"]\n"));
        }
        out.push_str(&format!("[Result \"{result}\"]\n"));
        let chess960 = self.castling_mode() == CastlingMode::Chess960;
        if chess960 {
            out.push_str("[Variant \"Chess960\"]\n");
        }
        if chess960 || self.start != Chess::default() {
            out.push_str(&format!(
                "[SetUp \"1\"]\n[FEN \"{}\"]\n",
                fen_of(&self.start)
            ));
        }
        if let Some(o) = outcome {
            out.push_str(&format!("[Termination \"{}\"]\n", o.termination.as_str()));
        }
        for (k, v) in tags {
            if !defaults.iter().any(|(d, _)| d == k) {
                out.push_str(&format!("[{k} \"{v}\"]\n"));
            }
        }
        out.push('\n');
        let mut pos = self.start.clone();
        let mut line = String::new();
        for (i, &mv) in self.moves.iter().enumerate() {
            let mut token = String::new();
            if pos.turn() == Color::White {
                token.push_str(&format!("{}. ", pos.fullmoves()));
            } else if i == 0 {
                token.push_str(&format!("{}... ", pos.fullmoves()));
            }
            let san = SanPlus::from_move_and_play_unchecked(&mut pos, mv);
            token.push_str(&san.to_string());
            if line.len() + token.len() + 1 > 79 {
                out.push_str(line.trim_end());
                out.push('\n');
                line.clear();
            }
            line.push_str(&token);
            line.push(' ');
        }
        line.push_str(result);
        out.push_str(&line);
        out.push_str("\n\n");
        out
    }
}

/// Plays a list of UCI moves from a position; the first illegal move is an error naming it.
pub fn play_uci_moves(game: &mut Game, moves: &[&str]) -> Result<()> {
    for (i, m) in moves.iter().enumerate() {
        game.play_uci(m)
            .with_context(|| format!("move {} ({m})", i + 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threefold_repetition_is_detected() {
        let mut g = Game::new();
        for _ in 0..2 {
            for m in ["g1f3", "g8f6", "f3g1", "f6g8"] {
                g.play_uci(m).unwrap();
                assert!(g.outcome().is_none() || g.ply() == 8);
            }
        }
        let o = g.outcome().expect("third occurrence of the start position");
        assert_eq!(o.termination, Termination::Repetition);
        assert_eq!(o.result, KnownOutcome::Draw);
    }

    #[test]
    fn twofold_repetition_is_not_a_game_draw() {
        let mut g = Game::new();
        for m in ["g1f3", "g8f6", "f3g1", "f6g8"] {
            g.play_uci(m).unwrap();
        }
        assert_eq!(g.earlier_occurrences(), 1);
        assert!(g.outcome().is_none());
    }

    #[test]
    fn fifty_move_rule_is_detected() {
        let mut g = Game::from_fen("8/8/4k3/8/8/4K3/8/R7 w - - 99 80").unwrap();
        assert!(g.outcome().is_none());
        g.play_uci("a1a2").unwrap();
        assert_eq!(g.outcome().unwrap().termination, Termination::FiftyMoveRule);
    }

    #[test]
    fn checkmate_beats_the_fifty_move_rule() {
        let g = Game::from_fen("R5k1/5ppp/8/8/8/8/8/6K1 b - - 100 80").unwrap();
        let o = g.outcome().unwrap();
        assert_eq!(o.termination, Termination::Checkmate);
        assert_eq!(o.value_for(Color::White), 1.0);
    }

    #[test]
    fn the_ply_cap_adjudicates_a_draw_only_when_the_rules_have_no_outcome() {
        let mut g = Game::new();
        for m in ["f2f3", "e7e5", "g2g4"] {
            g.play_uci(m).unwrap();
        }
        assert_eq!(g.outcome_with_ply_cap(4), None);
        assert_eq!(
            g.outcome_with_ply_cap(3).unwrap().termination,
            Termination::MaxPlies
        );
        g.play_uci("d8h4").unwrap();
        assert_eq!(
            g.outcome_with_ply_cap(3).unwrap().termination,
            Termination::Checkmate
        );
    }

    #[test]
    fn stalemate_and_insufficient_material_are_draws() {
        let g = Game::from_fen("7k/5Q2/6K1/8/8/8/8/8 b - - 0 1").unwrap();
        assert_eq!(g.outcome().unwrap().termination, Termination::Stalemate);
        let g = Game::from_fen("8/8/4k3/8/8/4KB2/8/8 w - - 0 1").unwrap();
        assert_eq!(
            g.outcome().unwrap().termination,
            Termination::InsufficientMaterial
        );
    }

    #[test]
    fn illegal_uci_move_leaves_the_game_unchanged() {
        let mut g = Game::new();
        g.play_uci("e2e4").unwrap();
        let before = fen_of(g.position());
        assert!(g.play_uci("e2e4").is_err());
        assert!(g.play_uci("zz").is_err());
        assert_eq!(fen_of(g.position()), before);
    }

    #[test]
    fn castling_is_written_as_the_kings_two_square_move() {
        let g = Game::from_fen("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1").unwrap();
        let ucis: Vec<String> = g
            .position()
            .legal_moves()
            .iter()
            .map(|m| move_to_uci(*m))
            .collect();
        assert!(ucis.contains(&"e1g1".to_string()));
        assert!(ucis.contains(&"e1c1".to_string()));
        let mut g2 = g.clone();
        g2.play_uci("e1g1").unwrap();
        assert!(fen_of(g2.position()).starts_with("r3k2r/8/8/8/8/8/8/R4RK1 b kq"));
    }

    #[test]
    fn incremental_hash_matches_full_hash() {
        let mut g = Game::new();
        for m in [
            "e2e4", "d7d5", "e4d5", "c7c5", "d5c6", "b8c6", "g1f3", "e7e5", "f1c4", "g8f6", "e1g1",
        ] {
            g.play_uci(m).unwrap();
            assert_eq!(g.hash(), position_hash(g.position()), "after {m}");
        }
    }

    #[test]
    fn pgn_has_result_and_termination() {
        let mut g = Game::new();
        for m in ["f2f3", "e7e5", "g2g4", "d8h4"] {
            g.play_uci(m).unwrap();
        }
        let o = g.outcome().unwrap();
        let pgn = g.to_pgn(Some(o), &[]);
        assert!(pgn.contains("[Result \"0-1\"]"));
        assert!(pgn.contains("[Termination \"checkmate\"]"));
        assert!(pgn.contains("1. f3 e5 2. g4 Qh4# 0-1"));
    }
}
