//! 3x3 convolution over 8x8 boards by Winograd's minimal filtering F(4x4, 3x3), the
//! CPU inference form of every 3x3 layer.
//!
//! An 8x8 board padded to 10x10 is exactly four overlapping 6x6 input tiles (offsets 0
//! and 4 on each axis), each giving a 4x4 block of the output. In the Winograd domain a
//! tile's 3x3 convolution becomes 36 independent products, so for a batch the layer is
//! 36 GEMMs of (4 B) x C by C x C_out instead of one of (64 B) x 9C by 9C x C_out: a
//! quarter of the multiplications. The transforms around them (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016):
//!
//! ```text
//! Y = A^T [ (G g G^T) . (B^T d B) ] A     (g 3x3 kernel, d 6x6 input tile, Y 4x4 output)
//! ```
//!
//! The kernel transform `U = G g G^T` is done once, when the network is loaded. Per call,
//! the input transform `V = B^T d B` and the output transform `A^T M A` are loops over
//! channels (channels are last and contiguous): AVX2 intrinsics where the CPU has them,
//! plain loops elsewhere. Each board's work is independent: the boards are split over
//! the threads, each running its own GEMMs single-threaded, with no synchronisation
//! inside a layer.
//!
//! The F(4x4, 3x3) transforms carry coefficients up to 8 and 1/24, so the result differs
//! from direct convolution by rounding only, about 1e-6 relative in f32
//! (`winograd_equals_direct_convolution` checks it).

use super::im2col::TAPS;
use super::FoldedLayer;
use gemm::Parallelism;
use rayon::prelude::*;

/// Winograd-domain points per tile (6x6).
const POINTS: usize = 36;
/// Tiles per board (2x2 blocks of 4x4 output squares).
const TILES: usize = 4;

/// `G`, 6x3: the kernel transform.
const G: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// A 3x3 convolution layer (folded batch norm) in the Winograd domain.
#[derive(Clone, Debug)]
pub struct WinogradLayer {
    /// `[36][c_in][c_out]`: the transformed kernel of each Winograd point.
    u: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
}

impl WinogradLayer {
    /// Transforms a folded 3x3 layer whose weight is `[9 * c_in, c_out]` in the tap order
    /// of [`super::im2col`] (rank step outer, file step inner).
    pub fn new(layer: &FoldedLayer) -> Self {
        assert_eq!(layer.rows % TAPS, 0, "not a 3x3 layer");
        let (c_in, c_out) = (layer.rows / TAPS, layer.cols);
        Self::transform(c_in, c_out, layer.bias.clone(), |tap, ci, co| {
            layer.weight[(tap * c_in + ci) * c_out + co]
        })
    }

    /// The layer of a weight `[9 * c_in, c_out]` without bias: the training forward.
    pub fn from_weight(weight: &[f32], c_in: usize, c_out: usize) -> Self {
        assert_eq!(weight.len(), TAPS * c_in * c_out);
        Self::transform(c_in, c_out, vec![0.0; c_out], |tap, ci, co| {
            weight[(tap * c_in + ci) * c_out + co]
        })
    }

    /// The layer that carries a gradient back through the convolution of `weight`
    /// (`[9 * c_in, c_out]`): `c_out -> c_in` channels, the kernel turned by 180 degrees.
    /// A 3x3 convolution with zero padding sends `x` at square `s + d` to `y` at `s` through
    /// tap `d`, so `dx` at `s` gathers `dy` at `s - d`: tap `8 - t` of the same weights.
    pub fn input_gradient(weight: &[f32], c_in: usize, c_out: usize) -> Self {
        assert_eq!(weight.len(), TAPS * c_in * c_out);
        Self::transform(c_out, c_in, vec![0.0; c_in], |tap, co, ci| {
            weight[((TAPS - 1 - tap) * c_in + ci) * c_out + co]
        })
    }

    /// `U = G g G^T` for every (input, output) channel pair, `g(tap, input, output)`.
    fn transform(
        c_in: usize,
        c_out: usize,
        bias: Vec<f32>,
        g: impl Fn(usize, usize, usize) -> f32,
    ) -> Self {
        let mut u = vec![0f32; POINTS * c_in * c_out];
        for ci in 0..c_in {
            for co in 0..c_out {
                // t = G g (6x3), then U = t G^T (6x6), in f64 to keep the transform exact.
                let mut t = [[0f64; 3]; 6];
                for (i, row) in t.iter_mut().enumerate() {
                    for (c, v) in row.iter_mut().enumerate() {
                        *v = (0..3)
                            .map(|r| G[i][r] as f64 * g(r * 3 + c, ci, co) as f64)
                            .sum();
                    }
                }
                for i in 0..6 {
                    for j in 0..6 {
                        let v: f64 = (0..3).map(|c| t[i][c] * G[j][c] as f64).sum();
                        u[((i * 6 + j) * c_in + ci) * c_out + co] = v as f32;
                    }
                }
            }
        }
        WinogradLayer {
            u,
            bias,
            c_in,
            c_out,
        }
    }

