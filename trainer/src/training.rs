//! The training loop. One iteration: self-play with the best network (samples appended
//! to a replay shard, games to PGN), training of the candidate on minibatches drawn
//! uniformly from the replay window, a gating match candidate vs best, then the commit
//! (see [`crate::run`]). The candidate keeps training across iterations whether or not
//! it is promoted (AlphaGo Zero's scheme); only the best network plays self-play.

use crate::cli::{TrainArgs, ValueLossChoice};
use crate::config::{derive_seed, preset_name, timestamp, RunConfig};
use crate::metrics::{self, IterationMetrics};
use crate::progress::Progress;
use crate::publish::{Publisher, RUN_FIELD};
use crate::run::{RunDir, RunLock, RunState};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use ember_engine::arena::{play_match, MatchConfig};
use ember_engine::files::write_atomic;
use ember_engine::mcts::{NetEvaluator, SearchParams};
use ember_engine::net::checkpoint::{metadata, serialize};
use ember_engine::net::{describe_device, Network, Precision};
use ember_engine::replay::{ReplayWindow, ShardWriter};
use ember_engine::selfplay::{play_games, GameRecord, SelfPlayConfig, SelfPlayStats};
use ember_engine::train::{LrSchedule, TrainConfig, Trainer, TrainingBatch, ValueLoss};
use ember_engine::{DeviceChoice, Termination};
use log::{info, warn};
use rand::{rngs::StdRng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Random streams of one iteration (see [`derive_seed`]).
const STREAM_INIT: u64 = 0;
const STREAM_SELFPLAY: u64 = 1;
const STREAM_FIRST_GAME: u64 = 2;
const STREAM_MINIBATCH: u64 = 3;
const STREAM_GATING: u64 = 4;
const STREAM_EXTRA_SELFPLAY: u64 = 100;

/// Evaluations cached per search in self-play and gating (many searches run at once).
const SEARCH_CACHE_ENTRIES: usize = 4096;

pub struct Session {
    dir: RunDir,
    cfg: RunConfig,
    state: RunState,
    device: Device,
    precision: Precision,
    best: Network,
    trainer: Trainer,
    metrics: Vec<IterationMetrics>,
    /// Held while the session lives: no second trainer can write into the folder.
    _lock: RunLock,
    publisher: Publisher,
    progress: Progress,
    /// The first game this process plays is played alone and broken down phase by phase.
    first_game_shown: bool,
}

/// What self-play made.
struct SelfPlayOutcome {
    stats: SelfPlayStats,
    shard: String,
    plies: Vec<usize>,
    terminations: BTreeMap<String, usize>,
}

struct TrainOutcome {
    steps: usize,
    batch: usize,
    replay_positions: usize,
    /// Means over the steps taken; `None` when every step was skipped.
    loss_policy: Option<f64>,
    loss_value: Option<f64>,
    loss_l2: Option<f64>,
    loss_total: Option<f64>,
    lr: f64,
    skipped: usize,
    wall: Duration,
}

struct GatingOutcome {
    games: usize,
    score: f64,
    elo: Option<f64>,
    interval: (Option<f64>, Option<f64>),
    promoted: bool,
    wall: Duration,
}

impl Session {
    /// Opens the run named by `args` (resuming it if its folder exists) or creates it.
    /// Nothing is written until every existing checkpoint has been checked against the
    /// requested architecture.
    pub fn open(args: &TrainArgs, progress: Progress) -> Result<Session> {
        let name = match &args.run {
            Some(n) => n.clone(),
            None => format!(
                "{}-{}",
                preset_name(args.preset.unwrap_or(crate::cli::Preset::Development)),
                timestamp()
            ),
        };
        let dir = RunDir::new(&args.runs_dir, &name)?;
        // Everything that can be refused is checked before the first write.
        let existing = dir.exists();
        let saved = if dir.config().exists() {
            Some(dir.read_config()?)
        } else {
            None
        };
        let mut cfg = match &saved {
            Some(saved) => {
                RunConfig::resumed(saved.clone(), args, &dir.config().display().to_string())?
            }
            None => RunConfig::from_preset(args)?,
        };
        let device = cfg.device.parse::<DeviceChoice>()?.open()?;
        let precision = cfg.precision_on(&device)?;
        let publisher = Publisher::open(&args.models_dir, &name)?;
        let lock = dir.lock()?;
        for removed in dir.sweep_temporaries() {
            info!("removed {removed}, left by an interrupted write");
        }
        info!("Using device: {}", describe_device(&device));

        for path in [dir.best(), dir.latest()] {
            if path.exists() {
                Network::load(&path, Some(cfg.net()), &device)?;
            }
        }
        let state = match dir.read_state()? {
            Some(state) => {
                for note in dir.recover(&state)? {
                    info!("recovery: {note}");
                }
                state
            }
            None => {
                let orphaned = dir.orphaned_data()?;
                if !orphaned.is_empty() {
                    bail!(
                        "{} holds data of completed iterations ({}) but no state.json, which records what of it \
is complete; refusing to start over and overwrite it. Restore state.json, or train into a new --run",
                        dir.root.display(),
                        summarize(&orphaned)
                    );
                }
                RunState::new(cfg.seed)
            }
        };
        if state.seed != cfg.seed {
            // Every iteration's random streams derive from the run's seed; changing it
            // halfway would make the run unreproducible.
            warn!(
                "--seed {} ignored: the run keeps its seed {}",
                cfg.seed, state.seed
            );
            cfg.seed = state.seed;
        }
        dir.create_folders()?;
        // The commit record exists before any checkpoint: a folder with checkpoints and
        // no state.json is one whose state was lost.
        if !dir.state().exists() {
            dir.write_state(&state)?;
        }

        let initial = state.iteration == 0 && !dir.best().exists();
        let best = if initial {
            let net = Network::new(cfg.net(), &device, derive_seed(cfg.seed, 0, STREAM_INIT))?;
            // The first network is kept, so later ones can be matched against it.
            net.save(&dir.snapshot(0))?;
            net.save(&dir.best())?;
            net.save(&dir.latest())?;
            net
        } else {
            Network::load(&dir.best(), Some(cfg.net()), &device)?
        };
        let candidate = if dir.latest().exists() {
            Network::load(&dir.latest(), Some(cfg.net()), &device)?
        } else {
            Network::from_bytes(
                &best.to_bytes()?,
                Some(cfg.net()),
                &device,
                "the best network",
            )?
        };
        let mut trainer = Trainer::new(candidate, train_config(&cfg, precision))?;
        let optimizer_changed = saved.as_ref().is_some_and(|s| s.optimizer != cfg.optimizer);
        if optimizer_changed {
            warn!(
                "the optimiser changed: the saved optimiser state in {} is not carried over",
                dir.train_state().display()
            );
        } else if dir.train_state().exists() {
            trainer.load_state(&dir.train_state()).with_context(|| {
                format!(
                    "restoring the optimiser state from {}",
                    dir.train_state().display()
                )
            })?;
        }
        let metrics = metrics::load_and_trim(&dir.metrics(), state.iteration)?;

        info!(
            "Network: {} (filters x blocks), {} parameters; training precision {}",
            cfg.net(),
            best.parameter_count(),
            precision.as_str()
        );
        if existing && state.iteration > 0 {
            info!(
                "Resuming {} after iteration {} of {} (best network from iteration {}, cumulative Elo {:+.0})",
                dir.root.display(),
                state.iteration,
                cfg.iterations,
                state.best_iteration,
                state.cumulative_elo
            );
        } else {
            info!("Run folder: {}", dir.root.display());
        }
        let games_in_flight = cfg.games_in_flight_on(&device);
        info!(
            "Configuration (saved in {}; games in flight {}, train steps {}):",
            dir.config().display(),
            games_in_flight,
            cfg.train_steps
                .map_or("auto".to_string(), |s| s.to_string())
        );
        for line in serde_json::to_string_pretty(&cfg)?.lines() {
            info!("  {line}");
        }
        dir.write_config(&cfg)?;
        let session = Session {
            _lock: lock,
            publisher,
            dir,
            cfg,
            state,
            device,
            precision,
            best,
            trainer,
            metrics,
            progress,
            first_game_shown: false,
        };
        session.reexport_if_interrupted()?;
        Ok(session)
    }

    /// A kill between an iteration's commit and its export leaves models/ behind the run.
    fn reexport_if_interrupted(&self) -> Result<()> {
        if self.state.best_iteration == 0 || self.state.best_iteration != self.state.iteration {
            return Ok(());
        }
        let best = std::fs::read(self.dir.best())
            .with_context(|| format!("reading {}", self.dir.best().display()))?;
        if std::fs::read(self.publisher.target()).ok().as_deref() != Some(&best[..]) {
            self.publisher
                .publish(&best, self.state.best_iteration, &self.dir)?;
        }
        Ok(())
    }

    /// Runs iterations until the configured count.
    pub fn train(&mut self) -> Result<()> {
        let start = Instant::now();
        if self.state.iteration >= self.cfg.iterations {
            info!(
                "{} has completed all {} iterations; pass --iterations N to go further",
                self.dir.root.display(),
                self.cfg.iterations
            );
            return Ok(());
        }
        for it in self.state.iteration + 1..=self.cfg.iterations {
            self.iteration(it)?;
        }
        info!(
            "Done: {} iterations in {:.1}s; best network from iteration {}, cumulative Elo {:+.0}; {}",
            self.cfg.iterations,
            start.elapsed().as_secs_f64(),
            self.state.best_iteration,
            self.state.cumulative_elo,
            self.dir.root.display()
        );
        Ok(())
    }

    fn iteration(&mut self, it: u64) -> Result<()> {
        let start = Instant::now();
        let total = self.cfg.iterations;
        info!("=== iteration {it}/{total} ===");

        let sp_start = Instant::now();
        let shard = RunDir::shard_name(it);
        let pgn = self.dir.selfplay_pgn(it);
        let sp = self.self_play(
            self.cfg.games,
            derive_seed(self.state.seed, it, STREAM_SELFPLAY),
            &shard,
            &pgn,
            it,
        )?;
        let wall_selfplay = sp_start.elapsed();
        log_selfplay(it, &sp, wall_selfplay);

        let tr = self.train_candidate(it, &sp.shard, sp.stats.positions)?;
        self.trainer.network().check_usable().with_context(|| {
            format!(
                "iteration {it}: training left NaN or infinite values in the candidate (is --lr {} too high?); \
nothing of iteration {it} was saved, and the run resumes after iteration {}",
                self.cfg.lr,
                it - 1
            )
        })?;
        let gate = self.gate(it)?;
        let commit_start = Instant::now();
        let m = self.commit(it, &sp, &tr, &gate, wall_selfplay, start)?;
        info!(
            "iteration {it}/{total} done in {:.1}s: self-play {:.1}s | training {:.1}s | gating {:.1}s | checkpoints {:.2}s; \
cumulative Elo {:+.0}",
            m.wall_total_s,
            m.wall_selfplay_s,
            m.wall_train_s,
            m.wall_gating_s,
            commit_start.elapsed().as_secs_f64(),
            m.cumulative_elo
        );
        info!("metrics: {}", serde_json::to_string(&m)?);
        Ok(())
    }

    /// Plays `games` games with the best network into `replay/<shard>` and `pgn`.
    fn self_play(
        &mut self,
        games: usize,
        seed: u64,
        shard: &str,
        pgn: &Path,
        it: u64,
    ) -> Result<SelfPlayOutcome> {
        let cfg = SelfPlayConfig {
            games,
            games_in_flight: self.cfg.games_in_flight_on(&self.device),
            simulations: self.cfg.simulations,
            leaves_per_game: self.cfg.leaves_per_game,
            max_plies: self.cfg.max_plies,
            temperature_plies: self.cfg.temperature_plies,
            random_opening_plies: 0,
            search: SearchParams {
                cache_entries: SEARCH_CACHE_ENTRIES,
                ..SearchParams::self_play()
            },
            seed,
            time_limit: None,
            // On a GPU the trees of half the games are searched while it evaluates the
            // other half's leaves.
            pipeline: !self.device.is_cpu(),
        };
        let mut eval = NetEvaluator::new(&self.best, self.precision)?;
        let shard_path = self.dir.replay().join(shard);
        let mut writer = ShardWriter::create(&shard_path)?;
        let mut write_error: Option<anyhow::Error> = None;
        let mut pgn_text = String::new();
        let mut plies = Vec::new();
        let mut terminations: BTreeMap<String, usize> = BTreeMap::new();
        let mut bar = self.progress.phase("self-play", games as u64, "games");
        let mut on_game = |rec: GameRecord| {
            if write_error.is_none() {
                for s in &rec.samples {
                    if let Err(e) = writer.append(s) {
                        write_error =
                            Some(e.context(format!("appending to {}", shard_path.display())));
                        break;
                    }
                }
            }
            // Games are numbered across both self-play calls (first game alone, then the rest).
            pgn_text.push_str(&renumber_round(&rec.pgn, plies.len() + 1));
            pgn_text.push('\n');
            plies.push(rec.plies);
            *terminations
                .entry(termination_key(rec.outcome.termination))
                .or_default() += 1;
            bar.advance(|| {
                format!(
                    "last: {} plies, {}",
                    rec.plies,
                    rec.outcome.termination.as_str()
                )
            });
        };

        let mut stats = SelfPlayStats::default();
        let mut rest = cfg.clone();
        if !self.first_game_shown && games > 1 {
            self.first_game_shown = true;
            let alone = SelfPlayConfig {
                games: 1,
                games_in_flight: 1,
                seed: derive_seed(self.state.seed, it, STREAM_FIRST_GAME),
                ..cfg.clone()
            };
            let first = play_games(&alone, &mut eval, &mut on_game)?;
            log_first_game(&first, cfg.simulations);
            stats += &first;
            rest.games -= 1;
        }
        let more = play_games(&rest, &mut eval, &mut on_game)?;
        stats += &more;
        bar.finish();
        if let Some(e) = write_error {
            return Err(e);
        }
        writer
            .finish()
            .with_context(|| format!("finishing {}", shard_path.display()))?;
        write_atomic(pgn, pgn_text.as_bytes())
            .with_context(|| format!("writing {}", pgn.display()))?;
        Ok(SelfPlayOutcome {
            stats,
            shard: shard.to_string(),
            plies,
            terminations,
        })
    }

    /// Trains the candidate on the replay window: the listed shards and this iteration's
    /// `shard`.
    fn train_candidate(
        &mut self,
        it: u64,
        shard: &str,
        new_positions: usize,
    ) -> Result<TrainOutcome> {
        let start = Instant::now();
        let mut listed = self.state.shards.clone();
        listed.push(shard.to_string());
        let (window, load) =
            ReplayWindow::load_listed(&self.dir.replay(), &listed, self.cfg.replay_window)
                .with_context(|| {
                    format!(
                        "loading the replay window from {}",
                        self.dir.replay().display()
                    )
                })?;
        if load.skipped_corrupt > 0 || load.torn_tail > 0 {
            warn!(
                "replay: skipped {} corrupt record(s) and {} torn tail(s) of {} records",
                load.skipped_corrupt, load.torn_tail, load.records
            );
        }
        let batch = self.cfg.batch_size.min(window.len());
        if batch == 0 {
            bail!(
                "the replay window in {} is empty after self-play",
                self.dir.replay().display()
            );
        }
        let steps = self.cfg.train_steps_for(new_positions, batch);
        let mut rng = StdRng::seed_from_u64(derive_seed(self.state.seed, it, STREAM_MINIBATCH));
        let mut bar = self.progress.phase("training", steps as u64, "steps");
        let (mut sum_p, mut sum_v, mut sum_l2, mut sum_t) = (0f64, 0f64, 0f64, 0f64);
        let (mut counted, mut skipped) = (0usize, 0usize);
        let (mut t_batch, mut t_fwd, mut t_bwd, mut t_opt) = (
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        let mut lr = self.cfg.lr;
        let mut last_scale = None;
        for _ in 0..steps {
            let t0 = Instant::now();
            let samples = window.sample_batch(&mut rng, batch);
            let tb = TrainingBatch::from_samples(&samples);
            t_batch += t0.elapsed();
            let r = self.trainer.train_step(&tb)?;
            t_fwd += r.forward;
            t_bwd += r.backward;
            t_opt += r.optimizer;
            lr = r.lr;
            last_scale = r.loss_scale;
            if r.skipped {
                skipped += 1;
            } else {
                sum_p += f64::from(r.loss_policy);
                sum_v += f64::from(r.loss_value);
                sum_l2 += f64::from(r.loss_l2);
                sum_t += f64::from(r.loss_total);
                counted += 1;
            }
            bar.advance(|| {
                format!(
                    "loss {:.3} (policy {:.3}, value {:.3})",
                    r.loss_total, r.loss_policy, r.loss_value
                )
            });
        }
        bar.finish();
        let wall = start.elapsed();
        let mean = |sum: f64| mean_loss(sum, counted);
        let out = TrainOutcome {
            steps,
            batch,
            replay_positions: window.len(),
            loss_policy: mean(sum_p),
            loss_value: mean(sum_v),
            loss_l2: mean(sum_l2),
            loss_total: mean(sum_t),
            lr,
            skipped,
            wall,
        };
        info!(
            "training: {} steps x {} samples from a window of {} positions in {:.1}s ({:.0} samples/s); mean loss {} = \
policy {} + value {} + l2 {}; lr {:.2e}{}{}",
            steps,
            batch,
            out.replay_positions,
            wall.as_secs_f64(),
            (steps * batch) as f64 / wall.as_secs_f64().max(1e-9),
            fmt_loss(out.loss_total),
            fmt_loss(out.loss_policy),
            fmt_loss(out.loss_value),
            fmt_loss(out.loss_l2),
            lr,
            if skipped > 0 { format!("; {skipped} steps skipped (inf/NaN)") } else { String::new() },
            last_scale.map_or(String::new(), |s| format!("; loss scale {s}")),
        );
        info!(
            "training phases: batch {:.2}s | forward {:.2}s | backward {:.2}s | optimizer {:.2}s",
            t_batch.as_secs_f64(),
            t_fwd.as_secs_f64(),
            t_bwd.as_secs_f64(),
            t_opt.as_secs_f64()
        );
        Ok(out)
    }

    fn gate(&mut self, it: u64) -> Result<GatingOutcome> {
        let start = Instant::now();
        let games = self.cfg.gating_games;
        if games == 0 {
            return Ok(GatingOutcome {
                games,
                score: 1.0,
                elo: None,
                interval: (None, None),
                promoted: true,
                wall: Duration::ZERO,
            });
        }
        let mut candidate = NetEvaluator::new(self.trainer.network(), self.precision)?;
        let mut best = NetEvaluator::new(&self.best, self.precision)?;
        let cfg = MatchConfig {
            games,
            games_in_flight: games,
            simulations: self.cfg.simulations,
            max_plies: self.cfg.max_plies,
            opening_random_plies: self.cfg.gating_opening_plies,
            temperature: 0.0,
            seed: derive_seed(self.state.seed, it, STREAM_GATING),
            name_a: format!("candidate {it}"),
            name_b: format!("best {}", self.state.best_iteration),
            ..MatchConfig::default()
        };
        let mut bar = self.progress.phase("gating", games as u64, "games");
        let mut plies = 0usize;
        let mut terminations: BTreeMap<String, usize> = BTreeMap::new();
        let result = play_match(&cfg, &mut candidate, &mut best, |g| {
            plies += g.plies;
            *terminations
                .entry(termination_key(g.outcome.termination))
                .or_default() += 1;
            bar.advance(|| {
                format!(
                    "last: {} plies, {}",
                    g.plies,
                    g.outcome.termination.as_str()
                )
            })
        })?;
        bar.finish();
        let ends: Vec<String> = terminations
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let pgns: String = result
            .pgns
            .iter()
            .map(|p| format!("{}\n", p.trim_end()))
            .collect::<Vec<_>>()
            .join("\n");
        write_atomic(&self.dir.gating_pgn(it), pgns.as_bytes())?;
        let score = result.score_a();
        let promoted = score >= self.cfg.promotion_score;
        let finite = |x: f64| x.is_finite().then_some(x);
        let (lo, hi) = result.elo_interval();
        let out = GatingOutcome {
            games: result.games,
            score,
            elo: finite(result.elo_diff()),
            interval: (finite(lo), finite(hi)),
            promoted,
            wall: start.elapsed(),
        };
        info!(
            "gating: candidate vs best (iteration {}) +{} ={} -{}: score {:.3}, Elo {} [95%: {}, {}] -> {} \
in {:.1}s ({:.2} games/s, mean {:.1} plies; ended by {})",
            self.state.best_iteration,
            result.wins_a,
            result.draws,
            result.losses_a,
            score,
            fmt_elo(out.elo),
            fmt_elo(out.interval.0),
            fmt_elo(out.interval.1),
            if promoted { "promoted" } else { "kept the best network" },
            out.wall.as_secs_f64(),
            result.games as f64 / out.wall.as_secs_f64().max(1e-9),
            plies as f64 / result.games.max(1) as f64,
            ends.join(", ")
        );
        Ok(out)
    }

    /// Writes the iteration's checkpoints, metrics and plot, then commits it by writing
    /// `state.json`, then moves the journaled files into place and exports a promotion.
    fn commit(
        &mut self,
        it: u64,
        sp: &SelfPlayOutcome,
        tr: &TrainOutcome,
        gate: &GatingOutcome,
        wall_selfplay: Duration,
        start: Instant,
    ) -> Result<IterationMetrics> {
        let candidate = self.trainer.network();
        let tensors: Vec<_> = candidate
            .named_tensors()
            .into_iter()
            .map(|(n, v, _)| (n, v.as_tensor().clone()))
            .collect();
        let mut meta = metadata(candidate.config, it);
        meta.insert(RUN_FIELD.to_string(), self.publisher.run.clone());
        let bytes = serialize(&tensors, meta)?;
        let pending = self.dir.pending(it);
        std::fs::create_dir_all(&pending)
            .with_context(|| format!("creating {}", pending.display()))?;
        write_atomic(&pending.join("latest.safetensors"), &bytes)?;
        self.trainer
            .save_state(&pending.join("train_state.safetensors"))?;
        if gate.promoted {
            write_atomic(&pending.join("best.safetensors"), &bytes)?;
        }
        if it.is_multiple_of(self.cfg.checkpoint_every) || it == self.cfg.iterations {
            write_atomic(&self.dir.snapshot(it), &bytes)?;
        }

        let mut state = self.state.clone();
        state.iteration = it;
        state.shards.push(sp.shard.clone());
        state.positions_total += sp.stats.positions as u64;
        state.games_total += sp.stats.games as u64;
        state.trainer_steps = self.trainer.step();
        if gate.promoted {
            state.cumulative_elo += gate.elo.unwrap_or(0.0);
            state.best_iteration = it;
        }
        let games = sp.stats.games.max(1) as f64;
        let m = IterationMetrics {
            iteration: it,
            loss_policy: tr.loss_policy,
            loss_value: tr.loss_value,
            loss_l2: tr.loss_l2,
            loss_total: tr.loss_total,
            lr: tr.lr,
            skipped_steps: tr.skipped,
            positions: sp.stats.positions,
            games: sp.stats.games,
            mean_plies: sp.plies.iter().sum::<usize>() as f64 / games,
            terminations: sp.terminations.clone(),
            white_wins: sp.stats.white_wins,
            black_wins: sp.stats.black_wins,
            draws: sp.stats.draws,
            selfplay_positions_per_s: sp.stats.positions as f64
                / wall_selfplay.as_secs_f64().max(1e-9),
            evals_per_position: sp.stats.evals_per_position(),
            replay_positions: tr.replay_positions,
            train_steps: tr.steps,
            train_batch: tr.batch,
            train_samples_per_s: (tr.steps * tr.batch) as f64 / tr.wall.as_secs_f64().max(1e-9),
            gating_games: gate.games,
            gating_score: gate.score,
            gating_elo: gate.elo,
            gating_elo_low: gate.interval.0,
            gating_elo_high: gate.interval.1,
            promoted: gate.promoted,
            best_iteration: state.best_iteration,
            cumulative_elo: state.cumulative_elo,
            wall_selfplay_s: wall_selfplay.as_secs_f64(),
            wall_train_s: tr.wall.as_secs_f64(),
            wall_gating_s: gate.wall.as_secs_f64(),
            wall_total_s: start.elapsed().as_secs_f64(),
        };
        let mut all = self.metrics.clone();
        all.push(m.clone());
        metrics::append(&self.dir.metrics(), &all)?;
        if let Err(e) = metrics::plot(&self.dir.plot(), &all) {
            warn!("{e:#}");
        }

        self.dir.write_state(&state)?;
        self.state = state;
        self.metrics = all;
        self.dir.roll_forward(it)?;
        if gate.promoted {
            self.best = Network::from_bytes(
                &bytes,
                Some(self.cfg.net()),
                &self.device,
                "the promoted candidate",
            )?;
            info!("promoted network written to {}", self.dir.best().display());
            self.publisher.publish(&bytes, it, &self.dir)?;
        }
        Ok(m)
    }

    /// `trainer selfplay`: one batch of games with the best network, added to the
    /// run's replay data (listed in `state.json`, so training and resume keep it).
    pub fn self_play_only(&mut self) -> Result<()> {
        let it = self.state.iteration;
        // `_` sorts after `.`: the extra shard comes after iteration `it`'s own and before the next.
        let prefix = format!("iter-{it:06}_selfplay-");
        let k = self
            .state
            .shards
            .iter()
            .filter(|s| s.starts_with(&prefix))
            .count() as u64
            + 1;
        let shard = format!("{prefix}{k}.shard");
        let pgn = self
            .dir
            .games()
            .join(format!("selfplay-{k}-iter-{it:06}.pgn"));
        let start = Instant::now();
        let seed = derive_seed(self.state.seed, it, STREAM_EXTRA_SELFPLAY + k);
        let sp = self.self_play(self.cfg.games, seed, &shard, &pgn, it + 1)?;
        log_selfplay(it, &sp, start.elapsed());
        let mut state = self.state.clone();
        state.shards.push(sp.shard.clone());
        state.positions_total += sp.stats.positions as u64;
        state.games_total += sp.stats.games as u64;
        self.dir.write_state(&state)?;
        self.state = state;
        info!(
            "self-play data in {} and {}",
            self.dir.replay().join(&shard).display(),
            pgn.display()
        );
        Ok(())
    }
}

fn train_config(cfg: &RunConfig, precision: Precision) -> TrainConfig {
    TrainConfig {
        batch_size: cfg.batch_size,
        lr: cfg.lr,
        lr_schedule: LrSchedule::Constant,
        optimizer: cfg.optimizer.kind(),
        weight_decay: cfg.weight_decay,
        precision,
        value_loss: match cfg.value_loss {
            ValueLossChoice::Wdl => ValueLoss::Wdl,
            ValueLossChoice::Mse => ValueLoss::Mse,
        },
    }
}

/// The first few names of a list, for a one-line message.
fn summarize(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    match names.len() - shown.len() {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

fn termination_key(t: Termination) -> String {
    let name = format!("{t:?}");
    let mut key = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            key.push('_');
        }
        key.push(c.to_ascii_lowercase());
    }
    key
}

/// The mean of `counted` step losses summing to `sum`; none when every step was skipped
/// (a mean of nothing is not a loss of 0).
fn mean_loss(sum: f64, counted: usize) -> Option<f64> {
    (counted > 0).then(|| sum / counted as f64)
}

fn fmt_loss(l: Option<f64>) -> String {
    l.map_or("n/a (every step skipped)".to_string(), |x| {
        format!("{x:.4}")
    })
}

fn fmt_elo(e: Option<f64>) -> String {
    // `+ 0.0` turns -0 into 0.
    e.map_or("n/a".to_string(), |x| format!("{:+.0}", x + 0.0))
}

fn renumber_round(pgn: &str, round: usize) -> String {
    pgn.lines()
        .map(|l| {
            if l.starts_with("[Round ") {
                format!("[Round \"{round}\"]")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn log_selfplay(it: u64, sp: &SelfPlayOutcome, wall: Duration) {
    let s = &sp.stats;
    let mean_plies = sp.plies.iter().sum::<usize>() as f64 / sp.plies.len().max(1) as f64;
    let ends: Vec<String> = sp
        .terminations
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    info!(
        "self-play {it}: {} games, {} positions in {:.1}s ({:.1} positions/s, {:.2} evals/position), mean {:.1} plies; \
white {} / black {} / draws {}; ended by {}",
        s.games,
        s.positions,
        wall.as_secs_f64(),
        s.positions as f64 / wall.as_secs_f64().max(1e-9),
        s.evals_per_position(),
        mean_plies,
        s.white_wins,
        s.black_wins,
        s.draws,
        ends.join(", ")
    );
    info!("self-play phases (thread time): {}", s.timing.summary());
}

/// The original's debug timing of the first game, with Ember's phases.
fn log_first_game(s: &SelfPlayStats, simulations: u32) {
    let moves = s.positions.max(1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / moves;
    let t = &s.timing;
    info!(
        "first game (played alone): {} positions in {:.2}s = {:.1} ms/move at {} simulations, {} network calls of \
{:.1} positions, {:.2} evals/move, {} collisions, {} cache hits",
        s.positions,
        s.wall.as_secs_f64(),
        s.wall.as_secs_f64() * 1000.0 / moves,
        simulations,
        t.batches,
        t.evaluated as f64 / t.batches.max(1) as f64,
        s.evals_per_position(),
        s.collisions,
        s.cache_hits
    );
    info!(
        "first game per move: select {:.2} ms | movegen {:.2} ms | encode {:.2} ms | network {:.2} ms | backup {:.2} ms | \
other {:.2} ms",
        ms(t.select),
        ms(t.movegen),
        ms(t.encode),
        ms(t.network),
        ms(t.backup),
        ms(s.wall.saturating_sub(t.total()))
    );
    info!("first game phases: {}", t.summary());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_iteration_whose_steps_were_all_skipped_has_no_mean_loss() {
        assert_eq!(mean_loss(0.0, 0), None);
        assert_eq!(mean_loss(3.0, 2), Some(1.5));
    }

    #[test]
    fn termination_keys_are_snake_case() {
        assert_eq!(termination_key(Termination::MaxPlies), "max_plies");
        assert_eq!(termination_key(Termination::Checkmate), "checkmate");
    }
}
