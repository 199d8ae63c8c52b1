//! The command line: `train` (the default), `selfplay`, `bench`, `check`, `match`,
//! `gauntlet`, `export`, and the distributed pair `worker` and `learn`.
//! Every training number a preset sets can be overridden by a flag; a flag left out
//! keeps the preset's value, or the saved run's value when a run is resumed.

use crate::config::RunConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ember_engine::matches::Limit;
use ember_engine::mcts::RootRule;
use ember_engine::pipeline::settings::OptimizerName;
use ember_engine::players::PlayerSpec;
use ember_engine::stats::Sprt;
use ember_engine::train::ValueLoss;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "trainer",
    version,
    about = "Ember's trainer: training by self-play (on one machine or distributed), strength curve, \
publishing, matches and benchmarks",
    long_about = "Trains an Ember network from zero by self-play. `trainer` with no subcommand is \
`trainer train`.\n\n\
The default run (`--preset development`, sized for two CPU cores): a 32x3 network trained from random \
weights for 25 minutes of wall time (--time-budget; at most 200 iterations), each iteration 144 self-play \
games searched with Gumbel root search, a quarter of the moves at 16 simulations (the training \
samples) and the rest at 4; the \
strength curve every 25 iterations and at the last (20 games at 64 nodes against random, greedy, \
minimax:2 and the untrained network, drawn in runs/NAME/progress.svg); at the end the best \
network replaces models/latest.safetensors if it beats the network there. --preset quick is a one-minute smoke \
run, --preset production the shipped network's GPU recipe.\n\n\
Each iteration plays self-play games with the best network and trains a candidate on \
the replay window. By default there is no gating: every candidate becomes the best network, and the \
strength curve measures progress against fixed anchors (--strength-every, --strength-anchors). With \
--gating-games above 0 (the quick preset's 10) the candidate replaces the best network only when it \
reaches --promotion-score in a gating match. Everything lands in runs/NAME/.\n\n\
Publishing: at the strength curve's iterations (under --time-budget only at the end) and at the end of the run, the best network (once it is \
no longer the run's initial one) plays the network `ember` would otherwise play (MODELS/latest.safetensors, \
or the one built into the binaries when none is there) in a publishing match of --publish-games games, \
and replaces it only when the lower end of the 95% Elo interval is above 0 (--models-dir, --no-publish; \
`trainer export` publishes a network deliberately).\n\n\
Start again with the same --run to resume a run from its last complete iteration. `trainer worker` and \
`trainer learn` split the same iterations over machines: workers play, the learner trains.",
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub train: TrainArgs,

    /// Log level: error, warn, info, debug or trace (RUST_LOG, when set, refines it).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: log::LevelFilter,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train: self-play, training, the strength curve and publishing (gating with
    /// --gating-games), iteration after iteration (the default).
    Train(TrainArgs),
    /// Only play self-play games with the run's best network and add them to its replay data.
    Selfplay(TrainArgs),
    /// Measure encoding, network, training, search and self-play speed (JSON lines on stdout).
    Bench(BenchArgs),
    /// Compare a device's network outputs and training step with the CPU's (run first on a GPU).
    Check(CheckArgs),
    /// Play a match between two players (checkpoints, UCI engines, random, greedy): W/D/L, Elo with
    /// 95% intervals, LOS, optional SPRT.
    Match(MatchArgs),
    /// Play one player against a list of fixed opponents; one table out.
    Gauntlet(GauntletArgs),
    /// Tune search parameters by SPSA: the network against itself with every parameter
    /// perturbed at once, game pairs from the book at fixed nodes (JSON lines; resumes).
    Tune(TuneArgs),
    /// Copy a run's best network (or any checkpoint) to models/latest.safetensors, atomically,
    /// without a publishing match.
    Export(ExportArgs),
    /// Distributed self-play: play games with the run folder's published network and write
    /// them into it as shards, until stopped (or for --games). Needs nothing but the folder.
    Worker(WorkerArgs),
    /// Distributed training: take the workers' shards from the run folder into the replay
    /// window, train, and publish a network for them, iteration after iteration.
    Learn(LearnArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 5 iterations x 5 games x 20 simulations, a 10-game gating match each: a smoke run.
    Quick,
    /// 25 minutes of iterations (at most 200) of 144 games, Gumbel root search at 16 simulations (4 for the moves not recorded), a 32x3 network, a material share in the value target: at most 30 minutes on two CPU cores.
    Development,
    /// 64 iterations x 1024 games x 64 simulations (PUCT): the run that trained the shipped network (12 minutes on one H200).
    Production,
    /// 256 iterations x 1024 games x 128 simulations: the same recipe, longer (not yet run).
    Max,
}