    pub fn c_in(&self) -> usize {
        self.c_in
    }

    pub fn c_out(&self) -> usize {
        self.c_out
    }
}

/// Buffers of one call, reused from call to call.
#[derive(Default)]
pub struct WinogradScratch {
    /// `[boards * 4][36][c_in]`: the transformed input tiles, rows of the point GEMMs.
    v: Vec<f32>,
    /// `[boards * 4][36][c_out]`: the point GEMMs' outputs.
    m: Vec<f32>,
    /// Per thread: a padded 10x10 board and a 6x6 tile between the two passes of a transform.
    work: Vec<f32>,
}

/// `out = act(conv3x3(x) + bias [+ out])` over `boards` boards, channels last:
/// `x` `[boards, 64, c_in]`, `out` `[boards, 64, c_out]`.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3(
    layer: &WinogradLayer,
    x: &[f32],
    boards: usize,
    out: &mut [f32],
    residual: bool,
    relu: bool,
    threads: usize,
    scratch: &mut WinogradScratch,
) {
    let io = TileIo {
        layer,
        residual,
        relu,
        simd: simd_available(),
    };
    io.conv3x3(x, boards, out, threads, scratch);
}

/// One layer's call: the boards split over the threads, each thread's share transformed
/// in, multiplied and transformed out. The transforms come in two builds of the same
/// code: [`Portable`] (plain loops, for any CPU) and, chosen at run time where the CPU has
/// AVX2 and FMA, [`Avx2`] (intrinsics, inside `target_feature` functions).
struct TileIo<'a> {
    layer: &'a WinogradLayer,
    residual: bool,
    relu: bool,
    /// Run the AVX2 build (only where [`simd_available`]).
    simd: bool,
}

