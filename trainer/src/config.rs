//! A run's resolved configuration: the preset's numbers, the flags that override them,
//! and the defaults that depend on the device. Saved as `runs/NAME/config.json`; a
//! resumed run starts from the saved file and applies only the flags given again.

use crate::cli::{Preset, TrainArgs};
use anyhow::{bail, Context, Result};
use ember_engine::mcts::RootRule;
use ember_engine::net::{NetConfig, Precision};
use ember_engine::pipeline::settings::{
    GatingSettings, OptimizerName, Schedule, SelfPlaySettings, StrengthSettings, TrainingSettings,
};
use ember_engine::train::ValueLoss;
use serde::{Deserialize, Serialize};

/// Score a candidate needs against the best network to be promoted.
pub const PROMOTION_SCORE: f64 = 0.55;

/// A run's configuration: the engine's settings of each stage, flattened in
/// `config.json` so that every field is named as its command-line flag.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    pub preset: Preset,
    #[serde(flatten)]
    pub schedule: Schedule,
    #[serde(flatten)]
    pub net: NetConfig,
    #[serde(flatten)]
    pub selfplay: SelfPlaySettings,
    #[serde(flatten)]
    pub training: TrainingSettings,
    #[serde(flatten)]
    pub gating: GatingSettings,
    #[serde(flatten)]
    pub strength: StrengthSettings,
    /// As given (`auto`, `cpu`, `cuda:N`); opened at start.
    pub device: String,
    /// As given (`auto`, `f32`, `bf16`, `f16`); `auto` resolves on the opened device.
    pub precision: String,
    pub seed: u64,
    /// The checkpoint the run's iteration 0 was taken from (`--init`); none: random weights.
    #[serde(default)]
    pub init: Option<String>,
}

/// The default preset, sized to at most 30 minutes of two CPU cores (docs/learning.md has
/// the measurements behind its numbers). Every default of a new run is stated here; the
/// other presets change what differs from it.
///
/// Gating is off (AlphaZero's scheme: self-play uses the newest network); the strength
/// curve measures progress against fixed anchors instead. A share of the value target for
/// material (0.5 falling to 0.25) is what lifted its score against the greedy player from
/// 0.52 to 0.69 at 800 nodes (docs/strength.md, runs D and E). Self-play searches every
/// move with Gumbel root search, a quarter of the moves at 16 simulations (recorded) and
/// the rest at 4 (docs/learning.md, "Gumbel root search": at equal wall time over 3 seeds,
/// Gumbel at 32 simulations beat PUCT with a playout cap by +97 Elo [+69, +127], 16
/// simulations beat 32 by +68 [+40, +97], and the playout cap on top paid again), and the
/// run takes 25 minutes of wall time whatever the machine: the learning rate and the
/// target shares follow the time spent, `iterations` is only an upper bound.
fn development() -> RunConfig {
    RunConfig {
        preset: Preset::Development,
        schedule: Schedule {
            iterations: 200,
            checkpoint_every: 10,
            time_budget: Some(25.0),
        },
        net: NetConfig::plain(32, 3),
        selfplay: SelfPlaySettings {
            games: 144,
            simulations: 16,
            games_in_flight: None,
            max_plies: 100,
            temperature_plies: 30,
            leaves_per_game: 4,
            random_opening_plies: 2,
            cap_material: 1,
            cap_value: 0.0,
            adjudicate_until: 0,
            resign_threshold: 0.0,
            resign_playthrough: 0.1,
            fast_simulations: 4,
            full_search_fraction: 0.25,
            tree_twofold_draw: false,
            solver: false,
            root_rule: RootRule::Gumbel,
            gumbel_considered: 16,
            gumbel_c_visit: 50.0,
            gumbel_c_scale: 1.0,
            deblunder: 0.0,
            moves_left_slope: 0.0,
        },
        training: TrainingSettings {
            batch_size: 256,
            train_steps: None,
            lr: 2e-3,
            optimizer: OptimizerName::Adamw,
            weight_decay: 1e-4,
            value_loss: ValueLoss::Wdl,
            replay_window: None,
            replay_iterations: 20,
            q_ratio: 0.0,
            q_ratio_final: None,
            material_ratio: 0.5,
            material_ratio_final: Some(0.25),
            mask_illegal: true,
            sample_reuse: 2.0,
            lr_final: Some(2e-4),
            warmup_steps: 30,
            reply_weight: ember_engine::train::DEFAULT_REPLY_WEIGHT,
            moves_left_weight: ember_engine::train::DEFAULT_MOVES_LEFT_WEIGHT,
        },
        gating: GatingSettings {
            gating_games: 0,
            gating_opening_plies: 4,
            promotion_score: PROMOTION_SCORE,
        },
        strength: StrengthSettings {
            strength_every: 25,
            strength_games: 20,
            strength_nodes: 64,
            strength_anchors: ["random", "greedy", "minimax:2", "iteration0"]
                .map(String::from)
                .to_vec(),
            publish_games: 40,
        },
        device: "auto".into(),
        precision: "auto".into(),
        seed: 0,
        init: None,
    }
}

