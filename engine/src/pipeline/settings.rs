//! A training run's settings, stage by stage: what the trainer's `RunConfig` is composed
//! of, what `config.json` holds (flattened, one field per command-line flag), and what
//! each stage is built from. A new run's values are stated once, in the trainer's presets;
//! the only values here are those [`before_the_field`] gives a `config.json` written before
//! a field existed.

use super::gating_stage::GatingStage;
use super::publish_stage::PublishStage;
use super::selfplay_stage::SelfPlayStage;
use super::strength_stage::{Anchor, BookMatch, StrengthStage};
use crate::matches::{Limit, MatchSpec, Opening};
use crate::mcts::{RootRule, SearchParams};
use crate::net::Precision;
use crate::players::PlayerSpec;
use crate::replay::WindowSize;
use crate::runner::{CapRule, FastMoves, Resign, Rules};
use crate::selfplay::SelfPlayConfig;
use crate::train::{LrSchedule, OptimizerKind, Targets, TrainConfig, ValueLoss};
use serde::{Deserialize, Serialize};

/// The values a run whose `config.json` was written before a field existed ran with:
/// reading such a file gives the field this value (a field marked `#[serde(default)]`
/// without a function reads as 0, off or none). They record what older runs did and do
/// not follow the presets, which set every field of a new run.
mod before_the_field {
    pub fn resign_playthrough() -> f32 {
        0.1
    }

    pub fn full_search_fraction() -> f32 {
        0.25
    }

    pub fn replay_iterations() -> usize {
        20
    }

    pub fn mask_illegal() -> bool {
        true
    }

    pub fn sample_reuse() -> f64 {
        4.0
    }

    pub fn strength_games() -> usize {
        20
    }

    pub fn strength_nodes() -> u32 {
        64
    }

    pub fn strength_anchors() -> Vec<String> {
        vec!["random".into(), "greedy".into(), "iteration0".into()]
    }

    pub fn publish_games() -> usize {
        40
    }

    pub fn gumbel_considered() -> u32 {
        crate::mcts::SearchParams::default().gumbel_considered
    }

    pub fn gumbel_c_visit() -> f32 {
        crate::mcts::SearchParams::default().gumbel_c_visit
    }

    pub fn gumbel_c_scale() -> f32 {
        crate::mcts::SearchParams::default().gumbel_c_scale
    }

    pub fn reply_weight() -> f32 {
        crate::train::DEFAULT_REPLY_WEIGHT
    }

    pub fn moves_left_weight() -> f32 {
        crate::train::DEFAULT_MOVES_LEFT_WEIGHT
    }
}

/// How many iterations, and how often an iteration's candidate is kept as a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Schedule {
    pub iterations: u64,
    pub checkpoint_every: u64,
    /// Minutes of wall time after which the run starts no new iteration (`None`: only
    /// `iterations` ends it). With a budget the learning-rate and target schedules
    /// follow the share of the budget spent instead of the share of iterations, so that
    /// runs of different speeds compared at equal time each end their schedules.
    #[serde(default)]
    pub time_budget: Option<f64>,
}

impl Schedule {
    /// How far through its schedules iteration `it` is, in [0, 1], `spent_s` the wall
    /// time of the completed iterations: the share of the time budget spent, or of the
    /// iterations done.
    pub fn progress(&self, it: u64, spent_s: f64) -> f64 {
        match self.time_budget {
            Some(minutes) => (spent_s / (minutes * 60.0).max(1e-9)).clamp(0.0, 1.0),
            None if self.iterations > 1 => {
                (it.saturating_sub(1) as f64 / (self.iterations - 1) as f64).min(1.0)
            }
            None => 1.0,
        }
    }

    /// Whether the time budget is spent after `spent_s` seconds of iterations.
    pub fn budget_spent(&self, spent_s: f64) -> bool {
        self.time_budget.is_some_and(|m| spent_s >= m * 60.0)
    }

