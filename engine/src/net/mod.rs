//! The policy/value network: a residual tower over the 18 input planes, an AlphaZero
//! convolutional policy head producing 73x8x8 logits, and a WDL value head.
//!
//! ```text
//! planes [B,18,8,8] -> conv3x3 18->F, BN, ReLU
//!   -> blocks x { conv3x3 F->F, BN, ReLU, conv3x3 F->F, BN, + skip, ReLU }
//!   -> policy: conv3x3 F->F, BN, ReLU, conv1x1 F->73 (+bias)   -> [B, 4672] logits
//!   -> value:  conv1x1 F->32, BN, ReLU, FC 2048->128, ReLU, FC 128->3 -> W/D/L logits
//! ```
//!
//! Activations are channels-last, `[B, 64, C]`, so that every convolution is one GEMM
//! (see [`im2col`]). [`Network`] is the training form (batch-norm statistics, f32 master
//! weights, optional bf16/f16 compute); [`Network::folded`] gives the inference form with
//! batch norm folded into the convolutions, run either by [`cpu::CpuNet`] (direct GEMMs
//! on reused buffers) or by [`DeviceNet`] (candle tensors, for CUDA).

pub mod checkpoint;
pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod im2col;

use crate::encoding::{INPUT_PLANES, POLICY_PLANES, POLICY_SIZE};
use anyhow::bail;
use candle_core::{DType, Device, Tensor, Var, D};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub const VALUE_CHANNELS: usize = 32;
pub const VALUE_HIDDEN: usize = 128;
pub const WDL: usize = 3;
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    pub filters: usize,
    pub blocks: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            filters: 64,
            blocks: 3,
        }
    }
}

impl NetConfig {
    /// The inclusive ranges of `filters` and `blocks` a network may have (a checkpoint
    /// declaring more is refused before anything is allocated).
    pub const LIMITS: ((usize, usize), (usize, usize)) = ((1, 1024), (1, 64));

    /// An error unless `filters` and `blocks` lie within [`Self::LIMITS`].
    pub fn check(&self) -> anyhow::Result<()> {
        let ((f0, f1), (b0, b1)) = Self::LIMITS;
        if !(f0..=f1).contains(&self.filters) || !(b0..=b1).contains(&self.blocks) {
            bail!(
                "a network has {f0} to {f1} filters and {b0} to {b1} blocks, got {} filters and {} blocks",
                self.filters,
                self.blocks
            );
        }
        Ok(())
    }

    /// Every tensor's checkpoint name and shape, in [`Network::named_tensors`] order,
    /// computed without building the network (checkpoint loading checks a file against
    /// it before allocating).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let f = self.filters;
        let mut out = Vec::new();
        let conv = |name: &str, fan_in: usize, cout: usize, out: &mut Vec<_>| {
            out.push((format!("{name}.weight"), vec![fan_in, cout]));
            for stat in ["bn.gamma", "bn.beta", "bn.running_mean", "bn.running_var"] {
                out.push((format!("{name}.{stat}"), vec![cout]));
            }
        };
        conv("input.conv", 9 * INPUT_PLANES, f, &mut out);
        for i in 0..self.blocks {
            conv(&format!("tower.{i}.conv1"), 9 * f, f, &mut out);
            conv(&format!("tower.{i}.conv2"), 9 * f, f, &mut out);
        }
        conv("policy.conv", 9 * f, f, &mut out);
        out.push(("policy.out.weight".into(), vec![f, POLICY_PLANES]));
        out.push(("policy.out.bias".into(), vec![POLICY_PLANES]));
        conv("value.conv", f, VALUE_CHANNELS, &mut out);
        out.push((
            "value.fc1.weight".into(),
            vec![64 * VALUE_CHANNELS, VALUE_HIDDEN],
        ));
        out.push(("value.fc1.bias".into(), vec![VALUE_HIDDEN]));
        out.push(("value.fc2.weight".into(), vec![VALUE_HIDDEN, WDL]));
        out.push(("value.fc2.bias".into(), vec![WDL]));
        out
    }
}

