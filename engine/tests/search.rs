//! The search's contract: sign conventions, exact terminal values, virtual loss, tree
//! reuse, the evaluation cache and the plies left with the moves-left utility.

use ember_engine::game::{fen_of, parse_uci_move, position_hash, Game};
use ember_engine::mcts::{
    moves_left_utility, CachedEvaluator, EvalBatch, Evaluator, RootRule, Search, SearchParams,
    UniformEvaluator,
};
use ember_engine::phase_times::PhaseTimes;
use shakmaty::{Chess, Position};
use std::collections::HashSet;

/// Uniform priors; the value (for the side to move) comes from a closure.
struct ValueEvaluator<F: Fn(&Chess) -> f32 + Send> {
    value: F,
    calls: usize,
}

impl<F: Fn(&Chess) -> f32 + Send> Evaluator for ValueEvaluator<F> {
    fn evaluate(&mut self, batch: &mut EvalBatch, _t: &mut PhaseTimes) -> anyhow::Result<()> {
        for i in 0..batch.len() {
            self.calls += 1;
            let p = batch.priors_mut(i);
            let u = 1.0 / p.len() as f32;
            p.fill(u);
            let v = (self.value)(batch.position(i)).clamp(-1.0, 1.0);
            batch.set_wdl(i, [v.max(0.0), 1.0 - v.abs(), (-v).max(0.0)]);
        }
        Ok(())
    }
}

fn search_best(fen: &str, visits: u32) -> (Search, String) {
    let game = Game::from_fen(fen).unwrap();
    let mut s = Search::new(
        &game,
        SearchParams {
            max_batch: 8,
            ..SearchParams::default()
        },
    );
    s.run_until_visits(&mut UniformEvaluator, visits, &mut PhaseTimes::default())
        .unwrap();
    let best = ember_engine::game::move_to_uci(s.best_move().unwrap());
    (s, best)
}

#[test]
fn search_finds_mate_in_one_for_white_and_for_black() {
    let (s, best) = search_best("6k1/5ppp/8/8/8/8/5PPP/3R2K1 w - - 0 1", 800);
    assert_eq!(best, "d1d8");
    assert_eq!(s.proven_mate(None), Some(1));
    let (_, best) = search_best("3r2k1/5ppp/8/8/8/8/5PPP/6K1 b - - 0 1", 800);
    assert_eq!(best, "d8d1");
}

#[test]
fn search_does_not_play_a_move_that_allows_mate_in_one() {
    // White's rook guards the back rank; Ra2..Ra7 allow ...Re1#.
    let fen = "4r1k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1";
    let (s, best) = search_best(fen, 3000);
    let mut pos = Game::from_fen(fen).unwrap().position().clone();
    pos.play_unchecked(parse_uci_move(&pos, &best).unwrap());
    let allows_mate = pos.legal_moves().iter().any(|m| {
        let mut p = pos.clone();
        p.play_unchecked(*m);
        p.is_checkmate()
    });
    assert!(!allows_mate, "{best} allows mate in one");
    // The blunders are recognised as losing, not just less visited.
    let ranked = s.ranked_children();
    let ra7 = ranked
        .iter()
        .find(|c| ember_engine::game::move_to_uci(c.mv) == "a1a7")
        .unwrap();
    assert!(
        ra7.q < 0.0 && ra7.q < ranked[0].q,
        "Q of a1a7 is {}, best {}",
        ra7.q,
        ranked[0].q
    );
}

/// Expands the root, then visits each of its children once in one batch, with the
/// network's value after 1.e4 given by `value_after_e4`; returns (Q(e2e4), search).
fn first_visits_with_e4_valued(value_after_e4: f32) -> (f32, Search) {
    let game = Game::new();
    let target = {
        let mut p = game.position().clone();
        p.play_unchecked(parse_uci_move(&p, "e2e4").unwrap());
        position_hash(&p)
    };
    let mut eval = ValueEvaluator {
        value: move |p: &Chess| {
            if position_hash(p) == target {
                value_after_e4
            } else {
                0.0
            }
        },
        calls: 0,
    };
    let mut s = Search::new(&game, SearchParams::default());
    let mut t = PhaseTimes::default();
    s.run_until_visits(&mut eval, 1, &mut t).unwrap();
    let mut batch = EvalBatch::new();
    assert_eq!(s.gather(20, &mut batch, &mut t), 20);
    eval.evaluate(&mut batch, &mut t).unwrap();
    s.apply(&batch, 0, &mut t);
    let e4 = s
        .root_children()
        .into_iter()
        .find(|c| ember_engine::game::move_to_uci(c.mv) == "e2e4")
        .unwrap();
    assert_eq!(e4.visits, 1);
    (e4.q, s)
}

#[test]
fn a_leaf_valued_as_lost_for_its_side_to_move_raises_the_choosers_q() {
    // After 1.e4 the network says Black (to move) is lost: +1 for White, who chose e2e4.
    let (q, s) = first_visits_with_e4_valued(-1.0);
    assert_eq!(q, 1.0);
    assert_eq!(
        ember_engine::game::move_to_uci(s.best_move().unwrap()),
        "e2e4"
    );
    assert!(s.root_q() > 0.0, "root Q for White = {}", s.root_q());
    // Further search prefers the move the network likes for White.
    let mut s = s;
    s.run_until_visits(&mut UniformEvaluator, 60, &mut PhaseTimes::default())
        .unwrap();
    assert_eq!(
        ember_engine::game::move_to_uci(s.ranked_children()[0].mv),
        "e2e4"
    );
}

