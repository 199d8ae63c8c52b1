//! The policy/value network: a residual tower over the 18 input planes, an AlphaZero
//! convolutional policy head producing 73x8x8 logits, and a WDL value head.
//!
//! ```text
//! planes [B,18,8,8] -> conv3x3 18->F, BN, ReLU
//!   -> blocks x { conv3x3 F->F, BN, ReLU, conv3x3 F->F, BN, + skip, ReLU }
//!   -> policy: conv3x3 F->F, BN, ReLU, conv1x1 F->73 (+bias)   -> [B, 4672] logits
//!   -> value:  conv1x1 F->32, BN, ReLU, FC 2048->128, ReLU, FC 128->3 -> W/D/L logits
//!   -> moves left (optional): conv1x1 F->8, BN, ReLU, FC 512->32, ReLU, FC 32->1
//!              -> plies to the game's end / 20
//! ```
//!
//! Activations are channels-last, `[B, 64, C]`, so that every convolution is one GEMM
//! (see [`im2col`]) or, for 3x3 convolutions on the CPU, 36 small ones by Winograd's
//! F(4x4, 3x3) (see [`winograd`]). [`Network`] is the training form (batch-norm statistics, f32 master
//! weights, optional bf16/f16 compute); [`Network::folded`] gives the inference form with
//! batch norm folded into the convolutions, run either by [`cpu::CpuNet`] (direct GEMMs
//! on reused buffers) or by [`DeviceNet`] (candle tensors, for CUDA).

mod batchnorm;
pub mod checkpoint;
mod conv3x3;
pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod im2col;
pub mod layers;
pub mod winograd;

use crate::encoding::{INPUT_PLANES, POLICY_PLANES, POLICY_SIZE};
use crate::files::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use layers::{
    ConvBn, MovesLeftHead, PolicyHead, ResidualBlock, TensorSource, TensorStore, ValueHead,
};
use rand::{rngs::StdRng, SeedableRng};
use std::path::Path;

pub use batchnorm::Activation;
pub use layers::{
    FoldedBlock, FoldedLayer, FoldedMovesLeftHead, FoldedPolicyHead, FoldedSqueezeExcite,
    FoldedValueHead, TensorKind,
};

/// The trained network built into the binaries (`models/default.safetensors`, described in
/// models/README.md): what `ember` plays with when no network is published, and the
/// player `ember:embedded`.
pub static EMBEDDED_NETWORK: &[u8] = include_bytes!("../../../models/default.safetensors");

pub const VALUE_CHANNELS: usize = 32;
pub const VALUE_HIDDEN: usize = 128;
pub const WDL: usize = 3;
/// Channels of the moves-left head's 1x1 convolution and units of its hidden layer.
pub const MOVES_LEFT_CHANNELS: usize = 8;
pub const MOVES_LEFT_HIDDEN: usize = 32;
/// Plies in one unit of the moves-left head's output (lc0's scale): its targets are the
/// plies left divided by this, so that they lie near the value head's range.
pub const MOVES_LEFT_SCALE: f32 = 20.0;

/// The plies left that the moves-left head's raw output `raw` (in units of
/// [`MOVES_LEFT_SCALE`]) stands for: never negative.
#[inline]
pub fn moves_left_plies(raw: f32) -> f32 {
    MOVES_LEFT_SCALE * raw.max(0.0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    pub filters: usize,
    pub blocks: usize,
    /// Hidden units of each residual block's squeeze-and-excitation unit (lc0's SE: the
    /// block's output channels, averaged over the board, set a scale and a shift for every
    /// channel before the skip is added); 0: plain residual blocks. Older checkpoints and
    /// run configurations, which do not name it, have none.
    #[serde(default)]
    pub se_channels: usize,
    /// An auxiliary policy head that predicts the opponent's reply (KataGo's auxiliary
    /// policy target), from the policy head's features; trained on the move played next,
    /// never run by the search. Older checkpoints and run configurations have none.
    #[serde(default)]
    pub reply_head: bool,
    /// A moves-left head beside the value head (lc0's MLH): it learns the plies from a
    /// position to its game's end, and the search reads it to prefer the faster win and
    /// the slower loss. Older checkpoints and run configurations have none.
    #[serde(default)]
    pub moves_left_head: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig::plain(64, 3)
    }
}

