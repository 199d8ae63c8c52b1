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
//! channels (channels are last and contiguous, so they vectorise), and each board's
//! work is independent: the boards are split over the threads, each running its own
//! GEMMs single-threaded, with no synchronisation inside a layer.
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
        let mut u = vec![0f32; POINTS * c_in * c_out];
        for ci in 0..c_in {
            for co in 0..c_out {
                let g = |r: usize, c: usize| layer.weight[((r * 3 + c) * c_in + ci) * c_out + co];
                // t = G g (6x3), then U = t G^T (6x6), in f64 to keep the transform exact.
                let mut t = [[0f64; 3]; 6];
                for (i, row) in t.iter_mut().enumerate() {
                    for (c, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|r| G[i][r] as f64 * g(r, c) as f64).sum();
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
            bias: layer.bias.clone(),
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
    let (ci, co) = (layer.c_in, layer.c_out);
    let threads = threads.clamp(1, boards.max(1));
    let per_task = boards.div_ceil(threads).max(1);
    let (vb, mb, wb) = (
        TILES * POINTS * ci,
        TILES * POINTS * co,
        100 * ci + POINTS * ci.max(co),
    );
    grow(&mut scratch.v, boards * vb);
    grow(&mut scratch.m, boards * mb);
    grow(&mut scratch.work, threads * wb);
    let x = &x[..boards * 64 * ci];
    let out = &mut out[..boards * 64 * co];
    let v = &mut scratch.v[..boards * vb];
    let m = &mut scratch.m[..boards * mb];
    let work = &mut scratch.work[..threads * wb];
    let run = |x: &[f32], out: &mut [f32], v: &mut [f32], m: &mut [f32], work: &mut [f32]| {
        let n = x.len() / (64 * ci);
        let (padded, tmp) = work.split_at_mut(100 * ci);
        for (board_x, board_v) in x.chunks_exact(64 * ci).zip(v.chunks_exact_mut(vb)) {
            pad_board(board_x, ci, padded);
            for (t, tile) in board_v.chunks_exact_mut(POINTS * ci).enumerate() {
                input_transform(padded, ci, (t / 2) * 4, (t % 2) * 4, tmp, tile);
            }
        }
        point_gemms(layer, v, n * TILES, m);
        for (board_m, board_out) in m.chunks_exact(mb).zip(out.chunks_exact_mut(64 * co)) {
            for (t, tile_m) in board_m.chunks_exact(POINTS * co).enumerate() {
                let (r0, f0) = ((t / 2) * 4, (t % 2) * 4);
                output_transform(
                    tile_m,
                    co,
                    &layer.bias,
                    r0,
                    f0,
                    tmp,
                    board_out,
                    residual,
                    relu,
                );
            }
        }
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

fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
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
fn six(buf: &[f32], offsets: [usize; 6], c: usize) -> [&[f32]; 6] {
    offsets.map(|o| &buf[o..o + c])
}

/// `out[i] = sum_a B^T[i][a] d[a]` for the six rows of `B^T`; `out` holds 6 vectors of `c`.
fn apply_bt(d: [&[f32]; 6], c: usize, out: &mut [f32]) {
    let [d0, d1, d2, d3, d4, d5] = d.map(|s| &s[..c]);
    let (o0, rest) = out[..6 * c].split_at_mut(c);
    let (o1, rest) = rest.split_at_mut(c);
    let (o2, rest) = rest.split_at_mut(c);
    let (o3, rest) = rest.split_at_mut(c);
    let (o4, o5) = rest.split_at_mut(c);
    for k in 0..c {
        let (a0, a1, a2, a3, a4, a5) = (d0[k], d1[k], d2[k], d3[k], d4[k], d5[k]);
        o0[k] = 4.0 * a0 - 5.0 * a2 + a4;
        o1[k] = -4.0 * (a1 + a2) + a3 + a4;
        o2[k] = 4.0 * (a1 - a2) - a3 + a4;
        o3[k] = 2.0 * (a3 - a1) - a2 + a4;
        o4[k] = 2.0 * (a1 - a3) - a2 + a4;
        o5[k] = 4.0 * a1 - 5.0 * a3 + a5;
    }
}

/// `out[i] = sum_a A^T[i][a] m[a]` for the four rows of `A^T`; `out` holds 4 vectors of `c`.
fn apply_at(m: [&[f32]; 6], c: usize, out: &mut [f32]) {
    let [m0, m1, m2, m3, m4, m5] = m.map(|s| &s[..c]);
    let (o0, rest) = out[..4 * c].split_at_mut(c);
    let (o1, rest) = rest.split_at_mut(c);
    let (o2, o3) = rest.split_at_mut(c);
    for k in 0..c {
        let (p, q) = (m1[k] + m2[k], m1[k] - m2[k]);
        let (r, s) = (m3[k] + m4[k], m3[k] - m4[k]);
        o0[k] = m0[k] + p + r;
        o1[k] = q + 2.0 * s;
        o2[k] = p + 4.0 * r;
        o3[k] = q + 8.0 * s + m5[k];
    }
}

/// `V = B^T d B` for the 6x6 tile of `padded` at row `r0`, column `f0`; `tile` is
/// `[36][c]` in point order (row of the 6x6 outer). `tmp` holds 36 vectors of `c`.
fn input_transform(
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
        apply_bt(
            six(padded, [at(0), at(1), at(2), at(3), at(4), at(5)], c),
            c,
            col,
        );
    }
    // Rows: V[i][j] = sum_b tmp[b][i] B^T[j][b].
    for (i, row) in tile[..POINTS * c].chunks_exact_mut(6 * c).enumerate() {
        let at = |b: usize| (b * 6 + i) * c;
        apply_bt(
            six(tmp, [at(0), at(1), at(2), at(3), at(4), at(5)], c),
            c,
            row,
        );
    }
}

/// `Y = A^T M A` for one tile's `[36][c]` products, written with bias, optional skip
/// connection and ReLU to the 4x4 squares at rank `r0`, file `f0` of `out` `[64][c]`.
#[allow(clippy::too_many_arguments)]
fn output_transform(
    m: &[f32],
    c: usize,
    bias: &[f32],
    r0: usize,
    f0: usize,
    tmp: &mut [f32],
    out: &mut [f32],
    residual: bool,
    relu: bool,
) {
    let (cols, rows) = tmp[..POINTS * c].split_at_mut(24 * c);
    // Columns: cols[j][i] = sum_a A^T[i][a] M[a][j].
    for (j, col) in cols.chunks_exact_mut(4 * c).enumerate() {
        let at = |a: usize| (a * 6 + j) * c;
        apply_at(
            six(m, [at(0), at(1), at(2), at(3), at(4), at(5)], c),
            c,
            col,
        );
    }
    // Rows: Y[i][jj] = sum_j cols[j][i] A^T[jj][j], then the epilogue per square.
    let bias = &bias[..c];
    for i in 0..4 {
        let at = |j: usize| (j * 4 + i) * c;
        apply_at(
            six(cols, [at(0), at(1), at(2), at(3), at(4), at(5)], c),
            c,
            &mut rows[..4 * c],
        );
        let start = ((r0 + i) * 8 + f0) * c;
        for (o, y) in out[start..start + 4 * c]
            .chunks_exact_mut(c)
            .zip(rows.chunks_exact(c))
        {
            let (o, y) = (&mut o[..c], &y[..c]);
            for k in 0..c {
                let mut v = y[k] + bias[k];
                if residual {
                    v += o[k];
                }
                o[k] = if relu { v.max(0.0) } else { v };
            }
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
