use super::*;
use crate::game::{Game, GameOutcome};
use crate::mcts::UniformEvaluator;
use crate::players::MoveLimit;
use crate::players::RandomPlayer;
use shakmaty::{Chess, Color, KnownOutcome, Position};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Uniform priors, a drawn value, and a count of the positions it was sent.
#[derive(Default)]
struct Counting {
    positions: usize,
}

impl Evaluator for Counting {
    fn evaluate(&mut self, batch: &mut EvalBatch, t: &mut PhaseTimes) -> Result<()> {
        self.positions += batch.len();
        UniformEvaluator.evaluate(batch, t)
    }
}

fn rules(max_plies: u32) -> Rules {
    Rules::plain(max_plies, 0, 6)
}

fn search_side<'a>(evaluator: &'a mut dyn Evaluator, nodes: u32) -> SearchSide<'a> {
    SearchSide {
        name: "search".into(),
        evaluator,
        params: SearchParams {
            max_batch: 4,
            cache_entries: 0,
            ..SearchParams::self_play()
        },
        nodes,
        record_samples: true,
        fast: None,
    }
}

/// Plays the whole schedule; the records in game order.
fn play_all(
    contest: Contest<'_>,
    rules: &Rules,
    schedule: &Schedule,
) -> (Vec<GameRecord>, PlayStats) {
    let mut games = Vec::new();
    let stats = play(contest, rules, schedule, |r| {
        games.push(r);
        ControlFlow::Continue(())
    })
    .unwrap();
    games.sort_by_key(|r| r.index);
    (games, stats)
}

/// Six self-play games (index, PGN) with a cache of `cache_entries` positions.
fn self_play(
    in_flight: usize,
    evaluator: &mut dyn Evaluator,
    cache_entries: usize,
) -> (Vec<(usize, String)>, PlayStats) {
    let schedule = Schedule {
        games: 6,
        in_flight,
        seed: 11,
        ..Schedule::default()
    };
    let mut side = search_side(evaluator, 8);
    side.params.cache_entries = cache_entries;
    let (games, stats) = play_all(Contest::SelfPlay(side), &rules(30), &schedule);
    (games.into_iter().map(|r| (r.index, r.pgn)).collect(), stats)
}

#[test]
fn a_seeded_schedule_plays_the_same_games_whatever_the_games_in_flight() {
    let (one, _) = self_play(1, &mut UniformEvaluator, 0);
    let (many, _) = self_play(6, &mut UniformEvaluator, 0);
    assert_eq!(one.len(), 6);
    assert_eq!(one, many);
    assert_ne!(one[0].1, one[1].1, "games differ by their seeds");
}

#[test]
fn the_shared_cache_sends_a_position_reached_by_many_games_to_the_network_once() {
    // Six games start from one position: without a cache, each round's batch holds
    // it six times; with one, the network sees it once.
    let mut plain = Counting::default();
    let (_, plain_stats) = self_play(6, &mut plain, 0);
    let mut counting = Counting::default();
    let (games, stats) = self_play(6, &mut counting, 10_000);
    assert_eq!(games, self_play(6, &mut UniformEvaluator, 0).0);
    assert_eq!(stats.cache_hits, stats.timing.cached);
    assert!(stats.cache_hits > 0);
    assert_eq!(plain_stats.cache_hits, 0);
    assert_eq!(
        counting.positions as u64 + stats.cache_hits,
        plain.positions as u64,
        "every leaf is answered by the network or the cache"
    );
    assert!(counting.positions < plain.positions);
}

/// Plays `games` games of a search side against players built by `start`.
fn against(games: usize, limit: Limit, start: &StartPlayer) -> Vec<GameRecord> {
    let mut eval = UniformEvaluator;
    let mut side = search_side(&mut eval, 4);
    side.record_samples = false;
    let contest = Contest::Match([
        Side::Search(side),
        Side::Player(PlayerSide {
            name: "player".into(),
            start,
        }),
    ]);
    let schedule = Schedule {
        games,
        in_flight: 3,
        paired: true,
        limit,
        ..Schedule::default()
    };
    play_all(contest, &rules(40), &schedule).0
}

