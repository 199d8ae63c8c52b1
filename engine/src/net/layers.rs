//! The network's layers, written the way candle-nn writes its own: each is built from a
//! [`VarBuilder`] (so a tensor's checkpoint name is its builder path, `tower.2.conv1.bn.gamma`),
//! has a training-form `forward`, and a `fold` to its inference form (batch norm folded
//! into the weights), which the CPU ([`super::cpu::CpuNet`]) and device
//! ([`super::DeviceNet`]) inference paths both run.
//!
//! Activations are channels-last, `[B, 64, C]`, so every convolution is one GEMM over the
//! [`super::im2col`] columns; on the CPU in f32, a 3x3 convolution is instead one op with
//! its own backward ([`super::conv3x3`]: Winograd forward and gradients), and in training
//! the same op also applies the batch norm and the activation that follow it.
//!
//! Where the tensors come from is the builder's business ([`TensorSource`]): a seeded
//! initialisation, or a checkpoint whose every tensor is checked against the shape the
//! layer asks for before it is read.

use super::batchnorm::{batch_norm_train, Activation, BatchStats};
use super::checkpoint::Checkpoint;
use super::im2col;
use crate::encoding::{POLICY_PLANES, POLICY_SIZE};
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::sync::Mutex;

pub use candle_nn::VarBuilder;

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// Whether a named tensor is trained, and whether weight decay applies to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// Convolution and dense weights: trained, with weight decay.
    Weight,
    /// Biases and batch-norm scale/shift: trained, no weight decay.
    Bias,
    /// Batch-norm running statistics: not trained.
    Statistic,
}

impl TensorKind {
    /// The kind of the tensor a layer names `name` (its last path component says it).
    pub fn of(name: &str) -> TensorKind {
        let last = name.rsplit('.').next().unwrap_or(name);
        match last {
            "weight" => TensorKind::Weight,
            "running_mean" | "running_var" => TensorKind::Statistic,
            _ => TensorKind::Bias,
        }
    }
}

/// Where a [`VarBuilder`]'s tensors come from.
pub enum TensorSource<'a> {
    /// Fresh: `Init::Randn` drawn from a generator seeded with this value (deterministic),
    /// `Init::Const` filled.
    Seeded(u64),
    /// A checkpoint: each tensor must be there with the shape asked for, F32 and finite.
    Checkpoint(&'a Checkpoint<'a>),
}

/// The backend behind Ember's [`VarBuilder`]s: hands out every tensor as a [`Var`] and
/// remembers each by its path, in the order the layers asked for them.
pub struct TensorStore<'a> {
    source: TensorSource<'a>,
    rng: Mutex<StdRng>,
    vars: Mutex<Vec<(String, Var)>>,
}

impl<'a> TensorStore<'a> {
    pub fn new(source: TensorSource<'a>) -> TensorStore<'a> {
        let seed = match source {
            TensorSource::Seeded(s) => s,
            TensorSource::Checkpoint(_) => 0,
        };
        TensorStore {
            source,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            vars: Mutex::new(Vec::new()),
        }
    }

    /// A builder over this store, rooted at the empty path.
    pub fn builder<'s>(&'s self, device: &Device) -> VarBuilder<'s> {
        VarBuilder::from_backend(Box::new(self), DType::F32, device.clone())
    }

    /// The variables handed out, by path, in the order they were built.
    pub fn into_vars(self) -> Vec<(String, Var)> {
        self.vars.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, shape: &Shape, init: Init, device: &Device) -> candle_core::Result<Tensor> {
        let n = shape.elem_count();
        let data: Vec<f32> = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Randn { mean, stdev } => {
                let normal = Normal::new(mean, stdev)
                    .map_err(|e| candle_core::Error::Msg(format!("initialiser: {e}")))?;
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                (0..n).map(|_| normal.sample(&mut *rng) as f32).collect()
            }
            other => candle_core::bail!("unsupported initialiser {other:?}"),
        };
        Tensor::from_vec(data, shape, device)
    }
}

impl SimpleBackend for &TensorStore<'_> {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        _dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = match &self.source {
            TensorSource::Seeded(_) => self.fresh(&shape, init, device)?,
            TensorSource::Checkpoint(ckpt) => {
                let (dims, data) = ckpt
                    .f32(name, Some(shape.dims()))
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                Tensor::from_vec(data, dims, device)?
            }
        };
        let var = Var::from_tensor(&tensor)?;
        self.vars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), var.clone()));
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("tensor `{name}` must be asked for with its shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match &self.source {
            TensorSource::Seeded(_) => false,
            TensorSource::Checkpoint(ckpt) => ckpt.shapes().iter().any(|(n, _)| n == name),
        }
    }
}

