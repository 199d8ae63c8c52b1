//! Batch norm in training mode on the CPU, with the activation that follows it, as one op
//! with its own backward: two passes over `[N, C]` forward (the statistics, then
//! `y = act(x a + b [+ skip])` with `a = gamma / sigma` and `b = beta - mean a`) and two
//! backward, instead of candle's chain of a dozen elementwise and broadcast ops, then a
//! ReLU and a residual add, each allocating an `[N, C]` tensor (and, in candle's
//! backward, a zeroed gradient and an addition for each). The passes are split over
//! threads by rows; the statistics are summed in f32 within a task and in f64 across
//! tasks. The layers use it on the CPU in f32; [`super::layers::BatchNorm`] keeps
//! candle's ops elsewhere.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// The batch's statistics, kept by the forward for the backward and the running averages.
#[derive(Clone, Debug, Default)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// Biased variance (divided by N).
    pub var: Vec<f32>,
    pub invstd: Vec<f32>,
}

/// What the op applies after the normalisation, `z = x a + b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `y = z`.
    Identity,
    /// `y = max(z, 0)`.
    Relu,
    /// `y = max(z + skip, 0)`: a residual block's output.
    ResidualRelu,
}

struct BatchNormTrain {
    eps: f64,
    activation: Activation,
    /// Written by the forward, read by the backward and the caller.
    stats: Arc<Mutex<BatchStats>>,
}

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("batch norm needs contiguous f32 tensors"),
    }
}

/// Runs `f` on the f32 values of a CPU tensor.
pub(super) fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(contiguous(cpu, layout)?)),
        _ => candle_core::bail!("the CPU batch norm runs on CPU tensors"),
    }
}

/// Rows per parallel task: enough tasks to balance the threads, each long enough that
/// its per-channel partial sums (in f32) stay short.
fn rows_per_task(n: usize) -> usize {
    let tasks = 4 * rayon::current_num_threads();
    n.div_ceil(tasks).clamp(1, 512)
}

/// Per-channel sums over the `n` rows: `f(rows, acc)` adds a task's rows into its `acc`
/// of `c` f32 values, and the tasks' sums are added in f64.
fn channel_sums(
    n: usize,
    c: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f64> {
    let rows = rows_per_task(n);
    let partial: Vec<Vec<f32>> = (0..n.div_ceil(rows))
        .into_par_iter()
        .map(|task| {
            let mut acc = vec![0f32; c];
            f(task * rows..((task + 1) * rows).min(n), &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0f64; c];
    for p in partial {
        for (t, v) in total.iter_mut().zip(p) {
            *t += f64::from(v);
        }
    }
    total
}

/// The forward on slices: `y` and the batch's statistics.
pub(super) fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    skip: Option<&[f32]>,
    activation: Activation,
    eps: f64,
) -> (Vec<f32>, BatchStats) {
    let c = gamma.len();
    let n = x.len() / c;
    let sum = channel_sums(n, c, |rows, acc| {
        for r in rows {
            for (a, &v) in acc.iter_mut().zip(&x[r * c..(r + 1) * c]) {
                *a += v;
            }
        }
    });
    let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
    let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let sq = channel_sums(n, c, |rows, acc| {
        for r in rows {
            for ((a, &v), &m) in acc.iter_mut().zip(&x[r * c..(r + 1) * c]).zip(&mean32) {
                let d = v - m;
                *a += d * d;
            }
        }
    });
    let var: Vec<f64> = sq.iter().map(|s| s / n as f64).collect();
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let a: Vec<f32> = invstd
        .iter()
        .zip(gamma)
        .map(|(i, &g)| (i * f64::from(g)) as f32)
        .collect();
    let b: Vec<f32> = beta
        .iter()
        .zip(&mean)
        .zip(&a)
        .map(|((&be, m), &a)| (f64::from(be) - m * f64::from(a)) as f32)
        .collect();
    let rows = rows_per_task(n);
    let mut y = vec![0f32; n * c];
    y.par_chunks_mut(rows * c)
        .enumerate()
        .for_each(|(task, out)| {
            let at = task * rows * c;
            let xs = &x[at..at + out.len()];
            match (activation, skip) {
                (Activation::Identity, _) => {
                    for (o_row, x_row) in out.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
                        for (((o, &v), &a), &b) in o_row.iter_mut().zip(x_row).zip(&a).zip(&b) {
                            *o = v * a + b;
                        }
                    }
                }
                (Activation::Relu, _) | (Activation::ResidualRelu, None) => {
                    for (o_row, x_row) in out.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
                        for (((o, &v), &a), &b) in o_row.iter_mut().zip(x_row).zip(&a).zip(&b) {
                            *o = (v * a + b).max(0.0);
                        }
                    }
                }
                (Activation::ResidualRelu, Some(skip)) => {
                    let ss = &skip[at..at + out.len()];
                    for ((o_row, x_row), s_row) in out
                        .chunks_exact_mut(c)
                        .zip(xs.chunks_exact(c))
                        .zip(ss.chunks_exact(c))
                    {
                        for ((((o, &v), &a), &b), &s) in
                            o_row.iter_mut().zip(x_row).zip(&a).zip(&b).zip(s_row)
                        {
                            *o = (v * a + b + s).max(0.0);
                        }
                    }
                }
            }
        });
    let stats = BatchStats {
        mean: mean32,
        var: var.iter().map(|&v| v as f32).collect(),
        invstd: invstd.iter().map(|&i| i as f32).collect(),
    };
    (y, stats)
}

