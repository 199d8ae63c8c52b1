//! Self-play's contract: many games share each evaluator call, and every finished game
//! yields well-formed samples and a PGN.

use candle_core::Device;
use ember_engine::encoding::index_to_move;
use ember_engine::mcts::{NetEvaluator, UniformEvaluator};
use ember_engine::net::{NetConfig, Network, Precision};
use ember_engine::runner::Rules;
use ember_engine::selfplay::{play_games, GameRecord, SelfPlayConfig};
use shakmaty::Position;

fn config(games: usize) -> SelfPlayConfig {
    SelfPlayConfig {
        games,
        games_in_flight: games,
        simulations: 12,
        rules: Rules {
            max_plies: 60,
            ..SelfPlayConfig::default().rules
        },
        ..SelfPlayConfig::default()
    }
}

#[test]
fn samples_hold_a_visit_distribution_over_legal_moves_and_the_movers_result() {
    let net = Network::new(NetConfig::plain(16, 1), &Device::Cpu, 5).unwrap();
    let mut eval = NetEvaluator::new(&net, Precision::F32).unwrap();
    let mut records: Vec<GameRecord> = Vec::new();
    let stats = play_games(&config(4), &mut eval, |r| records.push(r)).unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(stats.tally.games, 4);
    for r in &records {
        assert_eq!(r.samples.len(), r.plies, "one sample per searched move");
        for s in &r.samples {
            let sum: f32 = s.visits.iter().map(|(_, p)| p).sum();
            assert!((sum - 1.0).abs() < 1e-4, "visit distribution sums to {sum}");
            assert_eq!(s.visits.len(), s.position.legal_moves().len());
            for (idx, _) in &s.visits {
                assert!(
                    index_to_move(&s.position, *idx as usize).is_some(),
                    "index {idx} is a legal move"
                );
            }
            assert_eq!(s.result, r.outcome.value_for(s.position.turn()));
            assert!((-1.0..=1.0).contains(&s.root_q));
        }
        // Each sample's reply is the move played after it, for the opponent; the last
        // position has none.
        for (ply, s) in r.samples.iter().enumerate() {
            let want = r
                .moves
                .get(ply + 1)
                .map(|m| ember_engine::encoding::move_to_index(m, !s.position.turn()) as u16);
            assert_eq!(s.reply, want, "ply {ply}");
        }
        assert_eq!(r.samples.last().unwrap().reply, None);
        // Each sample's plies left count to the game's end, unless the cap stopped it.
        for (ply, s) in r.samples.iter().enumerate() {
            let want = ember_engine::runner::plies_left(r.outcome.termination, r.plies, ply);
            assert_eq!(s.plies_left, want, "ply {ply}");
            if r.outcome.termination != ember_engine::game::Termination::MaxPlies {
                assert_eq!(s.plies_left, Some((r.plies - ply) as u16));
            }
        }
        assert!(r
            .pgn
            .contains(&format!("[Result \"{}\"]", r.outcome.result.as_str())));
        assert!(r.pgn.contains("[Termination \""));
    }
}

#[test]
fn one_evaluator_call_serves_many_games() {
    let mut records = 0;
    let stats = play_games(&config(8), &mut UniformEvaluator, |_| records += 1).unwrap();
    assert_eq!(records, 8);
    let mean_batch = stats.timing.evaluated as f64 / stats.timing.batches as f64;
    assert!(
        mean_batch > 8.0,
        "mean batch {mean_batch} over {} calls",
        stats.timing.batches
    );
}

/// Double buffering changes only when each game's leaves are evaluated, never what is
/// played: with a deterministic evaluator every game (by index) is move for move the same
/// with and without it, and every game is counted once.
#[test]
fn pipelined_self_play_plays_the_same_games_as_the_plain_loop() {
    let play = |pipeline: bool| {
        let cfg = SelfPlayConfig {
            games: 9,
            games_in_flight: 4,
            rules: Rules {
                temperature_plies: 8,
                ..config(9).rules
            },
            pipeline,
            ..config(9)
        };
        let mut records: Vec<GameRecord> = Vec::new();
        let stats = play_games(&cfg, &mut UniformEvaluator, |r| records.push(r)).unwrap();
        assert_eq!(stats.tally.games, 9);
        assert_eq!(
            stats.positions,
            records.iter().map(|r| r.samples.len()).sum::<usize>()
        );
        records.sort_by_key(|r| r.index);
        records
            .into_iter()
            .map(|r| (r.index, r.pgn, r.plies))
            .collect::<Vec<_>>()
    };
    let plain = play(false);
    let piped = play(true);
    assert_eq!(plain.len(), 9);
    assert_eq!(
        plain.iter().map(|g| g.0).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    assert_eq!(plain, piped);
}

/// Self-play with deblunder: every sample's value target is what `value_targets` makes of
/// its game's searched moves (so some are a search's Q, not a result); without it, the
/// result.
#[test]
fn deblunder_rewrites_the_value_targets_before_blunders_and_only_then() {
    use ember_engine::runner::value_targets;
    use shakmaty::Color;
    let net = Network::new(NetConfig::plain(16, 1), &Device::Cpu, 5).unwrap();
    net.randomise_statistics(6).unwrap();
    let mut eval = NetEvaluator::new(&net, Precision::F32).unwrap();
    let mut fractional = 0;
    for deblunder in [0.0, 0.02] {
        let mut cfg = config(4);
        cfg.rules.temperature_plies = 60;
        cfg.rules.deblunder = deblunder;
        let mut records: Vec<GameRecord> = Vec::new();
        play_games(&cfg, &mut eval, |r| records.push(r)).unwrap();
        for r in &records {
            let start = r.samples.first().map(|s| s.position.turn()).unwrap();
            assert_eq!(start, Color::White, "games start from the initial position");
            let targets = value_targets(
                r.outcome.value_for(Color::White),
                start,
                &r.searched,
                deblunder,
            );
            for (ply, s) in r.samples.iter().enumerate() {
                let white = targets[ply];
                let want = if s.position.turn() == Color::White {
                    white
                } else {
                    -white
                };
                assert_eq!(s.result, want);
                if deblunder == 0.0 {
                    assert_eq!(s.result, r.outcome.value_for(s.position.turn()));
                } else if ![-1.0, 0.0, 1.0].contains(&s.result) {
                    fractional += 1;
                }
            }
        }
    }
    assert!(fractional > 0, "no value target was rewritten");
}