/// A smoke run: 5 iterations of 5 games at 20 simulations (PUCT at the root), a 64x3
/// network, gating on, the optimiser's own learning rate throughout, no strength curve.
fn quick() -> RunConfig {
    let d = development();
    RunConfig {
        preset: Preset::Quick,
        schedule: Schedule {
            iterations: 5,
            checkpoint_every: 1,
            time_budget: None,
        },
        net: NetConfig::default(),
        selfplay: SelfPlaySettings {
            games: 5,
            simulations: 20,
            max_plies: 150,
            cap_material: 3,
            fast_simulations: 0,
            root_rule: RootRule::Puct,
            ..d.selfplay
        },
        training: TrainingSettings {
            lr: OptimizerName::Adamw.kind().default_lr(),
            lr_final: None,
            warmup_steps: 0,
            replay_iterations: 5,
            material_ratio: 0.0,
            material_ratio_final: None,
            sample_reuse: 4.0,
            ..d.training
        },
        gating: GatingSettings {
            gating_games: 10,
            ..d.gating
        },
        strength: StrengthSettings {
            strength_every: 0,
            ..d.strength
        },
        ..d
    }
}

/// The settings that trained the shipped network (models/README.md): about 12 minutes on
/// one H200, 65,536 self-play games. Adjudication stops after iteration 40, so that the
/// last iterations learn to mate.
fn production() -> RunConfig {
    let d = development();
    RunConfig {
        preset: Preset::Production,
        schedule: Schedule {
            iterations: 64,
            checkpoint_every: 4,
            time_budget: None,
        },
        net: NetConfig::default(),
        selfplay: SelfPlaySettings {
            games: 1024,
            simulations: 64,
            fast_simulations: 16,
            max_plies: 200,
            cap_material: 3,
            adjudicate_until: 40,
            root_rule: RootRule::Puct,
            ..d.selfplay
        },
        training: TrainingSettings {
            batch_size: 1024,
            warmup_steps: 50,
            replay_iterations: 8,
            material_ratio: 0.0,
            material_ratio_final: None,
            sample_reuse: 4.0,
            ..d.training
        },
        strength: StrengthSettings {
            strength_every: 8,
            ..d.strength
        },
        ..d
    }
}

/// Production's recipe four times longer, with deeper searches; not yet run.
fn max() -> RunConfig {
    let p = production();
    RunConfig {
        preset: Preset::Max,
        schedule: Schedule {
            iterations: 256,
            checkpoint_every: 8,
            time_budget: None,
        },
        selfplay: SelfPlaySettings {
            simulations: 128,
            fast_simulations: 32,
            adjudicate_until: 160,
            ..p.selfplay
        },
        training: TrainingSettings {
            lr_final: Some(1e-4),
            replay_iterations: 16,
            ..p.training
        },
        strength: StrengthSettings {
            strength_every: 16,
            ..p.strength
        },
        ..p
    }
}

impl RunConfig {
    /// The configuration a new run of preset `p` starts from, before any flag (its seed is
    /// set by the run).
    pub fn preset(p: Preset) -> RunConfig {
        match p {
            Preset::Quick => quick(),
            Preset::Development => development(),
            Preset::Production => production(),
            Preset::Max => max(),
        }
    }

