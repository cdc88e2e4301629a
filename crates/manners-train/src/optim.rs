//! AdamW with PyTorch-like defaults and weight decay only on weight matrices.

use manners_model::burn::module::ParamGroup;
use manners_model::burn::optim::{AdamWConfig, ModuleOptimizer};

use crate::config::TrainConfig;

/// Paths of the parameters that get weight decay: the projection matrices. Biases, LayerNorm
/// gains/shifts and the embeddings (incl. the tied head) get none, as in GPT-2/nanoGPT practice.
pub const DECAY_PATHS: &str = r"\.(c_attn|c_proj|c_fc)\.weight$";

/// AdamW: betas/eps from the config (PyTorch defaults 0.9/0.999/1e-8, unlike Burn's 1e-5 eps and
/// 1e-4 decay), decoupled decay on [`DECAY_PATHS`] only.
pub fn build_optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    let base = AdamWConfig::new()
        .with_beta_1(cfg.beta1 as f32)
        .with_beta_2(cfg.beta2 as f32)
        .with_epsilon(cfg.eps as f32)
        .with_weight_decay(0.0);
    let optim = base.init();
    if cfg.weight_decay > 0.0 {
        let group = ParamGroup::from_regex(DECAY_PATHS).expect("static regex is valid");
        let decayed = base
            .clone()
            .with_weight_decay(cfg.weight_decay as f32)
            .build();
        optim.with_group(group, decayed, None)
    } else {
        optim
    }
}
