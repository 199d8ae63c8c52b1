//! The match between two networks that gating plays (candidate against the best
//! network), through the game runner ([`crate::runner`]): each network is a search side
//! with its own evaluator and evaluation cache, the leaves of all games where it is to
//! move going to it in one call.
//!
//! Games are paired: game `2k` has A as White, game `2k+1` has B as White, and both
//! start from the same opening (a given FEN and/or a few random plies), so colour is the
//! only difference within a pair. The result is A's score with a logistic Elo difference
//! and its 95% interval.

use crate::game::position_from_fen;
use crate::mcts::{Evaluator, SearchParams};
use crate::runner::{self, Contest, GameRecord, Opening, Rules, Schedule, SearchSide, Side};
use crate::stats::Trinomial;
use anyhow::{Context, Result};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MatchConfig {
    /// Games to play (an even number gives each opening with both colours).
    pub games: usize,
    /// Games kept in flight at once.
    pub games_in_flight: usize,
    /// Root visits before each move (visits kept from tree reuse count).
    pub simulations: u32,
    /// Ply cap, random opening plies (the same for both games of a pair) and temperature.
    pub rules: Rules,
    pub seed: u64,
    /// Search parameters of both sides. `max_batch` is the leaves one game adds to a
    /// round's batch, `cache_entries` each network's cache; root noise should be off.
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
            rules: Rules::plain(200, 4, 0),
            seed: 1,
            search: SearchParams {
                root_noise: false,
                max_batch: 8,
                cache_entries: 100_000,
                ..SearchParams::default()
            },
            openings: Vec::new(),
            name_a: default_name_a(),
            name_b: default_name_b(),
        }
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

/// Plays `cfg.games` games between `a` (side 0) and `b` (side 1), calling `on_game` as
/// each finishes.
pub fn play_match(
    cfg: &MatchConfig,
    a: &mut dyn Evaluator,
    b: &mut dyn Evaluator,
    mut on_game: impl FnMut(&GameRecord),
) -> Result<MatchResult> {
    let start = Instant::now();
    let openings = cfg
        .openings
        .iter()
        .map(|fen| {
            position_from_fen(fen).with_context(|| format!("match opening {fen:?}"))?;
            Ok(Opening {
                fen: fen.clone(),
                name: String::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    fn side<'a>(
        name: &str,
        evaluator: &'a mut dyn Evaluator,
        params: &SearchParams,
        nodes: u32,
    ) -> Side<'a> {
        Side::Search(SearchSide {
            name: name.to_string(),
            evaluator,
            params: params.clone(),
            nodes,
            record_samples: false,
            fast: None,
        })
    }
    let schedule = Schedule {
        games: cfg.games,
        in_flight: cfg.games_in_flight,
        openings,
        paired: true,
        seed: cfg.seed,
        event: "Ember match".to_string(),
        limit: runner::Limit::Nodes(cfg.simulations as u64),
        ..Schedule::default()
    };
    let mut result = MatchResult::default();
    let mut pgns: Vec<(usize, String)> = Vec::with_capacity(cfg.games);
    let contest = Contest::Match([
        side(&cfg.name_a, a, &cfg.search, cfg.simulations),
        side(&cfg.name_b, b, &cfg.search, cfg.simulations),
    ]);
    runner::play(contest, &cfg.rules, &schedule, |game| {
        result.games += 1;
        match game.score(0) {
            s if s > 0.75 => result.wins_a += 1,
            s if s < 0.25 => result.losses_a += 1,
            _ => result.draws += 1,
        }
        on_game(&game);
        pgns.push((game.index, game.pgn));
        ControlFlow::Continue(())
    })?;
    pgns.sort_by_key(|(i, _)| *i);
    result.pgns = pgns.into_iter().map(|(_, p)| p).collect();
    result.wall = start.elapsed();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::Termination;
    use crate::mcts::EvalBatch;
    use crate::mcts::{NetEvaluator, UniformEvaluator};
    use crate::net::{NetConfig, Network, Precision};
    use crate::phase_times::PhaseTimes;
    use crate::stats::elo_from_score;
    use shakmaty::{Chess, Move, Position};

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
            rules: Rules {
                max_plies: 24,
                ..MatchConfig::default().rules
            },
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
            assert_eq!((g.white == 0), g.index % 2 == 0, "game {}", g.index);
        }
        for pair in seen.chunks(2) {
            assert_eq!(pair[0].start_fen, pair[1].start_fen);
        }
        assert_ne!(
            seen[0].start_fen, seen[2].start_fen,
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
            assert!(g.plies <= cfg.rules.max_plies as usize);
            assert!(g
                .pgn
                .contains(&format!("[Result \"{}\"]", g.outcome.result.as_str())));
            if g.outcome.termination == Termination::MaxPlies {
                assert_eq!(g.plies, cfg.rules.max_plies as usize);
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
            rules: Rules {
                max_plies: 16,
                ..MatchConfig::default().rules
            },
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
            rules: Rules {
                random_opening_plies: 0,
                ..MatchConfig::default().rules
            },
            openings: vec!["6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1".to_string()],
            // The solver would find the mate for either evaluator; without it only the
            // evaluator's priors lead there.
            search: SearchParams {
                solver: false,
                ..MatchConfig::default().search
            },
            ..MatchConfig::default()
        };
        let mut games = Vec::new();
        let result = play_match(&cfg, &mut MateSpotter, &mut UniformEvaluator, |g| {
            games.push(g.clone())
        })
        .unwrap();
        for g in games.iter().filter(|g| g.white == 0) {
            assert_eq!(g.plies, 1, "game {}", g.index);
            assert_eq!(g.outcome.termination, Termination::Checkmate);
            assert_eq!(g.score(0), 1.0);
        }
        assert!(result.wins_a >= 2);

        // The same with the roles swapped: the leaves reach the evaluator of the side to move.
        let mut games = Vec::new();
        let result = play_match(&cfg, &mut UniformEvaluator, &mut MateSpotter, |g| {
            games.push(g.clone())
        })
        .unwrap();
        for g in games.iter().filter(|g| g.white != 0) {
            assert_eq!(
                (g.plies, g.outcome.termination),
                (1, Termination::Checkmate),
                "game {}",
                g.index
            );
            assert_eq!(g.score(0), 0.0);
        }
        assert!(result.losses_a >= 2);
        assert!(
            games.iter().filter(|g| g.white == 0).all(|g| g.plies > 1),
            "uniform priors miss the mate at this budget, so only the right routing wins"
        );
    }
}