#[test]
fn a_leaf_valued_as_won_for_its_side_to_move_lowers_the_choosers_q() {
    let (q, s) = first_visits_with_e4_valued(1.0);
    assert_eq!(q, -1.0);
    assert!(s.root_q() < 0.0);
    let mut s = s;
    s.run_until_visits(&mut UniformEvaluator, 200, &mut PhaseTimes::default())
        .unwrap();
    let children = s.root_children();
    let e4 = children
        .iter()
        .find(|c| ember_engine::game::move_to_uci(c.mv) == "e2e4")
        .unwrap();
    let others_min = children
        .iter()
        .filter(|c| c.mv != e4.mv)
        .map(|c| c.visits)
        .min()
        .unwrap();
    assert!(
        e4.visits < others_min,
        "e2e4 has {} visits, every other move at least {others_min}",
        e4.visits
    );
}

#[test]
fn virtual_loss_spreads_a_batch_over_distinct_leaves() {
    let game = Game::new();
    let mut s = Search::new(&game, SearchParams::default());
    let mut t = PhaseTimes::default();
    s.run_until_visits(&mut UniformEvaluator, 1, &mut t)
        .unwrap();
    assert_eq!(s.root_children().len(), 20);
    let mut batch = EvalBatch::new();
    assert_eq!(s.gather(8, &mut batch, &mut t), 8);
    let hashes: HashSet<u64> = (0..8).map(|i| position_hash(batch.position(i))).collect();
    assert_eq!(hashes.len(), 8, "8 leaves, all distinct");
    assert_eq!(s.stats.collisions, 0);
}

#[test]
fn collisions_are_counted_not_evaluated_twice() {
    let game = Game::new();
    let mut s = Search::new(
        &game,
        SearchParams {
            max_collisions: 5,
            ..SearchParams::default()
        },
    );
    let mut t = PhaseTimes::default();
    s.run_until_visits(&mut UniformEvaluator, 1, &mut t)
        .unwrap();
    let mut batch = EvalBatch::new();
    let added = s.gather(40, &mut batch, &mut t);
    assert_eq!(added, 20, "only 20 distinct leaves exist below the root");
    assert!(s.stats.collisions >= 1);
    let hashes: HashSet<u64> = (0..batch.len())
        .map(|i| position_hash(batch.position(i)))
        .collect();
    assert_eq!(hashes.len(), batch.len());
    UniformEvaluator.evaluate(&mut batch, &mut t).unwrap();
    s.apply(&batch, 0, &mut t);
    assert_eq!(s.root_visits(), 21);
    assert!(
        s.tree().nodes.iter().all(|n| n.in_flight == 0),
        "virtual loss fully removed"
    );
}

#[test]
fn tree_reuse_keeps_the_chosen_childs_visits() {
    let mut game = Game::new();
    let mut s = Search::new(&game, SearchParams::default());
    s.run_until_visits(&mut UniformEvaluator, 400, &mut PhaseTimes::default())
        .unwrap();
    let best = s.ranked_children()[0];
    game.play(best.mv);
    assert!(s.advance_to(&game));
    assert_eq!(s.root_visits(), best.visits);
    assert_eq!(fen_of(s.root_position()), fen_of(game.position()));
    let child_sum: u32 = s.root_children().iter().map(|c| c.visits).sum();
    assert_eq!(child_sum + 1, best.visits, "the subtree came along");
}

#[test]
fn eval_cache_is_hit_on_a_transposition() {
    let mut a = Game::new();
    for m in ["g1f3", "g8f6", "b1c3", "b8c6"] {
        a.play_uci(m).unwrap();
    }
    let mut b = Game::new();
    for m in ["b1c3", "b8c6", "g1f3", "g8f6"] {
        b.play_uci(m).unwrap();
    }
    assert_eq!(a.hash(), b.hash());
    let mut eval = ValueEvaluator {
        value: |_: &Chess| 0.0,
        calls: 0,
    };
    // The search keeps no cache: the evaluator's owner puts one in front of it.
    let mut cached = CachedEvaluator::new(&mut eval, 1000);
    let mut timing = PhaseTimes::default();
    let mut s = Search::new(&a, SearchParams::default());
    s.run_until_visits(&mut cached, 1, &mut timing).unwrap();
    assert_eq!(cached.inner_mut().calls, 1);
    assert!(!s.advance_to(&b), "another move order: a fresh tree");
    s.run_until_visits(&mut cached, 1, &mut timing).unwrap();
    assert_eq!(
        cached.inner_mut().calls,
        1,
        "the transposed root came from the cache"
    );
    assert_eq!(timing.cached, 1);
    assert_eq!(s.root_visits(), 1);
}

#[test]
fn a_position_repeated_inside_the_tree_is_scored_as_a_draw() {
    // White is a queen down; repeating the position by knight shuffles is its best hope.
    let mut game = Game::from_fen("k7/8/8/8/8/8/q7/6NK w - - 0 1").unwrap();
    game.play_uci("g1f3").unwrap();
    game.play_uci("a2a3").unwrap();
    let mut s = Search::new(&game, SearchParams::default());
    s.run_until_visits(&mut UniformEvaluator, 3000, &mut PhaseTimes::default())
        .unwrap();
    // Terminal nodes by repetition exist below f3g1 ... a3a2 lines and are exact draws.
    let draws = s
        .tree()
        .nodes
        .iter()
        .filter(|n| matches!(n.state, ember_engine::mcts::NodeState::Terminal(0)))
        .count();
    assert!(
        draws > 0,
        "some repetition reached inside the tree was scored as a draw"
    );
}