/// The backward on slices. With `g` the gradient through the activation (`dy` where the
/// output is positive, 0 elsewhere, for the ReLU forms) and `xh = (x - mean) invstd`:
/// `dbeta = sum g`, `dgamma = sum g xh`, `dx = gamma invstd / N (N g - dbeta - xh dgamma)`,
/// and the skip's gradient is `g`. Returns `(dx, dgamma, dbeta, dskip)`.
pub(super) fn backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    gamma: &[f32],
    stats: &BatchStats,
    activation: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let c = gamma.len();
    let n = x.len() / c;
    let relu = activation != Activation::Identity;
    let (mean, invstd) = (&stats.mean[..c], &stats.invstd[..c]);
    // The gradient through the activation, for one row.
    let through = |r: usize, g: &mut [f32]| {
        let (ys, dys) = (&y[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        for ((g, &y), &d) in g.iter_mut().zip(ys).zip(dys) {
            *g = if relu && y <= 0.0 { 0.0 } else { d };
        }
    };
    // The two sums in one pass, [dbeta, dgamma] side by side.
    let sums = channel_sums(n, 2 * c, |rows, acc| {
        let mut g = vec![0f32; c];
        let (db, dg) = acc.split_at_mut(c);
        for r in rows {
            through(r, &mut g);
            let xs = &x[r * c..(r + 1) * c];
            for (((((db, dg), &g), &x), &m), &i) in db
                .iter_mut()
                .zip(dg.iter_mut())
                .zip(&g)
                .zip(xs)
                .zip(mean)
                .zip(invstd)
            {
                *db += g;
                *dg += g * (x - m) * i;
            }
        }
    });
    let (dbeta, dgamma) = sums.split_at(c);
    let k: Vec<f32> = (0..c).map(|ch| gamma[ch] * invstd[ch]).collect();
    let mb: Vec<f32> = dbeta.iter().map(|d| (d / n as f64) as f32).collect();
    let mg: Vec<f32> = dgamma.iter().map(|d| (d / n as f64) as f32).collect();
    let rows = rows_per_task(n);
    let mut dx = vec![0f32; n * c];
    let mut dskip = (activation == Activation::ResidualRelu).then(|| vec![0f32; n * c]);
    let fill = |task: usize, out: &mut [f32], mut skip_out: Option<&mut [f32]>| {
        let mut g = vec![0f32; c];
        for (j, o_row) in out.chunks_exact_mut(c).enumerate() {
            let r = task * rows + j;
            through(r, &mut g);
            let xs = &x[r * c..(r + 1) * c];
            for ((((((o, &g), &x), &m), &i), &k), (&mb, &mg)) in o_row
                .iter_mut()
                .zip(&g)
                .zip(xs)
                .zip(mean)
                .zip(invstd)
                .zip(&k)
                .zip(mb.iter().zip(&mg))
            {
                *o = k * (g - mb - (x - m) * i * mg);
            }
            if let Some(s) = skip_out.as_deref_mut() {
                s[j * c..(j + 1) * c].copy_from_slice(&g);
            }
        }
    };
    match dskip.as_mut() {
        Some(ds) => dx
            .par_chunks_mut(rows * c)
            .zip(ds.par_chunks_mut(rows * c))
            .enumerate()
            .for_each(|(task, (out, s))| fill(task, out, Some(s))),
        None => dx
            .par_chunks_mut(rows * c)
            .enumerate()
            .for_each(|(task, out)| fill(task, out, None)),
    }
    let f = |v: &[f64]| v.iter().map(|&d| d as f32).collect::<Vec<f32>>();
    (dx, f(dgamma), f(dbeta), dskip)
}

impl BatchNormTrain {
    fn check(&self, x: &Layout, gb: &Layout) -> Result<(usize, usize)> {
        let (n, c) = x.shape().dims2()?;
        if gb.shape().dims() != [2, c] || n == 0 {
            candle_core::bail!(
                "batch norm: x {:?}, gamma and beta {:?}",
                x.shape(),
                gb.shape()
            );
        }
        Ok((n, c))
    }
}

impl ActivatedOp for BatchNormTrain {
    const NAMES: [&'static str; 2] = ["ember-batchnorm-train", "ember-batchnorm-residual-train"];

    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        gb: (&CpuStorage, &Layout),
        skip: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c) = self.check(x.1, gb.1)?;
        let gb_values = contiguous(gb.0, gb.1)?;
        let skip = match skip {
            Some((s, l)) if l.shape() == x.1.shape() => Some(contiguous(s, l)?),
            Some((_, l)) => {
                candle_core::bail!("batch norm: skip {:?}, x {:?}", l.shape(), x.1.shape())
            }
            None => None,
        };
        let (y, stats) = forward(
            contiguous(x.0, x.1)?,
            &gb_values[..c],
            &gb_values[c..],
            skip,
            self.activation,
            self.eps,
        );
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
        Ok((CpuStorage::F32(y), x.1.shape().clone()))
    }

    /// `(dx, dgamma and dbeta as [2, C], dskip)`.
    fn bwd_all(
        &self,
        x: &Tensor,
        gb: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (n, c) = x.dims2()?;
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let gamma = gb.get(0)?.to_vec1::<f32>()?;
        let (dx, dgamma, dbeta, dskip) = with_values(x, |x| {
            with_values(res, |y| {
                with_values(grad, |dy| {
                    backward(x, y, dy, &gamma, &stats, self.activation)
                })
            })
        })???;
        let dev = x.device();
        let mut dgb = dgamma;
        dgb.extend_from_slice(&dbeta);
        Ok((
            Tensor::from_vec(dx, (n, c), dev)?,
            Tensor::from_vec(dgb, (2, c), dev)?,
            dskip
                .map(|d| Tensor::from_vec(d, (n, c), dev))
                .transpose()?,
        ))
    }
}