impl NetConfig {
    /// The inclusive ranges of `filters` and `blocks` a network may have (a checkpoint
    /// declaring more is refused before anything is allocated).
    pub const LIMITS: ((usize, usize), (usize, usize)) = ((1, 1024), (1, 64));
    /// The most squeeze-and-excitation hidden units a block may have.
    pub const MAX_SE_CHANNELS: usize = 1024;

    /// A plain residual tower of `filters` x `blocks`.
    pub const fn plain(filters: usize, blocks: usize) -> NetConfig {
        NetConfig {
            filters,
            blocks,
            se_channels: 0,
            reply_head: false,
            moves_left_head: false,
        }
    }

    /// An error unless `filters` and `blocks` lie within [`Self::LIMITS`] and
    /// `se_channels` within [`Self::MAX_SE_CHANNELS`].
    pub fn check(&self) -> anyhow::Result<()> {
        let ((f0, f1), (b0, b1)) = Self::LIMITS;
        if !(f0..=f1).contains(&self.filters) || !(b0..=b1).contains(&self.blocks) {
            bail!(
                "a network has {f0} to {f1} filters and {b0} to {b1} blocks, got {} filters and {} blocks",
                self.filters,
                self.blocks
            );
        }
        if self.se_channels > Self::MAX_SE_CHANNELS {
            bail!(
                "a network's squeeze-and-excitation units have at most {} hidden units, got {}",
                Self::MAX_SE_CHANNELS,
                self.se_channels
            );
        }
        Ok(())
    }
}

/// `64x3`, or `64x3-se16` with squeeze-and-excitation units of 16 hidden units, and
/// `-reply` after it with the reply head, `-mlh` with the moves-left head.
impl std::fmt::Display for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.filters, self.blocks)?;
        if self.se_channels > 0 {
            write!(f, "-se{}", self.se_channels)?;
        }
        if self.reply_head {
            write!(f, "-reply")?;
        }
        if self.moves_left_head {
            write!(f, "-mlh")?;
        }
        Ok(())
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

/// The training form of the network: the layers, and every tensor by its checkpoint name.
pub struct Network {
    pub config: NetConfig,
    pub device: Device,
    pub input: ConvBn,
    pub tower: Vec<ResidualBlock>,
    pub policy: PolicyHead,
    pub value: ValueHead,
    pub moves_left: Option<MovesLeftHead>,
    /// Every variable by its builder path, in the order the layers were built.
    vars: Vec<(String, Var)>,
    /// Training iteration that produced these weights (checkpoint metadata).
    pub iteration: u64,
    /// The run that trained these weights (checkpoint metadata field `run`), when known.
    pub run: Option<String>,
}

/// Network outputs: policy logits `[B, 4672]` and WDL logits `[B, 3]` (win/draw/loss
/// for the side to move), both f32, and with the reply head its logits `[B, 4672]` for
/// the opponent's next move (in the opponent's own encoding), and with the moves-left head
/// its raw output `[B]` f32 (the plies left in units of [`MOVES_LEFT_SCALE`], not clamped).
pub struct NetOutput {
    pub policy: Tensor,
    pub wdl: Tensor,
    pub reply: Option<Tensor>,
    pub moves_left: Option<Tensor>,
}

impl Network {
    /// A freshly initialised network (He-normal convolutions, small output layers so the
    /// first policy is near uniform and the first value near zero). Deterministic in `seed`.
    pub fn new(config: NetConfig, device: &Device, seed: u64) -> anyhow::Result<Self> {
        Network::build(config, device, TensorSource::Seeded(seed))
    }

    /// Builds the layers over `source`; tensor names are the builder paths
    /// (`input.conv.weight`, `tower.0.conv1.bn.gamma`, `policy.out.bias`, ...).
    pub fn build(config: NetConfig, device: &Device, source: TensorSource) -> anyhow::Result<Self> {
        config.check()?;
        let store = TensorStore::new(source);
        let vb = store.builder(device);
        let f = config.filters;
        let input = ConvBn::new(3, INPUT_PLANES, f, vb.pp("input").pp("conv"))?;
        let tower = (0..config.blocks)
            .map(|i| ResidualBlock::new(f, config.se_channels, vb.pp("tower").pp(i)))
            .collect::<candle_core::Result<_>>()?;
        let policy = PolicyHead::new(f, config.reply_head, vb.pp("policy"))?;
        let value = ValueHead::new(f, vb.pp("value"))?;
        let moves_left = config
            .moves_left_head
            .then(|| MovesLeftHead::new(f, vb.pp("moves_left")))
            .transpose()?;
        drop(vb);
        Ok(Network {
            config,
            device: device.clone(),
            input,
            tower,
            policy,
            value,
            moves_left,
            vars: store.into_vars(),
            iteration: 0,
            run: None,
        })
    }