    /// A new run's configuration: the preset, then every flag given.
    pub fn from_preset(args: &TrainArgs) -> Result<RunConfig> {
        let preset = args.preset.unwrap_or(Preset::Development);
        let mut cfg = RunConfig {
            seed: args.seed.unwrap_or_else(clock_seed),
            ..RunConfig::preset(preset)
        };
        if let Some(opt) = args.optimizer {
            cfg.training.lr = opt.kind().default_lr();
        }
        cfg.apply(args);
        if let Some(path) = &args.init {
            cfg.init_from(path, args)?;
        }
        cfg.validate(args, None)?;
        Ok(cfg)
    }

    /// `--init FILE`: the run's architecture is the checkpoint's (the flags, if given, must
    /// agree with it); its weights are loaded when the run's networks are created.
    fn init_from(&mut self, path: &std::path::Path, args: &TrainArgs) -> Result<()> {
        use ember_engine::net::checkpoint::{declared_config, read_file, read_metadata};
        let shown = path.display().to_string();
        let net = read_file(path)
            .and_then(|bytes| read_metadata(&bytes, &shown))
            .and_then(|meta| declared_config(&meta, &shown))
            .with_context(|| format!("--init {shown}"))?;
        for (flag, given, have) in [
            ("--filters", args.filters, net.filters),
            ("--blocks", args.blocks, net.blocks),
            ("--se-channels", args.se_channels, net.se_channels),
        ] {
            if given.is_some_and(|g| g != have) {
                bail!(
                    "--init {shown} holds a {net} network, and {flag} {} asks for another",
                    given.unwrap_or_default()
                );
            }
        }
        self.net = net;
        self.init = Some(shown);
        Ok(())
    }

    /// A resumed run's configuration: the saved one (read from `file`) with the flags
    /// given now.
    pub fn resumed(saved: RunConfig, args: &TrainArgs, file: &str) -> Result<RunConfig> {
        let mut cfg = saved;
        if let Some(p) = args.preset.filter(|p| *p != cfg.preset) {
            log::warn!(
                "--preset {} ignored: a resumed run keeps its configuration ({}); override single numbers instead",
                preset_name(p),
                preset_name(cfg.preset)
            );
        }
        if let (Some(opt), None) = (args.optimizer, args.lr) {
            if opt != cfg.training.optimizer {
                cfg.training.lr = opt.kind().default_lr();
            }
        }
        if let Some(path) = &args.init {
            log::warn!(
                "--init {} ignored: a resumed run keeps its own networks",
                path.display()
            );
        }
        cfg.apply(args);
        cfg.validate(args, Some(file))?;
        Ok(cfg)
    }

    /// Every flag given replaces its value ([`TrainArgs::override_settings`]); gating
    /// games then round up to even, so that each opening is played from both sides.
    fn apply(&mut self, a: &TrainArgs) {
        a.override_settings(self);
        self.gating.gating_games += self.gating.gating_games % 2;
    }