impl std::fmt::Display for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.filters, self.blocks)
    }
}

/// Where the network runs: `auto` (CUDA if built with it and present, else CPU), `cpu`,
/// `cuda` or `cuda:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => bail!("unknown device {s:?}: expected auto, cpu, cuda or cuda:N"),
            },
        }
    }
}

impl DeviceChoice {
    /// Opens the device. `auto` falls back to the CPU; an explicit `cuda` that cannot be
    /// opened is an error.
    pub fn open(self) -> anyhow::Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    bail!("CUDA device {n} requested but this binary was built without the `cuda` feature (use --device cpu, or build with scripts/build-cuda)");
                }
                let device = Device::new_cuda(n).map_err(|e| {
                    let reason = e.to_string();
                    let reason = reason.lines().next().unwrap_or("unknown error");
                    anyhow::anyhow!("no usable CUDA device {n} ({reason}); use --device cpu")
                })?;
                single_stream(&device);
                Ok(device)
            }
            DeviceChoice::Auto => {
                if candle_core::utils::cuda_is_available() {
                    if let Ok(d) = Device::new_cuda(0) {
                        single_stream(&d);
                        return Ok(d);
                    }
                }
                Ok(Device::Cpu)
            }
        }
    }
}

/// Ember runs all its work on a CUDA device on the one stream candle gives it, so the
/// per-buffer events that order work across streams are pure cost (an event created for
/// every allocation, one recorded for every use): turn them off.
fn single_stream(device: &Device) {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        // SAFETY: no tensor of this device is used on any stream but its own.
        unsafe { cuda.disable_event_tracking() };
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device;
}

pub fn describe_device(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        Device::Cuda(_) => "cuda".to_string(),
        other => format!("{other:?}"),
    }
}

/// Compute precision of the forward pass; master weights stay f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// The precision `auto` means on `device`: bf16 on a GPU (tensor cores, and no loss
    /// scaling needed), f32 on a CPU (candle's CPU convolution has no bf16, and f16 is
    /// slower there than f32).
    pub fn auto_for(device: &Device) -> Precision {
        if device.is_cpu() {
            Precision::F32
        } else {
            Precision::Bf16
        }
    }

    /// `auto` resolved on `device`, or the precision named.
    pub fn resolve(name: &str, device: &Device) -> anyhow::Result<Precision> {
        if name == "auto" {
            Ok(Precision::auto_for(device))
        } else {
            name.parse()
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            _ => bail!("unknown precision {s:?}: expected f32, bf16 or f16"),
        }
    }
}

/// Batch norm over the channel (last) dimension of `[N, C]` rows.
pub struct BatchNorm {
    pub gamma: Var,
    pub beta: Var,
    pub running_mean: Var,
    pub running_var: Var,
}