    /// The checkpoint names of the network's tensors, in build order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(name, _)| name.as_str())
    }

    /// Every tensor by its checkpoint name.
    pub fn named_tensors(&self) -> Vec<(String, &Var, TensorKind)> {
        self.vars
            .iter()
            .map(|(name, var)| (name.clone(), var, TensorKind::of(name)))
            .collect()
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
        for (what, t) in [
            ("policy", Some(&out.policy)),
            ("value", Some(&out.wdl)),
            ("moves-left", out.moves_left.as_ref()),
        ] {
            let Some(t) = t else { continue };
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
        let mut h = self
            .input
            .forward_act(&x, train, compute, Activation::Relu, None)?;
        for block in &self.tower {
            h = block.forward(&h, train, compute)?;
        }
        let (policy, reply) = self.policy.forward_with_reply(&h, train, compute)?;
        let wdl = self.value.forward(&h, train, compute)?;
        let moves_left = self
            .moves_left
            .as_ref()
            .map(|head| head.forward(&h, train, compute))
            .transpose()?;
        Ok(NetOutput {
            policy,
            wdl,
            reply,
            moves_left,
        })
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
        Ok(FoldedWeights {
            config: self.config,
            input: self.input.fold()?,
            tower: self
                .tower
                .iter()
                .map(ResidualBlock::fold)
                .collect::<candle_core::Result<_>>()?,
            policy: self.policy.fold()?,
            value: self.value.fold()?,
            moves_left: self
                .moves_left
                .as_ref()
                .map(MovesLeftHead::fold)
                .transpose()?,
        })
    }
}

/// Checkpoint files and bytes (the format is [`checkpoint`]'s).
impl Network {
    /// Serialises the network (all tensors, f32) with its metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let tensors: Vec<(String, Tensor)> = self
            .named_tensors()
            .into_iter()
            .map(|(n, v, _)| (n, v.as_tensor().clone()))
            .collect();
        let mut meta = checkpoint::metadata(self.config, self.iteration);
        if let Some(run) = &self.run {
            meta.insert(checkpoint::RUN_FIELD.to_string(), run.clone());
        }
        checkpoint::serialize(&tensors, meta)
    }

    /// Saves atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
            .with_context(|| format!("saving network to {}", path.display()))
    }

    /// Loads a checkpoint file. With `expected`, a checkpoint of another architecture
    /// is an error naming the fields that differ.
    pub fn load(path: &Path, expected: Option<NetConfig>, device: &Device) -> Result<Network> {
        let bytes = checkpoint::read_file(path).context("reading a checkpoint")?;
        Network::from_bytes(&bytes, expected, device, &path.display().to_string())
    }

    /// Loads a checkpoint from bytes (`origin` names them in errors). Every tensor's
    /// name, dtype and shape is checked against the declared architecture as the layers
    /// are built from it, and a tensor no layer asks for is an error.
    pub fn from_bytes(
        bytes: &[u8],
        expected: Option<NetConfig>,
        device: &Device,
        origin: &str,
    ) -> Result<Network> {
        let ckpt = checkpoint::Checkpoint::parse(bytes, origin)?;
        let config = checkpoint::declared_config(&ckpt.meta, origin)?;
        if let Some(want) = expected {
            let fields = [
                (
                    "filters",
                    config.filters.to_string(),
                    want.filters.to_string(),
                ),
                ("blocks", config.blocks.to_string(), want.blocks.to_string()),
                (
                    "se_channels",
                    config.se_channels.to_string(),
                    want.se_channels.to_string(),
                ),
                (
                    "reply_head",
                    config.reply_head.to_string(),
                    want.reply_head.to_string(),
                ),
                (
                    "moves_left_head",
                    config.moves_left_head.to_string(),
                    want.moves_left_head.to_string(),
                ),
            ];
            let diffs: Vec<String> = fields
                .iter()
                .filter(|(_, got, want)| got != want)
                .map(|(name, got, want)| format!("{name} is {got} (expected {want})"))
                .collect();
            if !diffs.is_empty() {
                bail!("{origin} holds another architecture: {}", diffs.join(", "));
            }
        }
        let iteration = match ckpt.meta.get("iteration") {
            None => 0,
            Some(s) => s.parse().map_err(|_| {
                anyhow!("{origin}: metadata field `iteration` is {s:?}, expected a whole number")
            })?,
        };
        // The layers ask the checkpoint for each tensor with the shape they need: a tensor
        // of another shape or dtype is refused before it is read, so nothing larger than
        // the file itself is ever allocated.
        let mut net = Network::build(config, device, TensorSource::Checkpoint(&ckpt))
            .map_err(|e| anyhow!("{e}"))?;
        let expected: std::collections::HashSet<&str> = net.tensor_names().collect();
        if let Some((extra, _)) = ckpt
            .shapes()
            .into_iter()
            .find(|(name, _)| !expected.contains(name.as_str()))
        {
            bail!("{origin}: tensor `{extra}` is not part of a {config} network");
        }
        net.iteration = iteration;
        // Shown in `info string` lines and logs: printable characters only, so a hostile
        // field cannot break a line of the UCI protocol.
        net.run = ckpt.meta.get(checkpoint::RUN_FIELD).map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(checkpoint::MAX_RUN_NAME)
                .collect()
        });
        Ok(net)
    }
}

