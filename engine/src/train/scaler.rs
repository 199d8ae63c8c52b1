//! Dynamic loss scaling for f16 training (candle has no grad scaler). The loss is
//! multiplied by the scale before backward so small gradients survive f16; the
//! gradients are divided by it again before the update. An inf/NaN gradient means the
//! scale was too large: the step is skipped and the scale halved. After a run of clean
//! steps the scale doubles, so it tracks the largest scale that does not overflow.

use anyhow::Result;
use candle_core::Tensor;

/// PyTorch's `GradScaler` starts here too.
pub const DEFAULT_INITIAL_SCALE: f64 = 65536.0;
/// Clean steps before the scale doubles.
pub const DEFAULT_GROWTH_INTERVAL: u32 = 200;
/// The scale never shrinks below this (a persistent overflow is then a real divergence).
pub const MIN_SCALE: f64 = 1.0;
/// Nor grows beyond this.
pub const MAX_SCALE: f64 = 16_777_216.0;

#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    scale: f64,
    growth_interval: u32,
    clean_steps: u32,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler::new(DEFAULT_INITIAL_SCALE, DEFAULT_GROWTH_INTERVAL)
    }
}

impl LossScaler {
    pub fn new(initial_scale: f64, growth_interval: u32) -> Self {
        LossScaler {
            scale: initial_scale.clamp(MIN_SCALE, MAX_SCALE),
            growth_interval: growth_interval.max(1),
            clean_steps: 0,
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    pub fn growth_interval(&self) -> u32 {
        self.growth_interval
    }

    /// Clean steps since the last change of scale.
    pub fn clean_steps(&self) -> u32 {
        self.clean_steps
    }

    /// Restores a saved state (scale and clean-step count).
    pub fn restore(&mut self, scale: f64, clean_steps: u32) {
        self.scale = scale.clamp(MIN_SCALE, MAX_SCALE);
        self.clean_steps = clean_steps;
    }

    /// Divides the gradients (of a loss multiplied by [`Self::scale`]) by the scale and
    /// records the outcome. Returns `None` when any gradient holds inf/NaN: the caller
    /// skips the step, and the scale has been halved.
    pub fn unscale(&mut self, grads: &[Tensor]) -> Result<Option<Vec<Tensor>>> {
        let finite = all_finite(grads)?;
        let unscaled = if finite {
            let inv = 1.0 / self.scale;
            Some(
                grads
                    .iter()
                    .map(|g| (g * inv).map(|t| t.detach()))
                    .collect::<candle_core::Result<_>>()?,
            )
        } else {
            None
        };
        self.update(finite);
        Ok(unscaled)
    }

    /// Records one step: halves the scale on overflow, doubles it after
    /// `growth_interval` clean steps in a row.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.clean_steps += 1;
            if self.clean_steps >= self.growth_interval {
                self.scale = (self.scale * 2.0).min(MAX_SCALE);
                self.clean_steps = 0;
            }
        } else {
            self.scale = (self.scale * 0.5).max(MIN_SCALE);
            self.clean_steps = 0;
        }
    }
}

/// Whether every element of every tensor is finite: one reduction per tensor and one
/// transfer, since a sum is inf/NaN exactly when an element is (or it overflows, which
/// is as bad).
pub fn all_finite(tensors: &[Tensor]) -> Result<bool> {
    if tensors.is_empty() {
        return Ok(true);
    }
    let sums = tensors
        .iter()
        .map(|t| t.to_dtype(candle_core::DType::F32)?.sum_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let total = Tensor::stack(&sums, 0)?.sum_all()?.to_scalar::<f32>()?;
    Ok(total.is_finite())
}