impl BatchNorm {
    fn new(channels: usize, device: &Device) -> candle_core::Result<Self> {
        Ok(BatchNorm {
            gamma: Var::ones(channels, DType::F32, device)?,
            beta: Var::zeros(channels, DType::F32, device)?,
            running_mean: Var::zeros(channels, DType::F32, device)?,
            running_var: Var::ones(channels, DType::F32, device)?,
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
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train {
            let mean = self.running_mean.as_tensor().unsqueeze(0)?;
            let var = self.running_var.as_tensor().unsqueeze(0)?;
            let inv = (var + BN_EPS)?.sqrt()?.recip()?;
            return x
                .broadcast_sub(&mean)?
                .broadcast_mul(&inv.broadcast_mul(&self.gamma.as_tensor().unsqueeze(0)?)?)?
                .broadcast_add(&self.beta.as_tensor().unsqueeze(0)?);
        }
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

/// A convolution (3x3 or 1x1, no bias) followed by batch norm. The weight is
/// `[kernel*kernel*in, out]` in the [`im2col`] tap order.
pub struct ConvBn {
    pub weight: Var,
    pub bn: BatchNorm,
    pub kernel: usize,
}

impl ConvBn {
    fn new(
        kernel: usize,
        cin: usize,
        cout: usize,
        device: &Device,
        rng: &mut StdRng,
    ) -> anyhow::Result<Self> {
        let fan_in = kernel * kernel * cin;
        Ok(ConvBn {
            weight: init_var(&[fan_in, cout], (2.0 / fan_in as f64).sqrt(), device, rng)?,
            bn: BatchNorm::new(cout, device)?,
            kernel,
        })
    }

    /// `[B, 64, C_in]` -> `[B, 64, C_out]` before the activation.
    ///
    /// In reduced precision the input is cast before the im2col gather, so that the nine
    /// times larger columns are built, multiplied and differentiated in that precision.
    fn forward(&self, x: &Tensor, train: bool, compute: DType) -> candle_core::Result<Tensor> {
        let (b, _, c) = x.dims3()?;
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
        let y = self.bn.forward(&y, train)?;
        y.reshape((b, 64, ()))
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

fn init_var(shape: &[usize], std: f64, device: &Device, rng: &mut StdRng) -> anyhow::Result<Var> {
    let n: usize = shape.iter().product();
    let normal = Normal::new(0.0, std).expect("finite std");
    let data: Vec<f32> = (0..n).map(|_| normal.sample(rng) as f32).collect();
    Ok(Var::from_tensor(&Tensor::from_vec(data, shape, device)?)?)
}

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

/// The training form of the network.
pub struct Network {
    pub config: NetConfig,
    pub device: Device,
    pub input: ConvBn,
    pub tower: Vec<(ConvBn, ConvBn)>,
    pub policy_conv: ConvBn,
    pub policy_out_w: Var,
    pub policy_out_b: Var,
    pub value_conv: ConvBn,
    pub value_fc1_w: Var,
    pub value_fc1_b: Var,
    pub value_fc2_w: Var,
    pub value_fc2_b: Var,
    /// Training iteration that produced these weights (checkpoint metadata).
    pub iteration: u64,
}

/// Network outputs: policy logits `[B, 4672]` and WDL logits `[B, 3]` (win/draw/loss
/// for the side to move), both f32.
pub struct NetOutput {
    pub policy: Tensor,
    pub wdl: Tensor,
}

impl Network {
    /// A freshly initialised network (He-normal convolutions, small output layers so the
    /// first policy is near uniform and the first value near zero). Deterministic in `seed`.
    pub fn new(config: NetConfig, device: &Device, seed: u64) -> anyhow::Result<Self> {
        config.check()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let f = config.filters;
        let d = device;
        let input = ConvBn::new(3, INPUT_PLANES, f, d, &mut rng)?;
        let mut tower = Vec::with_capacity(config.blocks);
        for _ in 0..config.blocks {
            tower.push((
                ConvBn::new(3, f, f, d, &mut rng)?,
                ConvBn::new(3, f, f, d, &mut rng)?,
            ));
        }
        let policy_conv = ConvBn::new(3, f, f, d, &mut rng)?;
        let policy_out_w = init_var(&[f, POLICY_PLANES], 0.01, d, &mut rng)?;
        let policy_out_b = Var::zeros(POLICY_PLANES, DType::F32, d)?;
        let value_conv = ConvBn::new(1, f, VALUE_CHANNELS, d, &mut rng)?;
        let fc1_in = 64 * VALUE_CHANNELS;
        let value_fc1_w = init_var(
            &[fc1_in, VALUE_HIDDEN],
            (2.0 / fc1_in as f64).sqrt(),
            d,
            &mut rng,
        )?;
        let value_fc1_b = Var::zeros(VALUE_HIDDEN, DType::F32, d)?;
        let value_fc2_w = init_var(&[VALUE_HIDDEN, WDL], 0.01, d, &mut rng)?;
        let value_fc2_b = Var::zeros(WDL, DType::F32, d)?;
        Ok(Network {
            config,
            device: device.clone(),
            input,
            tower,
            policy_conv,
            policy_out_w,
            policy_out_b,
            value_conv,
            value_fc1_w,
            value_fc1_b,
            value_fc2_w,
            value_fc2_b,
            iteration: 0,
        })
    }

    /// Every tensor by its checkpoint name.
    pub fn named_tensors(&self) -> Vec<(String, &Var, TensorKind)> {
        fn conv<'a>(name: &str, c: &'a ConvBn, out: &mut Vec<(String, &'a Var, TensorKind)>) {
            out.push((format!("{name}.weight"), &c.weight, TensorKind::Weight));
            out.push((format!("{name}.bn.gamma"), &c.bn.gamma, TensorKind::Bias));
            out.push((format!("{name}.bn.beta"), &c.bn.beta, TensorKind::Bias));
            out.push((
                format!("{name}.bn.running_mean"),
                &c.bn.running_mean,
                TensorKind::Statistic,
            ));
            out.push((
                format!("{name}.bn.running_var"),
                &c.bn.running_var,
                TensorKind::Statistic,
            ));
        }
        let mut out = Vec::new();
        conv("input.conv", &self.input, &mut out);
        for (i, (a, b)) in self.tower.iter().enumerate() {
            conv(&format!("tower.{i}.conv1"), a, &mut out);
            conv(&format!("tower.{i}.conv2"), b, &mut out);
        }
        conv("policy.conv", &self.policy_conv, &mut out);
        out.push((
            "policy.out.weight".into(),
            &self.policy_out_w,
            TensorKind::Weight,
        ));
        out.push((
            "policy.out.bias".into(),
            &self.policy_out_b,
            TensorKind::Bias,
        ));
        conv("value.conv", &self.value_conv, &mut out);
        out.push((
            "value.fc1.weight".into(),
            &self.value_fc1_w,
            TensorKind::Weight,
        ));
        out.push(("value.fc1.bias".into(), &self.value_fc1_b, TensorKind::Bias));
        out.push((
            "value.fc2.weight".into(),
            &self.value_fc2_w,
            TensorKind::Weight,
        ));
        out.push(("value.fc2.bias".into(), &self.value_fc2_b, TensorKind::Bias));
        out
    }

    /// The trainable variables with whether weight decay applies.
    pub fn trainable(&self) -> Vec<(String, Var, bool)> {
        self.named_tensors()
            .into_iter()
            .filter(|(_, _, k)| *k != TensorKind::Statistic)
            .map(|(n, v, k)| (n, v.clone(), k == TensorKind::Weight))
            .collect()
    }

    /// An error naming the first tensor (weights or batch-norm statistics) that holds a
    /// NaN or an infinity. Checked before a network is evaluated, saved or published.
    pub fn check_finite(&self) -> anyhow::Result<()> {
        for (name, var, _) in self.named_tensors() {
            let t = var.as_tensor();
            let bad = t
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .filter(|x| !x.is_finite())
                .count();
            if bad > 0 {
                bail!(
                    "tensor `{name}` holds {bad} NaN or infinite values of {}",
                    t.elem_count()
                );
            }
        }
        Ok(())
    }

    /// [`Self::check_finite`], and a forward pass (running statistics) over the starting
    /// position whose outputs must be finite too: weights can be finite yet so large that
    /// every activation overflows (a learning rate far too high).
    pub fn check_usable(&self) -> anyhow::Result<()> {
        self.check_finite()?;
        let mut planes = vec![0f32; INPUT_PLANES * 64];
        crate::encoding::encode_position(&shakmaty::Chess::default(), &mut planes);
        let x = Tensor::from_vec(planes, (1, INPUT_PLANES * 64), &self.device)?;
        let out = self.forward(&x, false, DType::F32)?;
        for (what, t) in [("policy", &out.policy), ("value", &out.wdl)] {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            if v.iter().any(|x| !x.is_finite()) {
                bail!("its {what} outputs for the starting position are NaN or infinite");
            }
        }
        Ok(())
    }

    pub fn parameter_count(&self) -> usize {
        self.trainable()
            .iter()
            .map(|(_, v, _)| v.as_tensor().elem_count())
            .sum()
    }

    /// Forward pass. `planes` is `[B, 18*64]` (or `[B, 18, 8, 8]`) in the encoding's
    /// plane-major layout. `train` selects batch statistics (and updates the running
    /// ones); `compute` the matmul precision.
    pub fn forward(
        &self,
        planes: &Tensor,
        train: bool,
        compute: DType,
    ) -> candle_core::Result<NetOutput> {
        let b = planes.dim(0)?;
        let x = planes
            .reshape((b, INPUT_PLANES, 64))?
            .transpose(1, 2)?
            .contiguous()?;
        let mut h = self.input.forward(&x, train, compute)?.relu()?;
        for (c1, c2) in &self.tower {
            let t = c1.forward(&h, train, compute)?.relu()?;
            h = (c2.forward(&t, train, compute)? + &h)?.relu()?;
        }
        let p = self.policy_conv.forward(&h, train, compute)?.relu()?;
        let f = self.config.filters;
        let p = p.reshape((b * 64, f))?;
        let policy = (matmul_in(&p, self.policy_out_w.as_tensor(), compute)?
            + Rows::new(&p)?.expand(&self.policy_out_b.as_tensor().unsqueeze(0)?)?)?
        .reshape((b, 64, POLICY_PLANES))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, POLICY_SIZE))?;
        let v = self
            .value_conv
            .forward(&h, train, compute)?
            .relu()?
            .reshape((b, 64 * VALUE_CHANNELS))?;
        let v = matmul_in(&v, self.value_fc1_w.as_tensor(), compute)?
            .broadcast_add(self.value_fc1_b.as_tensor())?
            .relu()?;
        let wdl = matmul_in(&v, self.value_fc2_w.as_tensor(), compute)?
            .broadcast_add(self.value_fc2_b.as_tensor())?;
        Ok(NetOutput { policy, wdl })
    }

    /// Sets every batch-norm scale and running variance to a random value in [0.5, 1.5)
    /// and every shift and running mean in [-0.3, 0.3): a network whose every layer
    /// changes its output, for tests and device checks (a fresh network's batch norm is
    /// the identity). Deterministic in `seed`.
    pub fn randomise_statistics(&self, seed: u64) -> anyhow::Result<()> {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(seed);
        for (name, var, _) in self.named_tensors() {
            if !name.contains(".bn.") {
                continue;
            }
            let n = var.as_tensor().elem_count();
            let scale = name.ends_with("running_var") || name.ends_with("gamma");
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    if scale {
                        rng.random_range(0.5..1.5)
                    } else {
                        rng.random_range(-0.3..0.3)
                    }
                })
                .collect();
            var.set(&Tensor::from_vec(v, n, var.device())?)?;
        }
        Ok(())
    }

    /// The inference form: batch norm folded into each convolution's weight and bias.
    pub fn folded(&self) -> anyhow::Result<FoldedWeights> {
        let conv = |c: &ConvBn| -> anyhow::Result<FoldedLayer> {
            let (scale, shift) = c.bn.fold()?;
            let w = c.weight.as_tensor().to_device(&Device::Cpu)?;
            let (k, cout) = w.dims2()?;
            let mut w = w.flatten_all()?.to_vec1::<f32>()?;
            for row in w.chunks_exact_mut(cout) {
                for (x, s) in row.iter_mut().zip(&scale) {
                    *x *= s;
                }
            }
            Ok(FoldedLayer {
                weight: w,
                bias: shift,
                rows: k,
                cols: cout,
            })
        };
        let dense = |w: &Var, b: &Var| -> anyhow::Result<FoldedLayer> {
            let (rows, cols) = w.as_tensor().dims2()?;
            Ok(FoldedLayer {
                weight: w.as_tensor().flatten_all()?.to_vec1()?,
                bias: b.as_tensor().to_vec1()?,
                rows,
                cols,
            })
        };
        Ok(FoldedWeights {
            config: self.config,
            input: conv(&self.input)?,
            tower: self
                .tower
                .iter()
                .map(|(a, b)| Ok((conv(a)?, conv(b)?)))
                .collect::<anyhow::Result<_>>()?,
            policy_conv: conv(&self.policy_conv)?,
            policy_out: dense(&self.policy_out_w, &self.policy_out_b)?,
            value_conv: conv(&self.value_conv)?,
            value_fc1: dense(&self.value_fc1_w, &self.value_fc1_b)?,
            value_fc2: dense(&self.value_fc2_w, &self.value_fc2_b)?,
        })
    }
}

/// A folded layer: `y = x W + b`, `W` row-major `[rows, cols]`.
#[derive(Clone, Debug)]
pub struct FoldedLayer {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

/// All weights of the inference form, on the host.
#[derive(Clone, Debug)]
pub struct FoldedWeights {
    pub config: NetConfig,
    pub input: FoldedLayer,
    pub tower: Vec<(FoldedLayer, FoldedLayer)>,
    pub policy_conv: FoldedLayer,
    pub policy_out: FoldedLayer,
    pub value_conv: FoldedLayer,
    pub value_fc1: FoldedLayer,
    pub value_fc2: FoldedLayer,
}

/// The folded network as candle tensors on a device, in a chosen precision: the
/// inference path on CUDA.
///
/// Two entry points: [`DeviceNet::forward`] returns the whole policy (tests, tools), and
/// [`DeviceNet::forward_selected`], the search's path, takes the input planes as bytes
/// (every plane is 0 or 1, so a byte per square is exact and a quarter of the f32 upload)
/// and gathers on the device only the logits of the moves the caller names, so that a
/// few hundred bytes per position come back instead of the 4672 logits.
pub struct DeviceNet {
    config: NetConfig,
    dtype: DType,
    layers: Vec<(Tensor, Tensor)>,
}

impl DeviceNet {
    pub fn new(w: &FoldedWeights, device: &Device, dtype: DType) -> anyhow::Result<Self> {
        let mut all = vec![&w.input];
        for (a, b) in &w.tower {
            all.push(a);
            all.push(b);
        }
        all.extend([
            &w.policy_conv,
            &w.policy_out,
            &w.value_conv,
            &w.value_fc1,
            &w.value_fc2,
        ]);
        let layers = all
            .into_iter()
            .map(|l| {
                let wt =
                    Tensor::from_slice(&l.weight, (l.rows, l.cols), device)?.to_dtype(dtype)?;
                let bt = Tensor::from_slice(&l.bias, l.cols, device)?.to_dtype(dtype)?;
                Ok((wt, bt))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(DeviceNet {
            config: w.config,
            dtype,
            layers,
        })
    }

    /// Layer `i`'s epilogue: `act(y + bias [+ residual])`, `y` `[N, C]`: one fused kernel
    /// on CUDA, candle's ops elsewhere.
    fn epilogue(
        &self,
        i: usize,
        y: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        let bias = &self.layers[i].1;
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            let r = match residual {
                Some(r) => r.reshape(y.shape())?.contiguous()?,
                None => y.clone(),
            };
            return y.contiguous()?.apply_op3_no_bwd(
                bias,
                &r,
                &cuda::BiasAct {
                    residual: residual.is_some(),
                    relu,
                },
            );
        }
        let mut t = y.broadcast_add(bias)?;
        if let Some(r) = residual {
            t = (t + r.reshape(y.shape())?)?;
        }
        if relu {
            t.relu()
        } else {
            Ok(t)
        }
    }

    /// Input planes `[B, 18, 64]` on the device (any dtype) -> (policy logits
    /// `[B, 64, 73]`, square-major, and WDL logits `[B, 3]`), both still on the device.
    fn trunk(&self, planes: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let batch = planes.dim(0)?;
        let x = planes.to_dtype(self.dtype)?.transpose(1, 2)?.contiguous()?;
        let layer = |i: usize,
                     x: &Tensor,
                     kernel: usize,
                     residual: Option<&Tensor>,
                     relu: bool|
         -> candle_core::Result<Tensor> {
            let (b, _, c) = x.dims3()?;
            let cols = if kernel == 3 {
                im2col::im2col_inference(x)?
            } else {
                x.reshape((b * 64, c))?
            };
            let y = cols.matmul(&self.layers[i].0)?;
            self.epilogue(i, &y, residual, relu)?.reshape((b, 64, ()))
        };
        let mut h = layer(0, &x, 3, None, true)?;
        let blocks = self.config.blocks;
        for k in 0..blocks {
            let t = layer(1 + 2 * k, &h, 3, None, true)?;
            h = layer(2 + 2 * k, &t, 3, Some(&h), true)?;
        }
        let base = 1 + 2 * blocks;
        let p = layer(base, &h, 3, None, true)?;
        let policy = layer(base + 1, &p, 1, None, false)?;
        let v = layer(base + 2, &h, 1, None, true)?.reshape((batch, 64 * VALUE_CHANNELS))?;
        let v = self.epilogue(base + 3, &v.matmul(&self.layers[base + 3].0)?, None, true)?;
        let wdl = self.epilogue(base + 4, &v.matmul(&self.layers[base + 4].0)?, None, false)?;
        Ok((policy, wdl))
    }

    /// `planes` `[B, 18*64]` f32 on the host -> (policy logits `[B, 4672]`, WDL logits
    /// `[B, 3]`) on the host.
    pub fn forward(
        &self,
        planes: &[f32],
        batch: usize,
        device: &Device,
    ) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        let x = Tensor::from_slice(planes, (batch, INPUT_PLANES, 64), device)?;
        let (policy, wdl) = self.trunk(&x)?;
        let policy = policy
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, POLICY_SIZE))?;
        let policy = policy
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let wdl = wdl.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok((policy, wdl))
    }

    /// The search's path. `planes` holds `[B, 18*64]` bytes, each 0 or 1 (as
    /// [`crate::encoding::encode_position`] writes them); `select` holds indices into the
    /// square-major logits of the whole batch, `i * 4672 + square * 73 + plane` for
    /// position `i` (see [`selected_policy_index`]). Returns the logits at `select`, in
    /// its order, and the WDL logits `[B, 3]`, in one device-to-host copy.
    pub fn forward_selected(
        &self,
        planes: &[u8],
        batch: usize,
        select: &[u32],
        device: &Device,
    ) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        let x = Tensor::from_slice(planes, (batch, INPUT_PLANES, 64), device)?;
        let (policy, wdl) = self.trunk(&x)?;
        let out = if select.is_empty() {
            wdl.flatten_all()?
        } else {
            let ids = Tensor::from_slice(select, select.len(), device)?;
            let picked = policy.flatten_all()?.index_select(&ids, 0)?;
            Tensor::cat(&[&picked, &wdl.flatten_all()?], 0)?
        };
        let mut out = out.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let wdl = out.split_off(select.len());
        Ok((out, wdl))
    }
}

/// Where policy index `index` (`plane * 64 + square`, see [`crate::encoding`]) of
/// position `i` sits in the square-major logits `[B, 64, 73]` of a batch.
#[inline]
pub fn selected_policy_index(i: usize, index: usize) -> usize {
    let (plane, square) = (index / 64, index % 64);
    i * POLICY_SIZE + square * POLICY_PLANES + plane
}

/// Softmax of three WDL logits.
pub fn wdl_probabilities(logits: &[f32]) -> [f32; 3] {
    let m = logits[0].max(logits[1]).max(logits[2]);
    let e = [
        (logits[0] - m).exp(),
        (logits[1] - m).exp(),
        (logits[2] - m).exp(),
    ];
    let s = e[0] + e[1] + e[2];
    [e[0] / s, e[1] / s, e[2] / s]
}

/// Log-softmax over the last dimension (differentiable, unlike candle's softmax).
pub fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::log_softmax(x, D::Minus1)
}