    /// Whether iteration `it` is the run's last: the last of `iterations`, or, under a
    /// time budget, one whose own time (`this_s`, so far and still to come) spends the
    /// budget after the `spent_s` of the completed iterations, so that no iteration
    /// follows it.
    pub fn is_last(&self, it: u64, spent_s: f64, this_s: f64) -> bool {
        it >= self.iterations || self.budget_spent(spent_s + this_s)
    }

    /// Whether iteration `it` keeps `iter-NNNNNN.safetensors` (every k-th, and the last).
    pub fn snapshot(&self, it: u64, last: bool) -> bool {
        it.is_multiple_of(self.checkpoint_every) || last
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SelfPlaySettings {
    pub games: usize,
    /// Root visits per move, in self-play and gating.
    pub simulations: u32,
    /// `None`: min(games, 64) on a CPU, min(games, 512) on a GPU.
    pub games_in_flight: Option<usize>,
    pub max_plies: u32,
    /// Moves sampled by visit count before the most visited move is played.
    pub temperature_plies: u32,
    /// Leaves each game adds to a round's batch (the search's `max_batch`).
    pub leaves_per_game: usize,
    /// Uniformly random legal moves at the start of each game, so that games differ.
    #[serde(default)]
    pub random_opening_plies: u32,
    /// At the ply cap, a lead of this many pawns of material wins (0: off).
    #[serde(default)]
    pub cap_material: u32,
    /// At the ply cap, a root Q of at least this for the last mover wins (0: off).
    #[serde(default)]
    pub cap_value: f32,
    /// The ply-cap adjudication stops after this iteration (0: it never stops).
    #[serde(default)]
    pub adjudicate_until: u64,
    /// Resign when the root Q is below minus this (0: never resign).
    #[serde(default)]
    pub resign_threshold: f32,
    /// Fraction of games played out to measure resignation's false positives.
    #[serde(default = "before_the_field::resign_playthrough")]
    pub resign_playthrough: f32,
    /// Playout cap: root visits of a move that is not recorded (0: every move is a full,
    /// recorded search).
    #[serde(default)]
    pub fast_simulations: u32,
    /// Playout cap: the chance that a move gets the full search and is recorded.
    #[serde(default = "before_the_field::full_search_fraction")]
    pub full_search_fraction: f32,
    /// The search treats a position repeated once inside its tree as a draw (lc0's match
    /// rule); off in self-play by default, so that the search does not steer into
    /// repetitions.
    #[serde(default)]
    pub tree_twofold_draw: bool,
    /// The MCTS-solver in self-play's search (mates found in the tree prove their
    /// lines); play and matches always use it.
    #[serde(default)]
    pub solver: bool,
    /// How self-play's searches treat the root: PUCT with Dirichlet noise, or Gumbel
    /// noise with sequential halving and the completed-Q policy target.
    #[serde(default)]
    pub root_rule: RootRule,
    /// Gumbel: the most root moves sequential halving starts from.
    #[serde(default = "before_the_field::gumbel_considered")]
    pub gumbel_considered: u32,
    /// Gumbel: `c_visit` of `sigma(q) = (c_visit + max N) * c_scale * q`.
    #[serde(default = "before_the_field::gumbel_c_visit")]
    pub gumbel_c_visit: f32,
    /// Gumbel: `c_scale` of the same.
    #[serde(default = "before_the_field::gumbel_c_scale")]
    pub gumbel_c_scale: f32,
    /// Value-target hygiene (lc0's deblunder): a searched move whose Q was worse than the
    /// best move's by more than this, played for exploration, does not teach the earlier
    /// positions its result; they learn the best move's Q instead. 0: off.
    #[serde(default)]
    pub deblunder: f32,
    /// The moves-left utility's slope in self-play's search (lc0's MovesLeftSlope; its
    /// other constants are the search's defaults). It acts only for a network with the
    /// moves-left head; 0, the value of runs from before it, turns it off.
    #[serde(default)]
    pub moves_left_slope: f32,
}

impl SelfPlaySettings {
    pub fn games_in_flight(&self, gpu: bool) -> usize {
        let cap = if gpu { 512 } else { 64 };
        self.games_in_flight.unwrap_or(self.games.min(cap)).max(1)
    }

    /// The rules of self-play games in iteration `iteration`.
    pub fn rules(&self, iteration: u64) -> Rules {
        let adjudicating = self.adjudicate_until == 0 || iteration <= self.adjudicate_until;
        Rules {
            max_plies: self.max_plies,
            temperature_plies: self.temperature_plies,
            random_opening_plies: self.random_opening_plies,
            cap: if adjudicating {
                CapRule {
                    material: self.cap_material,
                    value: self.cap_value,
                }
            } else {
                CapRule::default()
            },
            resign: (self.resign_threshold > 0.0).then_some(Resign {
                threshold: self.resign_threshold,
                playthrough: self.resign_playthrough,
            }),
            deblunder: self.deblunder,
        }
    }

    /// The self-play stage of iteration `iteration`, its games seeded with `seed`.
    pub fn stage(
        &self,
        gpu: bool,
        iteration: u64,
        seed: u64,
        first_alone: Option<u64>,
    ) -> SelfPlayStage {
        SelfPlayStage {
            config: SelfPlayConfig {
                games: self.games,
                games_in_flight: self.games_in_flight(gpu),
                simulations: self.simulations,
                rules: self.rules(iteration),
                search: SearchParams {
                    max_batch: self.leaves_per_game,
                    tree_twofold_draw: self.tree_twofold_draw,
                    solver: self.solver,
                    root_rule: self.root_rule,
                    gumbel_considered: self.gumbel_considered,
                    gumbel_c_visit: self.gumbel_c_visit,
                    gumbel_c_scale: self.gumbel_c_scale,
                    moves_left_slope: self.moves_left_slope,
                    ..SearchParams::self_play()
                },
                fast: (self.fast_simulations > 0).then_some(FastMoves {
                    nodes: self.fast_simulations,
                    full_fraction: self.full_search_fraction,
                }),
                seed,
                time_limit: None,
                // On a GPU the trees of half the games are searched while it evaluates
                // the other half's leaves.
                pipeline: gpu,
                first_round: 1,
            },
            first_alone,
        }
    }
}

/// The optimiser by name, as `config.json` and `--optimizer` write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    /// SGD with momentum 0.9 (AlphaZero's optimiser); default lr 0.02.
    Sgd,
    /// AdamW (beta1 0.9, beta2 0.999); default lr 0.001.
    Adamw,
}

impl OptimizerName {
    /// The optimiser with its default hyper-parameters.
    pub fn kind(self) -> OptimizerKind {
        match self {
            OptimizerName::Sgd => OptimizerKind::sgd(),
            OptimizerName::Adamw => OptimizerKind::adamw(),
        }
    }
}

impl std::str::FromStr for OptimizerName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerName::Sgd),
            "adamw" => Ok(OptimizerName::Adamw),
            other => Err(format!(
                "unknown optimiser {other:?}: expected sgd or adamw"
            )),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainingSettings {
    pub batch_size: usize,
    /// `None`: chosen each iteration from the positions it made ([`Self::steps_for`]).
    pub train_steps: Option<usize>,
    pub lr: f64,
    pub optimizer: OptimizerName,
    pub weight_decay: f64,
    pub value_loss: ValueLoss,
    /// A fixed replay window in positions (`None`: `replay_iterations` iterations' worth).
    #[serde(default)]
    pub replay_window: Option<usize>,
    /// The replay window holds the positions of the newest this many self-play
    /// iterations, when `replay_window` does not fix it.
    #[serde(default = "before_the_field::replay_iterations")]
    pub replay_iterations: usize,
    /// Weight of the root Q in the value target (the rest is the game's result).
    #[serde(default)]
    pub q_ratio: f32,
    /// The weight the root Q has at the last iteration; in between it moves linearly
    /// (`None`: `q_ratio` throughout).
    #[serde(default)]
    pub q_ratio_final: Option<f32>,
    /// Weight of the material balance in the value target ([`Targets::material_ratio`]).
    #[serde(default)]
    pub material_ratio: f32,
    /// The material weight at the last iteration, moving linearly from `material_ratio`
    /// (`None`: `material_ratio` throughout).
    #[serde(default)]
    pub material_ratio_final: Option<f32>,
    /// The policy's softmax runs over the legal moves only.
    #[serde(default = "before_the_field::mask_illegal")]
    pub mask_illegal: bool,
    /// Times each new position is drawn into a minibatch, on average (the training steps
    /// of an iteration follow from it; `train_steps` overrides).
    #[serde(default = "before_the_field::sample_reuse")]
    pub sample_reuse: f64,
    /// The learning rate at the last iteration: the rate follows half a cosine from `lr`
    /// at the first iteration to this (`None`: `lr` throughout).
    #[serde(default)]
    pub lr_final: Option<f64>,
    /// Training steps at the start of the run over which the rate rises from near 0.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Weight of the reply head's loss, for a network with the head.
    #[serde(default = "before_the_field::reply_weight")]
    pub reply_weight: f32,
    /// Weight of the moves-left head's loss, for a network with the head.
    #[serde(default = "before_the_field::moves_left_weight")]
    pub moves_left_weight: f32,
}

