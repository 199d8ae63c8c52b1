//! Matches between two evaluators: the gating match (candidate against the best
//! network) and `trainer match`. Games run in parallel like self-play, but each game
//! holds one search per side (trees are per evaluator), and each round sends the leaves
//! of all games where A is to move to A in one call and B's to B in another.
//!
//! Colours alternate: game `2k` has A as White, game `2k+1` has B as White, and both
//! start from the same opening (a given FEN and/or a few random plies), so colour is
//! the only difference within a pair. The result is reported as A's score with a
//! logistic Elo difference and its 95% interval.

use crate::game::{fen_of, position_from_fen, Game, GameOutcome};
use crate::mcts::{EvalBatch, Evaluator, Search, SearchParams};
use crate::phase_times::PhaseTimes;
use crate::stats::Trinomial;
use anyhow::{Context, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rayon::prelude::*;
use shakmaty::{Color, Position};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MatchConfig {
    /// Games to play (an even number gives each opening with both colours).
    pub games: usize,
    /// Games kept in flight at once.
    pub games_in_flight: usize,
    /// Root visits before each move (visits kept from tree reuse count).
    pub simulations: u32,
    /// Plies after which a game is stopped and scored as a draw.
    pub max_plies: u32,
    /// Random legal moves played from the opening position before the searches take
    /// over, so games differ; the same for both games of a pair.
    pub opening_random_plies: u32,
    /// Temperature of the searched moves: 0 plays the most visited move.
    pub temperature: f32,
    pub seed: u64,
    /// Search parameters of both sides. `max_batch` is the leaves one game adds to a
    /// round's batch; root noise should be off.
    pub search: SearchParams,
    /// Opening positions (FEN), used in turn by successive game pairs; empty means the
    /// standard starting position.
    #[serde(default)]
    pub openings: Vec<String>,
    /// Player names in the PGN.
    #[serde(default = "default_name_a")]
    pub name_a: String,
    #[serde(default = "default_name_b")]
    pub name_b: String,
}

fn default_name_a() -> String {
    "A".to_string()
}

fn default_name_b() -> String {
    "B".to_string()
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            games: 20,
            games_in_flight: 20,
            simulations: 32,
            max_plies: 200,
            opening_random_plies: 4,
            temperature: 0.0,
            seed: 1,
            search: SearchParams {
                root_noise: false,
                max_batch: 8,
                cache_entries: 4096,
                ..SearchParams::default()
            },
            openings: Vec::new(),
            name_a: default_name_a(),
            name_b: default_name_b(),
        }
    }
}

/// One finished game.
#[derive(Clone, Debug)]
pub struct MatchGame {
    pub index: usize,
    pub a_is_white: bool,
    pub outcome: GameOutcome,
    pub pgn: String,
    /// Plies played from the opening position (random opening plies included).
    pub plies: usize,
    /// FEN of the position the searches started from (after the random plies).
    pub opening: String,
}

