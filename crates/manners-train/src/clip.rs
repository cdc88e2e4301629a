//! Global gradient-norm clipping, like `torch.nn.utils.clip_grad_norm_`: the norm over all
//! gradients together (Burn's built-in clipping works per tensor).

use manners_model::burn::module::{ModuleVisitor, Param};
use manners_model::burn::optim::GradientsParams;
use manners_model::burn::prelude::*;
use manners_model::{Model, fused};

struct SquaredNorms<'a> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorms<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.parts.push(fused::sum_of_squares(&g));
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
                .register::<D>(param.id, fused::scale(g, self.factor));
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

struct AllReduce<'a> {
    grads: &'a mut GradientsParams,
    group: &'a [Device],
    device: Device,
}

impl ModuleVisitor for AllReduce<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        use manners_model::burn::tensor::distributed::{ReduceOperation, all_reduce};
        if !param.is_require_grad() {
            return;
        }
        // Every device of the group must take part in every reduction: a device that saw no
        // supervised token contributes zeros.
        let g = self
            .grads
            .remove::<D>(param.id)
            .unwrap_or_else(|| Tensor::zeros(param.lazy_shape(), &self.device));
        let summed = all_reduce(g, ReduceOperation::Sum, self.group.to_vec()).resolve();
        self.grads.register::<D>(param.id, summed);
    }
}

/// Sums the gradients over the devices of `group` with Burn's `all_reduce` (NCCL on CUDA); each
/// device of the group calls this at the same point with its own replica of `model`, and each
/// gets the sum. Parameters are visited in the module's order, the same on every device.
pub fn all_reduce_sum(
    model: &Model,
    mut grads: GradientsParams,
    group: &[Device],
) -> GradientsParams {
    let device = model.device().inner();
    model.visit(&mut AllReduce {
        grads: &mut grads,
        group,
        device,
    });
    grads
}
