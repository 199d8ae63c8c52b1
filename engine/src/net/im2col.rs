//! 3x3 convolution over 8x8 boards as one GEMM: `im2col` turns activations
//! `[B, 64, C]` (square-major, channels last) into rows `[B*64, 9*C]`, one row per output
//! square holding its 3x3 neighbourhood (tap order: rank step -1, 0, +1 outer, file step
//! -1, 0, +1 inner; zeros off the board). A weight matrix `[9*C, C_out]` then makes the
//! convolution a single matmul of (B*64) x 9C by 9C x C_out.
//!
//! The gather is a candle custom op with a hand-written backward (`col2im`): a plain loop
//! on the CPU (f32), a CUDA kernel on a GPU (`super::cuda`). Elsewhere (another device, or
//! the CPU in f16) it is one `index_select` over each board with a zero row appended,
//! which autograd differentiates. On the CPU in f32, training's 3x3 convolutions use
//! [`super::conv3x3`] and inference uses [`super::winograd`]; this form stays the
//! reference they are tested against, and the weight gradient's gather.

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

pub(super) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::im2col(storage, layout)
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::col2im(storage, layout)
    }
}

/// Whether the custom op runs `x`: the CPU in f32, CUDA in f32, bf16 or f16.
fn custom_op_runs(x: &Tensor) -> bool {
    (x.device().is_cpu() && x.dtype() == DType::F32) || x.device().is_cuda()
}

/// `[B, 64, C]` -> `[B*64, 9*C]`, differentiable, on any device: the custom op where it
/// runs ([`custom_op_runs`]), the `index_select` gather elsewhere.
pub fn im2col(x: &Tensor) -> Result<Tensor> {
    if custom_op_runs(x) {
        return x.contiguous()?.apply_op1(Im2Col);
    }
    im2col_gather(x, &gather_table(x.device())?)
}

/// [`im2col`] without the backward graph, for inference.
pub fn im2col_inference(x: &Tensor) -> Result<Tensor> {
    if custom_op_runs(x) {
        return x.contiguous()?.apply_op1_no_bwd(&Im2Col);
    }
    im2col_gather(x, &gather_table(x.device())?)
}

/// The neighbour table as one index per (square, tap) into the 65 rows of a board
/// followed by a zero row: `[64 * 9]` u32 on `device`, for [`im2col_gather`].
pub fn gather_table(device: &candle_core::Device) -> Result<Tensor> {
    let ids: Vec<u32> = neighbour_table()
        .iter()
        .flatten()
        .map(|&n| if n == u8::MAX { 64 } else { n as u32 })
        .collect();
    Tensor::from_vec(ids, 64 * TAPS, device)
}

/// The im2col gather on any device as two tensor ops: a zero row appended to each board,
/// then one `index_select` of the 9 taps of every square (`table` from
/// [`gather_table`]). Autograd differentiates it (`index_select`'s backward is an
/// `index_add`, the col2im sum).
pub fn im2col_gather(x: &Tensor, table: &Tensor) -> Result<Tensor> {
    let (b, _, c) = x.dims3()?;
    let zero = Tensor::zeros((b, 1, c), x.dtype(), x.device())?;
    let padded = Tensor::cat(&[x, &zero], 1)?;
    padded.index_select(table, 1)?.reshape((b * 64, TAPS * c))
}

/// The same gather from pad/narrow/cat: the reference the others are tested against.
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

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn index_select_gather_matches_tensor_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 64, 3), &dev).unwrap()).unwrap();
        let table = gather_table(&dev).unwrap();
        let a = im2col_gather(x.as_tensor(), &table).unwrap();
        let b = im2col_tensor_ops(x.as_tensor()).unwrap();
        assert_eq!(a.dims(), &[4 * 64, 27]);
        assert_eq!(max_abs(&a, &b), 0.0);
        // A weight per column, so that every tap's gradient path is distinct.
        let w = Tensor::randn(0f32, 1.0, (27, 2), &dev).unwrap();
        let ga = a.matmul(&w).unwrap().sqr().unwrap().sum_all().unwrap();
        let gb = b.matmul(&w).unwrap().sqr().unwrap().sum_all().unwrap();
        let (ga, gb) = (ga.backward().unwrap(), gb.backward().unwrap());
        let d = max_abs(ga.get(&x).unwrap(), gb.get(&x).unwrap());
        assert!(d < 1e-4, "gradient difference {d}");
    }
}
