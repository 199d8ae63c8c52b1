//! The training core: one optimisation step of the network on a minibatch of
//! self-play samples, with the optimiser, its learning-rate schedule and, for f16, the
//! dynamic loss scale. The trainer binary drives it; this module owns no files other
//! than the optimiser state it is asked to save, and no replay data (see
//! [`crate::replay`]).
//!
//! Loss (per sample, averaged over the batch):
//! - policy: cross-entropy of the policy logits against the full visit distribution,
//!   `-sum_i pi_i log softmax(logits)_i`;
//! - value: cross-entropy of the WDL logits against the one-hot game result for the side
//!   to move ([`ValueLoss::Wdl`]), or the squared error of `P(win) - P(loss)` against the
//!   result ([`ValueLoss::Mse`]);
//! - L2: `weight_decay / 2 * |w|^2` over weights only (not biases or batch norm), applied
//!   by the optimiser as weight decay and reported as a loss term.
//!
//! Mixed precision: master weights stay f32; the forward casts them to the compute type
//! inside each matmul (batch norm and the losses stay f32); gradients arrive in f32.

mod batch;
mod optim;
mod scaler;
#[cfg(test)]
mod tests;

pub use batch::{
    material_balance, BatchTensors, PolicyBaselines, Targets, TrainingBatch, MATERIAL_SCALE,
};
pub use optim::Optimizer;
pub use scaler::{all_finite, LossScaler, DEFAULT_GROWTH_INTERVAL, DEFAULT_INITIAL_SCALE};

use crate::files::write_atomic;
use crate::net::checkpoint::{read_file, serialize, Checkpoint};
use crate::net::{log_softmax, NetOutput, Network, Precision, TensorKind};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub const STATE_FORMAT_NAME: &str = "ember-trainer-state";
pub const STATE_FORMAT_VERSION: &str = "1";

/// The optimiser and its hyper-parameters (the learning rate is [`TrainConfig::lr`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum (AlphaZero's choice); weight decay as coupled L2.
    Sgd { momentum: f64 },
    /// AdamW; weight decay decoupled from the moments.
    AdamW { beta1: f64, beta2: f64, eps: f64 },
}

impl OptimizerKind {
    pub fn sgd() -> Self {
        OptimizerKind::Sgd { momentum: 0.9 }
    }

    pub fn adamw() -> Self {
        OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// A learning rate that suits the optimiser: 0.02 for SGD, 1e-3 for AdamW.
    pub fn default_lr(&self) -> f64 {
        match self {
            OptimizerKind::Sgd { .. } => 0.02,
            OptimizerKind::AdamW { .. } => 1e-3,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            OptimizerKind::Sgd { .. } => "sgd",
            OptimizerKind::AdamW { .. } => "adamw",
        }
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = anyhow::Error;
    /// `sgd` or `adamw`, with default hyper-parameters.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::sgd()),
            "adamw" | "adam" => Ok(OptimizerKind::adamw()),
            _ => bail!("unknown optimizer {s:?}: expected sgd or adamw"),
        }
    }
}

/// Learning rate as a function of the step (steps counted from 0 over the whole run).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LrSchedule {
    Constant,
    /// Half a cosine from the base rate down to `min_lr` over `total_steps`, then flat.
    Cosine {
        total_steps: u64,
        min_lr: f64,
    },
    /// The base rate times `gamma` once every `every` steps.
    Step {
        every: u64,
        gamma: f64,
    },
}

