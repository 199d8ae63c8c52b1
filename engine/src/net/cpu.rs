//! The folded network on the CPU: every 3x3 convolution by Winograd's F(4x4, 3x3)
//! ([`super::winograd`]: 36 small GEMMs per layer), every 1x1 convolution and dense layer
//! as one GEMM (the `gemm` crate that candle itself uses), over buffers reused from call
//! to call, with bias, skip connection and ReLU applied in place. No tensor is allocated
//! per call.
//!
//! [`Conv3x3::Im2col`] keeps the direct form (im2col and one GEMM of 9C per layer) for
//! comparison in `trainer bench`. Boards are processed in chunks so the buffers stay a
//! few megabytes.

use super::im2col::{im2col_into, TAPS};
use super::winograd::{self, WinogradLayer, WinogradScratch};
use super::{
    moves_left_plies, FoldedLayer, FoldedWeights, MOVES_LEFT_CHANNELS, VALUE_CHANNELS, WDL,
};
use crate::encoding::{INPUT_PLANES, PLANES_LEN, POLICY_PLANES, POLICY_SIZE};
use gemm::Parallelism;
use rayon::prelude::*;

const CHUNK_BOARDS: usize = 64;

/// How [`CpuNet`] runs its 3x3 convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv3x3 {
    /// Winograd F(4x4, 3x3): a quarter of the multiplications (the default).
    Winograd,
    /// im2col and one GEMM of (64 B) x 9C by 9C x C_out per layer.
    Im2col,
}

impl Conv3x3 {
    pub fn as_str(self) -> &'static str {
        match self {
            Conv3x3::Winograd => "winograd",
            Conv3x3::Im2col => "im2col",
        }
    }
}

/// The 3x3 layers in the Winograd domain, in the order of [`FoldedWeights`].
struct WinogradWeights {
    input: WinogradLayer,
    tower: Vec<[WinogradLayer; 2]>,
    policy: WinogradLayer,
}

/// A 3x3 layer of the network: the input convolution, one of a residual block's two,
/// or the policy head's.
#[derive(Clone, Copy)]
enum Layer3x3 {
    Input,
    Block(usize, usize),
    Policy,
}

pub struct CpuNet {
    weights: FoldedWeights,
    wino: WinogradWeights,
    conv: Conv3x3,
    scratch: WinogradScratch,
    threads: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    t: Vec<f32>,
    /// A block's second convolution before its squeeze-and-excitation unit.
    u: Vec<f32>,
    /// The squeeze-and-excitation unit's channel means `[boards, C]`, hidden units
    /// `[boards, S]` and gates and shifts `[boards, 2C]`.
    pooled: Vec<f32>,
    se_hidden: Vec<f32>,
    se_out: Vec<f32>,
    cols: Vec<f32>,
    logits: Vec<f32>,
    v: Vec<f32>,
    v1: Vec<f32>,
    /// The moves-left head's convolution `[rows, 8]`, hidden units `[boards, 32]` and
    /// output `[boards]` (empty without the head).
    m: Vec<f32>,
    m1: Vec<f32>,
    m2: Vec<f32>,
}

/// `out = act(a W + b [+ out])` for `a` `[rows, k]`, `W` `[k, n]`, `out` `[rows, n]`.
fn dense(
    layer: &FoldedLayer,
    a: &[f32],
    rows: usize,
    out: &mut [f32],
    residual: bool,
    relu: bool,
    threads: usize,
) {
    let (k, n) = (layer.rows, layer.cols);
    debug_assert_eq!(a.len(), rows * k);
    let out = &mut out[..rows * n];
    for row in out.chunks_exact_mut(n) {
        if residual {
            for (o, b) in row.iter_mut().zip(&layer.bias) {
                *o += b;
            }
        } else {
            row.copy_from_slice(&layer.bias);
        }
    }
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the slices hold rows*k, k*n and rows*n f32 values, row-major as the strides say.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            layer.weight.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    if relu {
        for x in out.iter_mut() {
            *x = x.max(0.0);
        }
    }
}

