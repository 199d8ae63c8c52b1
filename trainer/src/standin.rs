//! Temporary stand-in for the engine's training core (`train`, `replay`, `arena`) with
//! the same API, so the trainer compiles and runs before that core lands.

#![allow(dead_code)]

pub mod train {
    use anyhow::Result;
    use candle_core::{DType, Device, Tensor, D};
    use candle_nn::Optimizer;
    use ember_engine::encoding::{encode_position, PLANES_LEN, POLICY_SIZE};
    use ember_engine::net::{log_softmax, Network, Precision};
    use ember_engine::selfplay::Sample;
    use std::path::Path;
    use std::time::{Duration, Instant};

    #[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize, Default)]
    pub enum LrSchedule {
        #[default]
        Constant,
        Cosine {
            total_steps: u64,
            min_lr: f64,
        },
        Step {
            every: u64,
            gamma: f64,
        },
    }

    #[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub enum OptimizerKind {
        Sgd { momentum: f64 },
        AdamW { beta1: f64, beta2: f64, eps: f64 },
    }

    #[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize, Default)]
    pub enum ValueLoss {
        #[default]
        Wdl,
        Mse,
    }

    #[derive(Clone, Debug)]
    pub struct TrainConfig {
        pub batch_size: usize,
        pub lr: f64,
        pub lr_schedule: LrSchedule,
        pub optimizer: OptimizerKind,
        pub weight_decay: f64,
        pub precision: Precision,
        pub value_loss: ValueLoss,
    }

    impl Default for TrainConfig {
        fn default() -> Self {
            TrainConfig {
                batch_size: 256,
                lr: 1e-3,
                lr_schedule: LrSchedule::Constant,
                optimizer: OptimizerKind::AdamW {
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                },
                weight_decay: 1e-4,
                precision: Precision::F32,
                value_loss: ValueLoss::Wdl,
            }
        }
    }

    pub struct TrainingBatch {
        planes: Vec<f32>,
        policy: Vec<f32>,
        wdl: Vec<f32>,
        len: usize,
    }

    impl TrainingBatch {
        pub fn from_samples(samples: &[&Sample]) -> TrainingBatch {
            let n = samples.len();
            let mut planes = vec![0f32; n * PLANES_LEN];
            let mut policy = vec![0f32; n * POLICY_SIZE];
            let mut wdl = vec![0f32; n * 3];
            for (i, s) in samples.iter().enumerate() {
                encode_position(
                    &s.position,
                    &mut planes[i * PLANES_LEN..(i + 1) * PLANES_LEN],
                );
                for &(idx, p) in &s.policy {
                    policy[i * POLICY_SIZE + idx as usize] = p;
                }
                let k = if s.result > 0.5 {
                    0
                } else if s.result < -0.5 {
                    2
                } else {
                    1
                };
                wdl[i * 3 + k] = 1.0;
            }
            TrainingBatch {
                planes,
                policy,
                wdl,
                len: n,
            }
        }
    }

    #[derive(Clone, Debug, Default)]
    pub struct StepReport {
        pub loss_policy: f32,
        pub loss_value: f32,
        pub loss_l2: f32,
        pub loss_total: f32,
        pub lr: f64,
        pub skipped: bool,
        pub loss_scale: Option<f64>,
        pub forward: Duration,
        pub backward: Duration,
        pub optimizer: Duration,
    }

    pub struct Trainer {
        net: Network,
        cfg: TrainConfig,
        opt: candle_nn::SGD,
        step: u64,
    }

    impl Trainer {
        pub fn new(net: Network, cfg: TrainConfig) -> Result<Trainer> {
            let vars = net.trainable().into_iter().map(|(_, v, _)| v).collect();
            let opt = candle_nn::SGD::new(vars, cfg.lr)?;
            Ok(Trainer {
                net,
                cfg,
                opt,
                step: 0,
            })
        }

        pub fn train_step(&mut self, batch: &TrainingBatch) -> Result<StepReport> {
            let dev = self.net.device.clone();
            let t0 = Instant::now();
            let planes = Tensor::from_slice(&batch.planes, (batch.len, PLANES_LEN), &dev)?;
            let target_p = Tensor::from_slice(&batch.policy, (batch.len, POLICY_SIZE), &dev)?;
            let target_v = Tensor::from_slice(&batch.wdl, (batch.len, 3), &dev)?;
            let out = self.net.forward(&planes, true, DType::F32)?;
            let lp = (log_softmax(&out.policy)? * target_p)?
                .sum(D::Minus1)?
                .neg()?
                .mean_all()?;
            let lv = (log_softmax(&out.wdl)? * target_v)?
                .sum(D::Minus1)?
                .neg()?
                .mean_all()?;
            let total = (&lp + &lv)?;
            let t1 = Instant::now();
            let grads = total.backward()?;
            let t2 = Instant::now();
            self.opt.step(&grads)?;
            let t3 = Instant::now();
            self.step += 1;
            let f =
                |t: &Tensor| -> Result<f32> { Ok(t.to_device(&Device::Cpu)?.to_scalar::<f32>()?) };
            Ok(StepReport {
                loss_policy: f(&lp)?,
                loss_value: f(&lv)?,
                loss_l2: 0.0,
                loss_total: f(&total)?,
                lr: self.cfg.lr,
                skipped: false,
                loss_scale: None,
                forward: t1 - t0,
                backward: t2 - t1,
                optimizer: t3 - t2,
            })
        }

        pub fn network(&self) -> &Network {
            &self.net
        }
        pub fn into_network(self) -> Network {
            self.net
        }
        pub fn step(&self) -> u64 {
            self.step
        }
        pub fn save_state(&self, path: &Path) -> Result<()> {
            ember_engine::net::checkpoint::write_atomic(
                path,
                format!("{{\"step\":{}}}", self.step).as_bytes(),
            )
        }
        pub fn load_state(&mut self, path: &Path) -> Result<()> {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
            self.step = v["step"].as_u64().unwrap_or(0);
            Ok(())
        }
    }
}