/// The share of a run's iterations before `iteration` (1 for a one-iteration run).
fn iteration_progress(iteration: u64, iterations: u64) -> f64 {
    Schedule {
        iterations,
        checkpoint_every: 1,
        time_budget: None,
    }
    .progress(iteration, 0.0)
}

impl TrainingSettings {
    /// The replay window's size: fixed, or derived from positions per iteration.
    pub fn window_size(&self) -> WindowSize {
        match self.replay_window {
            Some(n) => WindowSize::Positions(n),
            None => WindowSize::Iterations(self.replay_iterations),
        }
    }

    pub fn train_config(&self, precision: Precision) -> TrainConfig {
        TrainConfig {
            batch_size: self.batch_size,
            lr: self.lr,
            lr_schedule: LrSchedule::Constant,
            optimizer: self.optimizer.kind(),
            weight_decay: self.weight_decay,
            precision,
            value_loss: self.value_loss,
            warmup_steps: self.warmup_steps,
            reply_weight: self.reply_weight,
            moves_left_weight: self.moves_left_weight,
        }
    }

    /// The base learning rate of iteration `iteration` of `iterations`.
    pub fn lr_at(&self, iteration: u64, iterations: u64) -> f64 {
        self.lr_at_progress(iteration_progress(iteration, iterations))
    }