/// Declares [`TrainArgs`], the flags of `train`, `selfplay` and `learn`, each once. An entry
/// `name: Option<T> => path` is a setting: `--name` overrides the [`RunConfig`] field at
/// `path`, in a new run's preset as in a resumed run's saved configuration. The other
/// entries say which run, and where its files go. From the list come the struct (its doc
/// comments are the help), `TrainArgs::SETTINGS`, [`TrainArgs::given`] and
/// [`TrainArgs::override_settings`].
macro_rules! train_args {
    ($( $(#[$attr:meta])* $name:ident : $ty:ty $(=> $($path:ident).+)? ,)*) => {
        #[derive(Args, Debug, Clone, Default)]
        pub struct TrainArgs {
            $( $(#[$attr])* #[arg(long)] pub $name: $ty, )*
        }

        impl TrainArgs {
            /// Every setting: its flag's field name and the [`RunConfig`] field it sets (the
            /// tests check each against `config.json`).
            #[cfg(test)]
            pub const SETTINGS: &[(&str, &str)] = &[
                $( $( (stringify!($name), stringify!($($path).+)), )? )*
            ];

            /// Whether the setting `name` (a field name, as in [`Self::SETTINGS`]) was given
            /// on the command line.
            ///
            /// # Panics
            /// When `name` is not a setting.
            pub fn given(&self, name: &str) -> bool {
                $( $(
                    if name == stringify!($name) {
                        let _ = stringify!($($path).+);
                        return self.$name.is_some();
                    }
                )? )*
                panic!("{name} is not a trainer setting")
            }

            /// Every setting given replaces its value in `cfg`.
            pub fn override_settings(&self, cfg: &mut RunConfig) {
                $( $( FromFlag::set(&mut cfg.$($path).+, &self.$name); )? )*
            }
        }
    };
}

/// A configuration field that a flag's value can set: the value itself, `Some` of it for
/// an optional field, `on`/`off` for a switch.
pub trait FromFlag<T> {
    fn from_flag(value: T) -> Self;

    /// Replaces `slot` when the flag was given.
    fn set(slot: &mut Self, flag: &Option<T>)
    where
        Self: Sized,
        T: Clone,
    {
        if let Some(v) = flag {
            *slot = Self::from_flag(v.clone());
        }
    }
}

impl<T> FromFlag<T> for T {
    fn from_flag(value: T) -> T {
        value
    }
}

impl<T> FromFlag<T> for Option<T> {
    fn from_flag(value: T) -> Option<T> {
        Some(value)
    }
}

impl FromFlag<OnOff> for bool {
    fn from_flag(value: OnOff) -> bool {
        value == OnOff::On
    }
}

train_args! {
    /// Sizes of the run; flags below override single numbers. [default: development]
    #[arg(value_enum)]
    preset: Option<Preset>,
    /// Training iterations (self-play, training, then gating and the strength curve where they are
    /// on). Resuming with a larger number extends a run.
    iterations: Option<u64> => schedule.iterations,
    /// Minutes of wall time after which the run starts no new iteration (whichever of this
    /// and --iterations comes first ends it); the learning-rate and target schedules then
    /// follow the share of this time spent. For comparisons at equal wall time.
    time_budget: Option<f64> => schedule.time_budget,
    /// Self-play games per iteration. [default: 144 development, 5 quick, 1024 production and max]
    games: Option<usize> => selfplay.games,
    /// MCTS visits per move in self-play and gating. [default: 16 development, 20 quick, 64
    /// production, 128 max]
    simulations: Option<u32> => selfplay.simulations,
    /// Network width (convolution filters). [default: 32 development, 64 otherwise]
    filters: Option<usize> => net.filters,
    /// Residual blocks. [default: 3]
    blocks: Option<usize> => net.blocks,
    /// Hidden units of a squeeze-and-excitation unit in every residual block (the block's
    /// channel means set a scale and a shift per channel); 0: plain blocks. [default: 0]
    se_channels: Option<usize> => net.se_channels,
    /// An auxiliary head that learns the opponent's reply (the move played next), for
    /// training only; --reply-weight weighs its loss. [default: off]
    reply_head: Option<OnOff> => net.reply_head,
    /// Weight of the reply head's loss beside the policy and value losses. [default: 0.15]
    reply_weight: Option<f32> => training.reply_weight,
    /// A moves-left head beside the value head that learns the plies to the game's end
    /// (games stopped at the ply cap teach it nothing); the search then prefers the
    /// faster win and the slower loss (matches and `ember`; self-play with
    /// --moves-left-slope). --moves-left-weight weighs its loss. [default: off]
    moves_left_head: Option<OnOff> => net.moves_left_head,
    /// Weight of the moves-left head's Huber loss (on plies / 20) beside the policy and
    /// value losses. [default: 0.25]
    moves_left_weight: Option<f32> => training.moves_left_weight,
    /// Training minibatch size; never more than the replay data on hand. [default: 256]
    batch_size: Option<usize> => training.batch_size,
    /// Training steps per iteration. [default: ceil(--sample-reuse x new positions / batch size),
    /// within 8..=2000, so each new position is drawn about --sample-reuse times]
    train_steps: Option<usize> => training.train_steps,
    /// Learning rate. [default: 0.002 development, production and max; otherwise 0.001 with adamw,
    /// 0.02 with sgd]
    lr: Option<f64> => training.lr,
    /// Optimiser: sgd or adamw. [default: adamw]
    optimizer: Option<OptimizerName> => training.optimizer,
    /// L2 regularisation weight on convolution and dense weights. [default: 0.0001]
    weight_decay: Option<f64> => training.weight_decay,
    /// Value loss: wdl (cross-entropy of the win/draw/loss head) or mse (squared error of
    /// win - loss). [default: wdl]
    value_loss: Option<ValueLoss> => training.value_loss,
    /// auto (CUDA when built with it and present, else CPU), cpu, cuda or cuda:N. [default: auto]
    device: Option<String> => device,
    /// Training compute precision: auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16. [default: auto]
    precision: Option<String> => precision,
    /// Run name: the folder under --runs-dir. An existing run is resumed. [default: PRESET-YYYYmmdd-HHMMSS]
    run: Option<String>,
    /// Folder holding the runs.
    #[arg(default_value = "runs")]
    runs_dir: PathBuf,
    /// Folder the run publishes to, as latest.safetensors (the network `ember` plays): only a
    /// network that won the publishing match against the one there (or, when none is there,
    /// against the network built into the binaries) replaces it.
    #[arg(default_value = "models")]
    models_dir: PathBuf,
    /// Publish nothing to --models-dir and play no publishing match; the run's networks stay in
    /// its folder, and `trainer export` publishes one deliberately.
    no_publish: bool,
    /// Games of the publishing match, at --strength-nodes visits a move; the run publishes when
    /// the lower end of the 95% Elo interval (over game pairs) is above 0. [default: 40]
    publish_games: Option<usize> => strength.publish_games,
    /// A new run starts from this checkpoint's weights instead of random ones (its iteration 0);
    /// the checkpoint's architecture sets --filters, --blocks and --se-channels. Ignored when resuming.
    init: Option<PathBuf>,
    /// Seed of every random choice in the run (network initialisation, games, minibatches). [default: from the clock]
    seed: Option<u64> => seed,
    /// Replay window: a fixed number of newest positions training samples from. [default:
    /// derived, see --replay-iterations]
    replay_window: Option<usize> => training.replay_window,
    /// The replay window holds the positions of the newest this many iterations (it follows
    /// the positions each iteration makes) unless --replay-window fixes it. [default: 5 quick,
    /// 20 development, 8 production, 16 max]
    replay_iterations: Option<usize> => training.replay_iterations,
    /// Gating games, candidate vs best, colours alternated (rounded up to even; 0 promotes every
    /// candidate without a match). [default: 10 quick, 0 otherwise]
    gating_games: Option<usize> => gating.gating_games,
    /// Gating score (0 to 1) the candidate needs to be promoted; 0 promotes every candidate.
    /// [default: 0.55]
    promotion_score: Option<f64> => gating.promotion_score,
    /// Self-play games played at once (their leaves share one network call). [default: min(games, 64) on
    /// CPU, min(games, 512) on CUDA]
    games_in_flight: Option<usize> => selfplay.games_in_flight,
    /// Keep a numbered checkpoint runs/NAME/iter-NNNNNN.safetensors every K iterations. [default: 1 quick,
    /// 10 development, 4 production, 8 max]
    checkpoint_every: Option<u64> => schedule.checkpoint_every,
    /// Plies after which a game is stopped and adjudicated (see --cap-material, --cap-value).
    /// [default: 150 quick, 100 development, 200 production and max]
    max_plies: Option<u32> => selfplay.max_plies,
    /// Uniformly random legal moves at the start of each self-play game. [default: 2]
    random_opening_plies: Option<u32> => selfplay.random_opening_plies,
    /// Plies during which self-play samples its moves by visit count. [default: 30]
    temperature_plies: Option<u32> => selfplay.temperature_plies,
    /// A self-play game at the ply cap is won by the side ahead by this many pawns of
    /// material (0: off). [default: 1 development, 3 otherwise]
    cap_material: Option<u32> => selfplay.cap_material,
    /// ... otherwise by the side whose search valued the position at least this root Q
    /// (0: off). [default: 0]
    cap_value: Option<f32> => selfplay.cap_value,
    /// Stop adjudicating at the ply cap after this iteration (0: never stop). [default: 40
    /// production, 160 max, 0 otherwise]
    adjudicate_until: Option<u64> => selfplay.adjudicate_until,
    /// Resign when the root Q is below minus this (0: never resign). [default: 0]
    resign_threshold: Option<f32> => selfplay.resign_threshold,
    /// Fraction of self-play games played out to count resignation's false positives.
    /// [default: 0.1]
    resign_playthrough: Option<f32> => selfplay.resign_playthrough,
    /// Playout cap: visits of the self-play moves that are not recorded (0: every move
    /// gets --simulations and is recorded). [default: 4 development, 16 production, 32 max, 0 quick]
    fast_simulations: Option<u32> => selfplay.fast_simulations,
    /// Playout cap: the chance that a move gets --simulations and is recorded. [default: 0.25]
    full_search_fraction: Option<f32> => selfplay.full_search_fraction,
    /// Treat a position repeated once inside the search tree as a draw in self-play. [default: off]
    tree_twofold_draw: Option<OnOff> => selfplay.tree_twofold_draw,
    /// The MCTS-solver in self-play's search: a mate found in the tree proves its line.
    /// Matches and the UCI engine always use it. [default: off]
    solver: Option<OnOff> => selfplay.solver,
    /// Self-play's root rule: puct (Dirichlet noise, visit-count targets) or gumbel (Gumbel
    /// noise, sequential halving among --gumbel-considered moves, the move played by
    /// g + logits + sigma(q), the policy target softmax(logits + sigma(completed Q)); no
    /// temperature). [default: gumbel development, puct otherwise]
    root_rule: Option<RootRule> => selfplay.root_rule,
    /// Gumbel: the most root moves sequential halving starts from. [default: 16]
    gumbel_considered: Option<u32> => selfplay.gumbel_considered,
    /// Gumbel: c_visit of sigma(q) = (c_visit + max N) * c_scale * q. [default: 50]
    gumbel_c_visit: Option<f32> => selfplay.gumbel_c_visit,
    /// Gumbel: c_scale of sigma(q). [default: 1]
    gumbel_c_scale: Option<f32> => selfplay.gumbel_c_scale,
    /// Value-target hygiene (lc0's deblunder): when a self-play move's Q was worse than the
    /// best move's by more than this (a move sampled for exploration), the positions before it
    /// learn the best move's Q instead of the game's result. 0: off. [default: 0]
    deblunder: Option<f32> => selfplay.deblunder,
    /// The moves-left utility in self-play's search (lc0's MovesLeftSlope): with a network
    /// that has the moves-left head, PUCT prefers the shorter line when winning and the
    /// longer one when losing, this much per ply of difference (lc0's default 0.0027;
    /// capped at 0.0345). Matches, the strength curve and the UCI engine use it whenever
    /// the network has the head. 0: off. [default: 0]
    moves_left_slope: Option<f32> => selfplay.moves_left_slope,
    /// Weight of the search's root Q in the value target (the rest is the game result).
    /// [default: 0]
    q_ratio: Option<f32> => training.q_ratio,
    /// The weight of the root Q at the last iteration, moving linearly from --q-ratio.
    q_ratio_final: Option<f32> => training.q_ratio_final,
    /// Weight of the position's material balance, tanh(pawns / 4) for the side to move, in
    /// the value target (taken from the game result's share). [default: 0.5 development, 0 otherwise]
    material_ratio: Option<f32> => training.material_ratio,
    /// The material weight at the last iteration, moving linearly from --material-ratio.
    /// [default: 0.25 development, none otherwise]
    material_ratio_final: Option<f32> => training.material_ratio_final,
    /// Times each new position is drawn into a minibatch on average; sets the training
    /// steps of an iteration unless --train-steps is given. [default: 2 development, 4 otherwise]
    sample_reuse: Option<f64> => training.sample_reuse,
    /// Learning rate at the last iteration, reached by half a cosine from --lr (none: --lr
    /// throughout). [default: 0.0002 development and production, 0.0001 max, none quick]
    lr_final: Option<f64> => training.lr_final,
    /// Steps at the start of the run over which the learning rate rises from near 0. [default: 30
    /// development, 50 production and max, 0 quick]
    warmup_steps: Option<u64> => training.warmup_steps,
    /// Softmax of the policy over the legal moves only. [default: on]
    mask_illegal: Option<OnOff> => training.mask_illegal,
    /// Measure the network against fixed anchors every K iterations and at the last one
    /// (0: never). [default: 20 development, 8 production, 16 max, 0 quick]
    strength_every: Option<u64> => strength.strength_every,
    /// Games per anchor in those measurements. [default: 20]
    strength_games: Option<usize> => strength.strength_games,
    /// Visits a move in those measurements. [default: 64]
    strength_nodes: Option<u32> => strength.strength_nodes,
    /// Anchors, comma-separated: random, greedy, minimax:D, iteration0 (the run's untrained
    /// network) or any player (uci:/usr/games/stockfish;Skill Level=0). [default:
    /// random,greedy,minimax:2,iteration0]
    #[arg(value_delimiter = ',')]
    strength_anchors: Option<Vec<String>> => strength.strength_anchors,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Run only these benchmarks (encode, nn, train, mcts_uniform, selfplay); repeatable.
    #[arg(long)]
    pub only: Vec<String>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Seconds per measurement of encode, nn (per batch size) and mcts_uniform.
    #[arg(long, default_value_t = 1.5)]
    pub seconds: f64,
    /// Seconds of the self-play measurement.
    #[arg(long, default_value_t = 15.0)]
    pub selfplay_seconds: f64,
    /// Network width of the nn and self-play benchmarks.
    #[arg(long, default_value_t = 64)]
    pub filters: usize,
    /// Residual blocks of the nn and self-play benchmarks.
    #[arg(long, default_value_t = 3)]
    pub blocks: usize,
    /// Squeeze-and-excitation hidden units per block of the nn and self-play benchmarks
    /// (0: plain blocks).
    #[arg(long, default_value_t = 0)]
    pub se_channels: usize,
    /// Self-play precision on CUDA: auto (bf16), f32, bf16 or f16. The CPU always runs f32.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Precisions of the nn benchmark on CUDA, comma-separated [default: f32,bf16,f16].
    #[arg(long, value_delimiter = ',')]
    pub nn_precisions: Vec<String>,
    /// Batch sizes of the nn benchmark, comma-separated [default: 1,8,64,256 on the CPU,
    /// 1,8,64,256,1024,4096 on CUDA].
    #[arg(long, value_delimiter = ',')]
    pub batches: Vec<usize>,
    /// Batch size of the training-step benchmark [default: 256 on the CPU, 1024 on CUDA].
    #[arg(long)]
    pub train_batch: Option<usize>,
    /// Precisions of the training-step benchmark, comma-separated [default: f32 on the
    /// CPU, f32,bf16 on CUDA].
    #[arg(long, value_delimiter = ',')]
    pub train_precisions: Vec<String>,
    /// Self-play games in flight [default: 128 on the CPU, 1024 on CUDA].
    #[arg(long)]
    pub games_in_flight: Option<usize>,
    /// Leaves each self-play game adds to a batch.
    #[arg(long)]
    pub leaves_per_game: Option<usize>,
    /// Double-buffer self-play against the evaluator (on, off) [default: on for CUDA].
    #[arg(long)]
    pub pipeline: Option<OnOff>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// The device to check against the CPU: cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// The network compared; without it, a random network with randomised batch-norm
    /// statistics (so that every layer matters).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Positions compared.
    #[arg(long, default_value_t = 512)]
    pub positions: usize,
    /// Batch of the compared training step.
    #[arg(long, default_value_t = 256)]
    pub train_batch: usize,
}

/// How the games of a match or gauntlet are played.
#[derive(Args, Debug, Clone)]
pub struct GameArgs {
    /// Games per match, colours alternated over each opening (rounded up to even; at least 1).
    #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub games: usize,
    /// Search nodes per move (Ember: root visits; UCI engines: `go nodes`). The default limit.
    #[arg(long, alias = "simulations", default_value_t = 800, conflicts_with_all = ["movetime", "tc"])]
    pub nodes: u64,
    /// Milliseconds per move instead of nodes.
    #[arg(long, conflicts_with = "tc")]
    pub movetime: Option<u64>,
    /// A game clock instead of nodes: BASE+INC in seconds (e.g. 10+0.1). A player out of time loses.
    #[arg(long)]
    pub tc: Option<Limit>,
    /// Opening positions, EPD or PGN; each is played with both colours. [default: the
    /// book in the repository, data/openings/ember-120.epd; with --chess960,
    /// data/openings/chess960-20.epd]
    #[arg(long)]
    pub openings: Option<PathBuf>,
    /// Chess960: the openings' castling rights name any rook (X-FEN or Shredder-FEN),
    /// external engines get `UCI_Chess960` and castling as the king taking its rook, and
    /// the PGN is tagged `[Variant "Chess960"]`.
    #[arg(long)]
    pub chess960: bool,
    /// Sequential probability ratio test `elo0,elo1[,alpha,beta]` (alpha and beta 0.05 by
    /// default): the match stops when either hypothesis is accepted.
    #[arg(long)]
    pub sprt: Option<Sprt>,
    /// Games played at once. [default: 16 under --nodes, where Ember's searches of all
    /// games share one network call a round; 1 under a clock or a move time, so that
    /// players do not share cores while their time runs]
    #[arg(long, alias = "games-in-flight")]
    pub concurrency: Option<usize>,
    /// Plies after which a game is adjudicated a draw.
    #[arg(long, default_value_t = 300)]
    pub max_plies: u32,
    /// Seed of the random and greedy players.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where Ember players run: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Ember's inference precision: auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Save every game to this PGN file.
    #[arg(long)]
    pub pgn: Option<PathBuf>,
    /// Ember's MCTS-solver (mates found in the tree prove their lines), on or off.
    #[arg(long, value_enum, default_value = "on")]
    pub solver: OnOff,
}

#[derive(Args, Debug, Clone)]
pub struct MatchArgs {
    /// First player (the score and Elo are from its side): ember:PATH, ember:embedded,
    /// uci:COMMAND[;NAME=VALUE...], random, greedy, minimax:D (material alpha-beta to D
    /// plies and a capture search), or a .safetensors file.
    #[arg(long)]
    pub a: PlayerSpec,
    /// Second player, as --a.
    #[arg(long)]
    pub b: PlayerSpec,
    #[command(flatten)]
    pub play: GameArgs,
}

#[derive(Args, Debug, Clone)]
pub struct GauntletArgs {
    /// The player measured, as `match --a`.
    #[arg(long)]
    pub player: PlayerSpec,
    /// Fixed opponents, comma-separated (e.g. random,greedy,minimax:2,uci:/usr/games/stockfish;Skill Level=0).
    #[arg(long, value_delimiter = ',', required = true)]
    pub opponents: Vec<PlayerSpec>,
    #[command(flatten)]
    pub play: GameArgs,
}

#[derive(Args, Debug, Clone)]
pub struct TuneArgs {
    /// The network searched by both sides: ember:PATH (or a .safetensors file) or
    /// ember:embedded.
    #[arg(long, default_value = "ember:embedded")]
    pub player: PlayerSpec,
    /// A search parameter to tune, NAME,MIN,MAX,C_END[,R_END]: a numeric field of the
    /// search's parameters (cpuct, cpuct_base, cpuct_factor, fpu_reduction,
    /// policy_temperature, ...) with its bounds, the perturbation at the last step, and
    /// fishtest's r_end (a_end / c_end^2; default 0.002). Repeat for each parameter;
    /// each starts from the value matches play with.
    #[arg(long = "param", required = true)]
    pub params: Vec<crate::tune::TuneParam>,
    /// SPSA steps; each plays --games games (game pairs: one opening, both colours) of
    /// theta + c against theta - c.
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    /// The trajectory, one JSON line per step (theta after it, both sides, gains,
    /// W/D/L). Started again with the same file, tuning goes on after its last step.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub play: GameArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Export this run's best network (runs/NAME/best.safetensors).
    #[arg(long, conflicts_with = "checkpoint")]
    pub run: Option<String>,
    /// Export this checkpoint file.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Folder holding the runs.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Destination, replaced atomically.
    #[arg(long, default_value = "models/latest.safetensors")]
    pub to: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The run folder the learner publishes networks into: a path on shared storage, or
    /// s3://BUCKET/PREFIX (a trainer built with the `s3` feature).
    #[arg(long)]
    pub run_dir: PathBuf,
    /// Local folder the worker plays each shard into before storing it
    /// (default: the system's temporary folder).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Where the network runs: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Games played at once (default: the run's).
    #[arg(long)]
    pub games_in_flight: Option<usize>,
    /// Games per shard (default: the run's games per iteration). The worker picks up a
    /// newly published network between shards.
    #[arg(long)]
    pub shard_games: Option<usize>,
    /// Stop after this many games (default: play until stopped).
    #[arg(long)]
    pub games: Option<usize>,
    /// This worker's name in shard names: letters, digits, '_' and '.' (default: HOST.PID).
    /// A worker started again under the same id goes on after its last complete shard.
    #[arg(long)]
    pub worker_id: Option<String>,
    /// CPU threads for the search and the network (default: all cores). On a machine shared
    /// by several workers, give each its share: one-thread workers scale with cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Tries of each storage operation before the worker gives up (waits 0.5 s, 1 s, 2 s ...
    /// at most 30 s between tries).
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
}

#[derive(Args, Debug, Clone)]
pub struct LearnArgs {
    /// The learner's run folder (checkpoints, state, metrics); also where workers meet it,
    /// unless --exchange says otherwise.
    #[arg(long)]
    pub run_dir: PathBuf,
    /// Where workers read networks and write shards, if not the run folder: a path on
    /// shared storage, or s3://BUCKET/PREFIX (a trainer built with the `s3` feature).
    #[arg(long)]
    pub exchange: Option<PathBuf>,
    /// Training steps per published network: an iteration waits until the new shards hold
    /// enough positions for this many steps at --sample-reuse, then trains and publishes.
    #[arg(long, default_value_t = 32)]
    pub publish_steps: usize,
    /// Stop when no new shard has arrived for this many seconds (after training on what
    /// did arrive). Default: wait for workers forever.
    #[arg(long)]
    pub idle_exit: Option<f64>,
    #[command(flatten)]
    pub train: TrainArgs,
}