pub mod replay {
    use anyhow::{Context, Result};
    use ember_engine::game::{fen_of, position_from_fen};
    use ember_engine::selfplay::Sample;
    use rand::Rng;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    pub struct ShardWriter {
        path: PathBuf,
        partial: PathBuf,
        file: std::io::BufWriter<std::fs::File>,
    }

    impl ShardWriter {
        pub fn create(path: &Path) -> Result<ShardWriter> {
            let partial = path.with_extension("partial");
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            Ok(ShardWriter {
                path: path.to_path_buf(),
                partial,
                file: std::io::BufWriter::new(file),
            })
        }
        pub fn append(&mut self, s: &Sample) -> Result<()> {
            let mut rec = Vec::new();
            let fen = fen_of(&s.position);
            rec.extend_from_slice(&(fen.len() as u16).to_le_bytes());
            rec.extend_from_slice(fen.as_bytes());
            rec.extend_from_slice(&(s.policy.len() as u16).to_le_bytes());
            for &(i, p) in &s.policy {
                rec.extend_from_slice(&i.to_le_bytes());
                rec.extend_from_slice(&p.to_le_bytes());
            }
            rec.extend_from_slice(&s.result.to_le_bytes());
            rec.extend_from_slice(&s.root_q.to_le_bytes());
            self.file.write_all(&(rec.len() as u32).to_le_bytes())?;
            self.file.write_all(&crc32fast::hash(&rec).to_le_bytes())?;
            self.file.write_all(&rec)?;
            Ok(())
        }
        pub fn finish(self) -> Result<PathBuf> {
            let f = self.file.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            std::fs::rename(&self.partial, &self.path)?;
            Ok(self.path)
        }
    }

    #[derive(Clone, Copy, Debug, Default)]
    pub struct LoadStats {
        pub records: usize,
        pub skipped_corrupt: usize,
        pub torn_tail: usize,
    }

    pub struct ReplayWindow {
        samples: Vec<Sample>,
    }

    fn parse(rec: &[u8]) -> Option<Sample> {
        let u16at = |o: usize| u16::from_le_bytes([rec[o], rec[o + 1]]);
        let f32at = |o: usize| f32::from_le_bytes([rec[o], rec[o + 1], rec[o + 2], rec[o + 3]]);
        let fl = u16at(0) as usize;
        let position = position_from_fen(std::str::from_utf8(&rec[2..2 + fl]).ok()?).ok()?;
        let mut o = 2 + fl;
        let n = u16at(o) as usize;
        o += 2;
        let mut policy = Vec::with_capacity(n);
        for _ in 0..n {
            policy.push((u16at(o), f32at(o + 2)));
            o += 6;
        }
        Some(Sample {
            position,
            policy,
            result: f32at(o),
            root_q: f32at(o + 4),
        })
    }

    impl ReplayWindow {
        pub fn load(dir: &Path, capacity: usize) -> Result<(ReplayWindow, LoadStats)> {
            let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "shard"))
                .collect();
            names.sort();
            let mut stats = LoadStats::default();
            let mut samples = Vec::new();
            for p in names {
                let bytes = std::fs::read(&p)?;
                let mut o = 0;
                while o + 8 <= bytes.len() {
                    let len = u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
                    let crc = u32::from_le_bytes(bytes[o + 4..o + 8].try_into().unwrap());
                    if o + 8 + len > bytes.len() {
                        stats.torn_tail += 1;
                        break;
                    }
                    let rec = &bytes[o + 8..o + 8 + len];
                    match (crc32fast::hash(rec) == crc).then(|| parse(rec)).flatten() {
                        Some(s) => {
                            samples.push(s);
                            stats.records += 1;
                        }
                        None => stats.skipped_corrupt += 1,
                    }
                    o += 8 + len;
                }
            }
            let drop = samples.len().saturating_sub(capacity);
            samples.drain(..drop);
            Ok((ReplayWindow { samples }, stats))
        }
        pub fn len(&self) -> usize {
            self.samples.len()
        }
        pub fn is_empty(&self) -> bool {
            self.samples.is_empty()
        }
        pub fn sample_batch<R: Rng>(&self, rng: &mut R, n: usize) -> Vec<&Sample> {
            (0..n)
                .map(|_| &self.samples[rng.random_range(0..self.samples.len())])
                .collect()
        }
    }
}