#[test]
fn checkmate_at_the_root_is_exact() {
    let game = Game::from_fen("R5k1/5ppp/8/8/8/8/8/6K1 b - - 0 1").unwrap();
    let mut s = Search::new(&game, SearchParams::default());
    s.run_until_visits(&mut UniformEvaluator, 10, &mut PhaseTimes::default())
        .unwrap();
    assert_eq!(s.root_terminal(), Some(-1.0));
    assert!(s.best_move().is_none());
}

#[test]
fn root_noise_changes_priors_but_keeps_them_a_distribution() {
    let game = Game::new();
    let mut s = Search::new(&game, SearchParams::self_play());
    s.run_until_visits(&mut UniformEvaluator, 1, &mut PhaseTimes::default())
        .unwrap();
    s.add_root_noise(&mut rand::rng());
    let priors: Vec<f32> = s.root_children().iter().map(|c| c.prior).collect();
    let sum: f32 = priors.iter().sum();
    assert!((sum - 1.0).abs() < 1e-4);
    assert!(priors.iter().any(|&p| (p - 0.05).abs() > 1e-3));
}

/// Priors rising with the moves' generation order (1, 2, 3, ... normalised); a drawn value.
struct RisingPriors;

impl Evaluator for RisingPriors {
    fn evaluate(&mut self, batch: &mut EvalBatch, _t: &mut PhaseTimes) -> anyhow::Result<()> {
        for i in 0..batch.len() {
            let p = batch.priors_mut(i);
            let total = (p.len() * (p.len() + 1) / 2) as f32;
            for (k, prior) in p.iter_mut().enumerate() {
                *prior = (k + 1) as f32 / total;
            }
            batch.set_wdl(i, [0.0, 1.0, 0.0]);
        }
        Ok(())
    }
}

/// The root's priors in the search after its first visit at `temperature`.
fn root_priors_at(evaluator: &mut dyn Evaluator, temperature: f32) -> Vec<f32> {
    let params = SearchParams {
        policy_temperature: temperature,
        ..SearchParams::default()
    };
    let mut s = Search::new(&Game::new(), params);
    s.run_until_visits(evaluator, 1, &mut PhaseTimes::default())
        .unwrap();
    s.root_children().iter().map(|c| c.prior).collect()
}

#[test]
fn policy_temperature_flattens_above_one_sharpens_below_and_one_keeps_the_priors() {
    let mut batch = EvalBatch::new();
    let start = Game::new();
    batch.push(start.position(), &start.position().legal_moves());
    RisingPriors
        .evaluate(&mut batch, &mut PhaseTimes::default())
        .unwrap();
    let network = batch.priors(0).to_vec();
    let bits = |v: &[f32]| v.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&root_priors_at(&mut RisingPriors, 1.0)),
        bits(&network)
    );

    let spread = |v: &[f32]| {
        let max = v.iter().copied().fold(0.0, f32::max);
        let min = v.iter().copied().fold(1.0, f32::min);
        max / min
    };
    let hot = root_priors_at(&mut RisingPriors, 2.0);
    let cold = root_priors_at(&mut RisingPriors, 0.5);
    for (priors, t) in [(&hot, 2.0f32), (&cold, 0.5)] {
        assert!((priors.iter().sum::<f32>() - 1.0).abs() < 1e-5, "T {t}");
        // softmax(logits / T) with logits = ln p: p^(1/T), normalised.
        let z: f32 = network.iter().map(|p| p.powf(1.0 / t)).sum();
        for (got, p) in priors.iter().zip(&network) {
            assert!((got - p.powf(1.0 / t) / z).abs() < 1e-6, "T {t}");
        }
    }
    // The start position's 20 moves: the most likely is 20 times the least at T = 1.
    assert!((spread(&network) - 20.0).abs() < 1e-3);
    assert!(
        (spread(&hot) - 20f32.sqrt()).abs() < 1e-3,
        "{}",
        spread(&hot)
    );
    assert!((spread(&cold) - 400.0).abs() < 0.1, "{}", spread(&cold));
}

#[test]
fn the_evaluation_cache_keeps_the_networks_priors_whatever_the_policy_temperature() {
    let mut cached = CachedEvaluator::new(RisingPriors, 1000);
    let hot = root_priors_at(&mut cached, 3.0);
    let entry = cached.cached(Game::new().hash()).unwrap().priors.to_vec();
    let hits = cached.cache().hits;
    let again = root_priors_at(&mut cached, 1.0);
    assert_eq!(cached.cache().hits, hits + 1, "the cache answered the root");
    assert_eq!(again, entry);
    assert_eq!(again, root_priors_at(&mut RisingPriors, 1.0));
    assert_ne!(hot, again);
}

#[test]
fn the_root_move_with_the_largest_q_plus_u_is_the_next_descent() {
    let mut s = Search::new(&Game::new(), SearchParams::default());
    let mut timing = PhaseTimes::default();
    for visits in [2, 5, 17, 60] {
        s.run_until_visits(&mut RisingPriors, visits, &mut timing)
            .unwrap();
        let before = s.root_puct_terms();
        let next = before
            .iter()
            .max_by(|a, b| (a.q + a.u).total_cmp(&(b.q + b.u)))
            .unwrap()
            .mv;
        let mut batch = EvalBatch::new();
        s.gather(1, &mut batch, &mut timing);
        let after = s.root_puct_terms();
        let descended: Vec<_> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| a.visits + a.in_flight > b.visits + b.in_flight)
            .map(|(_, a)| a.mv)
            .collect();
        assert_eq!(descended, vec![next], "after {visits} visits");
        RisingPriors.evaluate(&mut batch, &mut timing).unwrap();
        s.apply(&batch, 0, &mut timing);
    }
}

