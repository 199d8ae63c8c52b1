//! Hand-written optimisers over candle `Var`s: SGD with momentum and AdamW, each with
//! weight decay on the weights only (convolution and dense matrices; never biases or
//! batch-norm scale/shift). candle-nn's SGD has no momentum and its AdamW decays every
//! variable, hence these.
//!
//! Conventions: SGD uses coupled L2 as PyTorch does (`g += wd * w`, then
//! `buf = momentum * buf + g`, `w -= lr * buf`), which is the gradient of the loss term
//! `wd/2 * |w|^2`; AdamW decays decoupled from the moments (`w -= lr * wd * w`).

use super::OptimizerKind;
use anyhow::{anyhow, bail, Result};
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// The state of one variable.
#[derive(Default)]
struct Moments {
    /// SGD: the momentum buffer. AdamW: the first moment.
    first: Option<Tensor>,
    /// AdamW: the second moment.
    second: Option<Tensor>,
}

/// Optimiser state by variable name; the variables themselves are passed to each
/// [`Optimizer::apply`], so a network whose `Var`s are replaced stays consistent.
pub struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f64,
    slots: HashMap<String, Moments>,
    /// Updates applied (AdamW's bias correction counts these).
    updates: u64,
}

/// Trainable variables as [`crate::net::Network::trainable`] gives them:
/// (name, variable, whether weight decay applies).
pub type Params = [(String, Var, bool)];

impl Optimizer {
    pub fn new(kind: OptimizerKind, weight_decay: f64) -> Optimizer {
        Optimizer {
            kind,
            weight_decay,
            slots: HashMap::new(),
            updates: 0,
        }
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// One update with learning rate `lr`; `grads` is aligned with `params` (`None`: no
    /// gradient reached that variable, it is left alone).
    pub fn apply(&mut self, params: &Params, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if grads.len() != params.len() {
            bail!(
                "optimizer got {} gradients for {} variables",
                grads.len(),
                params.len()
            );
        }
        self.updates += 1;
        let t = self.updates as i32;
        let wd = self.weight_decay;
        for ((name, var, decay), grad) in params.iter().zip(grads) {
            let Some(g) = grad else { continue };
            let slot = self.slots.entry(name.clone()).or_default();
            let w = var.as_tensor().detach();
            let decay = *decay && wd != 0.0;
            let new_w = match self.kind {
                OptimizerKind::Sgd { momentum } => {
                    let g = if decay { (g + (&w * wd)?)? } else { g.clone() };
                    let buf = match &slot.first {
                        Some(b) if momentum != 0.0 => ((b * momentum)? + g)?,
                        _ => g,
                    }
                    .detach();
                    let w_new = (&w - (&buf * lr)?)?;
                    slot.first = Some(buf);
                    w_new
                }
                OptimizerKind::AdamW { beta1, beta2, eps } => {
                    let m = match &slot.first {
                        Some(m) => ((m * beta1)? + (g * (1.0 - beta1))?)?,
                        None => (g * (1.0 - beta1))?,
                    }
                    .detach();
                    let v = match &slot.second {
                        Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                        None => (g.sqr()? * (1.0 - beta2))?,
                    }
                    .detach();
                    let m_hat = (&m / (1.0 - beta1.powi(t)))?;
                    let v_hat = (&v / (1.0 - beta2.powi(t)))?;
                    let step = (m_hat / (v_hat.sqrt()? + eps)?)?;
                    let w_decayed = if decay {
                        (&w * (1.0 - lr * wd))?
                    } else {
                        w.clone()
                    };
                    slot.first = Some(m);
                    slot.second = Some(v);
                    (w_decayed - (step * lr)?)?
                }
            };
            var.set(&new_w)?;
        }
        Ok(())
    }

    /// The state as named tensors: `momentum.<var>` (SGD) or `m.<var>` and `v.<var>`
    /// (AdamW) for every variable that has been updated.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let (first, second) = self.state_prefixes();
        let mut out = Vec::new();
        let mut names: Vec<&String> = self.slots.keys().collect();
        names.sort();
        for name in names {
            let s = &self.slots[name];
            if let Some(t) = &s.first {
                out.push((format!("{first}{name}"), t.clone()));
            }
            if let (Some(t), Some(p)) = (&s.second, second) {
                out.push((format!("{p}{name}"), t.clone()));
            }
        }
        out
    }

    fn state_prefixes(&self) -> (&'static str, Option<&'static str>) {
        match self.kind {
            OptimizerKind::Sgd { .. } => ("momentum.", None),
            OptimizerKind::AdamW { .. } => ("m.", Some("v.")),
        }
    }

    /// Replaces the state by saved tensors (as [`Self::state_tensors`] names them) and
    /// the saved update count. Every tensor must name a variable of `params` and have
    /// its shape.
    pub fn restore(
        &mut self,
        params: &Params,
        mut tensors: HashMap<String, Tensor>,
        updates: u64,
        origin: &str,
    ) -> Result<()> {
        let (first, second) = self.state_prefixes();
        let mut slots = HashMap::new();
        for (name, var, _) in params {
            let mut take = |prefix: &str| -> Result<Option<Tensor>> {
                let Some(t) = tensors.remove(&format!("{prefix}{name}")) else {
                    return Ok(None);
                };
                let want = var.as_tensor().dims();
                if t.dims() != want {
                    bail!("{origin}: optimizer state `{prefix}{name}` has shape {:?}, the network's variable has {want:?}", t.dims());
                }
                Ok(Some(t.to_device(var.device())?.detach()))
            };
            let slot = Moments {
                first: take(first)?,
                second: match second {
                    Some(p) => take(p)?,
                    None => None,
                },
            };
            if slot.first.is_some() || slot.second.is_some() {
                slots.insert(name.clone(), slot);
            }
        }
        if let Some(name) = tensors.keys().next() {
            return Err(anyhow!(
                "{origin}: optimizer state holds `{name}`, which matches no variable of this network and optimizer"
            ));
        }
        self.slots = slots;
        self.updates = updates;
        Ok(())
    }
}