/// All weights of the inference form, on the host, layer by layer as [`Network`] has them.
#[derive(Clone, Debug)]
pub struct FoldedWeights {
    pub config: NetConfig,
    pub input: FoldedLayer,
    pub tower: Vec<FoldedBlock>,
    pub policy: FoldedPolicyHead,
    pub value: FoldedValueHead,
    pub moves_left: Option<FoldedMovesLeftHead>,
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
    dtype: DType,
    input: DeviceLayer,
    tower: Vec<DeviceBlock>,
    policy_conv: DeviceLayer,
    policy_out: DeviceLayer,
    value_conv: DeviceLayer,
    value_fc1: DeviceLayer,
    value_fc2: DeviceLayer,
    /// The moves-left head's convolution and two dense layers, when the network has it.
    moves_left: Option<[DeviceLayer; 3]>,
}

/// A residual block on the device: its two convolutions and, when it has one, its
/// squeeze-and-excitation unit's two dense layers.
struct DeviceBlock {
    conv1: DeviceLayer,
    conv2: DeviceLayer,
    se: Option<(DeviceLayer, DeviceLayer)>,
}

impl DeviceBlock {
    fn forward(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        let t = self.conv1.forward(h, None, true)?;
        let Some((fc1, fc2)) = &self.se else {
            return self.conv2.forward(&t, Some(h), true);
        };
        let u = self.conv2.forward(&t, None, false)?;
        let c = u.dim(2)?;
        let z = fc1.forward(&u.mean(1)?, None, true)?;
        let g = fc2.forward(&z, None, false)?;
        let gate = candle_nn::ops::sigmoid(&g.narrow(1, 0, c)?)?;
        let shift = g.narrow(1, c, c)?;
        (u.broadcast_mul(&gate.unsqueeze(1)?)?
            .broadcast_add(&shift.unsqueeze(1)?)?
            + h)?
            .relu()
    }
}

/// A folded layer's weight `[rows, cols]` and bias `[cols]` on the device.
struct DeviceLayer {
    weight: Tensor,
    bias: Tensor,
    /// 3 for a 3x3 convolution (im2col first), 1 for a 1x1 convolution or dense layer.
    kernel: usize,
}

impl DeviceLayer {
    fn new(l: &FoldedLayer, kernel: usize, device: &Device, dtype: DType) -> anyhow::Result<Self> {
        Ok(DeviceLayer {
            weight: Tensor::from_slice(&l.weight, (l.rows, l.cols), device)?.to_dtype(dtype)?,
            bias: Tensor::from_slice(&l.bias, l.cols, device)?.to_dtype(dtype)?,
            kernel,
        })
    }

    /// `act(x W + b [+ residual])`: the epilogue is one fused kernel on CUDA, candle's ops
    /// elsewhere. `x` is `[B, 64, C]` for a convolution (result `[B, 64, C_out]`) or
    /// `[N, C]` for a dense layer.
    fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        let spatial = x.rank() == 3;
        let cols = match (spatial, self.kernel) {
            (true, 3) => im2col::im2col_inference(x)?,
            (true, _) => {
                let (b, _, c) = x.dims3()?;
                x.reshape((b * 64, c))?
            }
            (false, _) => x.clone(),
        };
        let y = cols.matmul(&self.weight)?;
        let y = self.epilogue(&y, residual, relu)?;
        if spatial {
            y.reshape((x.dim(0)?, 64, ()))
        } else {
            Ok(y)
        }
    }

    fn epilogue(
        &self,
        y: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            let r = match residual {
                Some(r) => r.reshape(y.shape())?.contiguous()?,
                None => y.clone(),
            };
            return y.contiguous()?.apply_op3_no_bwd(
                &self.bias,
                &r,
                &cuda::BiasAct {
                    residual: residual.is_some(),
                    relu,
                },
            );
        }
        let mut t = y.broadcast_add(&self.bias)?;
        if let Some(r) = residual {
            t = (t + r.reshape(y.shape())?)?;
        }
        if relu {
            t.relu()
        } else {
            Ok(t)
        }
    }
}