impl MatchGame {
    /// A's score: 1 win, 0.5 draw, 0 loss.
    pub fn score_a(&self) -> f64 {
        let a = if self.a_is_white {
            Color::White
        } else {
            Color::Black
        };
        (self.outcome.value_for(a) as f64 + 1.0) / 2.0
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MatchResult {
    pub games: usize,
    pub wins_a: usize,
    pub draws: usize,
    pub losses_a: usize,
    /// PGN of every game, in game-index order.
    pub pgns: Vec<String>,
    pub wall: Duration,
}

impl MatchResult {
    /// A's results.
    pub fn trinomial(&self) -> Trinomial {
        Trinomial {
            wins: self.wins_a as u64,
            draws: self.draws as u64,
            losses: self.losses_a as u64,
        }
    }

    /// (wins + draws / 2) / games; 0.5 before any game.
    pub fn score_a(&self) -> f64 {
        self.trinomial().estimate().score
    }

    /// A's Elo advantage over B (see [`crate::stats`]).
    pub fn elo_diff(&self) -> f64 {
        self.trinomial().estimate().elo
    }

    /// 95% interval of the Elo difference; unbounded before any game.
    pub fn elo_interval(&self) -> (f64, f64) {
        let e = self.trinomial().estimate();
        (e.elo_low, e.elo_high)
    }
}

/// One game in flight: a search per side, index 0 for A and 1 for B.
struct GameInPlay {
    index: usize,
    a_is_white: bool,
    game: Game,
    searches: [Search; 2],
    /// The side whose search gathered this round's leaves.
    gathered_by: usize,
    batch: EvalBatch,
    timing: PhaseTimes,
    rng: StdRng,
    outcome: Option<GameOutcome>,
    opening: String,
    /// Rounds in a row in which the mover's search made no progress.
    stalled: u32,
}

/// The opening of game pair `pair`: the configured FEN (in turn) and the random plies,
/// the same for both games of the pair.
fn opening_game(cfg: &MatchConfig, pair: usize) -> Result<Game> {
    let mut game = if cfg.openings.is_empty() {
        Game::new()
    } else {
        let fen = &cfg.openings[pair % cfg.openings.len()];
        Game::from_position(
            position_from_fen(fen).with_context(|| format!("match opening {fen:?}"))?,
        )
    };
    let mut rng = StdRng::seed_from_u64(
        cfg.seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(pair as u64),
    );
    for _ in 0..cfg.opening_random_plies {
        let moves = game.position().legal_moves();
        if moves.is_empty() || game.outcome().is_some() {
            break;
        }
        game.play(moves[rng.random_range(0..moves.len())]);
    }
    Ok(game)
}

impl GameInPlay {
    fn new(index: usize, cfg: &MatchConfig) -> Result<GameInPlay> {
        let game = opening_game(cfg, index / 2)?;
        let search = || Search::new(&game, cfg.search.clone());
        let rng = StdRng::seed_from_u64(
            cfg.seed
                .wrapping_mul(0xD1B5_4A32_D192_ED03)
                .wrapping_add(index as u64),
        );
        let opening = fen_of(game.position());
        let outcome = game.outcome();
        Ok(GameInPlay {
            index,
            a_is_white: index.is_multiple_of(2),
            searches: [search(), search()],
            game,
            gathered_by: 0,
            batch: EvalBatch::new(),
            timing: PhaseTimes::default(),
            rng,
            outcome,
            opening,
            stalled: 0,
        })
    }

    /// 0 when A is to move, 1 when B is.
    fn mover(&self) -> usize {
        let white_to_move = self.game.position().turn() == Color::White;
        if white_to_move == self.a_is_white {
            0
        } else {
            1
        }
    }

    /// Plays a move if the mover's search is done, then gathers this round's leaves.
    fn step(&mut self, cfg: &MatchConfig) {
        self.batch.clear();
        if self.outcome.is_some() {
            return;
        }
        let side = self.mover();
        let search = &self.searches[side];
        if search.root_visits() >= cfg.simulations
            || search.root_terminal().is_some()
            || self.stalled >= 2
        {
            self.play_move(cfg, side);
            if self.outcome.is_some() {
                return;
            }
        }
        let side = self.mover();
        let search = &mut self.searches[side];
        let before = search.root_visits();
        let remaining = cfg.simulations.saturating_sub(before) as usize;
        let want = search.params.max_batch.min(remaining).max(1);
        search.gather(want, &mut self.batch, &mut self.timing);
        self.gathered_by = side;
        if self.batch.is_empty() && self.searches[side].root_visits() == before {
            self.stalled += 1;
        } else {
            self.stalled = 0;
        }
    }

    fn play_move(&mut self, cfg: &MatchConfig, side: usize) {
        self.stalled = 0;
        let chosen = self.searches[side].choose_move(cfg.temperature, &mut self.rng);
        // A search that could not expand its root (it never does with simulations >= 1)
        // still must not stop the game: fall back to the first legal move.
        let Some(mv) = chosen.or_else(|| self.game.position().legal_moves().first().copied())
        else {
            self.outcome = self.game.outcome();
            return;
        };
        self.game.play(mv);
        for s in &mut self.searches {
            s.advance_to(&self.game);
        }
        self.outcome = self.game.outcome_with_ply_cap(cfg.max_plies);
    }

    fn finish(self, cfg: &MatchConfig) -> MatchGame {
        let outcome = self.outcome.expect("finished game has an outcome");
        let (white, black) = if self.a_is_white {
            (&cfg.name_a, &cfg.name_b)
        } else {
            (&cfg.name_b, &cfg.name_a)
        };
        let pgn = self.game.to_pgn(
            Some(outcome),
            &[
                ("Event", "Ember match".to_string()),
                ("Round", (self.index + 1).to_string()),
                ("White", white.clone()),
                ("Black", black.clone()),
                ("PlyCount", self.game.ply().to_string()),
            ],
        );
        MatchGame {
            index: self.index,
            a_is_white: self.a_is_white,
            outcome,
            pgn,
            plies: self.game.ply(),
            opening: self.opening,
        }
    }
}

/// Plays `cfg.games` games between `a` and `b`, calling `on_game` as each finishes.
pub fn play_match(
    cfg: &MatchConfig,
    a: &mut dyn Evaluator,
    b: &mut dyn Evaluator,
    mut on_game: impl FnMut(&MatchGame),
) -> Result<MatchResult> {
    let start = Instant::now();
    let mut result = MatchResult::default();
    let mut pgns: Vec<(usize, String)> = Vec::with_capacity(cfg.games);
    let mut next_index = 0;
    let mut slots: Vec<GameInPlay> = Vec::new();
    let mut batches = [EvalBatch::new(), EvalBatch::new()];
    let mut offsets: Vec<usize> = Vec::new();
    let mut eval_timing = PhaseTimes::default();
    loop {
        while slots.len() < cfg.games_in_flight.max(1) && next_index < cfg.games {
            slots.push(GameInPlay::new(next_index, cfg)?);
            next_index += 1;
        }
        let mut i = 0;
        while i < slots.len() {
            if slots[i].outcome.is_none() {
                i += 1;
                continue;
            }
            let game = slots.swap_remove(i).finish(cfg);
            result.games += 1;
            match game.score_a() {
                s if s > 0.75 => result.wins_a += 1,
                s if s < 0.25 => result.losses_a += 1,
                _ => result.draws += 1,
            }
            on_game(&game);
            pgns.push((game.index, game.pgn));
            if next_index < cfg.games {
                slots.push(GameInPlay::new(next_index, cfg)?);
                next_index += 1;
            }
        }
        if slots.is_empty() {
            break;
        }
        slots.par_iter_mut().for_each(|s| s.step(cfg));
        for b in &mut batches {
            b.clear();
        }
        offsets.clear();
        for s in &slots {
            offsets.push(batches[s.gathered_by].append(&s.batch));
        }
        for (side, batch) in batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let (evaluator, who): (&mut dyn Evaluator, &str) = if side == 0 {
                (&mut *a, &cfg.name_a)
            } else {
                (&mut *b, &cfg.name_b)
            };
            evaluator
                .evaluate(batch, &mut eval_timing)
                .with_context(|| format!("evaluating for {who}"))?;
        }
        slots
            .par_iter_mut()
            .zip(offsets.par_iter())
            .for_each(|(s, &off)| {
                if !s.batch.is_empty() {
                    let side = s.gathered_by;
                    s.searches[side].apply(&batches[side], off, &mut s.timing);
                }
            });
    }
    pgns.sort_by_key(|(i, _)| *i);
    result.pgns = pgns.into_iter().map(|(_, p)| p).collect();
    result.wall = start.elapsed();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::Termination;
    use crate::mcts::{NetEvaluator, UniformEvaluator};
    use crate::net::{NetConfig, Network, Precision};
    use crate::stats::elo_from_score;
    use shakmaty::{Chess, Move};

    /// Uniform priors, and "the side to move is winning" for every position.
    struct SideToMoveWins;

    impl Evaluator for SideToMoveWins {
        fn evaluate(&mut self, batch: &mut EvalBatch, _: &mut PhaseTimes) -> Result<()> {
            for i in 0..batch.len() {
                let p = batch.priors_mut(i);
                let u = 1.0 / p.len().max(1) as f32;
                p.fill(u);
                batch.set_wdl(i, [1.0, 0.0, 0.0]);
            }
            Ok(())
        }
    }

    /// Puts (almost) all the prior on a mating move when there is one.
    struct MateSpotter;

    fn mates(position: &Chess, mv: Move) -> bool {
        let mut after = position.clone();
        after.play_unchecked(mv);
        after.is_checkmate()
    }

    impl Evaluator for MateSpotter {
        fn evaluate(&mut self, batch: &mut EvalBatch, _: &mut PhaseTimes) -> Result<()> {
            for i in 0..batch.len() {
                let position = batch.position(i).clone();
                let moves = batch.moves(i).to_vec();
                let raw: Vec<f32> = moves
                    .iter()
                    .map(|&m| if mates(&position, m) { 100.0 } else { 1.0 })
                    .collect();
                let sum: f32 = raw.iter().sum();
                for (p, r) in batch.priors_mut(i).iter_mut().zip(&raw) {
                    *p = r / sum;
                }
                batch.set_wdl(i, [0.0, 1.0, 0.0]);
            }
            Ok(())
        }
    }

    fn quick(games: usize) -> MatchConfig {
        MatchConfig {
            games,
            games_in_flight: 4,
            simulations: 6,
            max_plies: 24,
            ..MatchConfig::default()
        }
    }

    #[test]
    fn colours_alternate_and_each_pair_shares_its_opening() {
        let mut seen = Vec::new();
        let result = play_match(
            &quick(6),
            &mut UniformEvaluator,
            &mut UniformEvaluator,
            |g| seen.push(g.clone()),
        )
        .unwrap();
        assert_eq!(result.games, 6);
        seen.sort_by_key(|g| g.index);
        for g in &seen {
            assert_eq!(g.a_is_white, g.index % 2 == 0, "game {}", g.index);
        }
        for pair in seen.chunks(2) {
            assert_eq!(pair[0].opening, pair[1].opening);
        }
        assert_ne!(
            seen[0].opening, seen[2].opening,
            "random opening plies make pairs differ"
        );
        assert!(seen[0].pgn.contains("[White \"A\"]") && seen[1].pgn.contains("[White \"B\"]"));
    }

    #[test]
    fn a_side_that_always_thinks_it_wins_plays_complete_games_whose_counts_add_up() {
        let cfg = quick(8);
        let mut finished = 0;
        let result = play_match(&cfg, &mut SideToMoveWins, &mut UniformEvaluator, |g| {
            finished += 1;
            assert!(g.plies <= cfg.max_plies as usize);
            assert!(g
                .pgn
                .contains(&format!("[Result \"{}\"]", g.outcome.result.as_str())));
            if g.outcome.termination == Termination::MaxPlies {
                assert_eq!(g.plies, cfg.max_plies as usize);
            }
        })
        .unwrap();
        assert_eq!(finished, 8);
        assert_eq!(result.games, 8);
        assert_eq!(result.wins_a + result.draws + result.losses_a, result.games);
        assert_eq!(result.pgns.len(), 8);
        let score = result.score_a();
        assert!((0.0..=1.0).contains(&score));
    }

    #[test]
    fn random_tiny_networks_play_a_match() {
        let a = Network::new(
            NetConfig {
                filters: 16,
                blocks: 1,
            },
            &candle_core::Device::Cpu,
            1,
        )
        .unwrap();
        let b = Network::new(
            NetConfig {
                filters: 16,
                blocks: 1,
            },
            &candle_core::Device::Cpu,
            2,
        )
        .unwrap();
        let mut ea = NetEvaluator::new(&a, Precision::F32).unwrap();
        let mut eb = NetEvaluator::new(&b, Precision::F32).unwrap();
        let cfg = MatchConfig {
            games: 4,
            games_in_flight: 4,
            simulations: 8,
            max_plies: 16,
            ..MatchConfig::default()
        };
        let result = play_match(&cfg, &mut ea, &mut eb, |_| {}).unwrap();
        assert_eq!(result.wins_a + result.draws + result.losses_a, 4);
    }

    #[test]
    fn elo_of_an_even_score_is_zero_and_of_three_quarters_about_191() {
        assert_eq!(elo_from_score(0.5), 0.0);
        assert!((elo_from_score(0.75) - 400.0 * 3f64.log10()).abs() < 1e-9);
        assert!((elo_from_score(0.75) - 190.85).abs() < 0.01);
        let r = MatchResult {
            games: 40,
            wins_a: 25,
            draws: 10,
            losses_a: 5,
            ..MatchResult::default()
        };
        assert_eq!(r.score_a(), 0.75);
        assert!((r.elo_diff() - 190.85).abs() < 0.01);
        let (lo, hi) = r.elo_interval();
        assert!(
            0.0 < lo && lo < r.elo_diff() && r.elo_diff() < hi,
            "({lo}, {hi})"
        );
        let even = MatchResult {
            games: 10,
            wins_a: 3,
            draws: 4,
            losses_a: 3,
            ..MatchResult::default()
        };
        let (lo, hi) = even.elo_interval();
        assert!(
            (lo + hi).abs() < 1e-9 && lo < 0.0,
            "an even score has a symmetric interval: ({lo}, {hi})"
        );
    }

    #[test]
    fn perfect_scores_give_finite_elo_and_a_real_interval() {
        let r = MatchResult {
            games: 10,
            wins_a: 10,
            ..MatchResult::default()
        };
        assert!(r.elo_diff().is_finite() && r.elo_diff() > 400.0);
        let (lo, hi) = r.elo_interval();
        assert!(
            lo.is_finite() && hi.is_finite() && lo < hi && lo > 0.0,
            "({lo}, {hi})"
        );
        let zero = MatchResult {
            games: 10,
            losses_a: 10,
            ..MatchResult::default()
        };
        assert!((zero.elo_diff() + r.elo_diff()).abs() < 1e-9);
    }

    #[test]
    fn the_side_that_sees_a_mate_in_one_delivers_it() {
        // White to move mates with Ra8; Black has no mate in the position.
        let cfg = MatchConfig {
            games: 4,
            simulations: 2,
            opening_random_plies: 0,
            openings: vec!["6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1".to_string()],
            ..MatchConfig::default()
        };
        let mut games = Vec::new();
        let result = play_match(&cfg, &mut MateSpotter, &mut UniformEvaluator, |g| {
            games.push(g.clone())
        })
        .unwrap();
        for g in games.iter().filter(|g| g.a_is_white) {
            assert_eq!(g.plies, 1, "game {}", g.index);
            assert_eq!(g.outcome.termination, Termination::Checkmate);
            assert_eq!(g.score_a(), 1.0);
        }
        assert!(result.wins_a >= 2);

        // The same with the roles swapped: the leaves reach the evaluator of the side to move.
        let mut games = Vec::new();
        let result = play_match(&cfg, &mut UniformEvaluator, &mut MateSpotter, |g| {
            games.push(g.clone())
        })
        .unwrap();
        for g in games.iter().filter(|g| !g.a_is_white) {
            assert_eq!(
                (g.plies, g.outcome.termination),
                (1, Termination::Checkmate),
                "game {}",
                g.index
            );
            assert_eq!(g.score_a(), 0.0);
        }
        assert!(result.losses_a >= 2);
        assert!(
            games.iter().filter(|g| g.a_is_white).all(|g| g.plies > 1),
            "uniform priors miss the mate at this budget, so only the right routing wins"
        );
    }
}