#[test]
fn a_draw_by_repetition_inside_the_old_tree_is_rejudged_after_tree_reuse() {
    // Shuffling kings: below the root the search meets repetitions and scores them as
    // draws, which only hold for the path they were found on.
    let mut game = Game::from_fen("7k/8/8/p7/P7/8/8/7K w - - 0 1").unwrap();
    let mut s = Search::new(&game, SearchParams::default());
    s.run_until_visits(&mut UniformEvaluator, 5000, &mut PhaseTimes::default())
        .unwrap();
    for m in ["h1g1", "h8g8", "g1h1", "g8h8"] {
        game.play_uci(m).unwrap();
        s.advance_to(&game);
    }
    assert!(
        game.outcome().is_none(),
        "the position occurred twice: the game goes on"
    );
    assert_eq!(s.root_terminal(), None);
    s.run_until_visits(
        &mut UniformEvaluator,
        s.root_visits() + 50,
        &mut PhaseTimes::default(),
    )
    .unwrap();
    assert!(
        s.best_move().is_some(),
        "the reused root is searched and gives a move"
    );
}

#[test]
fn a_restricted_root_explores_only_the_allowed_moves() {
    let game = Game::new();
    let mut s = Search::new(&game, SearchParams::default());
    let allowed: Vec<_> = ["a2a3", "h2h4"]
        .iter()
        .map(|m| parse_uci_move(game.position(), m).unwrap())
        .collect();
    s.restrict_root(&allowed);
    s.run_until_visits(&mut UniformEvaluator, 300, &mut PhaseTimes::default())
        .unwrap();
    for c in s.root_children() {
        if allowed.contains(&c.mv) {
            assert!(c.visits > 0);
        } else {
            assert_eq!(
                c.visits,
                0,
                "{} was searched",
                ember_engine::game::move_to_uci(c.mv)
            );
        }
    }
    assert!(allowed.contains(&s.best_move().unwrap()));
}

fn solve(fen: &str, solver: bool, visits: u32) -> Search {
    solve_with(&mut UniformEvaluator, fen, solver, visits)
}

fn solve_with(evaluator: &mut dyn Evaluator, fen: &str, solver: bool, visits: u32) -> Search {
    let game = Game::from_fen(fen).unwrap();
    let mut s = Search::new(
        &game,
        SearchParams {
            max_batch: 8,
            solver,
            ..SearchParams::default()
        },
    );
    s.run_until_visits(evaluator, visits, &mut PhaseTimes::default())
        .unwrap();
    s
}

#[test]
fn the_solver_proves_a_mate_in_two_and_plays_it() {
    // 1. Ra8+ Bxa8 (1... Be8 2. Rxe8#) 2. Rb8#, or 1. Rb8+ first: both rooks mate.
    let fen = "6k1/5ppp/2b5/8/8/8/8/RR4K1 w - - 0 1";
    let s = solve(fen, true, 2000);
    assert_eq!(s.tree().root().proven, 1, "the root is a proven win");
    let best = s.ranked_children()[0];
    assert_eq!(best.decided, 1);
    let uci = ember_engine::game::move_to_uci(best.mv);
    assert!(uci == "a1a8" || uci == "b1b8", "{uci} does not mate in two");
    assert_eq!(s.proven_mate(Some(best.mv)), Some(3));
    // Quiet moves are not proven either way.
    assert!(s.ranked_children().iter().any(|c| c.decided == 0));

    let off = solve(fen, false, 2000);
    assert_eq!(
        off.tree().root().proven,
        0,
        "nothing is proven with the solver off"
    );
    assert!(off.ranked_children().iter().all(|c| c.decided == 0));
}

#[test]
fn the_solver_proves_a_loss_when_every_move_allows_mate() {
    // After 1. Ra8+: Bxa8 allows Rb8#, Be8 allows Rxe8#.
    let s = solve("R5k1/5ppp/2b5/8/8/8/8/1R4K1 b - - 1 1", true, 500);
    assert_eq!(s.tree().root().proven, -1);
    let ranked = s.ranked_children();
    assert_eq!(ranked.len(), 2);
    assert!(ranked.iter().all(|c| c.decided == -1), "{ranked:?}");
    // The proof is reported as a mate against the side to move.
    assert_eq!(s.proven_mate(None), Some(-2));
}

/// A network that knows material and nothing of mate: the side with more material is
/// winning (0.99), and the mating moves get almost no prior.
struct MateBlindEvaluator;

impl Evaluator for MateBlindEvaluator {
    fn evaluate(&mut self, batch: &mut EvalBatch, _t: &mut PhaseTimes) -> anyhow::Result<()> {
        for i in 0..batch.len() {
            let pos = batch.position(i).clone();
            let mating: Vec<bool> = batch
                .moves(i)
                .iter()
                .map(|m| {
                    let mut p = pos.clone();
                    p.play_unchecked(*m);
                    p.is_checkmate()
                })
                .collect();
            let quiet = mating.iter().filter(|&&m| !m).count().max(1) as f32;
            for (p, &m) in batch.priors_mut(i).iter_mut().zip(&mating) {
                *p = if m { 1e-6 } else { 1.0 / quiet };
            }
            let ours = ember_engine::game::material(&pos, pos.turn());
            let theirs = ember_engine::game::material(&pos, !pos.turn());
            let v = (ours - theirs).signum() as f32 * 0.99;
            batch.set_wdl(i, [v.max(0.0), 1.0 - v.abs(), (-v).max(0.0)]);
        }
        Ok(())
    }
}