#[test]
fn a_search_side_and_a_player_side_alternate_and_the_record_says_who_searched() {
    let start = |seed| -> Result<Box<dyn Player>> { Ok(Box::new(RandomPlayer::new(seed))) };
    let games = against(4, Limit::Nodes(1), &start);
    assert_eq!(games.len(), 4);
    for g in &games {
        assert_eq!(g.white, g.index % 2, "colours alternate within a pair");
        assert_eq!(g.moves.len(), g.plies);
        assert_eq!(g.searched.len(), g.plies);
        for (ply, s) in g.searched.iter().enumerate() {
            let search_to_move = (ply % 2 == 0) == (g.white == 0);
            assert_eq!(s.is_some(), search_to_move, "game {} ply {ply}", g.index);
            if let Some(s) = s {
                assert!(s.nodes >= 4);
            }
        }
        assert!(g.pgn.contains(&format!("[Round \"{}\"]", g.index + 1)));
        assert!(g.samples.is_empty());
    }
}

/// Plays random moves, but fails its `fail_at`-th move of every game, and counts its
/// starts.
struct Failing {
    moves: usize,
    fail_at: usize,
    failure: Failure,
    sleep: Duration,
}

impl Player for Failing {
    fn name(&self) -> String {
        "failing".into()
    }
    fn new_game(&mut self) -> Result<(), Failure> {
        self.moves = 0;
        Ok(())
    }
    fn choose(&mut self, game: &Game, _: MoveLimit) -> Result<Move, Failure> {
        self.moves += 1;
        if self.moves == self.fail_at {
            std::thread::sleep(self.sleep);
            if self.sleep.is_zero() {
                return Err(self.failure.clone());
            }
        }
        Ok(game.position().legal_moves()[0])
    }
}

#[test]
fn a_player_that_crashes_loses_the_game_with_the_reason_and_is_started_again() {
    let starts = AtomicUsize::new(0);
    let start = |_| -> Result<Box<dyn Player>> {
        starts.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Failing {
            moves: 0,
            fail_at: 3,
            failure: Failure::Crashed("exited".into()),
            sleep: Duration::ZERO,
        }))
    };
    let games = against(6, Limit::Nodes(1), &start);
    assert_eq!(games.len(), 6);
    for g in &games {
        assert_eq!(g.outcome.termination, Termination::Forfeit);
        assert_eq!(g.score(0), 1.0, "the search side wins game {}", g.index);
        let why = g.reason.as_deref().unwrap();
        assert!(why.contains("player crashed (exited)"), "{why}");
        assert!(g.pgn.contains("TerminationDetails"));
    }
    // A crashed player is dropped and started afresh for its lane's next game.
    assert_eq!(starts.load(Ordering::SeqCst), 6);
}

#[test]
fn a_player_over_its_clock_loses_on_time() {
    let start = |_| -> Result<Box<dyn Player>> {
        Ok(Box::new(Failing {
            moves: 0,
            fail_at: 2,
            failure: Failure::Other(String::new()),
            sleep: Duration::from_millis(300),
        }))
    };
    let games = against(
        2,
        Limit::Clock {
            base_ms: 200,
            inc_ms: 0,
        },
        &start,
    );
    for g in &games {
        assert_eq!(g.outcome.termination, Termination::TimeForfeit);
        assert_eq!(g.score(1), 0.0);
        assert!(g.reason.as_deref().unwrap().contains("ran out of time"));
    }
}