pub mod arena {
    use anyhow::Result;
    use ember_engine::game::{Game, GameOutcome, Termination};
    use ember_engine::mcts::{Evaluator, Search, SearchParams};
    use ember_engine::timing::PhaseTimes;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use shakmaty::{Color, KnownOutcome, Position};

    #[derive(Clone, Debug)]
    pub struct MatchConfig {
        pub games: usize,
        pub games_in_flight: usize,
        pub simulations: u32,
        pub max_plies: u32,
        pub opening_random_plies: u32,
        pub temperature: f32,
        pub seed: u64,
        pub search: SearchParams,
    }

    pub struct MatchGame {
        pub index: usize,
        pub a_is_white: bool,
        pub outcome: GameOutcome,
        pub plies: usize,
        pub pgn: String,
    }

    #[derive(Clone, Debug, Default)]
    pub struct MatchResult {
        pub games: usize,
        pub wins_a: usize,
        pub draws: usize,
        pub losses_a: usize,
        pub pgns: Vec<String>,
    }

    impl MatchResult {
        pub fn score_a(&self) -> f64 {
            (self.wins_a as f64 + 0.5 * self.draws as f64) / self.games.max(1) as f64
        }
        pub fn elo_diff(&self) -> f64 {
            let s = self.score_a().clamp(1e-3, 1.0 - 1e-3);
            -400.0 * (1.0 / s - 1.0).log10()
        }
        pub fn elo_interval(&self) -> (f64, f64) {
            let n = self.games.max(1) as f64;
            let s = self.score_a();
            let se = (s * (1.0 - s) / n).sqrt().max(0.5 / n);
            let e = |x: f64| -400.0 * (1.0 / x.clamp(1e-3, 1.0 - 1e-3) - 1.0).log10();
            (e(s - 1.96 * se), e(s + 1.96 * se))
        }
    }

    pub fn play_match(
        cfg: &MatchConfig,
        a: &mut dyn Evaluator,
        b: &mut dyn Evaluator,
        mut on_game: impl FnMut(&MatchGame),
    ) -> Result<MatchResult> {
        let mut res = MatchResult::default();
        let mut timing = PhaseTimes::default();
        for index in 0..cfg.games {
            let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(index as u64 / 2));
            let mut game = Game::new();
            for _ in 0..cfg.opening_random_plies {
                let moves = game.position().legal_moves();
                if moves.is_empty() {
                    break;
                }
                game.play(moves[rng.random_range(0..moves.len())]);
            }
            let a_is_white = index % 2 == 0;
            let mut sa = Search::new(&game, cfg.search.clone());
            let mut sb = Search::new(&game, cfg.search.clone());
            let outcome = loop {
                if let Some(o) = game.outcome() {
                    break o;
                }
                if game.ply() as u32 >= cfg.max_plies {
                    break GameOutcome {
                        result: KnownOutcome::Draw,
                        termination: Termination::MaxPlies,
                    };
                }
                let a_moves = (game.position().turn() == Color::White) == a_is_white;
                let (s, e): (&mut Search, &mut dyn Evaluator) = if a_moves {
                    (&mut sa, &mut *a)
                } else {
                    (&mut sb, &mut *b)
                };
                s.advance_to(&game);
                s.run_until_visits(e, cfg.simulations, &mut timing)?;
                let Some(mv) = s.choose_move(cfg.temperature, &mut rng) else {
                    break game.outcome().expect("no move means game over");
                };
                game.play(mv);
            };
            let a_color = if a_is_white {
                Color::White
            } else {
                Color::Black
            };
            match outcome.result.winner() {
                Some(c) if c == a_color => res.wins_a += 1,
                Some(_) => res.losses_a += 1,
                None => res.draws += 1,
            }
            res.games += 1;
            let pgn = game.to_pgn(Some(outcome), &[("Event", "Ember match".to_string())]);
            res.pgns.push(pgn.clone());
            on_game(&MatchGame {
                index,
                a_is_white,
                outcome,
                plies: game.ply(),
                pgn,
            });
        }
        Ok(res)
    }
}
