//! The 3x3 convolution of training on the CPU (f32) as one candle op with its own
//! backward, instead of an im2col gather followed by candle's matmul:
//!
//! - forward, `y = conv(x, w)`: Winograd F(4x4, 3x3) ([`super::winograd`]), with the
//!   kernel transformed from the current weights at every call;
//! - input gradient, `dx = conv(dy, w turned 180 degrees, channels swapped)`: the same
//!   Winograd convolution ([`WinogradLayer::input_gradient`]);
//! - weight gradient: through the Winograd domain as well
//!   ([`super::winograd::weight_gradient`]), 36 GEMMs over the transformed input tiles and
//!   output gradients, then the kernel transform's adjoint.
//!
//! All three do a quarter of the multiplications of im2col and a GEMM, and their buffers
//! are per-thread and reused from step to step, so a training step no longer allocates
//! (and the kernel no longer zeroes) hundreds of megabytes of im2col columns and column
//! gradients. `the_training_convolution_matches_im2col_and_matmul` checks the forward
//! and both gradients against candle's own ops.
//!
//! A layer in training uses [`conv_bn_train`]: the convolution, its batch norm and
//! activation ([`super::batchnorm`]) as one op, checked against candle's ops by
//! `the_fused_convolution_layer_matches_candles_ops_forward_and_backward`.

use super::batchnorm::{self, with_values, ActivatedOp, Activation, BatchStats};
use super::im2col::{contiguous_f32, TAPS};
use super::winograd::{conv3x3, weight_gradient, WinogradLayer, WinogradScratch};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

thread_local! {
    static WINOGRAD: RefCell<WinogradScratch> = RefCell::default();
}

#[derive(Clone, Copy)]
enum Conv3x3 {
    /// `(x [B, 64, C_in], w [9 C_in, C_out]) -> y [B * 64, C_out]`.
    Forward,
    /// `(dy [B * 64, C_out], w [9 C_in, C_out]) -> dx [B, 64, C_in]`.
    InputGradient,
    /// `(x [B, 64, C_in], dy [B * 64, C_out]) -> dw [9 C_in, C_out]`.
    WeightGradient,
}