#[test]
fn breaking_from_on_game_stops_the_schedule() {
    let mut seen = 0;
    let schedule = Schedule {
        games: 50,
        in_flight: 2,
        ..Schedule::default()
    };
    let stats = play(
        Contest::SelfPlay(search_side(&mut UniformEvaluator, 2)),
        &rules(10),
        &schedule,
        |_| {
            seen += 1;
            if seen == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap();
    assert_eq!((seen, stats.tally.games), (3, 3));
}

#[test]
fn the_ply_cap_and_random_opening_plies_follow_the_rules() {
    let schedule = Schedule {
        games: 4,
        in_flight: 4,
        paired: true,
        ..Schedule::default()
    };
    let rules = Rules::plain(12, 3, 0);
    let mut eval = UniformEvaluator;
    let side = search_side(&mut eval, 2);
    let (games, _) = play_all(Contest::SelfPlay(side), &rules, &schedule);
    for g in &games {
        assert!(g.plies <= 12);
        assert!(g.searched[..3].iter().all(Option::is_none), "random plies");
        assert!(g.searched[3..].iter().all(Option::is_some));
        if g.outcome.termination == Termination::MaxPlies {
            assert_eq!(g.plies, 12);
        }
    }
    assert_eq!(
        games[0].start_fen, games[1].start_fen,
        "a pair shares its opening"
    );
    assert_ne!(games[0].start_fen, games[2].start_fen);
}

#[test]
fn the_cap_rule_scores_material_and_value_for_both_colours() {
    let capped = |fen: &str| Game::from_fen(fen).unwrap();
    // White is a rook up; then the same with colours swapped.
    let white_up = capped("4k3/8/8/8/8/8/8/R3K3 w - - 0 1");
    let black_up = capped("r3k3/8/8/8/8/8/8/4K3 b - - 0 1");
    let rule = CapRule {
        material: 3,
        value: 0.0,
    };
    let won = |g: &GameOutcome| (g.result.winner(), g.termination);
    let by_material = Termination::AdjudicatedMaterial;
    assert_eq!(
        won(&rule.adjudicate(&white_up, None)),
        (Some(Color::White), by_material)
    );
    assert_eq!(
        won(&rule.adjudicate(&black_up, None)),
        (Some(Color::Black), by_material)
    );
    let strict = CapRule {
        material: 6,
        value: 0.0,
    };
    assert_eq!(
        strict.adjudicate(&white_up, None).termination,
        Termination::MaxPlies
    );
    assert_eq!(
        strict.adjudicate(&white_up, None).result,
        KnownOutcome::Draw
    );
    // By value: the last mover's root Q decides, for it or against it.
    let even = capped("4k3/8/8/8/8/8/8/4K3 w - - 0 1");
    let by_value = CapRule {
        material: 3,
        value: 0.5,
    };
    let value = Termination::AdjudicatedValue;
    for (last, winner) in [
        ((Color::Black, 0.8), Some(Color::Black)),
        ((Color::Black, -0.8), Some(Color::White)),
        ((Color::White, 0.6), Some(Color::White)),
        ((Color::White, -0.6), Some(Color::Black)),
    ] {
        assert_eq!(
            won(&by_value.adjudicate(&even, Some(last))),
            (winner, value),
            "{last:?}"
        );
    }
    assert_eq!(
        by_value.adjudicate(&even, Some((Color::White, 0.3))).result,
        KnownOutcome::Draw
    );
    // Material comes first.
    assert_eq!(
        won(&by_value.adjudicate(&black_up, Some((Color::White, 0.9)))),
        (Some(Color::Black), by_material)
    );
    assert_eq!(
        CapRule::default()
            .adjudicate(&white_up, Some((Color::White, 1.0)))
            .result,
        KnownOutcome::Draw
    );
}

/// Uniform priors, and Black winning every position.
struct BlackWins;

impl Evaluator for BlackWins {
    fn evaluate(&mut self, batch: &mut EvalBatch, t: &mut PhaseTimes) -> Result<()> {
        UniformEvaluator.evaluate(batch, t)?;
        for i in 0..batch.len() {
            let white = batch.position(i).turn() == Color::White;
            batch.set_wdl(
                i,
                if white {
                    [0.0, 0.0, 1.0]
                } else {
                    [1.0, 0.0, 0.0]
                },
            );
        }
        Ok(())
    }
}

fn resigning(playthrough: f32) -> (Vec<GameRecord>, PlayStats) {
    let rules = Rules {
        resign: Some(Resign {
            threshold: 0.9,
            playthrough,
        }),
        ..Rules::plain(10, 0, 0)
    };
    let schedule = Schedule {
        games: 4,
        in_flight: 4,
        ..Schedule::default()
    };
    play_all(
        Contest::SelfPlay(search_side(&mut BlackWins, 8)),
        &rules,
        &schedule,
    )
}

#[test]
fn a_hopeless_side_resigns_and_played_out_games_count_false_positives() {
    let (games, stats) = resigning(0.0);
    for g in &games {
        assert_eq!(g.outcome.termination, Termination::Resignation);
        assert_eq!(g.outcome.result.winner(), Some(Color::Black));
        assert_eq!(g.plies, 0, "White resigns at its first move");
        assert!(g.samples.iter().all(|s| s.result == -1.0));
    }
    assert_eq!((stats.tally.resigned, stats.tally.resign_checked), (4, 0));

    // Played out, White would have resigned, but the game reaches the cap and is
    // drawn: every such resignation would have been wrong.
    let (games, stats) = resigning(1.0);
    for g in &games {
        assert_eq!(g.would_resign, Some(Color::White));
        assert_eq!(g.outcome.result, KnownOutcome::Draw);
        assert_eq!(g.resign_false_positive(), Some(true));
    }
    assert_eq!(stats.tally.resigned, 0);
    assert_eq!(
        (
            stats.tally.resign_checked,
            stats.tally.resign_false_positives
        ),
        (4, 4)
    );
}

#[test]
fn with_a_playout_cap_only_full_searches_are_recorded() {
    let mut eval = UniformEvaluator;
    let mut side = search_side(&mut eval, 16);
    side.fast = Some(FastMoves {
        nodes: 2,
        full_fraction: 0.3,
    });
    let schedule = Schedule {
        games: 4,
        in_flight: 4,
        ..Schedule::default()
    };
    let (games, _) = play_all(Contest::SelfPlay(side), &rules(40), &schedule);
    let (mut full, mut fast) = (0, 0);
    for g in &games {
        let searched: Vec<&MoveStats> = g.searched.iter().flatten().collect();
        let full_moves = searched.iter().filter(|s| s.full).count();
        assert_eq!(g.samples.len(), full_moves, "one sample per full search");
        for s in &searched {
            if s.full {
                assert!(s.nodes >= 16, "{s:?}");
            }
        }
        full += full_moves;
        fast += searched.len() - full_moves;
    }
    assert!(full > 0 && fast > full, "{full} full, {fast} fast");
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

/// Two search sides from a position where White mates in one (Ra8) and Black has no
/// mate: side `spotter` finds it by its priors (the solver off), the uniform side does
/// not at two visits a move.
fn mate_in_one_match(spotter: usize) -> Vec<GameRecord> {
    let (mut s, mut u) = (MateSpotter, UniformEvaluator);
    let mut sides = Vec::new();
    let (first, second): (&mut dyn Evaluator, &mut dyn Evaluator) = if spotter == 0 {
        (&mut s, &mut u)
    } else {
        (&mut u, &mut s)
    };
    for (k, evaluator) in [first, second].into_iter().enumerate() {
        let mut side = search_side(evaluator, 2);
        side.name = ["A", "B"][k].to_string();
        side.params = SearchParams {
            root_noise: false,
            solver: false,
            ..side.params
        };
        side.record_samples = false;
        sides.push(Side::Search(side));
    }
    let sides: [Side; 2] = sides.try_into().map_err(|_| ()).unwrap();
    let schedule = Schedule {
        games: 4,
        in_flight: 4,
        paired: true,
        openings: vec![Opening {
            fen: "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1".to_string(),
            name: String::new(),
            castling: shakmaty::CastlingMode::Standard,
        }],
        ..Schedule::default()
    };
    play_all(Contest::Match(sides), &rules(200), &schedule).0
}

#[test]
fn the_leaves_of_each_side_reach_that_sides_evaluator() {
    for spotter in 0..2 {
        let games = mate_in_one_match(spotter);
        assert_eq!(games.len(), 4);
        for g in &games {
            if g.white == spotter {
                assert_eq!(
                    (g.plies, g.outcome.termination),
                    (1, Termination::Checkmate),
                    "game {}",
                    g.index
                );
                assert_eq!(g.score(spotter), 1.0);
            } else {
                assert!(g.plies > 1, "uniform priors miss the mate at two visits");
            }
        }
    }
}

#[test]
fn a_tally_counts_each_record_once_adds_up_and_reads_plies_as_a_sum_or_a_list() {
    let mut eval = UniformEvaluator;
    let schedule = Schedule {
        games: 6,
        in_flight: 3,
        ..Schedule::default()
    };
    let (games, stats) = play_all(
        Contest::SelfPlay(search_side(&mut eval, 8)),
        &rules(30),
        &schedule,
    );
    let mut tally = GameTally::default();
    for g in &games {
        tally.add(g);
    }
    assert_eq!(tally, stats.tally);
    assert_eq!(tally.games, 6);
    assert_eq!(tally.white_wins + tally.black_wins + tally.draws, 6);
    assert_eq!(tally.terminations.values().sum::<usize>(), 6);
    assert_eq!(tally.plies, games.iter().map(|g| g.plies).sum::<usize>());
    let mut twice = tally.clone();
    twice += &tally;
    assert_eq!((twice.games, twice.plies), (12, 2 * tally.plies));
    assert_eq!(
        twice.terminations.values().sum::<usize>(),
        2 * tally.terminations.values().sum::<usize>()
    );
    let json = serde_json::to_string(&tally).unwrap();
    assert_eq!(serde_json::from_str::<GameTally>(&json).unwrap(), tally);
    let listed: GameTally = serde_json::from_str(r#"{"games": 2, "plies": [30, 12]}"#).unwrap();
    assert_eq!((listed.games, listed.plies, listed.draws), (2, 42, 0));
}

fn stats(best_q: f32, played_q: Option<f32>) -> Option<MoveStats> {
    Some(MoveStats {
        nodes: 16,
        q: best_q,
        full: true,
        best_q,
        played_q,
    })
}

#[test]
fn deblunder_gives_the_positions_before_a_blunder_the_best_moves_q() {
    // White, Black (a blunder by 0.8 for Black), White, a move nobody searched; White won.
    let searched = [
        stats(0.5, Some(0.5)),
        stats(0.6, Some(-0.2)),
        stats(0.1, Some(0.1)),
        None,
    ];
    assert_eq!(
        value_targets(1.0, Color::White, &searched, 0.3),
        [-0.6, -0.6, 1.0, 1.0]
    );
    // Below the threshold, or off, or an unvisited played move: the result everywhere.
    assert_eq!(value_targets(1.0, Color::White, &searched, 0.9), [1.0; 4]);
    assert_eq!(value_targets(1.0, Color::White, &searched, 0.0), [1.0; 4]);
    let unvisited = [stats(0.5, None), stats(0.6, None)];
    assert_eq!(
        value_targets(-1.0, Color::Black, &unvisited, 0.1),
        [-1.0; 2]
    );
    // Black first: ply 0 is Black's, so its blunder's Q is negated for White.
    let black_first = [stats(0.4, Some(-0.4)), stats(0.0, Some(0.0))];
    assert_eq!(
        value_targets(0.0, Color::Black, &black_first, 0.5),
        [-0.4, 0.0]
    );
    // An earlier blunder takes over from a later one for the positions before it.
    let two = [
        stats(0.9, Some(0.0)),
        stats(0.0, Some(0.0)),
        stats(0.7, Some(-0.7)),
    ];
    assert_eq!(
        value_targets(-1.0, Color::White, &two, 0.5),
        [0.9, 0.7, 0.7]
    );
}

#[test]
fn the_plies_left_count_to_the_games_end_and_capped_games_have_none() {
    assert_eq!(plies_left(Termination::Checkmate, 10, 0), Some(10));
    assert_eq!(plies_left(Termination::Checkmate, 10, 9), Some(1));
    assert_eq!(plies_left(Termination::Resignation, 10, 10), Some(0));
    assert_eq!(plies_left(Termination::Repetition, 10, 11), None);
    for capped in [
        Termination::MaxPlies,
        Termination::AdjudicatedMaterial,
        Termination::AdjudicatedValue,
    ] {
        assert_eq!(plies_left(capped, 10, 3), None, "{capped:?}");
    }

    // Self-play from a mate in one: the mating side's position is one ply from the end.
    let mut spotter = MateSpotter;
    let mut side = search_side(&mut spotter, 8);
    side.params.root_noise = false;
    let schedule = Schedule {
        games: 2,
        in_flight: 2,
        openings: vec![Opening {
            fen: "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1".to_string(),
            name: String::new(),
            castling: shakmaty::CastlingMode::Standard,
        }],
        ..Schedule::default()
    };
    let (games, _) = play_all(Contest::SelfPlay(side), &rules(200), &schedule);
    for g in &games {
        assert_eq!(
            (g.plies, g.outcome.termination),
            (1, Termination::Checkmate)
        );
        let left: Vec<Option<u16>> = g.samples.iter().map(|s| s.plies_left).collect();
        assert_eq!(left, [Some(1)]);
    }

    // Games stopped at the cap teach no plies left; the resigned ones count to the
    // resignation.
    let mut eval = UniformEvaluator;
    let schedule = Schedule {
        games: 2,
        in_flight: 2,
        ..Schedule::default()
    };
    let (games, _) = play_all(
        Contest::SelfPlay(search_side(&mut eval, 4)),
        &rules(6),
        &schedule,
    );
    for g in &games {
        assert_eq!(g.outcome.termination, Termination::MaxPlies);
        assert_eq!(g.samples.len(), 6);
        assert!(g.samples.iter().all(|s| s.plies_left.is_none()));
    }
    let (games, _) = resigning(0.0);
    for g in &games {
        assert!(g.samples.iter().all(|s| s.plies_left == Some(0)));
    }
}