/// A variable at `name` under `vb`: the builder hands out variable tensors, so this is the
/// store's own [`Var`] (no copy).
fn var(vb: &VarBuilder, shape: &[usize], name: &str, init: Init) -> candle_core::Result<Var> {
    Var::from_tensor(&vb.get_with_hints(shape, name, init)?)
}

/// He-normal initialisation for a layer with `fan_in` inputs.
fn he(fan_in: usize) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: (2.0 / fan_in as f64).sqrt(),
    }
}

/// A small initialisation for output layers, so the first policy is near uniform and the
/// first value near zero.
const SMALL: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.01,
};

/// A folded layer: `y = x W + b`, `W` row-major `[rows, cols]`.
#[derive(Clone, Debug)]
pub struct FoldedLayer {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

/// Batch norm over the channel (last) dimension of `[N, C]` rows.
pub struct BatchNorm {
    pub gamma: Var,
    pub beta: Var,
    pub running_mean: Var,
    pub running_var: Var,
}

impl BatchNorm {
    pub fn new(channels: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(BatchNorm {
            gamma: var(&vb, &[channels], "gamma", Init::Const(1.0))?,
            beta: var(&vb, &[channels], "beta", Init::Const(0.0))?,
            running_mean: var(&vb, &[channels], "running_mean", Init::Const(0.0))?,
            running_var: var(&vb, &[channels], "running_var", Init::Const(1.0))?,
        })
    }

    /// In training mode normalises with the batch statistics and updates the running
    /// ones; otherwise uses the running statistics.
    ///
    /// In training mode every sum over the rows and every broadcast of a per-channel row
    /// is a matrix product with a column of ones ([`Rows`]): their gradients are matrix
    /// products too, where candle's reduction over the leading dimension of `[N, C]` (the
    /// gradient of a broadcast) runs on C blocks with strided loads and is the slowest
    /// kernel of a training step on a GPU.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_act(x, train, Activation::Identity, None)
    }

    /// [`Self::forward`] followed by `activation`; `skip` (`[N, C]`) is added before the
    /// ReLU of [`Activation::ResidualRelu`]. In training on the CPU in f32 the three are
    /// one op.
    pub fn forward_act(
        &self,
        x: &Tensor,
        train: bool,
        activation: Activation,
        skip: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        if train && x.device().is_cpu() && x.dtype() == DType::F32 {
            return self.forward_train_cpu(x, activation, skip);
        }
        let y = if train {
            self.forward_train_rows(x)?
        } else {
            let mean = self.running_mean.as_tensor().unsqueeze(0)?;
            let var = self.running_var.as_tensor().unsqueeze(0)?;
            let inv = (var + BN_EPS)?.sqrt()?.recip()?;
            x.broadcast_sub(&mean)?
                .broadcast_mul(&inv.broadcast_mul(&self.gamma.as_tensor().unsqueeze(0)?)?)?
                .broadcast_add(&self.beta.as_tensor().unsqueeze(0)?)?
        };
        match (activation, skip) {
            (Activation::Identity, None) => Ok(y),
            (Activation::Relu, None) => y.relu(),
            (Activation::ResidualRelu, Some(skip)) => (y + skip)?.relu(),
            _ => candle_core::bail!("{activation:?} with skip {}", skip.is_some()),
        }
    }

    /// Training mode on the CPU: the fused op of [`super::batchnorm`].
    fn forward_train_cpu(
        &self,
        x: &Tensor,
        activation: Activation,
        skip: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (y, stats) = batch_norm_train(
            x,
            self.gamma.as_tensor(),
            self.beta.as_tensor(),
            BN_EPS,
            activation,
            skip,
        )?;
        self.update_running(&stats, x.dim(0)?)?;
        Ok(y)
    }

    /// Moves the running statistics towards a batch's (of `n` rows).
    fn update_running(&self, stats: &BatchStats, n: usize) -> candle_core::Result<()> {
        let n = n as f64;
        let m = BN_MOMENTUM as f32;
        let unbiased = (n / (n - 1.0).max(1.0)) as f32;
        let blend = |running: &Var, batch: &[f32], scale: f32| -> candle_core::Result<()> {
            let old = running.as_tensor().to_vec1::<f32>()?;
            let new: Vec<f32> = old
                .iter()
                .zip(batch)
                .map(|(r, b)| (1.0 - m) * r + m * b * scale)
                .collect();
            running.set(&Tensor::from_vec(new, old.len(), running.device())?)
        };
        blend(&self.running_mean, &stats.mean, 1.0)?;
        blend(&self.running_var, &stats.var, unbiased)
    }

