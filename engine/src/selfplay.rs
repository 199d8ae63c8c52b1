//! Self-play: one network playing itself in many games at once, through the game runner
//! ([`crate::runner`]); every searched position becomes a training sample.

use crate::mcts::{Evaluator, SearchParams};
use crate::runner::{self, Contest, FastMoves, Rules, Schedule, SearchSide};
use std::ops::ControlFlow;
use std::time::Duration;

pub use crate::runner::{GameRecord, PlayStats, Sample};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SelfPlayConfig {
    /// Games to finish.
    pub games: usize,
    /// Games kept in flight at once.
    pub games_in_flight: usize,
    /// Root visits before each move (visits kept from the previous move count).
    pub simulations: u32,
    /// Ply cap, random opening plies and temperature.
    pub rules: Rules,
    /// `max_batch` is the leaves each game adds to a round's batch; `cache_entries` the
    /// size of the network's evaluation cache, shared by all games.
    pub search: SearchParams,
    /// Playout-cap randomisation: most moves searched to fewer visits and not recorded.
    #[serde(default)]
    pub fast: Option<FastMoves>,
    pub seed: u64,
    /// Stop after this long even if games are unfinished (benchmarks); their plies count
    /// as positions but they yield no record.
    #[serde(skip)]
    pub time_limit: Option<Duration>,
    /// Double-buffer the games in flight against an evaluator on its own thread: for a
    /// GPU, where the trees can be searched while it computes.
    #[serde(default)]
    pub pipeline: bool,
    /// The PGN `Round` of the first game, so that games played in several calls number on.
    #[serde(default = "first_round")]
    pub first_round: usize,
}

fn first_round() -> usize {
    1
}

impl Default for SelfPlayConfig {
    fn default() -> Self {
        SelfPlayConfig {
            games: 16,
            games_in_flight: 64,
            simulations: 25,
            rules: Rules::plain(150, 0, 30),
            search: SearchParams {
                max_batch: 4,
                ..SearchParams::self_play()
            },
            fast: None,
            seed: 1,
            time_limit: None,
            pipeline: false,
            first_round: 1,
        }
    }
}

/// Plays `cfg.games` games, calling `on_game` as each finishes.
pub fn play_games(
    cfg: &SelfPlayConfig,
    evaluator: &mut dyn Evaluator,
    mut on_game: impl FnMut(GameRecord),
) -> anyhow::Result<PlayStats> {
    let side = SearchSide {
        name: "Ember".to_string(),
        evaluator,
        params: cfg.search.clone(),
        nodes: cfg.simulations,
        record_samples: true,
        fast: cfg.fast,
    };
    let schedule = Schedule {
        games: cfg.games,
        in_flight: cfg.games_in_flight,
        seed: cfg.seed,
        first_round: cfg.first_round,
        event: "Ember self-play".to_string(),
        limit: runner::Limit::Nodes(cfg.simulations as u64),
        time_limit: cfg.time_limit,
        pipeline: cfg.pipeline,
        ..Schedule::default()
    };
    runner::play(Contest::SelfPlay(side), &cfg.rules, &schedule, |record| {
        on_game(record);
        ControlFlow::Continue(())
    })
}