impl LrSchedule {
    pub fn lr_at(&self, base: f64, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine {
                total_steps,
                min_lr,
            } => {
                if total_steps == 0 {
                    return min_lr;
                }
                let progress = step.min(total_steps) as f64 / total_steps as f64;
                min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            LrSchedule::Step { every, gamma } => base * gamma.powf((step / every.max(1)) as f64),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueLoss {
    /// Cross-entropy of the WDL head against the one-hot result.
    #[default]
    Wdl,
    /// Squared error of the scalar `P(win) - P(loss)` against the result.
    Mse,
}

impl std::str::FromStr for ValueLoss {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "wdl" => Ok(ValueLoss::Wdl),
            "mse" => Ok(ValueLoss::Mse),
            _ => bail!("unknown value loss {s:?}: expected wdl or mse"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub batch_size: usize,
    /// Base learning rate (the schedule scales it).
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub optimizer: OptimizerKind,
    /// L2 coefficient on weights (not biases or batch norm).
    pub weight_decay: f64,
    /// Compute precision of the forward and backward; master weights stay f32.
    #[serde(with = "precision_name")]
    pub precision: Precision,
    pub value_loss: ValueLoss,
    /// Steps over which the rate rises linearly from near 0 to the schedule's rate.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Weight of the reply head's loss (a network without the head has none).
    #[serde(default = "default_reply_weight")]
    pub reply_weight: f32,
    /// Weight of the moves-left head's loss (a network without the head has none).
    #[serde(default = "default_moves_left_weight")]
    pub moves_left_weight: f32,
}

/// KataGo's weight for its auxiliary opponent-policy loss.
pub const DEFAULT_REPLY_WEIGHT: f32 = 0.15;

fn default_reply_weight() -> f32 {
    DEFAULT_REPLY_WEIGHT
}

/// The moves-left loss's weight: a quarter of the value loss's, so that a target the
/// tower can only partly predict does not pull it away from the policy and the value.
pub const DEFAULT_MOVES_LEFT_WEIGHT: f32 = 0.25;

fn default_moves_left_weight() -> f32 {
    DEFAULT_MOVES_LEFT_WEIGHT
}

/// Where the moves-left loss turns from quadratic to linear, in units of
/// [`crate::net::MOVES_LEFT_SCALE`] plies (lc0's 10 plies): a game that ended far sooner
/// or later than its position suggested pulls no harder than one 10 plies off.
pub const MOVES_LEFT_HUBER_DELTA: f64 = 0.5;

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 256,
            lr: OptimizerKind::sgd().default_lr(),
            lr_schedule: LrSchedule::Constant,
            optimizer: OptimizerKind::sgd(),
            weight_decay: 1e-4,
            precision: Precision::F32,
            value_loss: ValueLoss::Wdl,
            warmup_steps: 0,
            reply_weight: DEFAULT_REPLY_WEIGHT,
            moves_left_weight: DEFAULT_MOVES_LEFT_WEIGHT,
        }
    }
}

impl TrainConfig {
    /// The defaults with `optimizer` and its default learning rate.
    pub fn with_optimizer(optimizer: OptimizerKind) -> Self {
        TrainConfig {
            lr: optimizer.default_lr(),
            optimizer,
            ..Self::default()
        }
    }
}

/// `Precision` as its name (`f32`, `bf16`, `f16`) in configuration files.
mod precision_name {
    use crate::net::Precision;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Precision, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Precision, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// What one training step did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StepReport {
    pub loss_policy: f32,
    pub loss_value: f32,
    /// The reply head's cross-entropy over the rows whose reply is known (0 without the
    /// head); `loss_total` holds it times [`TrainConfig::reply_weight`].
    pub loss_reply: f32,
    /// The moves-left head's Huber loss over the rows whose plies left are known, in
    /// units of [`crate::net::MOVES_LEFT_SCALE`] plies (0 without the head);
    /// `loss_total` holds it times [`TrainConfig::moves_left_weight`].
    pub loss_moves_left: f32,
    /// `weight_decay / 2 * |w|^2` over the decayed weights, before the update.
    pub loss_l2: f32,
    pub loss_total: f32,
    pub lr: f64,
    /// The gradients held inf/NaN (f16 overflow) and no update was made.
    pub skipped: bool,
    /// The f16 loss scale this step used.
    pub loss_scale: Option<f64>,
    /// Forward pass and losses.
    pub forward: Duration,
    pub backward: Duration,
    /// Gradient check, unscaling and the update.
    pub optimizer: Duration,
}

pub struct Trainer {
    network: Network,
    config: TrainConfig,
    optimizer: Optimizer,
    scaler: Option<LossScaler>,
    /// Steps taken (skipped ones included); the learning-rate schedule follows it.
    step: u64,
}

impl Trainer {
    /// Fails on a configuration the device cannot run (bf16 on the CPU) or that cannot
    /// train (zero batch, non-positive learning rate, betas outside [0, 1)).
    pub fn new(network: Network, config: TrainConfig) -> Result<Trainer> {
        if config.precision == Precision::Bf16 && network.device.is_cpu() {
            bail!("bf16 training is not supported on the CPU (candle's CPU matmul has no bf16): use --precision f32 or f16");
        }
        if config.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        if !(config.lr > 0.0 && config.lr.is_finite()) {
            bail!("learning rate must be positive, got {}", config.lr);
        }
        if config.weight_decay.is_nan() || config.weight_decay < 0.0 {
            bail!(
                "weight decay must be non-negative, got {}",
                config.weight_decay
            );
        }
        match config.optimizer {
            OptimizerKind::Sgd { momentum } if !(0.0..1.0).contains(&momentum) => {
                bail!("SGD momentum must be in [0, 1), got {momentum}")
            }
            OptimizerKind::AdamW { beta1, beta2, eps }
                if !(0.0..1.0).contains(&beta1)
                    || !(0.0..1.0).contains(&beta2)
                    || eps.is_nan()
                    || eps <= 0.0 =>
            {
                bail!("AdamW needs betas in [0, 1) and eps > 0, got beta1 {beta1}, beta2 {beta2}, eps {eps}")
            }
            _ => {}
        }
        let scaler = (config.precision == Precision::F16).then(LossScaler::default);
        let optimizer = Optimizer::new(config.optimizer, config.weight_decay);
        Ok(Trainer {
            network,
            config,
            optimizer,
            scaler,
            step: 0,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    /// The f16 loss scaler (`None` in f32 and bf16).
    pub fn loss_scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// Replaces the f16 loss scaler (e.g. another initial scale or growth interval).
    /// Ignored unless the precision is f16.
    pub fn set_loss_scaler(&mut self, scaler: LossScaler) {
        if self.config.precision == Precision::F16 {
            self.scaler = Some(scaler);
        }
    }

    /// The learning rate of the next step.
    pub fn current_lr(&self) -> f64 {
        let warm = if self.step < self.config.warmup_steps {
            (self.step + 1) as f64 / self.config.warmup_steps as f64
        } else {
            1.0
        };
        warm * self.config.lr_schedule.lr_at(self.config.lr, self.step)
    }

    /// Sets the base learning rate (a schedule over iterations moves it between them).
    pub fn set_base_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// The reply head's cross-entropy, the mean over the rows whose reply is known (0 when
    /// the network has no reply head or no row a reply).
    fn reply_loss(&self, out: &NetOutput, target: &BatchTensors) -> Result<Option<Tensor>> {
        let Some(logits) = &out.reply else {
            return Ok(None);
        };
        let known = target.reply_known.sum_all()?.to_scalar::<f32>()?;
        if known == 0.0 {
            return Ok(None);
        }
        let picked = log_softmax(logits)?.gather(&target.reply, 1)?.squeeze(1)?;
        Ok(Some(
            ((picked * &target.reply_known)?.sum_all()? * (-1.0 / f64::from(known)))?,
        ))
    }

    /// The moves-left head's Huber loss ([`MOVES_LEFT_HUBER_DELTA`]), the mean over the
    /// rows whose plies left are known (none when the network has no moves-left head or
    /// no row known plies left).
    fn moves_left_loss(&self, out: &NetOutput, target: &BatchTensors) -> Result<Option<Tensor>> {
        let Some(raw) = &out.moves_left else {
            return Ok(None);
        };
        let known = target.moves_left_known.sum_all()?.to_scalar::<f32>()?;
        if known == 0.0 {
            return Ok(None);
        }
        let error = (raw - &target.moves_left)?.abs()?;
        let linear = (&error - MOVES_LEFT_HUBER_DELTA)?.relu()?;
        let quadratic = (&error - &linear)?;
        let huber = ((quadratic.sqr()? * 0.5)? + (linear * MOVES_LEFT_HUBER_DELTA)?)?;
        Ok(Some(
            ((huber * &target.moves_left_known)?.sum_all()? * (1.0 / f64::from(known)))?,
        ))
    }

    /// (policy loss, value loss) as scalar tensors.
    fn losses(&self, out: &NetOutput, target: &BatchTensors) -> Result<(Tensor, Tensor)> {
        let n = out.policy.dim(0)? as f64;
        // Sums over rows first, then over the batch: one block per row, where a single
        // `sum_all` over the whole [n, 4672] would run on one block of the GPU.
        let logits = match &target.mask {
            Some(mask) => (&out.policy + mask)?,
            None => out.policy.clone(),
        };
        let policy = ((log_softmax(&logits)? * &target.policy)?
            .sum(1)?
            .sum_all()?
            * (-1.0 / n))?;
        let log_wdl = log_softmax(&out.wdl)?;
        let value = match self.config.value_loss {
            ValueLoss::Wdl => ((log_wdl * &target.wdl)?.sum(1)?.sum_all()? * (-1.0 / n))?,
            ValueLoss::Mse => {
                let p = log_wdl.exp()?;
                let v = (p.narrow(1, 0, 1)? - p.narrow(1, 2, 1)?)?.squeeze(1)?;
                (v - &target.results)?.sqr()?.mean_all()?
            }
        };
        Ok((policy, value))
    }

    /// `weight_decay / 2 * |w|^2` over the decayed weights.
    fn l2_term(&self, params: &optim::Params) -> Result<f32> {
        if self.config.weight_decay == 0.0 {
            return Ok(0.0);
        }
        let sums = params
            .iter()
            .filter(|(_, _, decay)| *decay)
            .map(|(_, v, _)| v.as_tensor().sqr()?.sum_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        if sums.is_empty() {
            return Ok(0.0);
        }
        let total = Tensor::stack(&sums, 0)?.sum_all()?.to_scalar::<f32>()?;
        Ok(0.5 * self.config.weight_decay as f32 * total)
    }

    /// One optimisation step on `batch` (training-mode batch norm).
    pub fn train_step(&mut self, batch: &TrainingBatch) -> Result<StepReport> {
        let lr = self.current_lr();
        let loss_scale = self.scaler.as_ref().map(LossScaler::scale);
        let t0 = Instant::now();
        // A skipped step leaves the network exactly as it was: the training-mode forward
        // updates the batch-norm running statistics before the gradients are checked, and
        // activations that overflow would leave them NaN for good.
        let statistics: Vec<(Var, Tensor)> = self
            .network
            .named_tensors()
            .into_iter()
            .filter(|(_, _, kind)| *kind == TensorKind::Statistic)
            .map(|(_, v, _)| Ok((v.clone(), v.as_tensor().copy()?)))
            .collect::<candle_core::Result<_>>()?;
        let target = batch
            .to_tensors(&self.network.device)
            .context("moving the training batch to the device")?;
        let out = self
            .network
            .forward(&target.planes, true, self.config.precision.dtype())
            .context("training forward pass")?;
        let (policy, value) = self.losses(&out, &target)?;
        let reply = self.reply_loss(&out, &target)?;
        let mut loss = (&policy + &value)?;
        let loss_reply = match &reply {
            Some(r) => {
                loss = (loss + (r * f64::from(self.config.reply_weight))?)?;
                r.to_scalar::<f32>()?
            }
            None => 0.0,
        };
        let loss_moves_left = match self.moves_left_loss(&out, &target)? {
            Some(m) => {
                loss = (loss + (&m * f64::from(self.config.moves_left_weight))?)?;
                m.to_scalar::<f32>()?
            }
            None => 0.0,
        };
        let loss_policy = policy.to_scalar::<f32>()?;
        let loss_value = value.to_scalar::<f32>()?;
        let params = self.network.trainable();
        let loss_l2 = self.l2_term(&params)?;
        let forward = t0.elapsed();

        let t1 = Instant::now();
        let backprop = match loss_scale {
            Some(s) => (&loss * s)?,
            None => loss,
        };
        let mut grad_store = backprop.backward().context("training backward pass")?;
        let grads: Vec<Option<Tensor>> = params
            .iter()
            .map(|(_, v, _)| grad_store.remove(v.as_tensor()))
            .collect();
        let backward = t1.elapsed();

        let t2 = Instant::now();
        let present: Vec<Tensor> = grads.iter().flatten().cloned().collect();
        let checked = match &mut self.scaler {
            Some(scaler) => scaler.unscale(&present)?,
            None => all_finite(&present)?.then_some(present),
        };
        let skipped = checked.is_none();
        if skipped {
            for (var, before) in &statistics {
                var.set(before)?;
            }
        }
        if let Some(unscaled) = checked {
            let mut unscaled = unscaled.into_iter();
            let grads: Vec<Option<Tensor>> = grads
                .iter()
                .map(|g| g.as_ref().and_then(|_| unscaled.next()))
                .collect();
            self.optimizer
                .apply(&params, &grads, lr)
                .context("optimizer update")?;
        } else if self.scaler.is_none() {
            log::warn!(
                "step {}: non-finite gradients (loss {}); update skipped",
                self.step,
                loss_policy + loss_value
            );
        }
        let optimizer = t2.elapsed();
        self.step += 1;
        Ok(StepReport {
            loss_policy,
            loss_value,
            loss_reply,
            loss_moves_left,
            loss_l2,
            loss_total: loss_policy
                + loss_value
                + self.config.reply_weight * loss_reply
                + self.config.moves_left_weight * loss_moves_left
                + loss_l2,
            lr,
            skipped,
            loss_scale,
            forward,
            backward,
            optimizer,
        })
    }

    /// (policy loss, value loss) on `batch` with running batch-norm statistics and no
    /// update.
    pub fn evaluate_loss(&self, batch: &TrainingBatch) -> Result<(f32, f32)> {
        let target = batch.to_tensors(&self.network.device)?;
        let out = self
            .network
            .forward(&target.planes, false, self.config.precision.dtype())
            .context("evaluation forward pass")?;
        let (policy, value) = self.losses(&out, &target)?;
        Ok((policy.to_scalar::<f32>()?, value.to_scalar::<f32>()?))
    }

    /// Saves the optimiser state (moments, step counts, loss scale) atomically as
    /// safetensors. The network is saved separately ([`Network::save`]).
    pub fn save_state(&self, path: &Path) -> Result<()> {
        let mut meta = HashMap::from([
            ("format".to_string(), STATE_FORMAT_NAME.to_string()),
            (
                "format_version".to_string(),
                STATE_FORMAT_VERSION.to_string(),
            ),
            (
                "optimizer".to_string(),
                self.config.optimizer.as_str().to_string(),
            ),
            ("step".to_string(), self.step.to_string()),
            ("updates".to_string(), self.optimizer.updates().to_string()),
            (
                "precision".to_string(),
                self.config.precision.as_str().to_string(),
            ),
            (
                "train_config".to_string(),
                serde_json::to_string(&self.config)?,
            ),
        ]);
        if let Some(s) = &self.scaler {
            meta.insert("loss_scale".to_string(), s.scale().to_string());
            meta.insert(
                "loss_scale_clean_steps".to_string(),
                s.clean_steps().to_string(),
            );
        }
        let bytes = serialize(&self.optimizer.state_tensors(), meta)?;
        write_atomic(path, &bytes)
            .with_context(|| format!("saving trainer state to {}", path.display()))
    }

    /// Restores what [`Self::save_state`] wrote. A state of another optimiser or of
    /// variables this network lacks is an error naming the difference.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        let origin = path.display().to_string();
        let bytes = read_file(path).context("reading the trainer state")?;
        let ckpt = Checkpoint::parse(&bytes, &origin)?;
        let format = ckpt.field("format")?;
        if format != STATE_FORMAT_NAME {
            bail!(
                "{origin}: metadata field `format` is {format:?}, expected {STATE_FORMAT_NAME:?}"
            );
        }
        let version = ckpt.field("format_version")?;
        if version != STATE_FORMAT_VERSION {
            bail!("{origin}: trainer state format version {version}, this build reads {STATE_FORMAT_VERSION}");
        }
        let optimizer = ckpt.field("optimizer")?;
        if optimizer != self.config.optimizer.as_str() {
            bail!(
                "{origin} holds {optimizer} optimizer state, but this run trains with {}",
                self.config.optimizer.as_str()
            );
        }
        let num = |k: &str| -> Result<u64> {
            let v = ckpt.field(k)?;
            v.parse().map_err(|_| {
                anyhow!("{origin}: metadata field `{k}` is {v:?}, expected a whole number")
            })
        };
        let step = num("step")?;
        let updates = num("updates")?;
        // Every tensor must belong to a trainable variable and have its shape: checked
        // before anything is read into memory.
        let params = self.network.trainable();
        let shapes: HashMap<&str, &[usize]> = params
            .iter()
            .map(|(n, v, _)| (n.as_str(), v.as_tensor().dims()))
            .collect();
        let mut tensors = HashMap::new();
        for (name, shape) in ckpt.shapes() {
            // Optimiser state is named `PREFIX.VARIABLE` (`m.`, `v.`, `momentum.`).
            let var = name.split_once('.').map_or(name.as_str(), |(_, v)| v);
            match shapes.get(var) {
                Some(want) if *want == shape.as_slice() => {}
                Some(want) => {
                    bail!("{origin}: tensor `{name}` has shape {shape:?}, expected {want:?}")
                }
                None => bail!("{origin}: tensor `{name}` belongs to no variable of this network"),
            }
            let (shape, data) = ckpt.f32(&name, None)?;
            tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        }
        let meta = &ckpt.meta;
        self.optimizer.restore(&params, tensors, updates, &origin)?;
        self.step = step;
        if let Some(s) = &mut self.scaler {
            if let (Some(scale), Some(clean)) =
                (meta.get("loss_scale"), meta.get("loss_scale_clean_steps"))
            {
                let scale: f64 = scale
                    .parse()
                    .map_err(|_| anyhow!("{origin}: `loss_scale` is not a number"))?;
                let clean: u32 = clean
                    .parse()
                    .map_err(|_| anyhow!("{origin}: `loss_scale_clean_steps` is not a number"))?;
                s.restore(scale, clean);
            }
        }
        Ok(())
    }
}