impl CustomOp2 for Conv3x3 {
    fn name(&self) -> &'static str {
        match self {
            Conv3x3::Forward => "ember-conv3x3",
            Conv3x3::InputGradient => "ember-conv3x3-input-gradient",
            Conv3x3::WeightGradient => "ember-conv3x3-weight-gradient",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        match self {
            Conv3x3::Forward => {
                let (boards, c_in) = boards_and_channels(l1)?;
                let c_out = weight_columns(l2, c_in)?;
                let y = convolve(&WinogradLayer::from_weight(b, c_in, c_out), a, boards);
                Ok((CpuStorage::F32(y), Shape::from((boards * 64, c_out))))
            }
            Conv3x3::InputGradient => {
                let (rows, c_out) = l1.shape().dims2()?;
                let (k, c_out_w) = l2.shape().dims2()?;
                if rows % 64 != 0 || k % TAPS != 0 || c_out != c_out_w {
                    candle_core::bail!(
                        "conv3x3 input gradient: dy {:?}, w {:?}",
                        l1.shape(),
                        l2.shape()
                    );
                }
                let (boards, c_in) = (rows / 64, k / TAPS);
                let dx = convolve(&WinogradLayer::input_gradient(b, c_in, c_out), a, boards);
                Ok((CpuStorage::F32(dx), Shape::from((boards, 64, c_in))))
            }
            Conv3x3::WeightGradient => {
                let (boards, c_in) = boards_and_channels(l1)?;
                let (rows, c_out) = l2.shape().dims2()?;
                if rows != boards * 64 {
                    candle_core::bail!(
                        "conv3x3 weight gradient: x {:?}, dy {:?}",
                        l1.shape(),
                        l2.shape()
                    );
                }
                let dw = weight_gradient_of(a, b, boards, c_in, c_out);
                Ok((CpuStorage::F32(dw), Shape::from((TAPS * c_in, c_out))))
            }
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &Conv3x3::InputGradient)?;
        let dw = x.apply_op2_no_bwd(&dy, &Conv3x3::WeightGradient)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `layer`'s convolution of `boards` boards of `x` (`[B, 64, c_in]` of the layer), with
/// this thread's scratch buffers: `[B * 64, c_out]`.
fn convolve(layer: &WinogradLayer, x: &[f32], boards: usize) -> Vec<f32> {
    let mut y = vec![0f32; boards * 64 * layer.c_out()];
    let threads = rayon::current_num_threads();
    WINOGRAD.with_borrow_mut(|scratch| {
        conv3x3(layer, x, boards, &mut y, false, false, threads, scratch)
    });
    y
}

/// The weight gradient `[9 c_in, c_out]` of a convolution of `x [B, 64, c_in]` with
/// output gradient `dy [B * 64, c_out]`, with this thread's scratch buffers.
fn weight_gradient_of(x: &[f32], dy: &[f32], boards: usize, c_in: usize, c_out: usize) -> Vec<f32> {
    let threads = rayon::current_num_threads();
    WINOGRAD
        .with_borrow_mut(|scratch| weight_gradient(x, dy, boards, c_in, c_out, threads, scratch))
}

fn boards_and_channels(l: &Layout) -> Result<(usize, usize)> {
    let (boards, squares, c) = l.shape().dims3()?;
    if squares != 64 {
        candle_core::bail!("conv3x3 expects [B, 64, C], got {:?}", l.shape());
    }
    Ok((boards, c))
}

fn weight_columns(l: &Layout, c_in: usize) -> Result<usize> {
    let (k, c_out) = l.shape().dims2()?;
    if k != TAPS * c_in {
        candle_core::bail!(
            "conv3x3 weight {:?} does not fit {c_in} input channels",
            l.shape()
        );
    }
    Ok(c_out)
}

/// `x [B, 64, C_in]` convolved with `w [9 C_in, C_out]` (the [`super::im2col`] tap order)
/// -> `[B * 64, C_out]`, differentiable in both. CPU tensors in f32 only.
pub fn conv3x3_train(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, Conv3x3::Forward)
}

/// A 3x3 convolution, batch norm with the batch's statistics and an activation as one op:
/// `(x [B, 64, C_in], p [, skip [B, 64, C_out]]) -> y [B, 64, C_out]`, where `p` packs
/// the weight `[9 C_in, C_out]`, gamma and beta into one vector. Candle's backward adds
/// every gradient it receives into a zeroed tensor of its own; as one op the
/// convolution's output and its gradient stay inside, and only `dx`, `dp` and `dskip`
/// go through candle.
struct ConvBnTrain {
    c_in: usize,
    c_out: usize,
    eps: f64,
    activation: Activation,
    /// The convolution's output (the batch norm's input) and the batch's statistics,
    /// written by the forward for the backward and the caller.
    saved: Arc<Mutex<(Vec<f32>, BatchStats)>>,
}

impl ConvBnTrain {
    fn unpack<'a>(&self, p: &'a [f32]) -> Result<(&'a [f32], &'a [f32], &'a [f32])> {
        let k = TAPS * self.c_in * self.c_out;
        if p.len() != k + 2 * self.c_out {
            candle_core::bail!(
                "conv-bn: {} packed values for {} -> {} channels",
                p.len(),
                self.c_in,
                self.c_out
            );
        }
        let (w, gb) = p.split_at(k);
        let (gamma, beta) = gb.split_at(self.c_out);
        Ok((w, gamma, beta))
    }
}

impl ActivatedOp for ConvBnTrain {
    const NAMES: [&'static str; 2] = ["ember-conv3x3-bn", "ember-conv3x3-bn-residual"];

    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        p: (&CpuStorage, &Layout),
        skip: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (boards, c_in) = boards_and_channels(x.1)?;
        if c_in != self.c_in {
            candle_core::bail!("conv-bn: x {:?} for {} channels", x.1.shape(), self.c_in);
        }
        let (w, gamma, beta) = self.unpack(contiguous_f32(p.0, p.1)?)?;
        let out_shape = Shape::from((boards, 64, self.c_out));
        let skip = match skip {
            Some((s, l)) if l.shape() == &out_shape => Some(contiguous_f32(s, l)?),
            Some((_, l)) => candle_core::bail!("conv-bn: skip {:?}, y {out_shape:?}", l.shape()),
            None => None,
        };
        let layer = WinogradLayer::from_weight(w, self.c_in, self.c_out);
        let z = convolve(&layer, contiguous_f32(x.0, x.1)?, boards);
        let (y, stats) = batchnorm::forward(&z, gamma, beta, skip, self.activation, self.eps);
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = (z, stats);
        Ok((CpuStorage::F32(y), out_shape))
    }