    /// Training mode with candle's ops, every sum and broadcast a product with a column
    /// of ones (see [`Self::forward`]).
    fn forward_train_rows(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let rows = Rows::new(x)?;
        let n = rows.n as f64;
        let mean = rows.mean(x)?;
        let centered = (x - rows.expand(&mean)?)?;
        let var = rows.mean(&centered.sqr()?)?;
        let unbiased = (var.detach().squeeze(0)? * (n / (n - 1.0).max(1.0)))?;
        let m = BN_MOMENTUM;
        self.running_mean.set(
            &((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach().squeeze(0)? * m)?)?,
        )?;
        self.running_var
            .set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
        let scale = ((var + BN_EPS)?.sqrt()?.recip()? * self.gamma.as_tensor().unsqueeze(0)?)?;
        (centered * rows.expand(&scale)?)? + rows.expand(&self.beta.as_tensor().unsqueeze(0)?)?
    }

    /// Per-channel scale and shift that the folded form applies after the convolution.
    fn fold(&self) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let g = self.gamma.as_tensor().to_vec1::<f32>()?;
        let b = self.beta.as_tensor().to_vec1::<f32>()?;
        let m = self.running_mean.as_tensor().to_vec1::<f32>()?;
        let v = self.running_var.as_tensor().to_vec1::<f32>()?;
        let scale: Vec<f32> = g
            .iter()
            .zip(&v)
            .map(|(g, v)| g / (v + BN_EPS as f32).sqrt())
            .collect();
        let shift = b
            .iter()
            .zip(&m)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Ok((scale, shift))
    }
}

/// Sums over and broadcasts along the rows of an `[N, C]` tensor as matrix products with
/// a column of ones, so that forward and backward are both GEMMs.
struct Rows {
    n: usize,
    /// `[1, N]` ones, and the same as `[N, 1]`.
    row: Tensor,
    col: Tensor,
}

impl Rows {
    fn new(x: &Tensor) -> candle_core::Result<Rows> {
        let n = x.dim(0)?;
        Ok(Rows {
            n,
            row: Tensor::ones((1, n), x.dtype(), x.device())?,
            col: Tensor::ones((n, 1), x.dtype(), x.device())?,
        })
    }

    /// `[N, C]` -> `[1, C]`, the mean of each column.
    fn mean(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.row.matmul(x)? * (1.0 / self.n as f64)
    }

    /// `[1, C]` -> `[N, C]`, the row repeated.
    fn expand(&self, v: &Tensor) -> candle_core::Result<Tensor> {
        self.col.matmul(v)
    }
}

/// `a x b` computed in `compute` precision, returned in f32 (the mixed-precision rule:
/// f32 masters cast inside the forward, batch norm and losses in f32).
fn matmul_in(a: &Tensor, b: &Tensor, compute: DType) -> candle_core::Result<Tensor> {
    if compute == DType::F32 {
        a.matmul(b)
    } else {
        // `to_dtype` to the dtype a tensor already has is a no-op.
        a.to_dtype(compute)?
            .matmul(&b.to_dtype(compute)?)?
            .to_dtype(DType::F32)
    }
}

/// A convolution (3x3 or 1x1, no bias) followed by batch norm. The weight is
/// `[kernel*kernel*in, out]` in the [`im2col`] tap order. Tensors: `weight`, `bn.*`.
pub struct ConvBn {
    pub weight: Var,
    pub bn: BatchNorm,
    pub kernel: usize,
}

impl ConvBn {
    pub fn new(
        kernel: usize,
        cin: usize,
        cout: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let fan_in = kernel * kernel * cin;
        Ok(ConvBn {
            weight: var(&vb, &[fan_in, cout], "weight", he(fan_in))?,
            bn: BatchNorm::new(cout, vb.pp("bn"))?,
            kernel,
        })
    }

    /// `[B, 64, C_in]` -> `[B, 64, C_out]` before the activation.
    pub fn forward(&self, x: &Tensor, train: bool, compute: DType) -> candle_core::Result<Tensor> {
        self.forward_act(x, train, compute, Activation::Identity, None)
    }

