//! Batch norm in training mode on the CPU as one op with its own backward: two passes over
//! `[N, C]` forward (the statistics, then `y = x a + b` with `a = gamma / sigma` and
//! `b = beta - mean a`) and two backward, instead of candle's chain of a dozen elementwise
//! and broadcast ops, each allocating an `[N, C]` tensor. The statistics accumulate in
//! f64. The layers use it on the CPU in f32; [`super::layers::BatchNorm`] keeps candle's
//! ops elsewhere.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use std::sync::{Arc, Mutex};

/// The batch's statistics, kept by the forward for the backward and the running averages.
#[derive(Clone, Debug, Default)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// Biased variance (divided by N).
    pub var: Vec<f32>,
    pub invstd: Vec<f32>,
}

struct BatchNormTrain {
    eps: f64,
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
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(contiguous(cpu, layout)?)),
        _ => candle_core::bail!("the CPU batch norm runs on CPU tensors"),
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "ember-batchnorm-train"
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
        let (n, c) = l1.shape().dims2()?;
        let (x, gamma, beta) = (
            contiguous(s1, l1)?,
            contiguous(s2, l2)?,
            contiguous(s3, l3)?,
        );
        if gamma.len() != c || beta.len() != c || n == 0 {
            candle_core::bail!(
                "batch norm: x {:?}, gamma {}, beta {}",
                l1.shape(),
                gamma.len(),
                beta.len()
            );
        }
        let mut sum = vec![0f64; c];
        for row in x.chunks_exact(c) {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += f64::from(v);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        let mut sq = vec![0f64; c];
        for row in x.chunks_exact(c) {
            for ((s, &v), m) in sq.iter_mut().zip(row).zip(&mean) {
                let d = f64::from(v) - m;
                *s += d * d;
            }
        }
        let var: Vec<f64> = sq.iter().map(|s| s / n as f64).collect();
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
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
        let mut y = vec![0f32; n * c];
        for (out, row) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            for (((o, &v), &a), &b) in out.iter_mut().zip(row).zip(&a).zip(&b) {
                *o = v * a + b;
            }
        }
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = BatchStats {
            mean: mean.iter().map(|&m| m as f32).collect(),
            var: var.iter().map(|&v| v as f32).collect(),
            invstd: invstd.iter().map(|&i| i as f32).collect(),
        };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    /// With `xh = (x - mean) invstd`: `dbeta = sum dy`, `dgamma = sum dy xh`,
    /// `dx = gamma invstd / N (N dy - dbeta - xh dgamma)`.
    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c) = x.dims2()?;
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let gamma = gamma.to_vec1::<f32>()?;
        let (dx, dgamma, dbeta) = with_values(x, |x| {
            with_values(grad, |dy| {
                let mut dbeta = vec![0f64; c];
                let mut dgamma = vec![0f64; c];
                for (row, drow) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
                    for ch in 0..c {
                        let xh = (row[ch] - stats.mean[ch]) * stats.invstd[ch];
                        dbeta[ch] += f64::from(drow[ch]);
                        dgamma[ch] += f64::from(drow[ch] * xh);
                    }
                }
                let k: Vec<f32> = (0..c).map(|ch| gamma[ch] * stats.invstd[ch]).collect();
                let mb: Vec<f32> = dbeta.iter().map(|d| (d / n as f64) as f32).collect();
                let mg: Vec<f32> = dgamma.iter().map(|d| (d / n as f64) as f32).collect();
                let mut dx = vec![0f32; n * c];
                for ((out, row), drow) in dx
                    .chunks_exact_mut(c)
                    .zip(x.chunks_exact(c))
                    .zip(dy.chunks_exact(c))
                {
                    for ch in 0..c {
                        let xh = (row[ch] - stats.mean[ch]) * stats.invstd[ch];
                        out[ch] = k[ch] * (drow[ch] - mb[ch] - xh * mg[ch]);
                    }
                }
                let f = |v: Vec<f64>| v.into_iter().map(|d| d as f32).collect::<Vec<f32>>();
                (dx, f(dgamma), f(dbeta))
            })
        })??;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, c), dev)?),
            Some(Tensor::from_vec(dgamma, c, dev)?),
            Some(Tensor::from_vec(dbeta, c, dev)?),
        ))
    }
}

/// Batch norm of `x` `[N, C]` (CPU, f32) with the batch's statistics: `y` and the statistics.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    let stats = Arc::new(Mutex::new(BatchStats::default()));
    let op = BatchNormTrain {
        eps,
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3_arc(gamma, beta, Arc::new(Box::new(op)))?;
    let stats = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((y, stats))
}
