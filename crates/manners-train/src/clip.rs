//! Global gradient-norm clipping, like `torch.nn.utils.clip_grad_norm_`: the norm over all
//! gradients together (Burn's built-in clipping works per tensor).

use manners_model::Model;
use manners_model::burn::module::{ModuleVisitor, Param};
use manners_model::burn::optim::GradientsParams;
use manners_model::burn::prelude::*;

struct SquaredNorms<'a> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorms<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.parts.push(g.square().sum());
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The L2 norm of all gradients together (one device read).
pub fn global_norm(model: &Model, grads: &GradientsParams) -> f64 {
    let mut v = SquaredNorms {
        grads,
        parts: Vec::new(),
    };
    model.visit(&mut v);
    if v.parts.is_empty() {
        return 0.0;
    }
    let total = Tensor::cat(v.parts, 0).sum(); // [1]
    (total.into_scalar::<f32>() as f64).sqrt()
}

/// Scales the gradients so their global norm is at most `max_norm`; returns the norm before
/// clipping. Like PyTorch, the factor is `max_norm / (norm + 1e-6)`, applied only when below 1.
pub fn clip_global_norm(
    model: &Model,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let norm = global_norm(model, &grads);
    let factor = max_norm / (norm + 1e-6);
    if factor >= 1.0 || !norm.is_finite() {
        return (grads, norm);
    }
    let mut grads = grads;
    model.visit(&mut Scale {
        grads: &mut grads,
        factor,
    });
    (grads, norm)
}