    /// Checks every value. An error names where the bad value came from: the flag when
    /// it was given on this command line, otherwise the field of the saved `config.json`.
    fn validate(&self, args: &TrainArgs, saved: Option<&str>) -> Result<()> {
        let source = |field: &str| match saved {
            Some(file) if !args.given(field) => format!("{file}: field `{field}`"),
            _ => format!("--{}", field.replace('_', "-")),
        };
        let at_least = [
            ("games", self.selfplay.games, 1),
            ("simulations", self.selfplay.simulations as usize, 2),
            ("filters", self.net.filters, 1),
            ("blocks", self.net.blocks, 1),
            ("batch_size", self.training.batch_size, 1),
            ("replay_window", self.training.replay_window.unwrap_or(1), 1),
            ("replay_iterations", self.training.replay_iterations, 1),
            (
                "checkpoint_every",
                self.schedule.checkpoint_every as usize,
                1,
            ),
            ("max_plies", self.selfplay.max_plies as usize, 1),
            ("train_steps", self.training.train_steps.unwrap_or(1), 1),
            (
                "games_in_flight",
                self.selfplay.games_in_flight.unwrap_or(1),
                1,
            ),
            (
                "gumbel_considered",
                self.selfplay.gumbel_considered as usize,
                1,
            ),
        ];
        for (field, v, min) in at_least {
            if v < min {
                let why = if field == "simulations" {
                    " (the first visit expands the root; the move probabilities a position is trained on need more)"
                } else {
                    ""
                };
                bail!("{} must be at least {min}, got {v}{why}", source(field));
            }
        }
        for (field, v) in [
            ("gumbel_c_visit", self.selfplay.gumbel_c_visit),
            ("gumbel_c_scale", self.selfplay.gumbel_c_scale),
            ("deblunder", self.selfplay.deblunder),
            ("moves_left_slope", self.selfplay.moves_left_slope),
            ("reply_weight", self.training.reply_weight),
            ("moves_left_weight", self.training.moves_left_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{} must be a number of at least 0, got {v}", source(field));
            }
        }
        self.net
            .check()
            .with_context(|| format!("{} and {}", source("filters"), source("blocks")))?;
        if !(self.training.lr > 0.0 && self.training.lr.is_finite()) {
            bail!(
                "{} must be a positive number, got {}",
                source("lr"),
                self.training.lr
            );
        }
        if !(0.0..=1.0).contains(&self.gating.promotion_score) {
            bail!(
                "{} must be between 0 and 1, got {}",
                source("promotion_score"),
                self.gating.promotion_score
            );
        }
        if !(self.training.weight_decay >= 0.0 && self.training.weight_decay.is_finite()) {
            bail!(
                "{} must be a finite number of at least 0, got {}",
                source("weight_decay"),
                self.training.weight_decay
            );
        }
        if !(self.training.sample_reuse > 0.0 && self.training.sample_reuse.is_finite()) {
            bail!(
                "{} must be a positive number, got {}",
                source("sample_reuse"),
                self.training.sample_reuse
            );
        }
        if let Some(l) = self.training.lr_final {
            if !(l > 0.0 && l.is_finite()) {
                bail!("{} must be a positive number, got {l}", source("lr_final"));
            }
        }
        let fractions = [
            ("cap_value", self.selfplay.cap_value),
            ("resign_threshold", self.selfplay.resign_threshold),
            ("resign_playthrough", self.selfplay.resign_playthrough),
            ("full_search_fraction", self.selfplay.full_search_fraction),
            ("q_ratio", self.training.q_ratio),
            ("q_ratio_final", self.training.q_ratio_final.unwrap_or(0.0)),
            ("material_ratio", self.training.material_ratio),
            (
                "material_ratio_final",
                self.training.material_ratio_final.unwrap_or(0.0),
            ),
        ];
        for (field, v) in fractions {
            if !(0.0..=1.0).contains(&v) {
                bail!("{} must be between 0 and 1, got {v}", source(field));
            }
        }
        if self.strength.publish_games < 2 {
            bail!(
                "{} must be at least 2 (each opening is played with both colours), got {}",
                source("publish_games"),
                self.strength.publish_games
            );
        }
        if self.strength.strength_nodes < 2 {
            bail!(
                "{} must be at least 2, got {}",
                source("strength_nodes"),
                self.strength.strength_nodes
            );
        }
        if self.strength.strength_every > 0 {
            if self.strength.strength_games < 2 {
                bail!(
                    "{} must be at least 2 (each opening is played with both colours), got {}",
                    source("strength_games"),
                    self.strength.strength_games
                );
            }
            for a in &self.strength.strength_anchors {
                if a != "iteration0" {
                    a.parse::<ember_engine::players::PlayerSpec>()
                        .map_err(anyhow::Error::msg)
                        .with_context(|| source("strength_anchors"))?;
                }
            }
        }
        self.device
            .parse::<ember_engine::DeviceChoice>()
            .with_context(|| source("device"))?;
        if self.precision != "auto" {
            self.precision
                .parse::<Precision>()
                .with_context(|| source("precision"))?;
        }
        Ok(())
    }

    /// Training and inference precision on `device` (`auto`: [`Precision::auto_for`]).
    pub fn precision_on(&self, device: &candle_core::Device) -> Result<Precision> {
        Precision::resolve(&self.precision, device)
            .with_context(|| format!("--precision {}", self.precision))
    }
}

pub fn preset_name(p: Preset) -> &'static str {
    match p {
        Preset::Quick => "quick",
        Preset::Development => "development",
        Preset::Production => "production",
        Preset::Max => "max",
    }
}

fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
}