    /// `[B, 64, C_in]` -> `[B, 64, C_out]`: the convolution, batch norm and `activation`
    /// (`skip`, `[B, 64, C_out]`, added before a residual ReLU).
    ///
    /// In reduced precision the input is cast before the im2col gather, so that the nine
    /// times larger columns are built, multiplied and differentiated in that precision.
    pub fn forward_act(
        &self,
        x: &Tensor,
        train: bool,
        compute: DType,
        activation: Activation,
        skip: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, _, c) = x.dims3()?;
        // The skip as `[B * 64, C_out]` rows, for the separate batch norm.
        let rows = |skip: Option<&Tensor>| skip.map(|s| s.reshape((b * 64, ()))).transpose();
        if self.kernel == 3 && x.device().is_cpu() && compute == DType::F32 {
            if train {
                // Convolution, batch norm and activation as one op with its own backward.
                let (y, stats) = super::conv3x3::conv_bn_train(
                    x,
                    self.weight.as_tensor(),
                    self.bn.gamma.as_tensor(),
                    self.bn.beta.as_tensor(),
                    BN_EPS,
                    activation,
                    skip,
                )?;
                self.bn.update_running(&stats, b * 64)?;
                return Ok(y);
            }
            // One op with its own backward: Winograd forward and input gradient.
            let y = super::conv3x3::conv3x3_train(x, self.weight.as_tensor())?;
            return self
                .bn
                .forward_act(&y, train, activation, rows(skip)?.as_ref())?
                .reshape((b, 64, ()));
        }
        let x = if compute == DType::F32 || (self.kernel == 3 && x.device().is_cpu()) {
            // The CPU gathers in f32 (its custom op); `matmul_in` casts after.
            x.clone()
        } else {
            x.to_dtype(compute)?
        };
        let cols = if self.kernel == 3 {
            im2col::im2col(&x)?
        } else {
            x.reshape((b * 64, c))?
        };
        let y = matmul_in(&cols, self.weight.as_tensor(), compute)?;
        let y = self
            .bn
            .forward_act(&y, train, activation, rows(skip)?.as_ref())?;
        y.reshape((b, 64, ()))
    }

    /// The convolution with batch norm folded in: weight columns scaled, shift as bias.
    pub fn fold(&self) -> candle_core::Result<FoldedLayer> {
        let (scale, shift) = self.bn.fold()?;
        let w = self.weight.as_tensor().to_device(&Device::Cpu)?;
        let (rows, cols) = w.dims2()?;
        let mut weight = w.flatten_all()?.to_vec1::<f32>()?;
        for row in weight.chunks_exact_mut(cols) {
            for (x, s) in row.iter_mut().zip(&scale) {
                *x *= s;
            }
        }
        Ok(FoldedLayer {
            weight,
            bias: shift,
            rows,
            cols,
        })
    }
}

/// A dense layer `x W + b`, `W` `[in, out]`. Tensors: `weight`, `bias`.
pub struct Dense {
    pub weight: Var,
    pub bias: Var,
}

impl Dense {
    pub fn new(cin: usize, cout: usize, init: Init, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Dense {
            weight: var(&vb, &[cin, cout], "weight", init)?,
            bias: var(&vb, &[cout], "bias", Init::Const(0.0))?,
        })
    }

    /// `[N, in]` -> `[N, out]`. The bias is added as a product with a ones column when
    /// there are many rows (its gradient is then a GEMM too).
    pub fn forward(&self, x: &Tensor, compute: DType) -> candle_core::Result<Tensor> {
        let y = matmul_in(x, self.weight.as_tensor(), compute)?;
        if x.dim(0)? > 1024 {
            y + Rows::new(x)?.expand(&self.bias.as_tensor().unsqueeze(0)?)?
        } else {
            y.broadcast_add(self.bias.as_tensor())
        }
    }

    pub fn fold(&self) -> candle_core::Result<FoldedLayer> {
        let (rows, cols) = self.weight.as_tensor().dims2()?;
        Ok(FoldedLayer {
            weight: self
                .weight
                .as_tensor()
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1()?,
            bias: self.bias.as_tensor().to_device(&Device::Cpu)?.to_vec1()?,
            rows,
            cols,
        })
    }
}

/// `relu(conv2(relu(conv1(h))) + h)`, or with a squeeze-and-excitation unit
/// `relu(se(conv2(relu(conv1(h)))) + h)`. Tensors: `conv1.*`, `conv2.*`, `se.*`.
pub struct ResidualBlock {
    pub conv1: ConvBn,
    pub conv2: ConvBn,
    pub se: Option<SqueezeExcite>,
}

/// A residual block's inference form.
#[derive(Clone, Debug)]
pub struct FoldedBlock {
    pub conv1: FoldedLayer,
    pub conv2: FoldedLayer,
    pub se: Option<FoldedSqueezeExcite>,
}

impl ResidualBlock {
    /// A block of `filters` channels; `se_channels` > 0 gives it a squeeze-and-excitation
    /// unit of that many hidden units.
    pub fn new(filters: usize, se_channels: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let se = (se_channels > 0)
            .then(|| SqueezeExcite::new(filters, se_channels, vb.pp("se")))
            .transpose()?;
        Ok(ResidualBlock {
            conv1: ConvBn::new(3, filters, filters, vb.pp("conv1"))?,
            conv2: ConvBn::new(3, filters, filters, vb.pp("conv2"))?,
            se,
        })
    }

