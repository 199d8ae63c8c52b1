//! The training loop. One iteration: the positions of a [`PositionSource`] (self-play with
//! the best network, its samples appended to a replay shard and its games to PGN; or, for
//! `trainer learn`, the workers' shards from the exchange) into the replay window, training
//! of the candidate on minibatches drawn uniformly from the window, a gating match
//! candidate vs best, the strength curve when due, then the commit. The stages are the
//! engine's ([`ember_engine::pipeline`]); this file opens the run, wires them together and
//! reports. The candidate keeps training across iterations whether or not it is promoted
//! (AlphaGo Zero's scheme); only the best network plays self-play.

use crate::cli::{LearnArgs, TrainArgs};
use crate::config::{derive_seed, preset_name, timestamp, RunConfig};
use crate::plot;
use crate::progress::Progress;
use crate::publish::{Publisher, RUN_FIELD};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use ember_engine::files::write_atomic;
use ember_engine::net::checkpoint::{metadata, serialize};
use ember_engine::net::{describe_device, Network, Precision};
use ember_engine::pipeline::commit::{commit, Iteration};
use ember_engine::pipeline::gating_stage::GatingOutcome;
use ember_engine::pipeline::learner::Learner;
use ember_engine::pipeline::metrics::{self, IterationMetrics};
use ember_engine::pipeline::run::{RunDir, RunLock, RunState};
use ember_engine::pipeline::selfplay_stage::SelfPlayOutcome;
use ember_engine::pipeline::strength_stage::StrengthOutcome;
use ember_engine::pipeline::training_stage::{TrainOutcome, TrainingStage};
use ember_engine::players::EmberSetup;
use ember_engine::replay::{ReplayWindow, WindowSize};
use ember_engine::selfplay::PlayStats;
use ember_engine::stats::format_elo;
use ember_engine::train::Trainer;
use ember_engine::DeviceChoice;
use log::{info, warn};
use std::path::Path;
use std::time::{Duration, Instant};

/// Random streams of one iteration (see [`derive_seed`]).
const STREAM_INIT: u64 = 0;
const STREAM_SELFPLAY: u64 = 1;
const STREAM_FIRST_GAME: u64 = 2;
const STREAM_MINIBATCH: u64 = 3;
const STREAM_GATING: u64 = 4;
const STREAM_STRENGTH: u64 = 5;
const STREAM_PUBLISH: u64 = 6;
const STREAM_EXTRA_SELFPLAY: u64 = 100;

pub struct Session {
    dir: RunDir,
    cfg: RunConfig,
    state: RunState,
    device: Device,
    precision: Precision,
    best: Network,
    trainer: Trainer,
    /// The newest positions, in memory: loaded once from the listed shards, then grown by
    /// each iteration's self-play.
    window: ReplayWindow,
    metrics: Vec<IterationMetrics>,
    /// Held while the session lives: no second trainer can write into the folder.
    _lock: RunLock,
    publisher: Publisher,
    progress: Progress,
    source: PositionSource,
}

/// Where a session's iterations take their positions from.
pub enum PositionSource {
    /// `trainer train`: self-play with the best network, into the run's own shards.
    SelfPlay {
        /// The first game this process plays is played alone and broken down phase by
        /// phase.
        first_game_shown: bool,
    },
    /// `trainer learn`: the workers' shards, collected from the exchange; promoted
    /// networks are published there for the workers.
    Exchange(Learner),
}

/// One iteration's positions, and the shards they are kept in.
struct Positions {
    outcome: SelfPlayOutcome,
    /// The run's own shard (self-play).
    shard: Option<String>,
    /// The workers' shards taken (a learner).
    worker_shards: Vec<String>,
}

impl Session {
    /// Opens the run named by `args` for self-play (see [`Session::open_with`]).
    pub fn open(args: &TrainArgs, progress: Progress) -> Result<Session> {
        let source = PositionSource::SelfPlay {
            first_game_shown: false,
        };
        Session::open_with(args, progress, source)
    }