impl CpuNet {
    pub fn new(weights: FoldedWeights) -> Self {
        let f = weights.config.filters;
        let se = weights.config.se_channels;
        let rows = CHUNK_BOARDS * 64;
        let head = weights.moves_left.is_some();
        let buffer = |n: usize| if head { vec![0.0; n] } else { Vec::new() };
        let wino = WinogradWeights {
            input: WinogradLayer::new(&weights.input),
            tower: weights
                .tower
                .iter()
                .map(|b| [WinogradLayer::new(&b.conv1), WinogradLayer::new(&b.conv2)])
                .collect(),
            policy: WinogradLayer::new(&weights.policy.conv),
        };
        CpuNet {
            wino,
            conv: Conv3x3::Winograd,
            scratch: WinogradScratch::default(),
            threads: rayon::current_num_threads(),
            x: vec![0.0; rows * INPUT_PLANES],
            h: vec![0.0; rows * f],
            t: vec![0.0; rows * f],
            u: if se > 0 {
                vec![0.0; rows * f]
            } else {
                Vec::new()
            },
            pooled: vec![0.0; CHUNK_BOARDS * f],
            se_hidden: vec![0.0; CHUNK_BOARDS * se],
            se_out: vec![0.0; CHUNK_BOARDS * 2 * f],
            cols: Vec::new(),
            logits: vec![0.0; rows * POLICY_PLANES],
            v: vec![0.0; rows * VALUE_CHANNELS],
            v1: vec![0.0; CHUNK_BOARDS * weights.value.fc1.cols],
            m: buffer(rows * MOVES_LEFT_CHANNELS),
            m1: buffer(CHUNK_BOARDS * weights.moves_left.as_ref().map_or(0, |m| m.fc1.cols)),
            m2: buffer(CHUNK_BOARDS),
            weights,
        }
    }

    pub fn config(&self) -> super::NetConfig {
        self.weights.config
    }

    /// Whether the network has the moves-left head.
    pub fn has_moves_left(&self) -> bool {
        self.weights.moves_left.is_some()
    }

    /// Threads used by the GEMMs and the im2col gather (1 = the calling thread only).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Picks the 3x3 convolution algorithm (Winograd unless a benchmark asks otherwise).
    pub fn set_conv3x3(&mut self, conv: Conv3x3) {
        self.conv = conv;
    }

    pub fn conv3x3(&self) -> Conv3x3 {
        self.conv
    }

    /// `dst = conv3x3(src) + bias [+ dst]` over `boards` boards for one 3x3 layer, with a
    /// ReLU when `relu`.
    fn conv(
        &mut self,
        layer: Layer3x3,
        src: Src,
        dst: Src,
        boards: usize,
        residual: bool,
        relu: bool,
    ) {
        let CpuNet {
            weights,
            wino,
            conv,
            scratch,
            threads,
            x,
            h,
            t,
            u,
            cols,
            ..
        } = self;
        let (src, dst) = match (src, dst) {
            (Src::X, Src::H) => (&x[..], h),
            (Src::H, Src::T) => (&h[..], t),
            (Src::T, Src::H) => (&t[..], h),
            (Src::T, Src::U) => (&t[..], u),
            _ => unreachable!("no layer reads and writes these buffers"),
        };
        match conv {
            Conv3x3::Winograd => {
                let w = match layer {
                    Layer3x3::Input => &wino.input,
                    Layer3x3::Block(i, j) => &wino.tower[i][j],
                    Layer3x3::Policy => &wino.policy,
                };
                winograd::conv3x3(w, src, boards, dst, residual, relu, *threads, scratch);
            }
            Conv3x3::Im2col => {
                let w = match layer {
                    Layer3x3::Input => &weights.input,
                    Layer3x3::Block(i, 0) => &weights.tower[i].conv1,
                    Layer3x3::Block(i, _) => &weights.tower[i].conv2,
                    Layer3x3::Policy => &weights.policy.conv,
                };
                let channels = w.rows / TAPS;
                let src = &src[..boards * 64 * channels];
                if cols.len() < src.len() * TAPS {
                    cols.resize(src.len() * TAPS, 0.0);
                }
                let cols = &mut cols[..src.len() * TAPS];
                if *threads > 1 && boards > 1 {
                    src.par_chunks(64 * channels)
                        .zip(cols.par_chunks_mut(64 * TAPS * channels))
                        .for_each(|(s, c)| im2col_into(s, channels, c));
                } else {
                    im2col_into(src, channels, cols);
                }
                dense(w, cols, boards * 64, dst, residual, relu, *threads);
            }
        }
    }