impl TileIo<'_> {
    fn conv3x3(
        &self,
        x: &[f32],
        boards: usize,
        out: &mut [f32],
        threads: usize,
        scratch: &mut WinogradScratch,
    ) {
        let layer = self.layer;
        let (ci, co) = (layer.c_in, layer.c_out);
        let (shares, v, m, work) = scratch.shares(boards, ci, co, threads);
        let Shares {
            threads,
            per_task,
            vb,
            mb,
            wb,
        } = shares;
        let x = &x[..boards * 64 * ci];
        let out = &mut out[..boards * 64 * co];
        let io = self;
        let run = |x: &[f32], out: &mut [f32], v: &mut [f32], m: &mut [f32], work: &mut [f32]| {
            let n = x.len() / (64 * ci);
            // SAFETY: `simd` is set only where the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            if io.simd {
                unsafe { io.input_avx2(x, v, work) };
                point_gemms(layer, v, n * TILES, m);
                unsafe { io.output_avx2(m, out, work) };
                return;
            }
            input_tiles::<Portable>(x, ci, v, work);
            point_gemms(layer, v, n * TILES, m);
            io.output::<Portable>(m, out, work);
        };
        if threads > 1 {
            x.par_chunks(per_task * 64 * ci)
                .zip(out.par_chunks_mut(per_task * 64 * co))
                .zip(v.par_chunks_mut(per_task * vb))
                .zip(m.par_chunks_mut(per_task * mb))
                .zip(work.par_chunks_mut(wb))
                .for_each(|((((x, out), v), m), work)| run(x, out, v, m, work));
        } else {
            run(x, out, v, m, work);
        }
    }

    /// Transforms each board's four tiles of products in `m` back to squares of `out`.
    #[inline(always)]
    fn output<K: Kernels>(&self, m: &[f32], out: &mut [f32], work: &mut [f32]) {
        let co = self.layer.c_out;
        let bias = &self.layer.bias;
        for (board_m, board_out) in m
            .chunks_exact(TILES * POINTS * co)
            .zip(out.chunks_exact_mut(64 * co))
        {
            for (t, tile_m) in board_m.chunks_exact(POINTS * co).enumerate() {
                let (r0, f0) = ((t / 2) * 4, (t % 2) * 4);
                output_transform::<K>(
                    tile_m,
                    co,
                    bias,
                    (r0, f0),
                    work,
                    board_out,
                    self.residual,
                    self.relu,
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn input_avx2(&self, x: &[f32], v: &mut [f32], work: &mut [f32]) {
        input_tiles::<Avx2>(x, self.layer.c_in, v, work)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn output_avx2(&self, m: &[f32], out: &mut [f32], work: &mut [f32]) {
        self.output::<Avx2>(m, out, work)
    }
}

/// Whether the transforms can run their AVX2 build (checked once).
fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Pads each board of `x` (`[boards][64][c]`) and writes its four transformed tiles
/// `B^T d B` to `v` (`[boards * 4][36][c]`).
#[inline(always)]
fn input_tiles<K: Kernels>(x: &[f32], c: usize, v: &mut [f32], work: &mut [f32]) {
    let (padded, tmp) = work.split_at_mut(100 * c);
    for (board_x, board_v) in x
        .chunks_exact(64 * c)
        .zip(v.chunks_exact_mut(TILES * POINTS * c))
    {
        pad_board(board_x, c, padded);
        for (t, tile) in board_v.chunks_exact_mut(POINTS * c).enumerate() {
            input_transform::<K>(padded, c, (t / 2) * 4, (t % 2) * 4, tmp, tile);
        }
    }
}

/// The adjoint of the output transform: each 4x4 block of output gradients `dY`
/// (`dy` `[boards][64][c]`) to the gradient of its 36 products, `dM = A dY A^T`
/// (`m` `[boards * 4][36][c]`).
#[inline(always)]
fn gradient_tiles<K: Kernels>(dy: &[f32], c: usize, m: &mut [f32], work: &mut [f32]) {
    let tmp = &mut work[..24 * c];
    for (board_dy, board_m) in dy
        .chunks_exact(64 * c)
        .zip(m.chunks_exact_mut(TILES * POINTS * c))
    {
        for (t, tile) in board_m.chunks_exact_mut(POINTS * c).enumerate() {
            let (r0, f0) = ((t / 2) * 4, (t % 2) * 4);
            // Columns: tmp[j][a] = sum_i A^T[i][a] dY[i][j].
            for (j, col) in tmp.chunks_exact_mut(6 * c).enumerate() {
                let at = |i: usize| ((r0 + i) * 8 + f0 + j) * c;
                let [o0, o1, o2, o3] = [at(0), at(1), at(2), at(3)];
                let y = [
                    &board_dy[o0..o0 + c],
                    &board_dy[o1..o1 + c],
                    &board_dy[o2..o2 + c],
                    &board_dy[o3..o3 + c],
                ];
                K::a(y, c, col);
            }
            // Rows: dM[a][b] = sum_j tmp[j][a] A^T[j][b].
            for (a, row) in tile.chunks_exact_mut(6 * c).enumerate() {
                let at = |j: usize| (j * 6 + a) * c;
                let [o0, o1, o2, o3] = [at(0), at(1), at(2), at(3)];
                let y = [
                    &tmp[o0..o0 + c],
                    &tmp[o1..o1 + c],
                    &tmp[o2..o2 + c],
                    &tmp[o3..o3 + c],
                ];
                K::a(y, c, row);
            }
        }
    }
}

/// [`input_tiles`] and [`gradient_tiles`] for one thread's boards.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weight_gradient_tiles<K: Kernels>(
    x: &[f32],
    c_in: usize,
    dy: &[f32],
    c_out: usize,
    v: &mut [f32],
    m: &mut [f32],
    work: &mut [f32],
) {
    input_tiles::<K>(x, c_in, v, work);
    gradient_tiles::<K>(dy, c_out, m, work);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_gradient_tiles_avx2(
    x: &[f32],
    c_in: usize,
    dy: &[f32],
    c_out: usize,
    v: &mut [f32],
    m: &mut [f32],
    work: &mut [f32],
) {
    weight_gradient_tiles::<Avx2>(x, c_in, dy, c_out, v, m, work)
}

/// The gradient of a 3x3 convolution's weight, `[9 * c_in, c_out]` in the tap order of
/// [`super::im2col`], from its input `x` (`[boards, 64, c_in]`) and output gradient `dy`
/// (`[boards, 64, c_out]`), through the Winograd domain: with `V = B^T d B` of each input
/// tile and `dM = A dY A^T` of its output gradient, `dU_k = sum over tiles V_k^T dM_k`
/// (36 GEMMs, one per point) and `dW = G^T dU G`.
pub fn weight_gradient(
    x: &[f32],
    dy: &[f32],
    boards: usize,
    c_in: usize,
    c_out: usize,
    threads: usize,
    scratch: &mut WinogradScratch,
) -> Vec<f32> {
    weight_gradient_with(
        simd_available(),
        x,
        dy,
        boards,
        (c_in, c_out),
        threads,
        scratch,
    )
}

/// [`weight_gradient`], its transforms in the AVX2 build if `simd`.
fn weight_gradient_with(
    simd: bool,
    x: &[f32],
    dy: &[f32],
    boards: usize,
    (c_in, c_out): (usize, usize),
    threads: usize,
    scratch: &mut WinogradScratch,
) -> Vec<f32> {
    let (shares, v, m, work) = scratch.shares(boards, c_in, c_out, threads);
    let Shares {
        per_task,
        vb,
        mb,
        wb,
        ..
    } = shares;
    let (x, dy) = (&x[..boards * 64 * c_in], &dy[..boards * 64 * c_out]);
    x.par_chunks(per_task * 64 * c_in)
        .zip(dy.par_chunks(per_task * 64 * c_out))
        .zip(v.par_chunks_mut(per_task * vb))
        .zip(m.par_chunks_mut(per_task * mb))
        .zip(work.par_chunks_mut(wb))
        .for_each(|((((x, dy), v), m), work)| {
            // SAFETY: `simd` is set only where the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            if simd {
                unsafe { weight_gradient_tiles_avx2(x, c_in, dy, c_out, v, m, work) };
                return;
            }
            let _ = simd;
            weight_gradient_tiles::<Portable>(x, c_in, dy, c_out, v, m, work);
        });
    // dU_k [c_in, c_out] = V_k^T dM_k over every tile row p: V_k^T reads v column-wise.
    let rows = boards * TILES;
    let (v, m) = (&*v, &*m);
    let mut du = vec![0f32; POINTS * c_in * c_out];
    du.par_chunks_mut(c_in * c_out)
        .enumerate()
        .for_each(|(k, du_k)| {
            // SAFETY: row p of point k is v[(p*36 + k)*c_in ..][..c_in] and
            // m[(p*36 + k)*c_out ..][..c_out], p < rows, inside the slices sized above.
            unsafe {
                gemm::gemm(
                    c_in,
                    c_out,
                    rows,
                    du_k.as_mut_ptr(),
                    1,
                    c_out as isize,
                    false,
                    v.as_ptr().add(k * c_in),
                    (POINTS * c_in) as isize,
                    1,
                    m.as_ptr().add(k * c_out),
                    1,
                    (POINTS * c_out) as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        });
    // dW[r][c] = sum_ij G[i][r] dU[i][j] G[j][c], over whole [c_in, c_out] blocks.
    let block = c_in * c_out;
    let mut dw = vec![0f32; TAPS * block];
    for (tap, dw_tap) in dw.chunks_exact_mut(block).enumerate() {
        let (r, c) = (tap / 3, tap % 3);
        for (k, du_k) in du.chunks_exact(block).enumerate() {
            let w = G[k / 6][r] * G[k % 6][c];
            if w != 0.0 {
                for (d, u) in dw_tap.iter_mut().zip(du_k) {
                    *d += w * u;
                }
            }
        }
    }
    dw
}

/// How a call over `boards` boards splits its buffers: per board `vb` floats of
/// transformed input and `mb` of products, per thread `wb` of work space, and `per_task`
/// boards a thread.
#[derive(Clone, Copy)]
struct Shares {
    threads: usize,
    per_task: usize,
    vb: usize,
    mb: usize,
    wb: usize,
}

impl WinogradScratch {
    /// Grows the buffers for `boards` boards of `c_in` -> `c_out` channels over at most
    /// `threads` threads and returns the split with the three buffers cut to size.
    fn shares(
        &mut self,
        boards: usize,
        c_in: usize,
        c_out: usize,
        threads: usize,
    ) -> (Shares, &mut [f32], &mut [f32], &mut [f32]) {
        let threads = threads.clamp(1, boards.max(1));
        let shares = Shares {
            threads,
            per_task: boards.div_ceil(threads).max(1),
            vb: TILES * POINTS * c_in,
            mb: TILES * POINTS * c_out,
            wb: 100 * c_in + POINTS * c_in.max(c_out),
        };
        let grow = |buf: &mut Vec<f32>, len: usize| {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        };
        grow(&mut self.v, boards * shares.vb);
        grow(&mut self.m, boards * shares.mb);
        grow(&mut self.work, threads * shares.wb);
        (
            shares,
            &mut self.v[..boards * shares.vb],
            &mut self.m[..boards * shares.mb],
            &mut self.work[..threads * shares.wb],
        )
    }
}

/// The 36 products of the Winograd domain, `M_k = V_k U_k` for each point `k`, over
/// `rows` (board, tile) rows. Row `p` of `V_k` is `v[(p * 36 + k) * c_in..]`, so each
/// product is one GEMM with a row stride of 36 `c_in`.
fn point_gemms(layer: &WinogradLayer, v: &[f32], rows: usize, m: &mut [f32]) {
    let (ci, co) = (layer.c_in, layer.c_out);
    assert!(v.len() >= rows * POINTS * ci && m.len() >= rows * POINTS * co);
    for k in 0..POINTS {
        // SAFETY: the asserts above bound every row read and written: row p of point k
        // reads v[(p*36 + k)*ci .. +ci] and writes m[(p*36 + k)*co .. +co]; U_k is
        // u[k*ci*co .. (k+1)*ci*co], row-major.
        unsafe {
            gemm::gemm(
                rows,
                co,
                ci,
                m.as_mut_ptr().add(k * co),
                1,
                (POINTS * co) as isize,
                false,
                v.as_ptr().add(k * ci),
                1,
                (POINTS * ci) as isize,
                layer.u.as_ptr().add(k * ci * co),
                1,
                co as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    }
}

/// Copies a board `[64][c]` into the middle of a 10x10 `[100][c]` with a zero border.
#[inline(always)]
fn pad_board(board: &[f32], c: usize, padded: &mut [f32]) {
    padded[..11 * c].fill(0.0);
    for r in 0..8 {
        let dst = ((r + 1) * 10 + 1) * c;
        padded[dst..dst + 8 * c].copy_from_slice(&board[r * 8 * c..(r + 1) * 8 * c]);
        // The right border of this row and the left border of the next.
        padded[dst + 8 * c..dst + 10 * c].fill(0.0);
    }
    padded[90 * c..100 * c].fill(0.0);
}

/// Six channel vectors of the same length, borrowed from a flat buffer.
#[inline(always)]
fn six(buf: &[f32], offsets: [usize; 6], c: usize) -> [&[f32]; 6] {
    let [o0, o1, o2, o3, o4, o5] = offsets;
    [
        &buf[o0..o0 + c],
        &buf[o1..o1 + c],
        &buf[o2..o2 + c],
        &buf[o3..o3 + c],
        &buf[o4..o4 + c],
        &buf[o5..o5 + c],
    ]
}

/// The per-channel arithmetic of the transforms: `out` holds 6 (`bt`) or 4 (`at`)
/// vectors of `c` channels, `out[i] = sum_a T[i][a] d[a]` for `T` = `B^T` or `A^T`, and
/// `epilogue` finishes a layer's output square.
trait Kernels {
    fn bt(d: [&[f32]; 6], c: usize, out: &mut [f32]);
    fn at(m: [&[f32]; 6], c: usize, out: &mut [f32]);
    /// `out[a] = sum_i A^T[i][a] y[i]`: `A^T`'s adjoint, 4 vectors in, 6 out.
    fn a(y: [&[f32]; 4], c: usize, out: &mut [f32]);
    /// `o = act(y + bias [+ o])`.
    fn epilogue(y: &[f32], bias: &[f32], o: &mut [f32], residual: bool, relu: bool);
}

/// Plain loops, for any CPU.
struct Portable;

impl Kernels for Portable {
    #[inline(always)]
    fn bt(d: [&[f32]; 6], c: usize, out: &mut [f32]) {
        for k in 0..c {
            let [a0, a1, a2, a3, a4, a5] = [d[0][k], d[1][k], d[2][k], d[3][k], d[4][k], d[5][k]];
            out[k] = 4.0 * a0 - 5.0 * a2 + a4;
            out[c + k] = -4.0 * (a1 + a2) + a3 + a4;
            out[2 * c + k] = 4.0 * (a1 - a2) - a3 + a4;
            out[3 * c + k] = 2.0 * (a3 - a1) - a2 + a4;
            out[4 * c + k] = 2.0 * (a1 - a3) - a2 + a4;
            out[5 * c + k] = 4.0 * a1 - 5.0 * a3 + a5;
        }
    }

    #[inline(always)]
    fn at(m: [&[f32]; 6], c: usize, out: &mut [f32]) {
        for k in 0..c {
            let (p, q) = (m[1][k] + m[2][k], m[1][k] - m[2][k]);
            let (r, s) = (m[3][k] + m[4][k], m[3][k] - m[4][k]);
            out[k] = m[0][k] + p + r;
            out[c + k] = q + 2.0 * s;
            out[2 * c + k] = p + 4.0 * r;
            out[3 * c + k] = q + 8.0 * s + m[5][k];
        }
    }

    #[inline(always)]
    fn a(y: [&[f32]; 4], c: usize, out: &mut [f32]) {
        for k in 0..c {
            let [y0, y1, y2, y3] = [y[0][k], y[1][k], y[2][k], y[3][k]];
            out[k] = y0;
            out[c + k] = y0 + y1 + y2 + y3;
            out[2 * c + k] = y0 - y1 + y2 - y3;
            out[3 * c + k] = y0 + 2.0 * y1 + 4.0 * y2 + 8.0 * y3;
            out[4 * c + k] = y0 - 2.0 * y1 + 4.0 * y2 - 8.0 * y3;
            out[5 * c + k] = y3;
        }
    }

    #[inline(always)]
    fn epilogue(y: &[f32], bias: &[f32], o: &mut [f32], residual: bool, relu: bool) {
        for ((o, y), b) in o.iter_mut().zip(y).zip(bias) {
            let v = y + b + if residual { *o } else { 0.0 };
            *o = if relu { v.max(0.0) } else { v };
        }
    }
}

/// AVX2 intrinsics, 8 channels a register, the last partial register masked. Only
/// reached from the `target_feature(enable = "avx2,fma")` functions of [`TileIo`], after
/// the CPU was checked.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Lanes `0..n` of a register's mask (`n` < 8).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tail_mask(n: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
    }

    /// Runs `f` over channels `0..c` of `N` inputs, 8 at a time, storing `M` outputs
    /// `c` apart from `out`. Every input must hold `c` floats and `out` `M * c`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn map<const N: usize, const M: usize>(
        d: [&[f32]; N],
        c: usize,
        out: *mut f32,
        f: impl Fn([__m256; N]) -> [__m256; M],
    ) {
        let mut x = [_mm256_setzero_ps(); N];
        let mut k = 0;
        while k + 8 <= c {
            for (xi, di) in x.iter_mut().zip(d) {
                *xi = _mm256_loadu_ps(di.as_ptr().add(k));
            }
            let y = f(x);
            for (j, yj) in y.iter().enumerate() {
                _mm256_storeu_ps(out.add(j * c + k), *yj);
            }
            k += 8;
        }
        if k < c {
            let mask = tail_mask(c - k);
            for (xi, di) in x.iter_mut().zip(d) {
                *xi = _mm256_maskload_ps(di.as_ptr().add(k), mask);
            }
            let y = f(x);
            for (j, yj) in y.iter().enumerate() {
                _mm256_maskstore_ps(out.add(j * c + k), mask, *yj);
            }
        }
    }

    /// `B^T` applied to six channel vectors (see [`super::Kernels::bt`]).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn bt(d: [&[f32]; 6], c: usize, out: *mut f32) {
        let (k2, k4, k5) = (
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(4.0),
            _mm256_set1_ps(5.0),
        );
        map(d, c, out, |[a0, a1, a2, a3, a4, a5]| {
            let a4_a2 = _mm256_sub_ps(a4, a2);
            [
                _mm256_fmadd_ps(k4, a0, _mm256_fnmadd_ps(k5, a2, a4)),
                _mm256_fnmadd_ps(k4, _mm256_add_ps(a1, a2), _mm256_add_ps(a3, a4)),
                _mm256_fmadd_ps(k4, _mm256_sub_ps(a1, a2), _mm256_sub_ps(a4, a3)),
                _mm256_fmadd_ps(k2, _mm256_sub_ps(a3, a1), a4_a2),
                _mm256_fmadd_ps(k2, _mm256_sub_ps(a1, a3), a4_a2),
                _mm256_fmadd_ps(k4, a1, _mm256_fnmadd_ps(k5, a3, a5)),
            ]
        })
    }

    /// `A^T` applied to six channel vectors (see [`super::Kernels::at`]).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn at(m: [&[f32]; 6], c: usize, out: *mut f32) {
        let (k2, k4, k8) = (
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(4.0),
            _mm256_set1_ps(8.0),
        );
        map(m, c, out, |[m0, m1, m2, m3, m4, m5]| {
            let (p, q) = (_mm256_add_ps(m1, m2), _mm256_sub_ps(m1, m2));
            let (r, s) = (_mm256_add_ps(m3, m4), _mm256_sub_ps(m3, m4));
            [
                _mm256_add_ps(_mm256_add_ps(m0, p), r),
                _mm256_fmadd_ps(k2, s, q),
                _mm256_fmadd_ps(k4, r, p),
                _mm256_add_ps(_mm256_fmadd_ps(k8, s, q), m5),
            ]
        })
    }

    /// `A` applied to four channel vectors (see [`super::Kernels::a`]).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn a(y: [&[f32]; 4], c: usize, out: *mut f32) {
        let (k2, k4, k8) = (
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(4.0),
            _mm256_set1_ps(8.0),
        );
        map(y, c, out, |[y0, y1, y2, y3]| {
            let (e, o) = (_mm256_add_ps(y0, y2), _mm256_add_ps(y1, y3));
            let (e4, o2) = (
                _mm256_fmadd_ps(k4, y2, y0),
                _mm256_fmadd_ps(k8, y3, _mm256_mul_ps(k2, y1)),
            );
            [
                y0,
                _mm256_add_ps(e, o),
                _mm256_sub_ps(e, o),
                _mm256_add_ps(e4, o2),
                _mm256_sub_ps(e4, o2),
                y3,
            ]
        })
    }
}

#[cfg(target_arch = "x86_64")]
impl Kernels for Avx2 {
    #[inline(always)]
    fn bt(d: [&[f32]; 6], c: usize, out: &mut [f32]) {
        assert!(d.iter().all(|s| s.len() >= c) && out.len() >= 6 * c);
        // SAFETY: the lengths are checked above; the caller runs on a CPU with AVX2 and FMA.
        unsafe { avx2::bt(d, c, out.as_mut_ptr()) }
    }

    #[inline(always)]
    fn at(m: [&[f32]; 6], c: usize, out: &mut [f32]) {
        assert!(m.iter().all(|s| s.len() >= c) && out.len() >= 4 * c);
        // SAFETY: the lengths are checked above; the caller runs on a CPU with AVX2 and FMA.
        unsafe { avx2::at(m, c, out.as_mut_ptr()) }
    }

    #[inline(always)]
    fn a(y: [&[f32]; 4], c: usize, out: &mut [f32]) {
        assert!(y.iter().all(|s| s.len() >= c) && out.len() >= 6 * c);
        // SAFETY: the lengths are checked above; the caller runs on a CPU with AVX2 and FMA.
        unsafe { avx2::a(y, c, out.as_mut_ptr()) }
    }

    #[inline(always)]
    fn epilogue(y: &[f32], bias: &[f32], o: &mut [f32], residual: bool, relu: bool) {
        Portable::epilogue(y, bias, o, residual, relu)
    }
}

/// `V = B^T d B` for the 6x6 tile of `padded` at row `r0`, column `f0`; `tile` is
/// `[36][c]` in point order (row of the 6x6 outer). `tmp` holds 36 vectors of `c`.
#[inline(always)]
fn input_transform<K: Kernels>(
    padded: &[f32],
    c: usize,
    r0: usize,
    f0: usize,
    tmp: &mut [f32],
    tile: &mut [f32],
) {
    // Columns: tmp[b][i] = sum_a B^T[i][a] d[a][b].
    for (b, col) in tmp[..POINTS * c].chunks_exact_mut(6 * c).enumerate() {
        let at = |a: usize| ((r0 + a) * 10 + f0 + b) * c;
        K::bt(
            six(padded, [at(0), at(1), at(2), at(3), at(4), at(5)], c),
            c,
            col,
        );
    }
    // Rows: V[i][j] = sum_b tmp[b][i] B^T[j][b].
    for (i, row) in tile[..POINTS * c].chunks_exact_mut(6 * c).enumerate() {
        let at = |b: usize| (b * 6 + i) * c;
        K::bt(
            six(tmp, [at(0), at(1), at(2), at(3), at(4), at(5)], c),
            c,
            row,
        );
    }
}

/// `Y = A^T M A` for one tile's `[36][c]` products, written with bias, optional skip
/// connection and ReLU to the 4x4 squares at rank `r0`, file `f0` of `out` `[64][c]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_transform<K: Kernels>(
    m: &[f32],
    c: usize,
    bias: &[f32],
    (r0, f0): (usize, usize),
    tmp: &mut [f32],
    out: &mut [f32],
    residual: bool,
    relu: bool,
) {
    let (cols, rows) = tmp[..POINTS * c].split_at_mut(24 * c);
    // Columns: cols[j][i] = sum_a A^T[i][a] M[a][j].
    for (j, col) in cols.chunks_exact_mut(4 * c).enumerate() {
        let at = |a: usize| (a * 6 + j) * c;
        K::at(
            six(m, [at(0), at(1), at(2), at(3), at(4), at(5)], c),
            c,
            col,
        );
    }
    // Rows: Y[i][jj] = sum_j cols[j][i] A^T[jj][j], then the epilogue per square.
    let bias = &bias[..c];
    for i in 0..4 {
        let at = |j: usize| (j * 4 + i) * c;
        K::at(
            six(cols, [at(0), at(1), at(2), at(3), at(4), at(5)], c),
            c,
            &mut rows[..4 * c],
        );
        let start = ((r0 + i) * 8 + f0) * c;
        for (o, y) in out[start..start + 4 * c]
            .chunks_exact_mut(c)
            .zip(rows.chunks_exact(c))
        {
            K::epilogue(y, bias, o, residual, relu);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::im2col::im2col_into;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn direct(layer: &FoldedLayer, x: &[f32], boards: usize, c_in: usize) -> Vec<f32> {
        let mut cols = vec![0f32; boards * 64 * TAPS * c_in];
        im2col_into(x, c_in, &mut cols);
        let n = layer.cols;
        let mut out = vec![0f32; boards * 64 * n];
        for (row, o) in cols.chunks_exact(TAPS * c_in).zip(out.chunks_exact_mut(n)) {
            for (j, o) in o.iter_mut().enumerate() {
                *o = layer.bias[j]
                    + row
                        .iter()
                        .enumerate()
                        .map(|(k, a)| a * layer.weight[k * n + j])
                        .sum::<f32>();
            }
        }
        out
    }

    #[test]
    fn the_weight_gradient_equals_im2col_transposed_times_dy() {
        let mut rng = StdRng::seed_from_u64(8);
        for (c_in, c_out, boards, threads) in [(18, 32, 3, 2), (32, 32, 5, 2), (7, 5, 2, 1)] {
            let x: Vec<f32> = (0..boards * 64 * c_in)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let dy: Vec<f32> = (0..boards * 64 * c_out)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let mut cols = vec![0f32; boards * 64 * TAPS * c_in];
            im2col_into(&x, c_in, &mut cols);
            let mut want = vec![0f32; TAPS * c_in * c_out];
            for (row, g) in cols.chunks_exact(TAPS * c_in).zip(dy.chunks_exact(c_out)) {
                for (k, a) in row.iter().enumerate() {
                    for (j, g) in g.iter().enumerate() {
                        want[k * c_out + j] += a * g;
                    }
                }
            }
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let mut scratch = WinogradScratch::default();
            for simd in [false, simd_available()] {
                let got = weight_gradient_with(
                    simd,
                    &x,
                    &dy,
                    boards,
                    (c_in, c_out),
                    threads,
                    &mut scratch,
                );
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * scale,
                        "{c_in}->{c_out} {simd}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn winograd_equals_direct_convolution() {
        let mut rng = StdRng::seed_from_u64(5);
        for (c_in, c_out, boards, threads) in
            [(18, 32, 3, 1), (32, 32, 5, 2), (64, 73, 2, 2), (7, 5, 1, 3)]
        {
            let layer = FoldedLayer {
                weight: (0..TAPS * c_in * c_out)
                    .map(|_| rng.random_range(-0.5..0.5))
                    .collect(),
                bias: (0..c_out).map(|_| rng.random_range(-0.5..0.5)).collect(),
                rows: TAPS * c_in,
                cols: c_out,
            };
            let x: Vec<f32> = (0..boards * 64 * c_in)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let want = direct(&layer, &x, boards, c_in);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let wino = WinogradLayer::new(&layer);
            let mut scratch = WinogradScratch::default();
            // Plain, then as a residual layer with ReLU over a non-zero output.
            let mut got = vec![f32::NAN; boards * 64 * c_out];
            conv3x3(
                &wino,
                &x,
                boards,
                &mut got,
                false,
                false,
                threads,
                &mut scratch,
            );
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5 * scale, "{c_in}->{c_out}: {g} vs {w}");
            }
            let skip: Vec<f32> = (0..got.len()).map(|i| (i % 7) as f32 - 3.0).collect();
            let mut got = skip.clone();
            conv3x3(
                &wino,
                &x,
                boards,
                &mut got,
                true,
                true,
                threads,
                &mut scratch,
            );
            for ((g, w), s) in got.iter().zip(&want).zip(&skip) {
                let w = (w + s).max(0.0);
                assert!(
                    (g - w).abs() <= 1e-5 * scale,
                    "{c_in}->{c_out} residual: {g} vs {w}"
                );
            }
        }
    }
}