    pub fn forward(&self, h: &Tensor, train: bool, compute: DType) -> candle_core::Result<Tensor> {
        let t = self
            .conv1
            .forward_act(h, train, compute, Activation::Relu, None)?;
        match &self.se {
            None => self
                .conv2
                .forward_act(&t, train, compute, Activation::ResidualRelu, Some(h)),
            Some(se) => {
                let u = self
                    .conv2
                    .forward_act(&t, train, compute, Activation::Identity, None)?;
                se.forward(&u, h, compute)
            }
        }
    }

    pub fn fold(&self) -> candle_core::Result<FoldedBlock> {
        Ok(FoldedBlock {
            conv1: self.conv1.fold()?,
            conv2: self.conv2.fold()?,
            se: self.se.as_ref().map(SqueezeExcite::fold).transpose()?,
        })
    }
}

/// lc0's squeeze-and-excitation unit over a block's output `u` `[B, 64, C]`: the mean of
/// each channel over the board, a dense layer C->S with ReLU, and a dense layer S->2C
/// whose first C outputs gate the channels (sigmoid) and whose last C shift them:
/// `relu(sigmoid(g) * u + b + skip)`. It lets a square's features depend on the whole
/// board in one block, where a 3x3 convolution sees only its neighbours. Tensors:
/// `fc1.*`, `fc2.*`. At initialisation every gate is about one half and every shift zero.
pub struct SqueezeExcite {
    pub fc1: Dense,
    pub fc2: Dense,
}

/// A squeeze-and-excitation unit's inference form: `fc1` `[C, S]`, `fc2` `[S, 2C]`.
#[derive(Clone, Debug)]
pub struct FoldedSqueezeExcite {
    pub fc1: FoldedLayer,
    pub fc2: FoldedLayer,
}

impl SqueezeExcite {
    pub fn new(filters: usize, hidden: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(SqueezeExcite {
            fc1: Dense::new(filters, hidden, he(filters), vb.pp("fc1"))?,
            fc2: Dense::new(hidden, 2 * filters, SMALL, vb.pp("fc2"))?,
        })
    }

    /// `u`, `skip` `[B, 64, C]` -> `relu(sigmoid(gate) * u + shift + skip)` `[B, 64, C]`.
    pub fn forward(
        &self,
        u: &Tensor,
        skip: &Tensor,
        compute: DType,
    ) -> candle_core::Result<Tensor> {
        let c = u.dim(2)?;
        let pooled = u.mean(1)?;
        let z = self.fc1.forward(&pooled, compute)?.relu()?;
        let g = self.fc2.forward(&z, compute)?;
        // sigmoid(x) = 1 / (1 + e^-x), from differentiable ops.
        let gate = (g.narrow(1, 0, c)?.neg()?.exp()? + 1.0)?.recip()?;
        let shift = g.narrow(1, c, c)?;
        let y = u
            .broadcast_mul(&gate.unsqueeze(1)?)?
            .broadcast_add(&shift.unsqueeze(1)?)?;
        (y + skip)?.relu()
    }

    pub fn fold(&self) -> candle_core::Result<FoldedSqueezeExcite> {
        Ok(FoldedSqueezeExcite {
            fc1: self.fc1.fold()?,
            fc2: self.fc2.fold()?,
        })
    }
}

/// AlphaZero's convolutional policy head: conv3x3 F->F, BN, ReLU, then a 1x1 convolution
/// F->73 with bias, giving 73 move planes per square. With the reply head, a second 1x1
/// convolution of the same features gives the opponent's reply the same way (training
/// only: the inference form has no such layer). Tensors: `conv.*`, `out.*`, `reply.*`.
pub struct PolicyHead {
    pub conv: ConvBn,
    pub out: Dense,
    pub reply: Option<Dense>,
}

/// The policy head's inference form.
#[derive(Clone, Debug)]
pub struct FoldedPolicyHead {
    pub conv: FoldedLayer,
    pub out: FoldedLayer,
}

impl PolicyHead {
    pub fn new(filters: usize, reply_head: bool, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(PolicyHead {
            conv: ConvBn::new(3, filters, filters, vb.pp("conv"))?,
            out: Dense::new(filters, POLICY_PLANES, SMALL, vb.pp("out"))?,
            reply: reply_head
                .then(|| Dense::new(filters, POLICY_PLANES, SMALL, vb.pp("reply")))
                .transpose()?,
        })
    }

    /// `[B, 64, F]` -> policy logits `[B, 4672]` in the encoding's plane-major order.
    pub fn forward(&self, h: &Tensor, train: bool, compute: DType) -> candle_core::Result<Tensor> {
        Ok(self.forward_with_reply(h, train, compute)?.0)
    }