    /// The base learning rate at `t` (0 to 1) through the run ([`Schedule::progress`]).
    pub fn lr_at_progress(&self, t: f64) -> f64 {
        match self.lr_final {
            Some(last) => last + 0.5 * (self.lr - last) * (1.0 + (std::f64::consts::PI * t).cos()),
            None => self.lr,
        }
    }

    /// The targets of iteration `iteration` of `iterations`.
    pub fn targets(&self, iteration: u64, iterations: u64) -> Targets {
        self.targets_at_progress(iteration_progress(iteration, iterations))
    }

    /// The targets at `t` (0 to 1) through the run ([`Schedule::progress`]).
    pub fn targets_at_progress(&self, t: f64) -> Targets {
        let linear = |first: f32, last: Option<f32>| match last {
            Some(last) => first + t as f32 * (last - first),
            None => first,
        };
        Targets {
            q_ratio: linear(self.q_ratio, self.q_ratio_final),
            material_ratio: linear(self.material_ratio, self.material_ratio_final),
            mask_illegal: self.mask_illegal,
        }
    }

    /// Training steps after an iteration that made `new_positions`: each new position is
    /// drawn `sample_reuse` times on average (at least 8 steps, at most 2000).
    pub fn steps_for(&self, new_positions: usize, batch: usize) -> usize {
        self.train_steps.unwrap_or_else(|| {
            let draws = self.sample_reuse.max(0.0) * new_positions as f64;
            ((draws / batch.max(1) as f64).ceil() as usize).clamp(8, 2000)
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GatingSettings {
    /// Candidate vs best games (even: each opening with both colours); 0 promotes at once.
    pub gating_games: usize,
    /// Random plies at the start of each pair of games, so games differ.
    pub gating_opening_plies: u32,
    /// Score the candidate needs to be promoted.
    pub promotion_score: f64,
}

impl GatingSettings {
    /// The gating stage: games at self-play's visits a move, ply cap, leaves per game and
    /// games in flight, from the standard position and `gating_opening_plies` random plies.
    pub fn stage(
        &self,
        selfplay: &SelfPlaySettings,
        gpu: bool,
        seed: u64,
        names: (String, String),
    ) -> GatingStage {
        GatingStage {
            spec: MatchSpec {
                games: self.gating_games,
                limit: Limit::Nodes(u64::from(selfplay.simulations.max(2))),
                openings: vec![Opening::start()],
                max_plies: selfplay.max_plies,
                random_opening_plies: self.gating_opening_plies,
                search: SearchParams {
                    max_batch: selfplay.leaves_per_game,
                    ..SearchParams::for_matches()
                },
                concurrency: selfplay.games_in_flight(gpu).min(self.gating_games.max(1)),
                sprt: None,
                seed,
            },
            names,
            promotion_score: self.promotion_score,
        }
    }
}

/// The strength curve: every `strength_every` iterations the network plays fixed anchors.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StrengthSettings {
    /// Iterations between measurements (0: never; the last iteration is always measured
    /// when this is not 0).
    #[serde(default)]
    pub strength_every: u64,
    /// Games per anchor.
    #[serde(default = "before_the_field::strength_games")]
    pub strength_games: usize,
    /// Root visits a move in these games.
    #[serde(default = "before_the_field::strength_nodes")]
    pub strength_nodes: u32,
    /// The anchors: `random`, `greedy`, `iteration0` (the run's untrained network), or
    /// any player spec (`uci:/usr/games/stockfish;Skill Level=0`).
    #[serde(default = "before_the_field::strength_anchors")]
    pub strength_anchors: Vec<String>,
    /// Games of the publishing match (the run's best network against the network `ember`
    /// would otherwise play), at `strength_nodes` visits a move.
    #[serde(default = "before_the_field::publish_games")]
    pub publish_games: usize,
}

impl StrengthSettings {
    /// Whether iteration `it` is measured (`last`: the run's expected last iteration).
    pub fn due(&self, it: u64, last: bool) -> bool {
        self.strength_every > 0 && (it.is_multiple_of(self.strength_every) || last)
    }

    /// The publishing match, at the strength curve's visits a move.
    pub fn publish_stage(&self, max_plies: u32, concurrency: usize, seed: u64) -> PublishStage {
        PublishStage {
            book: BookMatch {
                games: self.publish_games,
                nodes: self.strength_nodes,
                max_plies,
                concurrency,
                seed,
            },
        }
    }

    /// The stage, `iteration0` resolved to the checkpoint `first`.
    pub fn stage(
        &self,
        first: &std::path::Path,
        max_plies: u32,
        concurrency: usize,
        seed: u64,
    ) -> anyhow::Result<StrengthStage> {
        let anchors = self
            .strength_anchors
            .iter()
            .map(|a| {
                let spec = if a == "iteration0" {
                    PlayerSpec::Ember(Some(first.to_path_buf()))
                } else {
                    a.parse::<PlayerSpec>().map_err(anyhow::Error::msg)?
                };
                Ok(Anchor {
                    name: a.clone(),
                    spec,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(StrengthStage {
            anchors,
            book: BookMatch {
                games: self.strength_games,
                nodes: self.strength_nodes,
                max_plies,
                concurrency,
                seed,
            },
        })
    }
}
