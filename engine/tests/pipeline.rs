//! Each pipeline stage runs on its own, as a distributed worker would run it: self-play
//! into a shard and PGN, a replay window from that shard, training steps over it, a
//! gating match, and a commit that a fresh reader of the run folder sees.

use candle_core::Device;
use ember_engine::matches::{Limit, MatchSpec, Opening};
use ember_engine::net::{NetConfig, Network, Precision};
use ember_engine::pipeline::commit::{commit, Iteration};
use ember_engine::pipeline::gating_stage::GatingStage;
use ember_engine::pipeline::run::{RunDir, RunState};
use ember_engine::pipeline::selfplay_stage::SelfPlayStage;
use ember_engine::pipeline::training_stage::TrainingStage;
use ember_engine::pipeline::Quiet;
use ember_engine::replay::ReplayWindow;
use ember_engine::selfplay::SelfPlayConfig;
use ember_engine::train::{TrainConfig, Trainer};

const TINY: NetConfig = NetConfig::plain(8, 1);

#[test]
fn stages_run_one_after_another_through_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path(), "r").unwrap();
    run.create_folders().unwrap();
    let best = Network::new(TINY, &Device::Cpu, 1).unwrap();

    // Self-play: 3 games, the first played alone, numbered 1..3 in the PGN.
    let shard = run.replay().join(RunDir::shard_name(1));
    let pgn = run.selfplay_pgn(1);
    let sp = SelfPlayStage {
        config: SelfPlayConfig {
            games: 3,
            games_in_flight: 3,
            simulations: 6,
            rules: ember_engine::runner::Rules {
                max_plies: 20,
                ..SelfPlayConfig::default().rules
            },
            ..SelfPlayConfig::default()
        },
        first_alone: Some(9),
    }
    .run(&best, Precision::F32, &shard, &pgn, &mut Quiet)
    .unwrap();
    assert_eq!(sp.stats.tally.games, 3);
    assert!(sp.first_game.is_some());
    let text = std::fs::read_to_string(&pgn).unwrap();
    let mut rounds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("[Round \""))
        .map(|r| r.trim_end_matches("\"]"))
        .collect();
    rounds.sort();
    assert_eq!(rounds, ["1", "2", "3"]);

    // The replay window from the shard file alone holds what self-play returned.
    let (window, stats) =
        ReplayWindow::load_listed(&run.replay(), &[RunDir::shard_name(1)], 1000).unwrap();
    assert_eq!(stats.skipped_corrupt, 0);
    assert_eq!(window.len(), sp.samples.len());
    let mut memory = ReplayWindow::new(1000);
    memory.push_samples(&sp.samples);
    assert!(
        window.iter().eq(memory.iter()),
        "the shard and memory windows agree"
    );

    // Training steps over it change the candidate.
    let candidate = Network::new(TINY, &Device::Cpu, 1).unwrap();
    let before = candidate.to_bytes().unwrap();
    let mut trainer = Trainer::new(candidate, TrainConfig::default()).unwrap();
    let tr = TrainingStage {
        steps: 3,
        batch: 16,
        seed: 4,
        targets: ember_engine::train::Targets {
            q_ratio: 0.25,
            mask_illegal: true,
            ..Default::default()
        },
    }
    .run(&mut trainer, &window, &mut Quiet)
    .unwrap();
    assert_eq!(tr.steps, 3);
    assert!(tr.loss_total.is_some_and(f64::is_finite));
    assert_ne!(trainer.network().to_bytes().unwrap(), before);

    // Gating: two games, promoted at a promotion score of 0.
    let gate = GatingStage {
        spec: MatchSpec {
            games: 2,
            limit: Limit::Nodes(4),
            openings: vec![Opening::start()],
            max_plies: 20,
            random_opening_plies: 4,
            search: ember_engine::SearchParams::for_matches(),
            concurrency: 2,
            sprt: None,
            seed: 1,
        },
        names: ("candidate".into(), "best".into()),
        promotion_score: 0.0,
    }
    .run(trainer.network(), &best, Precision::F32, &mut Quiet)
    .unwrap();
    assert_eq!(gate.games(), 2);
    assert!(gate.pgn().contains("[White \"candidate\"]"));
    assert!(gate.promoted);

    // The commit: a fresh reader sees iteration 1 with its shard and the new best.
    let bytes = trainer.network().to_bytes().unwrap();
    let it = Iteration {
        number: 1,
        candidate: &bytes,
        promoted: gate.promoted,
        snapshot: true,
        shard: Some(RunDir::shard_name(1)),
        worker_shards: Vec::new(),
        positions: sp.stats.positions as u64,
        games: sp.stats.tally.games as u64,
        elo: gate.elo,
    };
    let state = RunState::new(5);
    let next = it.next_state(&state, trainer.step());
    commit(&run, &next, &it, &trainer, &[]).unwrap();
    let read = run.read_state().unwrap().unwrap();
    assert_eq!(read, next);
    assert_eq!((read.iteration, read.best_iteration), (1, 1));
    assert_eq!(std::fs::read(run.best()).unwrap(), bytes);
    assert!(run.snapshot(1).exists() && run.train_state().exists());
    assert!(!run.pending(1).exists());
}