    /// `[B, 64, F]` -> (policy logits, and with the reply head the reply's logits), both
    /// `[B, 4672]` in the encoding's plane-major order.
    pub fn forward_with_reply(
        &self,
        h: &Tensor,
        train: bool,
        compute: DType,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let (b, _, f) = h.dims3()?;
        let p = self
            .conv
            .forward_act(h, train, compute, Activation::Relu, None)?
            .reshape((b * 64, f))?;
        let planes = |layer: &Dense| -> candle_core::Result<Tensor> {
            layer
                .forward(&p, compute)?
                .reshape((b, 64, POLICY_PLANES))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, POLICY_SIZE))
        };
        let reply = self.reply.as_ref().map(planes).transpose()?;
        Ok((planes(&self.out)?, reply))
    }

    pub fn fold(&self) -> candle_core::Result<FoldedPolicyHead> {
        Ok(FoldedPolicyHead {
            conv: self.conv.fold()?,
            out: self.out.fold()?,
        })
    }
}

/// The WDL value head: conv1x1 F->32, BN, ReLU, dense 2048->128, ReLU, dense 128->3.
/// Tensors: `conv.*`, `fc1.*`, `fc2.*`.
pub struct ValueHead {
    pub conv: ConvBn,
    pub fc1: Dense,
    pub fc2: Dense,
}

/// The value head's inference form.
#[derive(Clone, Debug)]
pub struct FoldedValueHead {
    pub conv: FoldedLayer,
    pub fc1: FoldedLayer,
    pub fc2: FoldedLayer,
}

impl ValueHead {
    pub fn new(filters: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let fc1_in = 64 * super::VALUE_CHANNELS;
        Ok(ValueHead {
            conv: ConvBn::new(1, filters, super::VALUE_CHANNELS, vb.pp("conv"))?,
            fc1: Dense::new(fc1_in, super::VALUE_HIDDEN, he(fc1_in), vb.pp("fc1"))?,
            fc2: Dense::new(super::VALUE_HIDDEN, super::WDL, SMALL, vb.pp("fc2"))?,
        })
    }

    /// `[B, 64, F]` -> WDL logits `[B, 3]`.
    pub fn forward(&self, h: &Tensor, train: bool, compute: DType) -> candle_core::Result<Tensor> {
        let b = h.dim(0)?;
        let v = self
            .conv
            .forward_act(h, train, compute, Activation::Relu, None)?
            .reshape((b, 64 * super::VALUE_CHANNELS))?;
        let v = self.fc1.forward(&v, compute)?.relu()?;
        self.fc2.forward(&v, compute)
    }

    pub fn fold(&self) -> candle_core::Result<FoldedValueHead> {
        Ok(FoldedValueHead {
            conv: self.conv.fold()?,
            fc1: self.fc1.fold()?,
            fc2: self.fc2.fold()?,
        })
    }
}

/// lc0's moves-left head beside the value head: a 1x1 convolution F->8 with batch norm
/// and ReLU, a dense layer 512->32 with ReLU and a dense layer 32->1, the plies left
/// until the game's end in units of [`super::MOVES_LEFT_SCALE`] plies. Training reads the
/// output as it is (so that no ReLU stops its gradient); inference takes
/// `MOVES_LEFT_SCALE * max(output, 0)` as the plies left ([`super::moves_left_plies`]).
/// Tensors: `conv.*`, `fc1.*`, `fc2.*`.
pub struct MovesLeftHead {
    pub conv: ConvBn,
    pub fc1: Dense,
    pub fc2: Dense,
}

/// The moves-left head's inference form: `conv` `[F, 8]`, `fc1` `[512, 32]`, `fc2`
/// `[32, 1]`.
#[derive(Clone, Debug)]
pub struct FoldedMovesLeftHead {
    pub conv: FoldedLayer,
    pub fc1: FoldedLayer,
    pub fc2: FoldedLayer,
}

impl MovesLeftHead {
    pub fn new(filters: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let fc1_in = 64 * super::MOVES_LEFT_CHANNELS;
        Ok(MovesLeftHead {
            conv: ConvBn::new(1, filters, super::MOVES_LEFT_CHANNELS, vb.pp("conv"))?,
            fc1: Dense::new(fc1_in, super::MOVES_LEFT_HIDDEN, he(fc1_in), vb.pp("fc1"))?,
            fc2: Dense::new(super::MOVES_LEFT_HIDDEN, 1, SMALL, vb.pp("fc2"))?,
        })
    }

