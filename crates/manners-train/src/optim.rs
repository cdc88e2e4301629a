//! AdamW with PyTorch-like defaults and weight decay only on weight matrices.

use manners_model::burn::module::ParamGroup;
use manners_model::burn::optim::{
    AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use manners_model::burn::prelude::*;
use manners_model::fused::{AdamWHyper, adamw_update};

use crate::config::TrainConfig;

/// Paths of the parameters that get weight decay: the projection matrices. Biases, LayerNorm
/// gains/shifts and the embeddings (incl. the tied head) get none, as in GPT-2/nanoGPT practice.
pub const DECAY_PATHS: &str = r"\.(c_attn|c_proj|c_fc)\.weight$";

/// AdamW: betas/eps from the config (PyTorch defaults 0.9/0.999/1e-8, unlike Burn's 1e-5 eps and
/// 1e-4 decay), decoupled decay on [`DECAY_PATHS`] only.
pub fn build_optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    let base = FusedAdamW {
        beta_1: cfg.beta1 as f32,
        beta_2: cfg.beta2 as f32,
        epsilon: cfg.eps as f32,
        weight_decay: 0.0,
    };
    let optim = ModuleOptimizer::from(base.clone());
    if cfg.weight_decay > 0.0 {
        let group = ParamGroup::from_regex(DECAY_PATHS).expect("static regex is valid");
        let decayed = FusedAdamW {
            weight_decay: cfg.weight_decay as f32,
            ..base
        };
        optim.with_group(group, decayed, None)
    } else {
        optim
    }
}

/// Burn's AdamW (decoupled weight decay, no AMSGrad) with the update of each parameter done by
/// [`adamw_update`]: one pass over memory on `flex` instead of a dozen tensor operations. Its
/// per-parameter state is Burn's own [`AdamWState`], so checkpoints are the same either way.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedAdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let (moments, time) = match state {
            Some(s) => (
                Some((s.momentum.moment_1, s.momentum.moment_2)),
                s.momentum.time + 1,
            ),
            None => (None, 1),
        };
        let hyper = AdamWHyper {
            lr,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        };
        let (tensor, moment_1, moment_2) = adamw_update(tensor, grad, moments, time, &hyper);
        let momentum = AdaptiveMomentumState {
            time,
            moment_1,
            moment_2,
            max_moment_2: None,
        };
        (tensor, Some(AdamWState { momentum }))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