#[test]
fn the_solver_plays_a_mate_in_one_that_the_network_gives_no_prior() {
    // Qh1# mates; every move keeps the queen, so the value cannot tell them apart.
    let fen = "7k/5K2/8/8/8/8/8/1Q6 w - - 0 1";
    let run = |solver: bool| solve_with(&mut MateBlindEvaluator, fen, solver, 800);
    let s = run(true);
    let best = ember_engine::game::move_to_uci(s.best_move().unwrap());
    assert_eq!(best, "b1h1");
    assert_eq!(s.ranked_children()[0].mate_plies, 1);
    // Checks that leave one king move and then Qh1# are proven too, and ranked after it:
    // a mate in two played for ever would never mate.
    assert!(s.ranked_children()[1..]
        .iter()
        .any(|c| c.decided == 1 && c.mate_plies == 3));
    assert_eq!(s.tree().root().proven, 1);
    assert_eq!(s.proven_mate(None), Some(1));
    // Without the solver the search never tries a move of prior 1e-6 among winning ones:
    // the mate is found by looking at checks when a node is expanded, not by visits.
    let off = run(false);
    let best = ember_engine::game::move_to_uci(off.best_move().unwrap());
    assert_ne!(best, "b1h1");
}

/// A search of `visits` visits from `fen` with a node bound, material as the value.
fn bounded_search(fen: &str, visits: u32, max_nodes: usize) -> Search {
    let game = Game::from_fen(fen).unwrap();
    let mut s = Search::new(
        &game,
        SearchParams {
            max_batch: 8,
            max_nodes,
            ..SearchParams::default()
        },
    );
    let mut eval = ValueEvaluator {
        value: |p: &Chess| (ember_engine::game::material(p, p.turn()) as f32 / 10.0).tanh(),
        calls: 0,
    };
    s.run_until_visits(&mut eval, visits, &mut PhaseTimes::default())
        .unwrap();
    s
}

const MIDDLEGAME: &str = "r1bqkb1r/pppp1ppp/2n2n2/4p3/2B1P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 4 4";

#[test]
fn below_its_node_bound_a_search_is_the_same_as_without_one() {
    let free = bounded_search(MIDDLEGAME, 2000, usize::MAX);
    assert_eq!(free.stats.not_expanded, 0);
    let nodes = free.tree().nodes.len();
    let bounded = bounded_search(MIDDLEGAME, 2000, nodes);
    assert_eq!(bounded.stats.not_expanded, 0);
    let stats = |s: &Search| -> Vec<(String, u32, f32)> {
        s.root_children()
            .iter()
            .map(|c| (ember_engine::game::move_to_uci(c.mv), c.visits, c.q))
            .collect()
    };
    assert_eq!(stats(&free), stats(&bounded));
    assert_eq!(free.best_move(), bounded.best_move());
}

#[test]
fn at_its_node_bound_a_search_goes_on_refining_the_tree_it_has() {
    let bound = 3000;
    let s = bounded_search(MIDDLEGAME, 20_000, bound);
    let tree = s.tree();
    assert!(tree.nodes.len() <= bound, "{} nodes", tree.nodes.len());
    assert!(tree.allocated_bytes() <= bound * ember_engine::mcts::node::NODE_BYTES);
    assert!(s.stats.not_expanded > 0);
    assert_eq!(s.tree_permille(), (tree.nodes.len() * 1000 / bound) as u32);
    assert!(s.tree_permille() > 900, "{}", s.tree_permille());
    // Every visit asked for was made, and the visits sum up over the root's children.
    assert_eq!(s.root_visits(), 20_000);
    let children: u32 = s.root_children().iter().map(|c| c.visits).sum();
    assert_eq!(children + 1, s.root_visits());
    let legal = Game::from_fen(MIDDLEGAME).unwrap().position().legal_moves();
    assert!(legal.contains(&s.best_move().unwrap()));
}

/// Material for the side to move, in (-1, 1).
fn material_value(p: &Chess) -> f32 {
    use ember_engine::game::material;
    let us = p.turn();
    ((material(p, us) - material(p, !us)) as f32 / 4.0).tanh()
}

fn gumbel_search(fen: &str, visits: u32, considered: u32, noise_seed: Option<u64>) -> Search {
    let game = Game::from_fen(fen).unwrap();
    let mut s = Search::new(
        &game,
        SearchParams {
            max_batch: 8,
            root_rule: RootRule::Gumbel,
            gumbel_considered: considered,
            root_noise: noise_seed.is_some(),
            ..SearchParams::default()
        },
    );
    if let Some(seed) = noise_seed {
        s.seed_noise(seed);
    }
    let mut ev = ValueEvaluator {
        value: material_value,
        calls: 0,
    };
    s.run_until_visits(&mut ev, visits, &mut PhaseTimes::default())
        .unwrap();
    s
}