    /// `[B, 64, F]` -> the plies left in units of [`super::MOVES_LEFT_SCALE`] `[B]`, as
    /// the last layer gives them (not clamped at 0).
    pub fn forward(&self, h: &Tensor, train: bool, compute: DType) -> candle_core::Result<Tensor> {
        let b = h.dim(0)?;
        let m = self
            .conv
            .forward_act(h, train, compute, Activation::Relu, None)?
            .reshape((b, 64 * super::MOVES_LEFT_CHANNELS))?;
        let m = self.fc1.forward(&m, compute)?.relu()?;
        self.fc2.forward(&m, compute)?.reshape(b)
    }

    pub fn fold(&self) -> candle_core::Result<FoldedMovesLeftHead> {
        Ok(FoldedMovesLeftHead {
            conv: self.conv.fold()?,
            fc1: self.fc1.fold()?,
            fc2: self.fc2.fold()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Normal samples from a seeded generator (candle's own `randn` on the CPU is not
    /// seedable), so that every run checks the same inputs.
    fn randn(
        rng: &mut StdRng,
        mean: f32,
        std: f32,
        shape: impl Into<candle_core::Shape>,
    ) -> candle_core::Result<Tensor> {
        let shape = shape.into();
        let normal = rand_distr::Normal::new(mean, std).expect("a valid normal");
        let values: Vec<f32> = (0..shape.elem_count())
            .map(|_| rng.sample(normal))
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu)
    }

    /// `|a - b| / |b|` over all elements.
    fn rel(a: &Tensor, b: &Tensor) -> f32 {
        let norm = |t: &Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt()
        };
        norm(&(a - b).unwrap()) / norm(b).max(1e-12)
    }

    /// Each `(name, a, b)`: the gradient of `a` in `g1` is within 1e-4 of `b`'s in `g2`.
    fn assert_gradients_match(
        case: &str,
        g1: &candle_core::backprop::GradStore,
        g2: &candle_core::backprop::GradStore,
        pairs: &[(&str, &Tensor, &Tensor)],
    ) {
        for (what, a, b) in pairs {
            let (ga, gb) = (g1.get(a).unwrap(), g2.get(b).unwrap());
            assert!(
                rel(ga, gb) < 1e-4,
                "{case}: gradient of {what}: {}",
                rel(ga, gb)
            );
        }
    }

    /// A 3x3 convolution layer in training on the CPU (convolution, batch norm and
    /// activation as one op) computes what im2col, candle's matmul, candle's batch-norm
    /// ops, ReLU and addition compute: output, running statistics, and the gradients of
    /// the input, weight, gamma, beta and skip.
    #[test]
    fn the_fused_convolution_layer_matches_candles_ops_forward_and_backward() {
        let mut rng = StdRng::seed_from_u64(11);
        let dev = Device::Cpu;
        let (boards, cin, cout) = (21, 5, 6);
        for activation in [
            Activation::Identity,
            Activation::Relu,
            Activation::ResidualRelu,
        ] {
            let store = TensorStore::new(TensorSource::Seeded(5));
            let vb = store.builder(&dev);
            let fused = ConvBn::new(3, cin, cout, vb.pp("a")).unwrap();
            let plain = ConvBn::new(3, cin, cout, vb.pp("b")).unwrap();
            plain.weight.set(fused.weight.as_tensor()).unwrap();
            let gamma = randn(&mut rng, 1f32, 0.5, cout).unwrap();
            let beta = randn(&mut rng, 0f32, 0.5, cout).unwrap();
            for layer in [&fused, &plain] {
                layer.bn.gamma.set(&gamma).unwrap();
                layer.bn.beta.set(&beta).unwrap();
            }
            let x =
                Var::from_tensor(&randn(&mut rng, 0f32, 1.0, (boards, 64, cin)).unwrap()).unwrap();
            let skip =
                Var::from_tensor(&randn(&mut rng, 0f32, 1.0, (boards, 64, cout)).unwrap()).unwrap();
            let skip_arg = (activation == Activation::ResidualRelu).then_some(skip.as_tensor());
            let y1 = fused
                .forward_act(x.as_tensor(), true, DType::F32, activation, skip_arg)
                .unwrap();
            let z2 = plain
                .bn
                .forward_train_rows(
                    &im2col::im2col_tensor_ops(x.as_tensor())
                        .unwrap()
                        .matmul(plain.weight.as_tensor())
                        .unwrap(),
                )
                .unwrap()
                .reshape((boards, 64, cout))
                .unwrap();
            let y2 = match activation {
                Activation::Identity => z2,
                Activation::Relu => z2.relu().unwrap(),
                Activation::ResidualRelu => (z2 + skip.as_tensor()).unwrap().relu().unwrap(),
            };
            assert_eq!(y1.dims(), y2.dims());
            assert!(
                rel(&y1, &y2) < 1e-5,
                "{activation:?}: output {}",
                rel(&y1, &y2)
            );
            let w = randn(&mut rng, 0f32, 1.0, (boards, 64, cout)).unwrap();
            let loss = |y: Tensor| (y * &w).unwrap().sum_all().unwrap();
            let (g1, g2) = (loss(y1).backward().unwrap(), loss(y2).backward().unwrap());
            let mut pairs = vec![
                ("x", x.as_tensor(), x.as_tensor()),
                ("weight", fused.weight.as_tensor(), plain.weight.as_tensor()),
                (
                    "gamma",
                    fused.bn.gamma.as_tensor(),
                    plain.bn.gamma.as_tensor(),
                ),
                ("beta", fused.bn.beta.as_tensor(), plain.bn.beta.as_tensor()),
            ];
            if activation == Activation::ResidualRelu {
                pairs.push(("skip", skip.as_tensor(), skip.as_tensor()));
            }
            assert_gradients_match(&format!("{activation:?}"), &g1, &g2, &pairs);
            for (a, b) in [
                (&fused.bn.running_mean, &plain.bn.running_mean),
                (&fused.bn.running_var, &plain.bn.running_var),
            ] {
                assert!(rel(a.as_tensor(), b.as_tensor()) < 1e-5);
            }
        }
    }

    /// The CPU's fused batch norm computes what candle's ops compute, for each activation
    /// that can follow it: the output, the gradients of x, gamma, beta and the residual
    /// skip (through a loss that weights every output differently), and the running
    /// statistics.
    #[test]
    fn fused_batch_norm_matches_candles_ops_forward_and_backward() {
        let mut rng = StdRng::seed_from_u64(12);
        for activation in [
            Activation::Identity,
            Activation::Relu,
            Activation::ResidualRelu,
        ] {
            let dev = Device::Cpu;
            // More rows than one parallel task takes, and not a multiple of it.
            let (n, c) = (1300, 7);
            let store = TensorStore::new(TensorSource::Seeded(3));
            let vb = store.builder(&dev);
            let fused = BatchNorm::new(c, vb.pp("a")).unwrap();
            let plain = BatchNorm::new(c, vb.pp("b")).unwrap();
            let gamma = randn(&mut rng, 1f32, 0.5, c).unwrap();
            let beta = randn(&mut rng, 0f32, 0.5, c).unwrap();
            for bn in [&fused, &plain] {
                bn.gamma.set(&gamma).unwrap();
                bn.beta.set(&beta).unwrap();
            }
            let x = Var::from_tensor(&(randn(&mut rng, 0f32, 2.0, (n, c)).unwrap() + 0.7).unwrap())
                .unwrap();
            let skip = Var::from_tensor(&randn(&mut rng, 0f32, 1.0, (n, c)).unwrap()).unwrap();
            let skip_arg = (activation == Activation::ResidualRelu).then_some(skip.as_tensor());
            let w = randn(&mut rng, 0f32, 1.0, (n, c)).unwrap();
            let loss = |y: Tensor| (y * &w).unwrap().sum_all().unwrap();
            let y1 = fused
                .forward_train_cpu(x.as_tensor(), activation, skip_arg)
                .unwrap();
            let z2 = plain.forward_train_rows(x.as_tensor()).unwrap();
            let y2 = match activation {
                Activation::Identity => z2,
                Activation::Relu => z2.relu().unwrap(),
                Activation::ResidualRelu => (z2 + skip.as_tensor()).unwrap().relu().unwrap(),
            };
            assert!(
                rel(&y1, &y2) < 1e-5,
                "{activation:?}: output {}",
                rel(&y1, &y2)
            );
            if activation != Activation::Identity {
                let zeros = y1.eq(0f32).unwrap().to_dtype(DType::F32).unwrap();
                let share = zeros.mean_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(
                    share > 0.2 && share < 0.8,
                    "the ReLU cuts {share} of the outputs"
                );
            }
            let g1 = loss(y1).backward().unwrap();
            let g2 = loss(y2).backward().unwrap();
            let mut pairs = vec![
                ("x", x.as_tensor(), x.as_tensor()),
                ("gamma", fused.gamma.as_tensor(), plain.gamma.as_tensor()),
                ("beta", fused.beta.as_tensor(), plain.beta.as_tensor()),
            ];
            if activation == Activation::ResidualRelu {
                pairs.push(("skip", skip.as_tensor(), skip.as_tensor()));
            }
            assert_gradients_match(&format!("{activation:?}"), &g1, &g2, &pairs);
            for (a, b) in [
                (&fused.running_mean, &plain.running_mean),
                (&fused.running_var, &plain.running_var),
            ] {
                assert!(rel(a.as_tensor(), b.as_tensor()) < 1e-5);
            }
        }
    }
}