/// Batch norm of `x` `[N, C]` (CPU, f32) with the batch's statistics, followed by
/// `activation` (`skip`, `[N, C]`, is added before the ReLU of
/// [`Activation::ResidualRelu`]): `y` and the statistics. Gamma and beta enter the op as
/// one `[2, C]` tensor.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    activation: Activation,
    skip: Option<&Tensor>,
) -> Result<(Tensor, BatchStats)> {
    let stats = Arc::new(Mutex::new(BatchStats::default()));
    let op = BatchNormTrain {
        eps,
        activation,
        stats: stats.clone(),
    };
    let gb = Tensor::stack(&[gamma, beta], 0)?;
    let y = apply_activated(op, x, &gb, activation, skip)?;
    let stats = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((y, stats))
}

/// An op on `(x, p)`, or `(x, p, skip)` for [`Activation::ResidualRelu`], with its own
/// backward: the batch norm here and the convolution with it ([`super::conv3x3`]).
/// [`Activated`] makes it candle's two- and three-input op.
pub(super) trait ActivatedOp: Send + Sync + 'static {
    /// The op's names without and with the skip.
    const NAMES: [&'static str; 2];

    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        p: (&CpuStorage, &Layout),
        skip: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)>;

    /// `(dx, dp, dskip)` from the inputs, the output `y` and its gradient `dy`.
    fn bwd_all(
        &self,
        x: &Tensor,
        p: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)>;
}

struct Activated<O>(O);

impl<O: ActivatedOp> CustomOp2 for Activated<O> {
    fn name(&self) -> &'static str {
        O::NAMES[0]
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.fwd((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dp, _) = self.0.bwd_all(x, p, y, dy)?;
        Ok((Some(dx), Some(dp)))
    }
}

impl<O: ActivatedOp> CustomOp3 for Activated<O> {
    fn name(&self) -> &'static str {
        O::NAMES[1]
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.fwd((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _skip: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dp, dskip) = self.0.bwd_all(x, p, y, dy)?;
        Ok((Some(dx), Some(dp), dskip))
    }
}

/// Applies `op` on `(x, p)`, or on `(x, p, skip)` for [`Activation::ResidualRelu`] (which
/// must have its skip, and the only activation that takes one).
pub(super) fn apply_activated<O: ActivatedOp>(
    op: O,
    x: &Tensor,
    p: &Tensor,
    activation: Activation,
    skip: Option<&Tensor>,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    match (activation, skip) {
        (Activation::ResidualRelu, Some(skip)) => {
            let op: Box<dyn CustomOp3 + Send + Sync> = Box::new(Activated(op));
            x.apply_op3_arc(p, &skip.contiguous()?, Arc::new(op))
        }
        (Activation::ResidualRelu, None) => {
            candle_core::bail!("{}: a residual ReLU needs its skip tensor", O::NAMES[1])
        }
        (_, Some(_)) => {
            candle_core::bail!("{}: only a residual ReLU takes a skip tensor", O::NAMES[0])
        }
        (_, None) => {
            let op: Box<dyn CustomOp2 + Send + Sync> = Box::new(Activated(op));
            x.apply_op2_arc(p, Arc::new(op))
        }
    }
}