impl DeviceNet {
    pub fn new(w: &FoldedWeights, device: &Device, dtype: DType) -> anyhow::Result<Self> {
        let layer = |l: &FoldedLayer, kernel: usize| DeviceLayer::new(l, kernel, device, dtype);
        Ok(DeviceNet {
            dtype,
            input: layer(&w.input, 3)?,
            tower: w
                .tower
                .iter()
                .map(|b| {
                    Ok(DeviceBlock {
                        conv1: layer(&b.conv1, 3)?,
                        conv2: layer(&b.conv2, 3)?,
                        se: match &b.se {
                            Some(se) => Some((layer(&se.fc1, 1)?, layer(&se.fc2, 1)?)),
                            None => None,
                        },
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            policy_conv: layer(&w.policy.conv, 3)?,
            policy_out: layer(&w.policy.out, 1)?,
            value_conv: layer(&w.value.conv, 1)?,
            value_fc1: layer(&w.value.fc1, 1)?,
            value_fc2: layer(&w.value.fc2, 1)?,
            moves_left: match &w.moves_left {
                Some(m) => Some([layer(&m.conv, 1)?, layer(&m.fc1, 1)?, layer(&m.fc2, 1)?]),
                None => None,
            },
        })
    }

    /// Whether the network has the moves-left head.
    pub fn has_moves_left(&self) -> bool {
        self.moves_left.is_some()
    }

    /// Input planes `[B, 18, 64]` on the device (any dtype) -> (policy logits
    /// `[B, 64, 73]`, square-major, WDL logits `[B, 3]`, and with the moves-left head the
    /// plies left `[B]`), all still on the device.
    fn trunk(&self, planes: &Tensor) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        let batch = planes.dim(0)?;
        let x = planes.to_dtype(self.dtype)?.transpose(1, 2)?.contiguous()?;
        let mut h = self.input.forward(&x, None, true)?;
        for block in &self.tower {
            h = block.forward(&h)?;
        }
        let p = self.policy_conv.forward(&h, None, true)?;
        let policy = self.policy_out.forward(&p, None, false)?;
        let v = self
            .value_conv
            .forward(&h, None, true)?
            .reshape((batch, 64 * VALUE_CHANNELS))?;
        let v = self.value_fc1.forward(&v, None, true)?;
        let wdl = self.value_fc2.forward(&v, None, false)?;
        let moves_left = match &self.moves_left {
            Some([conv, fc1, fc2]) => {
                let m = conv
                    .forward(&h, None, true)?
                    .reshape((batch, 64 * MOVES_LEFT_CHANNELS))?;
                let m = fc2.forward(&fc1.forward(&m, None, true)?, None, true)?;
                Some((m.reshape(batch)? * f64::from(MOVES_LEFT_SCALE))?)
            }
            None => None,
        };
        Ok((policy, wdl, moves_left))
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
        let (policy, wdl, _) = self.trunk(&x)?;
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
    /// its order, the WDL logits `[B, 3]`, and the plies left `[B]` (empty without the
    /// moves-left head), in one device-to-host copy.
    pub fn forward_selected(
        &self,
        planes: &[u8],
        batch: usize,
        select: &[u32],
        device: &Device,
    ) -> anyhow::Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let x = Tensor::from_slice(planes, (batch, INPUT_PLANES, 64), device)?;
        let (policy, wdl, moves_left) = self.trunk(&x)?;
        let mut parts = Vec::with_capacity(3);
        if !select.is_empty() {
            let ids = Tensor::from_slice(select, select.len(), device)?;
            parts.push(policy.flatten_all()?.index_select(&ids, 0)?);
        }
        parts.push(wdl.flatten_all()?);
        parts.extend(moves_left);
        let mut out = Tensor::cat(&parts, 0)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let moves_left = out.split_off(select.len() + WDL * batch);
        let wdl = out.split_off(select.len());
        Ok((out, wdl, moves_left))
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