/// A seed for one purpose in one iteration, derived from the run's seed (splitmix64), so
/// a resumed iteration draws exactly what it would have drawn.
pub fn derive_seed(seed: u64, iteration: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(iteration.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `YYYYmmdd-HHMMSS` in UTC, for default run names.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OnOff;
    use ember_engine::replay::WindowSize;

    #[test]
    fn the_help_says_what_the_default_run_does() {
        use clap::CommandFactory;
        let help = crate::cli::Cli::command().render_long_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let d = development();
        let s = &d.selfplay;
        assert_eq!(s.root_rule, RootRule::Gumbel);
        for said in [
            format!("a {}x{} network", d.net.filters, d.net.blocks),
            format!("{} minutes of wall time", d.schedule.time_budget.unwrap()),
            format!("at most {} iterations", d.schedule.iterations),
            format!("{} self-play games", s.games),
            format!("the rest at {}", s.fast_simulations),
            format!(
                "strength curve every {} iterations",
                d.strength.strength_every
            ),
            format!(
                "{} games at {} nodes",
                d.strength.strength_games, d.strength.strength_nodes
            ),
            "random, greedy, minimax:2 and the untrained network".to_string(),
        ] {
            assert!(
                help.contains(&said),
                "the help does not say {said:?}: {help}"
            );
        }
        assert_eq!(
            d.strength.strength_anchors,
            ["random", "greedy", "minimax:2", "iteration0"]
        );
        assert!(help.contains(&format!(
            "a quarter of the moves at {} simulations",
            s.simulations
        )));
        assert_eq!(s.full_search_fraction, 0.25);
    }

    #[test]
    fn flags_override_the_preset() {
        let args = TrainArgs {
            preset: Some(Preset::Quick),
            games: Some(7),
            ..Default::default()
        };
        let cfg = RunConfig::from_preset(&args).unwrap();
        assert_eq!(
            (
                cfg.schedule.iterations,
                cfg.selfplay.games,
                cfg.selfplay.simulations
            ),
            (5, 7, 20)
        );
    }

    #[test]
    fn the_replay_window_follows_positions_per_iteration_unless_fixed() {
        let dev = RunConfig::from_preset(&TrainArgs::default()).unwrap();
        assert_eq!(dev.training.window_size(), WindowSize::Iterations(20));
        assert_eq!(dev.training.window_size().capacity(1_900), 38_000);
        let fixed = RunConfig::from_preset(&TrainArgs {
            replay_window: Some(5_000),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(fixed.training.window_size(), WindowSize::Positions(5_000));
        let k = RunConfig::from_preset(&TrainArgs {
            replay_iterations: Some(3),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(k.training.window_size(), WindowSize::Iterations(3));
        // A config.json written before the window was derived keeps its fixed window.
        let mut json = serde_json::to_value(&dev).unwrap();
        json["replay_window"] = serde_json::json!(20_000);
        json.as_object_mut().unwrap().remove("replay_iterations");
        let old: RunConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.training.window_size(), WindowSize::Positions(20_000));
    }

    #[test]
    fn the_solver_reaches_self_plays_search_only_when_asked() {
        let off = RunConfig::from_preset(&TrainArgs::default()).unwrap();
        assert!(!off.selfplay.stage(false, 1, 7, None).config.search.solver);
        let on = RunConfig::from_preset(&TrainArgs {
            solver: Some(OnOff::On),
            ..Default::default()
        })
        .unwrap();
        assert!(on.selfplay.solver);
        let search = on.selfplay.stage(false, 1, 7, None).config.search;
        assert!(search.solver && search.root_noise, "{search:?}");
    }

    #[test]
    fn the_moves_left_slope_reaches_self_plays_search_only_when_asked() {
        let off = RunConfig::from_preset(&TrainArgs::default()).unwrap();
        assert_eq!(off.selfplay.moves_left_slope, 0.0);
        let search = off.selfplay.stage(false, 1, 7, None).config.search;
        assert_eq!(search.moves_left_slope, 0.0, "self-play leaves it off");
        let on = RunConfig::from_preset(&TrainArgs {
            moves_left_slope: Some(0.0027),
            ..Default::default()
        })
        .unwrap();
        let search = on.selfplay.stage(false, 1, 7, None).config.search;
        let lc0 = ember_engine::SearchParams::default();
        assert_eq!(
            (
                search.moves_left_slope,
                search.moves_left_max_effect,
                search.moves_left_threshold
            ),
            (0.0027, lc0.moves_left_max_effect, lc0.moves_left_threshold)
        );
        // A config.json from before the flag plays without it.
        let mut json = serde_json::to_value(&on).unwrap();
        assert_eq!(json["moves_left_slope"], serde_json::json!(0.0027f32));
        json.as_object_mut().unwrap().remove("moves_left_slope");
        let old: RunConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.selfplay.moves_left_slope, 0.0);
        assert!(RunConfig::from_preset(&TrainArgs {
            moves_left_slope: Some(-0.001),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn the_development_preset_blends_material_into_the_value_target_and_others_do_not() {
        let dev = RunConfig::from_preset(&TrainArgs::default()).unwrap();
        let its = dev.schedule.iterations;
        let first = dev.training.targets(1, its).material_ratio;
        let last = dev.training.targets(its, its).material_ratio;
        assert!(
            (first - 0.5).abs() < 1e-6 && (last - 0.25).abs() < 1e-6,
            "{first} {last}"
        );
        let production = RunConfig::from_preset(&TrainArgs {
            preset: Some(Preset::Production),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(production.training.targets(1, 64).material_ratio, 0.0);
        let off = RunConfig::from_preset(&TrainArgs {
            material_ratio: Some(0.0),
            material_ratio_final: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(off.training.targets(1, its).material_ratio, 0.0);
    }

    #[test]
    fn the_root_rule_and_the_gumbel_constants_reach_self_plays_search() {
        let default = RunConfig::from_preset(&TrainArgs::default()).unwrap();
        let search = default.selfplay.stage(false, 1, 7, None).config.search;
        assert_eq!(search.root_rule, RootRule::Gumbel);
        let puct = RunConfig::from_preset(&TrainArgs {
            root_rule: Some(RootRule::Puct),
            ..Default::default()
        })
        .unwrap();
        let search = puct.selfplay.stage(false, 1, 7, None).config.search;
        assert_eq!(search.root_rule, RootRule::Puct);
        let gumbel = RunConfig::from_preset(&TrainArgs {
            root_rule: Some(RootRule::Gumbel),
            gumbel_considered: Some(8),
            gumbel_c_visit: Some(30.0),
            gumbel_c_scale: Some(0.5),
            ..Default::default()
        })
        .unwrap();
        let search = gumbel.selfplay.stage(false, 1, 7, None).config.search;
        assert_eq!(
            (
                search.root_rule,
                search.gumbel_considered,
                search.gumbel_c_visit,
                search.gumbel_c_scale
            ),
            (RootRule::Gumbel, 8, 30.0, 0.5)
        );
        // A config.json from before the root rule plays PUCT with the paper's constants.
        let mut json = serde_json::to_value(&puct).unwrap();
        for f in [
            "root_rule",
            "gumbel_considered",
            "gumbel_c_visit",
            "gumbel_c_scale",
        ] {
            json.as_object_mut().unwrap().remove(f);
        }
        let old: RunConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.selfplay, puct.selfplay);
        assert!(RunConfig::from_preset(&TrainArgs {
            gumbel_considered: Some(0),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn under_a_time_budget_the_schedules_follow_the_time_spent() {
        let mut cfg = RunConfig::from_preset(&TrainArgs::default()).unwrap();
        let s = &mut cfg.schedule;
        s.time_budget = None;
        assert_eq!(s.progress(1, 500.0), 0.0, "by iterations without a budget");
        assert_eq!(s.progress(s.iterations, 0.0), 1.0);
        assert!(!s.budget_spent(1e9));
        assert!(!s.is_last(s.iterations - 1, 1e9, 1e9) && s.is_last(s.iterations, 0.0, 0.0));
        assert!(s.snapshot(s.iterations - 1, true) && !s.snapshot(s.checkpoint_every + 1, false));
        s.time_budget = Some(10.0);
        // An iteration whose own time spends the budget is the last: it gets the
        // strength curve's point and a snapshot.
        assert!(!s.is_last(2, 400.0, 150.0) && s.is_last(2, 450.0, 150.0));
        assert!(
            s.is_last(1, 0.0, 600.0),
            "a first iteration longer than the budget"
        );
        assert!(cfg.strength.due(3, true) || cfg.strength.strength_every == 0);
        let s = &mut cfg.schedule;
        assert_eq!(s.progress(1, 0.0), 0.0);
        assert!((s.progress(2, 150.0) - 0.25).abs() < 1e-12);
        assert_eq!(s.progress(3, 900.0), 1.0);
        assert!(!s.budget_spent(599.0) && s.budget_spent(600.0));
        let t = &cfg.training;
        assert_eq!(t.lr_at_progress(0.0), t.lr);
        assert!((t.lr_at_progress(1.0) - t.lr_final.unwrap()).abs() < 1e-12);
        assert!((t.targets_at_progress(1.0).material_ratio - 0.25).abs() < 1e-6);
        // The iteration-based schedule is the same function.
        assert_eq!(t.lr_at(11, 21), t.lr_at_progress(0.5));
    }

    #[test]
    fn gating_games_round_up_to_even() {
        let args = TrainArgs {
            gating_games: Some(3),
            ..Default::default()
        };
        assert_eq!(
            RunConfig::from_preset(&args).unwrap().gating.gating_games,
            4
        );
    }

    #[test]
    fn default_train_steps_see_each_new_position_about_four_times_within_bounds() {
        let cfg = RunConfig::from_preset(&TrainArgs {
            preset: Some(Preset::Quick),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.training.steps_for(1000, 256), 16);
        assert_eq!(cfg.training.steps_for(10, 256), 8);
        assert_eq!(cfg.training.steps_for(1_000_000, 256), 2000);
        let mut more = cfg.training.clone();
        more.sample_reuse = 8.0;
        assert_eq!(more.steps_for(1000, 256), 32);
    }

    #[test]
    fn the_learning_rate_follows_half_a_cosine_over_the_iterations() {
        let mut t = RunConfig::from_preset(&TrainArgs::default())
            .unwrap()
            .training;
        t.lr = 1e-3;
        t.lr_final = None;
        assert_eq!(t.lr_at(7, 20), 1e-3, "constant without lr_final");
        t.lr_final = Some(1e-4);
        assert!((t.lr_at(1, 21) - 1e-3).abs() < 1e-12);
        assert!((t.lr_at(11, 21) - 5.5e-4).abs() < 1e-12, "halfway");
        assert!((t.lr_at(21, 21) - 1e-4).abs() < 1e-12);
        assert!(t.lr_at(5, 21) > t.lr_at(6, 21));
    }

    #[test]
    fn resumed_run_keeps_saved_values_unless_given_again() {
        let saved = RunConfig::from_preset(&TrainArgs {
            preset: Some(Preset::Quick),
            ..Default::default()
        })
        .unwrap();
        let again = TrainArgs {
            iterations: Some(9),
            preset: Some(Preset::Max),
            ..Default::default()
        };
        let cfg = RunConfig::resumed(saved.clone(), &again, "config.json").unwrap();
        assert_eq!(cfg.schedule.iterations, 9);
        assert_eq!(cfg.selfplay.games, saved.selfplay.games);
    }

    #[test]
    fn a_bad_saved_value_is_named_by_its_field_and_a_bad_flag_by_the_flag() {
        let mut saved = RunConfig::from_preset(&TrainArgs::default()).unwrap();
        saved.selfplay.games = 0;
        let err = RunConfig::resumed(saved.clone(), &TrainArgs::default(), "runs/x/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("runs/x/config.json: field `games` must be at least 1"),
            "{err}"
        );
        assert!(!err.contains("--games"), "{err}");
        let given = TrainArgs {
            simulations: Some(1),
            games: Some(3),
            ..Default::default()
        };
        let err = RunConfig::resumed(saved, &given, "runs/x/config.json")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--simulations must be at least 2"), "{err}");
        let err = RunConfig::from_preset(&TrainArgs {
            filters: Some(100_000),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("--filters"), "{err:#}");
    }

    #[test]
    fn config_json_is_flat_with_one_field_per_flag_and_reads_back() {
        let cfg = RunConfig::from_preset(&TrainArgs::default()).unwrap();
        let json = serde_json::to_value(&cfg).unwrap();
        for f in [
            "iterations",
            "checkpoint_every",
            "filters",
            "blocks",
            "se_channels",
            "games",
            "simulations",
            "games_in_flight",
            "max_plies",
            "batch_size",
            "train_steps",
            "lr",
            "optimizer",
            "weight_decay",
            "value_loss",
            "replay_window",
            "replay_iterations",
            "gating_games",
            "promotion_score",
            "device",
            "precision",
            "seed",
        ] {
            assert!(json.get(f).is_some(), "{f} missing from {json}");
        }
        assert!(json.as_object().unwrap().values().all(|v| !v.is_object()));
        let back: RunConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, cfg);
        // A run saved before squeeze-and-excitation existed resumes with plain blocks.
        let mut old = json;
        old.as_object_mut().unwrap().remove("se_channels");
        let back: RunConfig = serde_json::from_value(old).unwrap();
        assert_eq!(back.net.se_channels, 0);
    }

    /// Values to give a flag whose field `base` holds, at least one of them valid and
    /// different from `base`.
    fn other_values(base: &serde_json::Value) -> Vec<String> {
        use serde_json::Value;
        match base {
            Value::Number(n) if n.is_u64() => vec![(n.as_u64().unwrap() + 1).to_string()],
            Value::Number(_) => vec!["0.3".into(), "0.7".into()],
            Value::Null => vec!["1".into()],
            Value::Bool(b) => vec![if *b { "off" } else { "on" }.into()],
            Value::Array(_) => vec!["random".into()],
            _ => ["cpu", "f32", "sgd", "mse", "gumbel", "puct"]
                .map(String::from)
                .to_vec(),
        }
    }

    #[test]
    fn every_setting_flag_sets_its_field_and_is_seen_as_given() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let argv = ["trainer", "--seed", "7"].iter().chain(extra);
            crate::cli::Cli::try_parse_from(argv).map(|cli| cli.train)
        };
        let base_args = parse(&[]).unwrap();
        let base_cfg = RunConfig::from_preset(&base_args).unwrap();
        let base = serde_json::to_value(&base_cfg).unwrap();
        for &(name, path) in TrainArgs::SETTINGS {
            assert!(
                path == name || path.ends_with(&format!(".{name}")),
                "--{name} sets {path}, a field of another name"
            );
            assert!(name == "seed" || !base_args.given(name), "{name}");
            let flag = format!("--{}", name.replace('_', "-"));
            let sets_it = other_values(&base[name]).iter().any(|value| {
                let Ok(args) = parse(&[&flag, value]) else {
                    return false;
                };
                assert!(args.given(name), "{flag} {value} is not seen as given");
                let new = RunConfig::from_preset(&args).map(|c| serde_json::to_value(c).unwrap());
                let resumed = RunConfig::resumed(base_cfg.clone(), &args, "config.json")
                    .map(|c| serde_json::to_value(c).unwrap());
                match (new, resumed) {
                    (Ok(new), Ok(resumed)) => {
                        new[name] != base[name] && resumed[name] != base[name]
                    }
                    _ => false,
                }
            });
            assert!(
                sets_it,
                "{flag} is declared but sets no field `{name}` of a new or a resumed run"
            );
        }
        // Every field of config.json is a setting, except these, which no flag sets.
        let without_flag = ["preset", "leaves_per_game", "gating_opening_plies", "init"];
        for field in base.as_object().unwrap().keys() {
            assert!(
                without_flag.contains(&field.as_str())
                    || TrainArgs::SETTINGS.iter().any(|(n, _)| n == field),
                "config.json field `{field}` has no flag"
            );
        }
    }

    #[test]
    #[should_panic(expected = "not a trainer setting")]
    fn asking_whether_a_non_setting_was_given_is_a_mistake() {
        TrainArgs::default().given("no_such_flag");
    }

    proptest::proptest! {
        #![proptest_config({
            let mut c = proptest::prelude::ProptestConfig::default();
            if std::env::var_os("PROPTEST_CASES").is_none() {
                c.cases = 512;
            }
            c
        })]

        /// A config.json with bytes overwritten or cut off is read, checked and refused
        /// with an error, never a panic.
        #[test]
        fn a_mangled_config_json_is_read_or_refused(
            edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 0..6),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let valid = serde_json::to_vec(&RunConfig::from_preset(&TrainArgs::default()).unwrap()).unwrap();
            let mut bytes = valid.clone();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1).max(bytes.len() * 3 / 4));
            if let Ok(saved) = serde_json::from_slice::<RunConfig>(&bytes) {
                let _ = RunConfig::resumed(saved, &TrainArgs::default(), "config.json");
            }
        }
    }

    #[test]
    fn timestamp_has_date_and_time() {
        let t = timestamp();
        assert_eq!(t.len(), 15);
        assert!(t.starts_with("20"));
    }
}