    /// Evaluates `batch` positions: `planes` `[batch, 18*64]` (encoding layout) ->
    /// `policy` `[batch, 4672]` logits and `wdl` `[batch, 3]` logits.
    pub fn forward(&mut self, planes: &[f32], batch: usize, policy: &mut [f32], wdl: &mut [f32]) {
        self.forward_with_moves_left(planes, batch, policy, wdl, None);
    }

    /// [`Self::forward`], and with `moves_left` (`[batch]`) the moves-left head's plies
    /// left for each position ([`super::moves_left_plies`]; a network without the head
    /// leaves it as it is).
    pub fn forward_with_moves_left(
        &mut self,
        planes: &[f32],
        batch: usize,
        policy: &mut [f32],
        wdl: &mut [f32],
        mut moves_left: Option<&mut [f32]>,
    ) {
        assert_eq!(planes.len(), batch * PLANES_LEN);
        assert_eq!(policy.len(), batch * POLICY_SIZE);
        assert_eq!(wdl.len(), batch * WDL);
        if let Some(m) = &moves_left {
            assert_eq!(m.len(), batch);
        }
        let mut start = 0;
        while start < batch {
            let nb = CHUNK_BOARDS.min(batch - start);
            self.forward_chunk(
                &planes[start * PLANES_LEN..(start + nb) * PLANES_LEN],
                nb,
                &mut policy[start * POLICY_SIZE..(start + nb) * POLICY_SIZE],
                &mut wdl[start * WDL..(start + nb) * WDL],
            );
            if let Some(m) = moves_left.as_deref_mut() {
                self.moves_left_chunk(nb, &mut m[start..start + nb]);
            }
            start += nb;
        }
    }

    /// The moves-left head over the `nb` boards whose tower output is in `h`: the plies
    /// left into `out`; nothing without the head.
    fn moves_left_chunk(&mut self, nb: usize, out: &mut [f32]) {
        let Some(head) = &self.weights.moves_left else {
            return;
        };
        let (f, th) = (self.weights.config.filters, self.threads);
        let rows = nb * 64;
        dense(
            &head.conv,
            &self.h[..rows * f],
            rows,
            &mut self.m,
            false,
            true,
            th,
        );
        dense(
            &head.fc1,
            &self.m[..rows * MOVES_LEFT_CHANNELS],
            nb,
            &mut self.m1,
            false,
            true,
            th,
        );
        let hidden = head.fc1.cols;
        dense(
            &head.fc2,
            &self.m1[..nb * hidden],
            nb,
            &mut self.m2,
            false,
            false,
            1,
        );
        for (o, &raw) in out.iter_mut().zip(&self.m2[..nb]) {
            *o = moves_left_plies(raw);
        }
    }

