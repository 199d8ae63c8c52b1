//! 3x3 convolution over 8x8 boards as one GEMM: `im2col` turns activations
//! `[B, 64, C]` (square-major, channels last) into rows `[B*64, 9*C]`, one row per output
//! square holding its 3x3 neighbourhood (tap order: rank step -1, 0, +1 outer, file step
//! -1, 0, +1 inner; zeros off the board). A weight matrix `[9*C, C_out]` then makes the
//! convolution a single matmul of (B*64) x 9C by 9C x C_out.
//!
//! On the CPU the gather is a plain loop (a candle custom op with a hand-written
//! backward, `col2im`); on other devices it is built from candle tensor ops, which
//! autograd differentiates.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

pub const TAPS: usize = 9;

/// For each of the 64 squares and 9 taps, the neighbour square or `u8::MAX` if off board.
pub fn neighbour_table() -> &'static [[u8; TAPS]; 64] {
    static TABLE: std::sync::OnceLock<[[u8; TAPS]; 64]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [[u8::MAX; TAPS]; 64];
        for (sq, row) in t.iter_mut().enumerate() {
            let (r, f) = ((sq / 8) as i32, (sq % 8) as i32);
            for (tap, slot) in row.iter_mut().enumerate() {
                let (nr, nf) = (r + tap as i32 / 3 - 1, f + tap as i32 % 3 - 1);
                if (0..8).contains(&nr) && (0..8).contains(&nf) {
                    *slot = (nr * 8 + nf) as u8;
                }
            }
        }
        t
    })
}

/// Gathers `x` (`boards * 64 * channels`, channels last) into `cols`
/// (`boards * 64 * 9 * channels`). Every element of `cols` is written.
pub fn im2col_into(x: &[f32], channels: usize, cols: &mut [f32]) {
    let table = neighbour_table();
    let row_len = TAPS * channels;
    for (board_x, board_cols) in x
        .chunks_exact(64 * channels)
        .zip(cols.chunks_exact_mut(64 * row_len))
    {
        for (sq, row) in board_cols.chunks_exact_mut(row_len).enumerate() {
            for (tap, dst) in row.chunks_exact_mut(channels).enumerate() {
                match table[sq][tap] {
                    u8::MAX => dst.fill(0.0),
                    n => dst.copy_from_slice(
                        &board_x[n as usize * channels..(n as usize + 1) * channels],
                    ),
                }
            }
        }
    }
}

/// Adjoint of [`im2col_into`]: sums each row's taps back onto the squares they came from.
pub fn col2im_into(cols: &[f32], channels: usize, x: &mut [f32]) {
    let table = neighbour_table();
    let row_len = TAPS * channels;
    x.fill(0.0);
    for (board_x, board_cols) in x
        .chunks_exact_mut(64 * channels)
        .zip(cols.chunks_exact(64 * row_len))
    {
        for (sq, row) in board_cols.chunks_exact(row_len).enumerate() {
            for (tap, src) in row.chunks_exact(channels).enumerate() {
                let n = table[sq][tap];
                if n != u8::MAX {
                    let dst = &mut board_x[n as usize * channels..(n as usize + 1) * channels];
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
        }
    }
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("im2col needs a contiguous f32 tensor"),
    }
}

struct Im2Col;
struct Col2Im;

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "ember-im2col-3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, sq, c) = layout.shape().dims3()?;
        if sq != 64 {
            candle_core::bail!("im2col expects [B, 64, C], got {:?}", layout.shape());
        }
        let x = contiguous_f32(storage, layout)?;
        let mut cols = vec![0f32; b * 64 * TAPS * c];
        im2col_into(x, c, &mut cols);
        Ok((CpuStorage::F32(cols), Shape::from((b * 64, TAPS * c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, c) = arg.dims3()?;
        let g = grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im)?;
        Ok(Some(g.reshape(((), 64, c))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "ember-col2im-3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = layout.shape().dims2()?;
        let c = k / TAPS;
        let cols = contiguous_f32(storage, layout)?;
        let mut x = vec![0f32; rows * c];
        col2im_into(cols, c, &mut x);
        Ok((CpuStorage::F32(x), Shape::from((rows, c))))
    }
}

/// `[B, 64, C]` -> `[B*64, 9*C]`, differentiable, on any device.
pub fn im2col(x: &Tensor) -> Result<Tensor> {
    let (b, _, c) = x.dims3()?;
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(Im2Col);
    }
    im2col_tensor_ops(x)?.reshape((b * 64, TAPS * c))
}

/// The same gather from pad/narrow/cat, for devices without the custom op.
pub fn im2col_tensor_ops(x: &Tensor) -> Result<Tensor> {
    let (b, _, c) = x.dims3()?;
    let padded = x
        .reshape((b, 8, 8, c))?
        .pad_with_zeros(1, 1, 1)?
        .pad_with_zeros(2, 1, 1)?;
    let mut taps = Vec::with_capacity(TAPS);
    for dr in 0..3 {
        for df in 0..3 {
            taps.push(padded.narrow(1, dr, 8)?.narrow(2, df, 8)?);
        }
    }
    Tensor::cat(&taps, 3)?.reshape((b * 64, TAPS * c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn custom_op_matches_tensor_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 64, 5), &dev).unwrap()).unwrap();
        let a = im2col(x.as_tensor()).unwrap();
        let b = im2col_tensor_ops(x.as_tensor()).unwrap();
        let diff = (&a - &b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        let w = Tensor::randn(0f32, 1.0, (45, 1), &dev).unwrap();
        let ga = a.matmul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = b.matmul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (ga.get(&x).unwrap(), gb.get(&x).unwrap());
        let diff = (ga - gb)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "gradient difference {diff}");
    }
}
