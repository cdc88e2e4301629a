//! Growing the token embedding for added special tokens.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::gpt::Gpt;

/// Grows `wte` to `new_vocab` rows. New rows start at the mean of the existing rows plus
/// N(0, 0.02) noise (so new tokens begin "average" rather than random, as in HF's
/// `resize_token_embeddings(mean_resizing=True)`), and the tied head grows with it. Does nothing
/// when the embedding is already large enough. The parameter gets a new id: build the optimiser
/// after resizing.
pub fn resize_token_embeddings(mut model: Gpt, new_vocab: usize) -> Gpt {
    let old = model.wte.weight.val().detach(); // [v, d]
    let [v, d] = old.dims();
    if new_vocab <= v {
        return model;
    }
    let n_new = new_vocab - v;
    let device = old.device();
    let mean = old.clone().mean_dim(0); // [1, d]
    let noise = Tensor::<2>::random([n_new, d], Distribution::Normal(0.0, 0.02), &device);
    let rows = mean.repeat_dim(0, n_new) + noise; // [n_new, d]
    let grown = Tensor::cat(vec![old, rows], 0).detach(); // [new_vocab, d]
    let require_grad = model.wte.weight.is_require_grad();
    model.wte.weight = Param::from_tensor(grown).set_require_grad(require_grad);
    model
}