#[test]
fn gumbel_shares_the_simulations_among_the_considered_moves_by_sequential_halving() {
    // 20 moves, 16 considered, 32 simulations after the root's own evaluation: 16 moves
    // get one visit, the best 8 a second, the best 4 two more.
    let s = gumbel_search(&fen_of(&Chess::default()), 33, 16, Some(3));
    let mut visits: Vec<u32> = s.root_children().iter().map(|c| c.visits).collect();
    visits.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(visits, [&[4u32; 4][..], &[2; 4], &[1; 8], &[0; 4]].concat());
    // PUCT at the same visits spreads them otherwise.
    let (puct, _) = search_best(&fen_of(&Chess::default()), 33);
    let mut pv: Vec<u32> = puct.root_children().iter().map(|c| c.visits).collect();
    pv.sort_unstable_by(|a, b| b.cmp(a));
    assert_ne!(pv, visits);
    // The move played is one of the four that survived.
    let mv = s.choose_move(0.0, &mut rand::rng()).unwrap();
    let played = s.root_children().into_iter().find(|c| c.mv == mv).unwrap();
    assert_eq!(played.visits, 4);
    // The target covers every legal move (the unvisited take the mixed value) and sums to 1.
    let target = s.policy_target();
    assert_eq!(target.len(), 20);
    assert!((target.iter().map(|(_, p)| p).sum::<f32>() - 1.0).abs() < 1e-5);
    assert!(target.iter().all(|(_, p)| *p > 0.0));
    assert_ne!(target, s.visit_distribution());
}

#[test]
fn gumbel_finds_the_winning_capture_and_teaches_it() {
    // Rd2xd5 wins the queen; the evaluator knows material only.
    let fen = "4k3/8/8/3q4/8/8/3R4/4K3 w - - 0 1";
    for seed in [1, 2, 3] {
        let s = gumbel_search(fen, 65, 64, Some(seed));
        let mv = s.choose_move(1.0, &mut rand::rng()).unwrap();
        assert_eq!(ember_engine::game::move_to_uci(mv), "d2d5", "seed {seed}");
        let target = s.policy_target();
        let (best, p) = target.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        assert_eq!(ember_engine::game::move_to_uci(*best), "d2d5");
        assert!(*p > 0.5, "target of the capture {p}");
    }
}

#[test]
fn gumbel_without_noise_is_deterministic_and_noise_varies_the_moves_considered() {
    let start = fen_of(&Chess::default());
    let visited = |s: &Search| -> Vec<String> {
        let mut v: Vec<String> = s
            .root_children()
            .iter()
            .filter(|c| c.visits > 0)
            .map(|c| ember_engine::game::move_to_uci(c.mv))
            .collect();
        v.sort();
        v
    };
    let a = gumbel_search(&start, 9, 8, None);
    let b = gumbel_search(&start, 9, 8, None);
    assert_eq!(visited(&a), visited(&b));
    let sets: HashSet<Vec<String>> = (0..6)
        .map(|seed| visited(&gumbel_search(&start, 9, 8, Some(seed))))
        .collect();
    assert!(sets.len() > 1, "noise never changed the 8 moves considered");
}

#[test]
fn gumbel_counts_only_this_searchs_visits_after_tree_reuse() {
    // After a reused subtree, the next search still gives its own simulations by the
    // schedule: its visits to the root's moves add up to what it planned.
    let start = fen_of(&Chess::default());
    let mut game = Game::from_fen(&start).unwrap();
    let mut s = gumbel_search(&start, 65, 16, Some(5));
    let mv = s.choose_move(0.0, &mut rand::rng()).unwrap();
    game.play(mv);
    assert!(s.advance_to(&game));
    let before: Vec<u32> = s.root_children().iter().map(|c| c.visits).collect();
    let kept = s.root_visits();
    assert!(kept > 1);
    let mut ev = ValueEvaluator {
        value: material_value,
        calls: 0,
    };
    s.run_until_visits(&mut ev, kept + 32, &mut PhaseTimes::default())
        .unwrap();
    let added: Vec<u32> = s
        .root_children()
        .iter()
        .zip(&before)
        .map(|(c, b)| c.visits - b)
        .collect();
    assert_eq!(added.iter().sum::<u32>(), 32);
    // 16 considered of 20, 32 simulations: the same shares as from a fresh root.
    let mut sorted = added.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(sorted, [&[4u32; 4][..], &[2; 4], &[1; 8], &[0; 4]].concat());
}

/// Uniform priors, a value (for the side to move) and the plies left to the game's end
/// (the moves-left head's estimate) from closures.
struct PliesEvaluator<V, M>
where
    V: Fn(&Chess) -> f32 + Send,
    M: Fn(&Chess) -> f32 + Send,
{
    value: V,
    plies: M,
}

impl<V, M> Evaluator for PliesEvaluator<V, M>
where
    V: Fn(&Chess) -> f32 + Send,
    M: Fn(&Chess) -> f32 + Send,
{
    fn evaluate(&mut self, batch: &mut EvalBatch, _t: &mut PhaseTimes) -> anyhow::Result<()> {
        for i in 0..batch.len() {
            let p = batch.priors_mut(i);
            let u = 1.0 / p.len() as f32;
            p.fill(u);
            let v = (self.value)(batch.position(i)).clamp(-1.0, 1.0);
            batch.set_wdl(i, [v.max(0.0), 1.0 - v.abs(), (-v).max(0.0)]);
            let plies = (self.plies)(batch.position(i));
            batch.set_moves_left(i, Some(plies));
        }
        Ok(())
    }
}

fn assert_close(got: f32, want: f32) {
    assert!((got - want).abs() < 1e-6, "{got} is not {want}");
}