    /// Opens the run named by `args` (resuming it if its folder exists) or creates it,
    /// its positions to come from `source`. Nothing is written until every existing
    /// checkpoint has been checked against the requested architecture.
    fn open_with(args: &TrainArgs, progress: Progress, source: PositionSource) -> Result<Session> {
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
            Some(dir.read_config::<RunConfig>()?)
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
        let publisher = Publisher::open(&args.models_dir, &name, !args.no_publish)?;
        let lock = dir.lock()?;
        for removed in dir.sweep_temporaries(&lock) {
            info!("removed {removed}, left by an interrupted write");
        }
        info!("Using device: {}", describe_device(&device));
        for path in [dir.best(), dir.latest()] {
            if path.exists() {
                Network::load(&path, Some(cfg.net), &device)?;
            }
        }
        let state = recover_state(&dir, &mut cfg)?;
        let (best, trainer) = open_networks(
            &dir,
            &cfg,
            &state,
            &device,
            precision,
            saved.as_ref(),
            &name,
        )?;
        let metrics = metrics::load_and_trim(&dir.metrics(), state.iteration)?;
        let window = source.window(&dir, &state, cfg.training.window_size())?;
        log_start(
            &dir,
            &cfg,
            &state,
            &best,
            precision,
            existing,
            !device.is_cpu(),
        )?;
        info!(
            "{}",
            publisher.describe(cfg.strength.publish_games, cfg.strength.strength_nodes)
        );
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
            window,
            metrics,
            progress,
            source,
        };
        Ok(session)
    }

    /// Opens the run folder of `trainer learn` (creating it), and publishes its best
    /// network for the workers if the folder does not already offer it.
    pub fn open_learner(args: &LearnArgs, progress: Progress) -> Result<Session> {
        let root = &args.run_dir;
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("--run-dir {}: not a folder name", root.display()))?;
        let parent = root
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let train = TrainArgs {
            runs_dir: parent.to_path_buf(),
            run: Some(name),
            ..args.train.clone()
        };
        // One learner per exchange: claimed before anything is written.
        let exchange = crate::storage::open_exchange(args.exchange.as_deref().unwrap_or(root))?;
        let learner = Learner::claim(
            exchange,
            root,
            args.publish_steps,
            args.idle_exit.map(Duration::from_secs_f64),
        )?;
        let session = Session::open_with(&train, progress, PositionSource::Exchange(learner))?;
        if let PositionSource::Exchange(learner) = &session.source {
            let best = session.best_path();
            learner.offer_run(&session.cfg, session.state.best_iteration, || {
                std::fs::read(&best).with_context(|| format!("reading {}", best.display()))
            })?;
        }
        Ok(session)
    }

    fn best_path(&self) -> std::path::PathBuf {
        if self.state.best_iteration == 0 {
            self.dir.snapshot(0)
        } else {
            self.dir.best()
        }
    }

    /// Offers the best network for publishing ([`Publisher::offer`]) unless it was
    /// offered before, publishing is off, or it is still the run's initial network, and
    /// records the offer in `state.json`.
    fn offer_best(&mut self) -> Result<()> {
        let it = self.state.best_iteration;
        if !self.publisher.enabled || it == 0 || self.state.offered == Some(it) {
            return Ok(());
        }
        let bytes = std::fs::read(self.best_path())
            .with_context(|| format!("reading {}", self.best_path().display()))?;
        let stage = self.cfg.strength.publish_stage(
            self.cfg.selfplay.max_plies.max(200),
            self.match_concurrency(),
            derive_seed(self.state.seed, it, STREAM_PUBLISH),
        );
        let setup = EmberSetup {
            embedded: Some(ember_engine::net::EMBEDDED_NETWORK),
            ..self.ember_setup()
        };
        self.publisher.offer(
            &bytes,
            &self.best,
            it,
            &stage,
            &setup,
            &mut self.progress.observer(),
        )?;
        let mut state = self.state.clone();
        state.offered = Some(it);
        self.dir.write_state(&state)?;
        self.state = state;
        Ok(())
    }

    /// Games in flight in the strength and publishing matches.
    fn match_concurrency(&self) -> usize {
        self.cfg
            .selfplay
            .games_in_flight(!self.device.is_cpu())
            .clamp(1, 16)
    }

    /// How the strength and publishing matches build Ember players.
    fn ember_setup(&self) -> EmberSetup {
        EmberSetup {
            embedded: None,
            device: self.device.clone(),
            precision: self.precision,
            threads: 1,
            solver: true,
        }
    }

    /// Whether iteration `it`, begun at `start`, is the run's last (see
    /// `Schedule::is_last`): its time so far, and the strength curve's last measurement
    /// still to come, spend the budget.
    fn is_last(&self, it: u64, start: Instant) -> bool {
        let to_come = self
            .metrics
            .iter()
            .rev()
            .find(|m| m.wall_strength_s > 0.0)
            .map_or(0.0, |m| m.wall_strength_s);
        self.cfg.schedule.is_last(
            it,
            self.state.wall_s,
            start.elapsed().as_secs_f64() + to_come,
        )
    }

    /// Runs iterations until the configured count.
    pub fn train(&mut self) -> Result<()> {
        let start = Instant::now();
        if self.state.iteration >= self.cfg.schedule.iterations {
            info!(
                "{} has completed all {} iterations; pass --iterations N to go further",
                self.dir.root.display(),
                self.cfg.schedule.iterations
            );
            return self.offer_best();
        }
        for it in self.state.iteration + 1..=self.cfg.schedule.iterations {
            if self.cfg.schedule.budget_spent(self.state.wall_s) {
                info!(
                    "time budget of {} min spent ({:.1} min of iterations): stopping after iteration {}",
                    self.cfg.schedule.time_budget.unwrap_or_default(),
                    self.state.wall_s / 60.0,
                    self.state.iteration
                );
                break;
            }
            if !self.iteration(it)? {
                info!(
                    "no new shard for {:.0}s: stopping after iteration {}",
                    match &self.source {
                        PositionSource::Exchange(learner) => learner.idle_exit.unwrap_or_default(),
                        PositionSource::SelfPlay { .. } => Duration::ZERO,
                    }
                    .as_secs_f64(),
                    self.state.iteration
                );
                break;
            }
        }
        self.offer_best()?;
        let strength = self
            .metrics
            .iter()
            .rev()
            .find(|m| !m.strength.is_empty())
            .map(|m| {
                let each: Vec<String> = m
                    .strength
                    .iter()
                    .map(|p| {
                        format!(
                            "vs {} +{} ={} -{} (score {:.2}, Elo {} [{}, {}])",
                            p.opponent,
                            p.wins,
                            p.draws,
                            p.losses,
                            p.score,
                            fmt_elo(p.elo),
                            fmt_elo(p.elo_low),
                            fmt_elo(p.elo_high)
                        )
                    })
                    .collect();
                let nodes = m.strength.first().map_or(0, |p| p.nodes);
                format!(
                    "; strength of iteration {} at {nodes} nodes/move: {}",
                    m.iteration,
                    each.join(", ")
                )
            })
            .unwrap_or_default();
        info!(
            "Done: {} iterations in {:.1}s; best network from iteration {}; {}{strength}",
            self.state.iteration,
            start.elapsed().as_secs_f64(),
            self.state.best_iteration,
            self.dir.root.display()
        );
        Ok(())
    }

    /// One iteration; false when a learner stopped waiting for shards (nothing done).
    fn iteration(&mut self, it: u64) -> Result<bool> {
        let start = Instant::now();
        let total = self.cfg.schedule.iterations;
        info!("=== iteration {it}/{total} ===");

        let Some(positions) = self.next_positions(it)? else {
            return Ok(false);
        };
        let sp = &positions.outcome;
        log_selfplay(it, sp);
        if !sp.samples.is_empty() {
            let size = self.cfg.training.window_size();
            self.window.set_capacity(size.capacity(sp.samples.len()));
        }
        self.window.push_samples(&sp.samples);

        // Steps follow the positions recorded for training (with a playout cap, only the
        // moves that got the full search).
        let steps = self.cfg.training.steps_for(
            sp.samples.len(),
            self.cfg.training.batch_size.min(self.window.len()),
        );
        let progress = self.cfg.schedule.progress(it, self.state.wall_s);
        self.trainer
            .set_base_lr(self.cfg.training.lr_at_progress(progress));
        let tr = TrainingStage {
            steps,
            batch: self.cfg.training.batch_size,
            seed: derive_seed(self.state.seed, it, STREAM_MINIBATCH),
            targets: self.cfg.training.targets_at_progress(progress),
        }
        .run(
            &mut self.trainer,
            &self.window,
            &mut self.progress.observer(),
        )?;
        log_training(&tr);
        self.trainer.network().check_usable().with_context(|| {
            format!(
                "iteration {it}: training left NaN or infinite values in the candidate (is --lr {} too high?); \
nothing of iteration {it} was saved, and the run resumes after iteration {}",
                self.cfg.training.lr,
                it - 1
            )
        })?;

        let gate = self.gate(it)?;
        let strength = self.strength(it, &gate, start)?;
        let commit_start = Instant::now();
        let m = self.commit(it, &positions, &tr, &gate, &strength, start)?;
        info!(
            "iteration {it}/{total} done in {:.1}s: self-play {:.1}s | training {:.1}s | gating {:.1}s | checkpoints {:.2}s; \
gating Elo summed over promotions {:+.0} (not a strength measure)",
            m.wall_total_s,
            m.wall_selfplay_s,
            m.wall_train_s,
            m.wall_gating_s,
            commit_start.elapsed().as_secs_f64(),
            m.cumulative_elo
        );
        info!("metrics: {}", serde_json::to_string(&m)?);
        if strength.is_some() {
            let measuring: f64 = self.metrics.iter().map(|m| m.wall_strength_s).sum();
            let run = self.state.wall_s.max(f64::EPSILON);
            info!(
                "strength {it}: measured in {:.1}s; the strength curve has taken {:.0}s of the run's {:.0}s ({:.1}%)",
                m.wall_strength_s,
                measuring,
                run,
                100.0 * measuring / run
            );
            // A run under a time budget offers its best network once, at its end: the
            // offers between would each cost a publishing match of the budget's time.
            if self.cfg.schedule.time_budget.is_none() {
                self.offer_best()?;
            }
        }
        Ok(true)
    }

    /// Iteration `it`'s positions from the session's source: self-play's games, or the
    /// workers' shards once enough have come. None when a learner stopped waiting for
    /// shards.
    fn next_positions(&mut self, it: u64) -> Result<Option<Positions>> {
        if let PositionSource::Exchange(learner) = &self.source {
            let t = &self.cfg.training;
            let needed = learner.positions_needed(t.batch_size, t.sample_reuse);
            let collected = learner.collect(&self.state.worker_shards, needed, it)?;
            return Ok(collected.map(|c| Positions {
                outcome: c.outcome,
                shard: None,
                worker_shards: c.shards,
            }));
        }
        let shard = RunDir::shard_name(it);
        let pgn = self.dir.selfplay_pgn(it);
        let outcome = self.self_play(
            derive_seed(self.state.seed, it, STREAM_SELFPLAY),
            &shard,
            &pgn,
            it,
        )?;
        Ok(Some(Positions {
            outcome,
            shard: Some(shard),
            worker_shards: Vec::new(),
        }))
    }

    /// Plays the configured games with the best network into `replay/<shard>` and `pgn`.
    /// The first game of the process is played alone and shown phase by phase.
    fn self_play(
        &mut self,
        seed: u64,
        shard: &str,
        pgn: &Path,
        it: u64,
    ) -> Result<SelfPlayOutcome> {
        let first_alone = match &mut self.source {
            PositionSource::SelfPlay { first_game_shown } if !*first_game_shown => {
                *first_game_shown = true;
                Some(derive_seed(self.state.seed, it, STREAM_FIRST_GAME))
            }
            _ => None,
        };
        let stage = self
            .cfg
            .selfplay
            .stage(!self.device.is_cpu(), it, seed, first_alone);
        let out = stage.run(
            &self.best,
            self.precision,
            &self.dir.replay().join(shard),
            pgn,
            &mut self.progress.observer(),
        )?;
        if let Some(first) = &out.first_game {
            log_first_game(first, self.cfg.selfplay.simulations);
        }
        Ok(out)
    }

    fn gate(&mut self, it: u64) -> Result<GatingOutcome> {
        let stage = self.cfg.gating.stage(
            &self.cfg.selfplay,
            !self.device.is_cpu(),
            derive_seed(self.state.seed, it, STREAM_GATING),
            (
                format!("candidate {it}"),
                format!("best {}", self.state.best_iteration),
            ),
        );
        let out = stage.run(
            self.trainer.network(),
            &self.best,
            self.precision,
            &mut self.progress.observer(),
        )?;
        if out.games() > 0 {
            write_atomic(&self.dir.gating_pgn(it), out.pgn().as_bytes())?;
            log_gating(self.state.best_iteration, &out);
        }
        Ok(out)
    }

    /// The network self-play will use next (the candidate if promoted) against the
    /// fixed anchors, when this iteration is due for it.
    fn strength(
        &mut self,
        it: u64,
        gate: &GatingOutcome,
        start: Instant,
    ) -> Result<Option<StrengthOutcome>> {
        let s = &self.cfg.strength;
        if !s.due(it, self.is_last(it, start)) {
            return Ok(None);
        }
        let stage = s.stage(
            &self.dir.snapshot(0),
            self.cfg.selfplay.max_plies.max(200),
            self.match_concurrency(),
            derive_seed(self.state.seed, it, STREAM_STRENGTH),
        )?;
        let (network, label) = if gate.promoted {
            (self.trainer.network(), format!("iteration {it}"))
        } else {
            (
                &self.best,
                format!("best (iteration {})", self.state.best_iteration),
            )
        };
        let setup = self.ember_setup();
        let out = stage.run(network, &label, &setup, &mut self.progress.observer())?;
        for p in &out.points {
            info!(
                "strength {it}: {label} vs {} at {} nodes/move: +{} ={} -{} ({} games), score {:.3}, Elo {} [95%: {}, {}]",
                p.opponent,
                p.nodes,
                p.wins,
                p.draws,
                p.losses,
                p.games,
                p.score,
                fmt_elo(p.elo),
                fmt_elo(p.elo_low),
                fmt_elo(p.elo_high)
            );
        }
        Ok(Some(out))
    }

    /// Writes the iteration's checkpoints and metrics and commits it (see
    /// [`ember_engine::pipeline::commit`]), then publishes a promotion.
    fn commit(
        &mut self,
        it: u64,
        positions: &Positions,
        tr: &TrainOutcome,
        gate: &GatingOutcome,
        strength: &Option<StrengthOutcome>,
        start: Instant,
    ) -> Result<IterationMetrics> {
        let mut meta = metadata(self.trainer.network().config, it);
        meta.insert(RUN_FIELD.to_string(), self.publisher.run.clone());
        let tensors: Vec<_> = self
            .trainer
            .network()
            .named_tensors()
            .into_iter()
            .map(|(n, v, _)| (n, v.as_tensor().clone()))
            .collect();
        let bytes = serialize(&tensors, meta)?;
        let sp = &positions.outcome;
        let iteration = Iteration {
            number: it,
            candidate: &bytes,
            promoted: gate.promoted,
            snapshot: self.cfg.schedule.snapshot(it, self.is_last(it, start)),
            shard: positions.shard.clone(),
            worker_shards: positions.worker_shards.clone(),
            positions: sp.samples.len() as u64,
            games: sp.stats.tally.games as u64,
            elo: gate.elo,
        };
        let mut next = iteration.next_state(&self.state, self.trainer.step());
        next.wall_s += start.elapsed().as_secs_f64();
        let mut m = iteration_metrics(it, sp, tr, gate, &next, start);
        let progress = self.cfg.schedule.progress(it, self.state.wall_s);
        let targets = self.cfg.training.targets_at_progress(progress);
        m.q_ratio = targets.q_ratio;
        m.material_ratio = targets.material_ratio;
        if let Some(s) = strength {
            m.strength = s.points.clone();
            m.wall_strength_s = s.wall.as_secs_f64();
        }
        let mut all = self.metrics.clone();
        all.push(m.clone());
        if let Err(e) = plot::plot(&self.dir.plot(), &all) {
            warn!("{e:#}");
        }
        commit(&self.dir, &next, &iteration, &self.trainer, &all)?;
        self.state = next;
        self.metrics = all;
        if gate.promoted {
            self.best = Network::from_bytes(
                &bytes,
                Some(self.cfg.net),
                &self.device,
                "the promoted candidate",
            )?;
            info!("promoted network written to {}", self.dir.best().display());
            if let PositionSource::Exchange(learner) = &self.source {
                learner.publish(it, &bytes)?;
            }
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
        let seed = derive_seed(self.state.seed, it, STREAM_EXTRA_SELFPLAY + k);
        let sp = self.self_play(seed, &shard, &pgn, it + 1)?;
        log_selfplay(it, &sp);
        let mut state = self.state.clone();
        state.shards.push(shard.clone());
        state.positions_total += sp.samples.len() as u64;
        state.games_total += sp.stats.tally.games as u64;
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

impl PositionSource {
    /// The replay window of a run in `dir` with `state`: a trainer's own shards, or a
    /// learner's workers' shards read from the exchange. A run goes on only with the kind
    /// of positions it was trained on.
    fn window(&self, dir: &RunDir, state: &RunState, size: WindowSize) -> Result<ReplayWindow> {
        let root = dir.root.display();
        match self {
            PositionSource::SelfPlay { .. } => {
                if !state.worker_shards.is_empty() {
                    bail!(
                        "{root} was trained by `trainer learn` on workers' shards; go on with `trainer learn --run-dir {root}`"
                    );
                }
                let (window, load) = ReplayWindow::load_listed(&dir.replay(), &state.shards, size)
                    .with_context(|| {
                        format!("loading the replay window from {}", dir.replay().display())
                    })?;
                if load.skipped_corrupt > 0 || load.torn_tail > 0 {
                    warn!(
                        "replay: skipped {} corrupt record(s) and {} torn tail(s) of {} records",
                        load.skipped_corrupt, load.torn_tail, load.records
                    );
                }
                Ok(window)
            }
            PositionSource::Exchange(learner) => {
                if !state.shards.is_empty() {
                    bail!(
                        "{root} holds a run of `trainer train` (its own self-play shards); `trainer learn` needs a run folder of its own"
                    );
                }
                learner.window(&state.worker_shards, size)
            }
        }
    }
}

/// The run's state: the committed one (after finishing or undoing an interrupted commit),
/// or a new one, which is written before any checkpoint so that a folder with checkpoints
/// and no `state.json` always means a lost state. Keeps the run's own seed in `cfg`.
fn recover_state(dir: &RunDir, cfg: &mut RunConfig) -> Result<RunState> {
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
    if !dir.state().exists() {
        dir.write_state(&state)?;
    }
    Ok(state)
}

/// The best network and the trainer of the candidate: created (and saved as iteration 0)
/// for a new run, loaded with the optimiser state for a resumed one.
fn open_networks(
    dir: &RunDir,
    cfg: &RunConfig,
    state: &RunState,
    device: &Device,
    precision: Precision,
    saved: Option<&RunConfig>,
    run: &str,
) -> Result<(Network, Trainer)> {
    let initial = state.iteration == 0 && !dir.best().exists();
    let best = if initial {
        let mut net = match &cfg.init {
            Some(path) => Network::load(Path::new(path), Some(cfg.net), device)
                .with_context(|| format!("--init {path}"))?,
            None => Network::new(cfg.net, device, derive_seed(cfg.seed, 0, STREAM_INIT))?,
        };
        net.iteration = 0;
        net.run = Some(run.to_string());
        // The first network is kept, so later ones can be matched against it.
        net.save(&dir.snapshot(0))?;
        net.save(&dir.best())?;
        net.save(&dir.latest())?;
        net
    } else {
        Network::load(&dir.best(), Some(cfg.net), device)?
    };
    let candidate = if dir.latest().exists() {
        Network::load(&dir.latest(), Some(cfg.net), device)?
    } else {
        Network::from_bytes(&best.to_bytes()?, Some(cfg.net), device, "the best network")?
    };
    let mut trainer = Trainer::new(candidate, cfg.training.train_config(precision))?;
    if saved.is_some_and(|s| s.training.optimizer != cfg.training.optimizer) {
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
    Ok((best, trainer))
}

fn log_start(
    dir: &RunDir,
    cfg: &RunConfig,
    state: &RunState,
    best: &Network,
    precision: Precision,
    existing: bool,
    gpu: bool,
) -> Result<()> {
    info!(
        "Network: {} (filters x blocks), {} parameters; training precision {}",
        cfg.net,
        best.parameter_count(),
        precision.as_str()
    );
    info!(
        "self-play {}",
        ember_engine::mcts::params::describe_tree_bound(
            u64::from(cfg.selfplay.simulations),
            cfg.selfplay.games_in_flight(gpu)
        )
    );
    if existing && state.iteration > 0 {
        info!(
            "Resuming {} after iteration {} of {} (best network from iteration {}, gating Elo summed over promotions {:+.0})",
            dir.root.display(),
            state.iteration,
            cfg.schedule.iterations,
            state.best_iteration,
            state.cumulative_elo
        );
    } else {
        info!("Run folder: {}", dir.root.display());
    }
    info!(
        "Configuration (saved in {}; games in flight {}, train steps {}):",
        dir.config().display(),
        cfg.selfplay.games_in_flight(gpu),
        cfg.training
            .train_steps
            .map_or("auto".to_string(), |s| s.to_string())
    );
    for line in serde_json::to_string_pretty(cfg)?.lines() {
        info!("  {line}");
    }
    Ok(())
}

/// The first few names of a list, for a one-line message.
fn summarize(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    match names.len() - shown.len() {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

fn fmt_loss(l: Option<f64>) -> String {
    l.map_or("n/a (every step skipped)".to_string(), |x| {
        format!("{x:.4}")
    })
}

fn fmt_elo(e: Option<f64>) -> String {
    e.map_or("n/a".to_string(), format_elo)
}

fn log_selfplay(it: u64, sp: &SelfPlayOutcome) {
    let s = &sp.stats;
    let t = &s.tally;
    let wall = s.wall;
    info!(
        "self-play {it}: {} games, {} moves searched ({} recorded for training) in {:.1}s ({:.1} moves/s, {:.2} evals/move), \
mean {:.1} plies; white {} / black {} / draws {}; ended by {}{}",
        t.games,
        s.positions,
        sp.samples.len(),
        wall.as_secs_f64(),
        s.positions as f64 / wall.as_secs_f64().max(1e-9),
        s.evals_per_position(),
        t.mean_plies(),
        t.white_wins,
        t.black_wins,
        t.draws,
        t.describe_terminations(),
        if t.resign_checked > 0 {
            format!(
                "; resignation false positives {}/{} played-out games",
                t.resign_false_positives, t.resign_checked
            )
        } else {
            String::new()
        }
    );
    info!("self-play phases (thread time): {}", s.timing.summary());
}

fn log_training(tr: &TrainOutcome) {
    info!(
        "training: {} steps x {} samples from a window of {} positions in {:.1}s ({:.0} samples/s); mean loss {} = \
policy {} + value {} + l2 {}; policy over a uniform guess among the legal moves {}, KL from the targets {}; lr {:.2e}{}{}",
        tr.steps,
        tr.batch,
        tr.window_positions,
        tr.wall.as_secs_f64(),
        (tr.steps * tr.batch) as f64 / tr.wall.as_secs_f64().max(1e-9),
        fmt_loss(tr.loss_total),
        fmt_loss(tr.loss_policy),
        fmt_loss(tr.loss_value),
        fmt_loss(tr.loss_l2),
        fmt_loss(tr.policy_excess()),
        fmt_loss(tr.policy_kl()),
        tr.lr,
        if tr.skipped > 0 { format!("; {} steps skipped (inf/NaN)", tr.skipped) } else { String::new() },
        tr.loss_scale.map_or(String::new(), |s| format!("; loss scale {s}")),
    );
    let [batch, forward, backward, optimizer] = tr.phases.map(|d| d.as_secs_f64());
    info!(
        "training phases: batch {batch:.2}s | forward {forward:.2}s | backward {backward:.2}s | optimizer {optimizer:.2}s"
    );
}

fn log_gating(best_iteration: u64, g: &GatingOutcome) {
    let r = &g.report.trinomial;
    info!(
        "gating: candidate vs best (iteration {best_iteration}) +{} ={} -{}: score {:.3}, Elo {} [95%: {}, {}] -> {} \
in {:.1}s ({:.2} games/s, mean {:.1} plies; ended by {})",
        r.wins,
        r.draws,
        r.losses,
        g.score,
        fmt_elo(g.elo),
        fmt_elo(g.interval.0),
        fmt_elo(g.interval.1),
        if g.promoted { "promoted" } else { "kept the best network" },
        g.wall.as_secs_f64(),
        g.games() as f64 / g.wall.as_secs_f64().max(1e-9),
        g.tally.mean_plies(),
        g.tally.describe_terminations()
    );
}

/// The metrics line of an iteration whose state afterwards is `next`.
fn iteration_metrics(
    it: u64,
    sp: &SelfPlayOutcome,
    tr: &TrainOutcome,
    gate: &GatingOutcome,
    next: &RunState,
    start: Instant,
) -> IterationMetrics {
    let wall_selfplay = sp.stats.wall.as_secs_f64();
    IterationMetrics {
        iteration: it,
        loss_policy: tr.loss_policy,
        loss_value: tr.loss_value,
        loss_l2: tr.loss_l2,
        loss_total: tr.loss_total,
        loss_reply: tr.loss_reply,
        loss_moves_left: tr.loss_moves_left,
        lr: tr.lr,
        skipped_steps: tr.skipped,
        positions: sp.samples.len(),
        tally: sp.stats.tally.clone(),
        mean_plies: sp.stats.tally.mean_plies(),
        selfplay_positions_per_s: sp.stats.positions as f64 / wall_selfplay.max(1e-9),
        evals_per_position: sp.stats.evals_per_position(),
        replay_positions: tr.window_positions,
        train_steps: tr.steps,
        train_batch: tr.batch,
        train_samples_per_s: (tr.steps * tr.batch) as f64 / tr.wall.as_secs_f64().max(1e-9),
        gating_games: gate.games(),
        gating_score: gate.score,
        gating_elo: gate.elo,
        gating_elo_low: gate.interval.0,
        gating_elo_high: gate.interval.1,
        promoted: gate.promoted,
        best_iteration: next.best_iteration,
        cumulative_elo: next.cumulative_elo,
        policy_excess: tr.policy_excess(),
        policy_kl: tr.policy_kl(),
        q_ratio: 0.0,
        material_ratio: 0.0,
        strength: Vec::new(),
        wall_strength_s: 0.0,
        wall_selfplay_s: wall_selfplay,
        wall_train_s: tr.wall.as_secs_f64(),
        wall_gating_s: gate.wall.as_secs_f64(),
        wall_total_s: start.elapsed().as_secs_f64(),
    }
}

/// The original's debug timing of the first game, with Ember's phases.
fn log_first_game(s: &PlayStats, simulations: u32) {
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