    /// Block `i`'s squeeze-and-excitation unit over `boards` boards:
    /// `h = relu(sigmoid(gate) * u + shift + h)`, the gates and shifts from the channel
    /// means of `u`.
    fn squeeze_excite(&mut self, i: usize, boards: usize) {
        let f = self.weights.config.filters;
        let se = self.weights.tower[i]
            .se
            .as_ref()
            .expect("a block with a squeeze-and-excitation unit");
        let u = &self.u[..boards * 64 * f];
        let pooled = &mut self.pooled[..boards * f];
        for (board, mean) in u.chunks_exact(64 * f).zip(pooled.chunks_exact_mut(f)) {
            mean.fill(0.0);
            for square in board.chunks_exact(f) {
                for (m, &x) in mean.iter_mut().zip(square) {
                    *m += x;
                }
            }
            for m in mean.iter_mut() {
                *m *= 1.0 / 64.0;
            }
        }
        // A few hundred multiplications a board: the calling thread does them.
        dense(&se.fc1, pooled, boards, &mut self.se_hidden, false, true, 1);
        let hidden = se.fc1.cols;
        dense(
            &se.fc2,
            &self.se_hidden[..boards * hidden],
            boards,
            &mut self.se_out,
            false,
            false,
            1,
        );
        let h = &mut self.h[..boards * 64 * f];
        for ((hb, ub), g) in h
            .chunks_exact_mut(64 * f)
            .zip(u.chunks_exact(64 * f))
            .zip(self.se_out.chunks_exact_mut(2 * f))
        {
            let (gate, shift) = g.split_at_mut(f);
            for x in gate.iter_mut() {
                *x = 1.0 / (1.0 + (-*x).exp());
            }
            for (hs, us) in hb.chunks_exact_mut(f).zip(ub.chunks_exact(f)) {
                for c in 0..f {
                    hs[c] = (gate[c] * us[c] + shift[c] + hs[c]).max(0.0);
                }
            }
        }
    }

    fn forward_chunk(&mut self, planes: &[f32], nb: usize, policy: &mut [f32], wdl: &mut [f32]) {
        let f = self.weights.config.filters;
        let rows = nb * 64;
        let th = self.threads;
        // Plane-major [18][64] -> channels-last [64][18].
        for (board, x) in planes
            .chunks_exact(PLANES_LEN)
            .zip(self.x.chunks_exact_mut(64 * INPUT_PLANES))
        {
            for (p, plane) in board.chunks_exact(64).enumerate() {
                for (sq, &v) in plane.iter().enumerate() {
                    x[sq * INPUT_PLANES + p] = v;
                }
            }
        }
        self.conv(Layer3x3::Input, Src::X, Src::H, nb, false, true);
        for i in 0..self.weights.tower.len() {
            self.conv(Layer3x3::Block(i, 0), Src::H, Src::T, nb, false, true);
            if self.weights.tower[i].se.is_some() {
                self.conv(Layer3x3::Block(i, 1), Src::T, Src::U, nb, false, false);
                self.squeeze_excite(i, nb);
            } else {
                self.conv(Layer3x3::Block(i, 1), Src::T, Src::H, nb, true, true);
            }
        }
        self.conv(Layer3x3::Policy, Src::H, Src::T, nb, false, true);
        dense(
            &self.weights.policy.out,
            &self.t[..rows * f],
            rows,
            &mut self.logits,
            false,
            false,
            th,
        );
        for (out, logits) in policy
            .chunks_exact_mut(POLICY_SIZE)
            .zip(self.logits.chunks_exact(64 * POLICY_PLANES))
        {
            for (sq, row) in logits.chunks_exact(POLICY_PLANES).enumerate() {
                for (plane, &v) in row.iter().enumerate() {
                    out[plane * 64 + sq] = v;
                }
            }
        }
        dense(
            &self.weights.value.conv,
            &self.h[..rows * f],
            rows,
            &mut self.v,
            false,
            true,
            th,
        );
        dense(
            &self.weights.value.fc1,
            &self.v[..rows * VALUE_CHANNELS],
            nb,
            &mut self.v1,
            false,
            true,
            th,
        );
        let hidden = self.weights.value.fc1.cols;
        dense(
            &self.weights.value.fc2,
            &self.v1[..nb * hidden],
            nb,
            wdl,
            false,
            false,
            th,
        );
    }
}

#[derive(Clone, Copy)]
enum Src {
    X,
    H,
    T,
    U,
}