    fn bwd_all(
        &self,
        x: &Tensor,
        p: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let boards = x.dim(0)?;
        let saved = std::mem::take(&mut *self.saved.lock().unwrap_or_else(|e| e.into_inner()));
        let (z, stats) = saved;
        if z.len() != boards * 64 * self.c_out {
            candle_core::bail!("conv-bn: backward without its forward");
        }
        let p_values = p.to_vec1::<f32>()?;
        let (w, gamma, _) = self.unpack(&p_values)?;
        let (dz, dgamma, dbeta, dskip) = with_values(y, |y| {
            with_values(dy, |dy| {
                batchnorm::backward(&z, y, dy, gamma, &stats, self.activation)
            })
        })??;
        let dx = convolve(
            &WinogradLayer::input_gradient(w, self.c_in, self.c_out),
            &dz,
            boards,
        );
        let dw = with_values(x, |x| {
            weight_gradient_of(x, &dz, boards, self.c_in, self.c_out)
        })?;
        let mut dp = dw;
        dp.extend_from_slice(&dgamma);
        dp.extend_from_slice(&dbeta);
        let dev = x.device();
        let n = dp.len();
        Ok((
            Tensor::from_vec(dx, (boards, 64, self.c_in), dev)?,
            Tensor::from_vec(dp, n, dev)?,
            dskip
                .map(|d| Tensor::from_vec(d, (boards, 64, self.c_out), dev))
                .transpose()?,
        ))
    }
}

/// `act(bn(conv(x, w)) [+ skip])` for `x [B, 64, C_in]`, `w [9 C_in, C_out]`, batch norm
/// with the batch's statistics (returned for the running averages), `skip [B, 64, C_out]`
/// with [`Activation::ResidualRelu`] only: `[B, 64, C_out]`, differentiable in `x`, `w`,
/// `gamma`, `beta` and `skip`. CPU tensors in f32 only.
pub fn conv_bn_train(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    activation: Activation,
    skip: Option<&Tensor>,
) -> Result<(Tensor, BatchStats)> {
    let (c_in, c_out) = (x.dim(2)?, w.dim(1)?);
    let saved = Arc::new(Mutex::new((Vec::new(), BatchStats::default())));
    let op = ConvBnTrain {
        c_in,
        c_out,
        eps,
        activation,
        saved: saved.clone(),
    };
    let p = Tensor::cat(&[&w.flatten_all()?, gamma, beta], 0)?;
    let y = batchnorm::apply_activated(op, x, &p, activation, skip)?;
    let stats = saved.lock().unwrap_or_else(|e| e.into_inner()).1.clone();
    Ok((y, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::im2col::im2col_tensor_ops;
    use candle_core::{Device, Var};

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    #[test]
    fn the_training_convolution_matches_im2col_and_matmul() {
        let dev = Device::Cpu;
        for (boards, c_in, c_out) in [(3, 5, 4), (2, 18, 32), (5, 32, 32)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (boards, 64, c_in), &dev).unwrap())
                .unwrap();
            let w =
                Var::from_tensor(&Tensor::randn(0f32, 0.3, (TAPS * c_in, c_out), &dev).unwrap())
                    .unwrap();
            // A weight per output element, so that every gradient path is distinct.
            let r = Tensor::randn(0f32, 1.0, (boards * 64, c_out), &dev).unwrap();
            let ours = conv3x3_train(x.as_tensor(), w.as_tensor()).unwrap();
            let reference = im2col_tensor_ops(x.as_tensor())
                .unwrap()
                .matmul(w.as_tensor())
                .unwrap();
            assert!(max_rel(&ours, &reference) < 1e-5, "forward {c_in}->{c_out}");
            let loss = |y: &Tensor| (y * &r).unwrap().sqr().unwrap().sum_all().unwrap();
            let (g1, g2) = (
                loss(&ours).backward().unwrap(),
                loss(&reference).backward().unwrap(),
            );
            let dx = max_rel(g1.get(&x).unwrap(), g2.get(&x).unwrap());
            let dw = max_rel(g1.get(&w).unwrap(), g2.get(&w).unwrap());
            assert!(dx < 1e-4, "input gradient {c_in}->{c_out}: {dx}");
            assert!(dw < 1e-4, "weight gradient {c_in}->{c_out}: {dw}");
        }
    }
}
