//! AdamW with PyTorch-like defaults and weight decay only on weight matrices.

use manners_model::Model;
use manners_model::burn::optim::{
    AdamW, AdamWConfig, AdamWState, LearningRate, ModuleOptimizer, Optimizer,
};
use manners_model::burn::prelude::*;
use manners_model::fused::{AdamWHyper, adamw_fusable};

use crate::config::TrainConfig;

/// AdamW: betas/eps from the config (PyTorch's 0.9/0.999/1e-8, unlike Burn's 1e-5 eps and 1e-4
/// decay), decoupled weight decay only on the model's [`Model::decay_group`] (the projection
/// matrices; never biases, norms or embeddings).
pub fn build_optimizer(cfg: &TrainConfig, model: &Model) -> ModuleOptimizer {
    grouped(cfg, model, |wd| {
        FusedAdamW::new(
            cfg.beta1 as f32,
            cfg.beta2 as f32,
            cfg.eps as f32,
            wd as f32,
        )
    })
}

/// The same optimiser with Burn's own `AdamW` for every update: the baseline [`FusedAdamW`] is
/// measured and tested against.
pub fn build_burn_optimizer(cfg: &TrainConfig, model: &Model) -> ModuleOptimizer {
    grouped(cfg, model, |wd| {
        FusedAdamW::new(
            cfg.beta1 as f32,
            cfg.beta2 as f32,
            cfg.eps as f32,
            wd as f32,
        )
        .burn
    })
}

/// No decay by default; `cfg.weight_decay` on the model's decay group.
fn grouped<O: Optimizer>(
    cfg: &TrainConfig,
    model: &Model,
    optim: impl Fn(f64) -> O,
) -> ModuleOptimizer {
    let all = ModuleOptimizer::from(optim(0.0));
    if cfg.weight_decay > 0.0 {
        all.with_group(model.decay_group(), optim(cfg.weight_decay), None)
    } else {
        all
    }
}

/// Burn's AdamW (decoupled weight decay, no AMSGrad) with each update done in one pass over
/// memory by [`manners_model::fused::adamw_update`] where it applies (`flex`, `f32`), and by
/// Burn's `AdamW` itself elsewhere. The per-parameter state is Burn's [`AdamWState`], so
/// checkpoints are the same either way.
#[derive(Clone)]
pub struct FusedAdamW {
    #[cfg_attr(not(feature = "flex"), allow(dead_code))]
    hyper: AdamWHyper,
    burn: AdamW,
}

impl FusedAdamW {
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32) -> Self {
        let burn = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(weight_decay)
            .build();
        let hyper = AdamWHyper {
            lr: 0.0, // set per step
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
        };
        Self { hyper, burn }
    }
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
        let moments = state
            .as_ref()
            .map(|s| (&s.momentum.moment_1, &s.momentum.moment_2));
        let fusable = adamw_fusable(&tensor, &grad, moments);
        #[cfg(feature = "flex")]
        if fusable {
            use manners_model::fused::adamw_update;
            let (moments, time) = match state {
                Some(s) => (
                    Some((s.momentum.moment_1, s.momentum.moment_2)),
                    s.momentum.time + 1,
                ),
                None => (None, 1),
            };
            let hyper = AdamWHyper { lr, ..self.hyper };
            let (tensor, moment_1, moment_2) = adamw_update(tensor, grad, moments, time, &hyper);
            let momentum = manners_model::burn::optim::AdaptiveMomentumState {
                time,
                moment_1,
                moment_2,
                max_moment_2: None,
            };
            return (tensor, Some(AdamWState { momentum }));
        }
        #[cfg(not(feature = "flex"))]
        debug_assert!(!fusable, "the one-pass update needs flex");
        self.burn.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdamW::to_device(state, device)
    }
}