#[test]
fn the_moves_left_utility_follows_lc0s_formula() {
    let p = SearchParams::default();
    assert_eq!(
        (
            p.moves_left_slope,
            p.moves_left_max_effect,
            p.moves_left_threshold
        ),
        (0.0027, 0.0345, 0.8)
    );
    let u = |parent_q: f32, q: f32, plies: f32| moves_left_utility(&p, parent_q, q, plies);
    // At or below the threshold of the node's |Q| there is none.
    assert_eq!(u(0.8, 0.9, 10.0), 0.0);
    assert_eq!(u(-0.5, -0.95, -10.0), 0.0);
    // 10 plies more than the node: 0.0027 * 10 = 0.027; q' = (0.9 - 0.8) / 0.2 = 0.5
    // weighs it 1.6521 * 0.5 - 0.6521 * 0.25 = 0.663025. The winning chooser (q > 0)
    // loses by the longer child, the losing one gains; the node's sign does not count.
    let w = 0.027 * 0.663025;
    assert_close(u(0.9, 0.9, 10.0), -w);
    assert_close(u(-0.9, 0.9, 10.0), -w);
    assert_close(u(0.9, -0.9, 10.0), w);
    assert_close(u(0.9, 0.9, -10.0), w);
    assert_close(u(0.9, -0.9, -10.0), -w);
    // 100 plies would be 0.27: clamped at 0.0345; at |q| = 1 the weight is 1.
    assert_close(u(0.95, 1.0, 100.0), -0.0345);
    assert_close(u(0.95, -1.0, 100.0), 0.0345);
    assert_close(u(0.95, 1.0, -100.0), 0.0345);
    // A child whose own |Q| is at the threshold weighs 0 (the constant factor is 0).
    assert_eq!(u(0.95, 0.8, 10.0), 0.0);
    // Without a threshold |q| is taken as it is; the constant factor weighs every |q|.
    let flat = SearchParams {
        moves_left_threshold: 0.0,
        moves_left_constant_factor: 1.0,
        moves_left_scaled_factor: 0.0,
        moves_left_quadratic_factor: 0.0,
        ..SearchParams::default()
    };
    assert_close(moves_left_utility(&flat, 0.1, 0.2, 10.0), -0.027);
    assert_close(moves_left_utility(&flat, 0.1, -0.2, 10.0), 0.027);
    let off = SearchParams {
        moves_left_slope: 0.0,
        ..SearchParams::default()
    };
    assert_eq!(moves_left_utility(&off, 1.0, 1.0, 50.0), 0.0);
}

#[test]
fn a_nodes_plies_left_is_the_mean_of_its_leaves_estimates_plus_the_plies_down_to_them() {
    let game = Game::new();
    let after = |uci: &str| {
        let mut p = game.position().clone();
        p.play_unchecked(parse_uci_move(&p, uci).unwrap());
        position_hash(&p)
    };
    let (root, e4, d4) = (game.hash(), after("e2e4"), after("d2d4"));
    let mut eval = PliesEvaluator {
        value: |_: &Chess| 0.0,
        plies: move |p: &Chess| match position_hash(p) {
            h if h == root => 30.0,
            h if h == e4 => 20.0,
            h if h == d4 => 10.0,
            _ => 5.0,
        },
    };
    let mut s = Search::new(&game, SearchParams::default());
    let mut t = PhaseTimes::default();
    s.run_until_visits(&mut eval, 1, &mut t).unwrap();
    assert_eq!(s.root_plies_left(), Some(30.0));
    // One visit to each of the 20 moves: 20 + 1 plies through e2e4, 10 + 1 through d2d4,
    // 5 + 1 through each of the other 18.
    let mut batch = EvalBatch::new();
    assert_eq!(s.gather(20, &mut batch, &mut t), 20);
    eval.evaluate(&mut batch, &mut t).unwrap();
    s.apply(&batch, 0, &mut t);
    assert_eq!(s.root_visits(), 21);
    let want = (30.0 + 21.0 + 11.0 + 18.0 * 6.0) / 21.0;
    assert!(
        (s.root_plies_left().unwrap() - want).abs() < 1e-4,
        "root M {:?}, want {want}",
        s.root_plies_left()
    );
    let tree = s.tree();
    for c in tree.root().children() {
        let n = &tree.nodes[c];
        let want = match ember_engine::game::move_to_uci(n.mv.unwrap()).as_str() {
            "e2e4" => 20.0,
            "d2d4" => 10.0,
            _ => 5.0,
        };
        assert_eq!((n.visits, n.plies_left), (1, want));
    }
}

#[test]
fn a_checkmate_counts_no_plies_left_and_its_parent_one() {
    // d1d8 mates; every other position is estimated at 25 plies from the end.
    let game = Game::from_fen("6k1/5ppp/8/8/8/8/5PPP/3R2K1 w - - 0 1").unwrap();
    let mut eval = PliesEvaluator {
        value: |_: &Chess| 0.0,
        plies: |_: &Chess| 25.0,
    };
    let mut s = Search::new(&game, SearchParams::default());
    s.run_until_visits(&mut eval, 300, &mut PhaseTimes::default())
        .unwrap();
    let tree = s.tree();
    let root = tree.root();
    let mate = root
        .children()
        .map(|c| &tree.nodes[c])
        .find(|n| ember_engine::game::move_to_uci(n.mv.unwrap()) == "d1d8")
        .unwrap();
    assert!(mate.visits > 0);
    assert_eq!(mate.plies_left, 0.0);
    // The root's M is its own estimate and each child's M one ply further, weighted by
    // visits.
    let sum: f64 = 25.0
        + root
            .children()
            .map(|c| &tree.nodes[c])
            .map(|n| f64::from(n.visits) * (f64::from(n.plies_left) + 1.0))
            .sum::<f64>();
    let want = sum / f64::from(root.visits);
    assert!(
        (f64::from(root.plies_left) - want).abs() < 1e-3,
        "root M {}, want {want}",
        root.plies_left
    );
}

/// A won position for White (or a lost one, `white_value` < 0) where both root moves
/// searched, a2a3 and h2h3, keep every value as it is, so that their Q is the same: the
/// game ends in 10 plies once the a-pawn has left a2 and in 40 while it stands there.
/// Returns the visits of (a2a3, h2h3).
fn visits_of_the_short_and_the_long_line(white_value: f32, slope: f32) -> (u32, u32) {
    use shakmaty::{Color, Piece, Role, Square};
    let game = Game::from_fen("k7/8/8/8/8/8/P6P/4K3 w - - 0 1").unwrap();
    let mut s = Search::new(
        &game,
        SearchParams {
            max_batch: 1,
            tree_twofold_draw: false,
            moves_left_slope: slope,
            ..SearchParams::default()
        },
    );
    let short = parse_uci_move(game.position(), "a2a3").unwrap();
    let long = parse_uci_move(game.position(), "h2h3").unwrap();
    s.restrict_root(&[short, long]);
    let a_pawn_home = Some(Piece {
        color: Color::White,
        role: Role::Pawn,
    });
    let mut eval = PliesEvaluator {
        value: move |p: &Chess| {
            if p.turn() == Color::White {
                white_value
            } else {
                -white_value
            }
        },
        plies: move |p: &Chess| {
            if p.board().piece_at(Square::A2) == a_pawn_home {
                40.0
            } else {
                10.0
            }
        },
    };
    s.run_until_visits(&mut eval, 400, &mut PhaseTimes::default())
        .unwrap();
    let children = s.root_children();
    let visits = |m| children.iter().find(|c| c.mv == m).unwrap().visits;
    (visits(short), visits(long))
}

#[test]
fn the_moves_left_utility_steers_the_winner_to_the_shorter_line_and_the_loser_to_the_longer() {
    let (short, long) = visits_of_the_short_and_the_long_line(0.95, 0.0);
    assert!(
        short.abs_diff(long) <= 10,
        "equal Q, equal priors: {short} and {long} visits without the utility"
    );
    let (short, long) = visits_of_the_short_and_the_long_line(0.95, 0.0027);
    assert!(
        short > 2 * long,
        "winning: {short} visits to the short line, {long} to the long one"
    );
    let (short, long) = visits_of_the_short_and_the_long_line(-0.95, 0.0027);
    assert!(
        long > 2 * short,
        "losing: {short} visits to the short line, {long} to the long one"
    );
}

/// Every node's visits and value sum after a search of a won position (White has a queen
/// and a rook against the lone king), with or without the moves-left head's estimates.
fn won_tree(slope: f32, with_estimates: bool) -> Vec<(u32, u32)> {
    let game = Game::from_fen("6k1/8/8/8/8/8/8/QR4K1 w - - 0 1").unwrap();
    let mut s = Search::new(
        &game,
        SearchParams {
            max_batch: 8,
            moves_left_slope: slope,
            ..SearchParams::default()
        },
    );
    let mut t = PhaseTimes::default();
    if with_estimates {
        let mut eval = PliesEvaluator {
            value: material_value,
            plies: |p: &Chess| (position_hash(p) % 61) as f32,
        };
        s.run_until_visits(&mut eval, 1500, &mut t).unwrap();
        assert!(s.plies_left_known());
    } else {
        let mut eval = ValueEvaluator {
            value: material_value,
            calls: 0,
        };
        s.run_until_visits(&mut eval, 1500, &mut t).unwrap();
        assert!(!s.plies_left_known() && s.root_plies_left().is_none());
    }
    assert!(s.root_q() > 0.8, "won: root Q {}", s.root_q());
    s.tree()
        .nodes
        .iter()
        .map(|n| (n.visits, n.value_sum.to_bits()))
        .collect()
}

#[test]
fn without_moves_left_estimates_the_search_is_the_same_as_with_the_utility_off() {
    assert_eq!(won_tree(0.0027, false), won_tree(0.0, false));
    // The position is one where the utility, given estimates, changes the search.
    assert_ne!(won_tree(0.0027, true), won_tree(0.0, true));
}

#[test]
fn a_node_keeps_its_plies_left_within_forty_bytes() {
    assert_eq!(ember_engine::mcts::node::NODE_BYTES, 40);
}

#[test]
fn a_network_with_the_moves_left_head_gives_the_search_its_plies_left_and_one_without_does_not() {
    use ember_engine::mcts::NetEvaluator;
    use ember_engine::net::{NetConfig, Network, Precision};
    for head in [true, false] {
        let config = NetConfig {
            moves_left_head: head,
            ..NetConfig::plain(8, 1)
        };
        let net = Network::new(config, &candle_core::Device::Cpu, 1).unwrap();
        let mut eval = CachedEvaluator::new(NetEvaluator::new(&net, Precision::F32).unwrap(), 1000);
        let game = Game::new();
        let mut s = Search::new(&game, SearchParams::default());
        // The second search of a fresh tree is answered from the evaluation cache.
        for _ in 0..2 {
            s.reset_tree(&game);
            s.run_until_visits(&mut eval, 40, &mut PhaseTimes::default())
                .unwrap();
            assert_eq!(s.plies_left_known(), head);
            assert_eq!(s.root_plies_left().is_some(), head);
            let terms = s.root_puct_terms();
            assert_eq!(terms.iter().any(|m| m.plies_left.is_some()), head);
        }
        assert!(eval.cache().hits > 0);
    }
}
