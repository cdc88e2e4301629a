//! The process-wide budget of attention probabilities kept for the backward pass (flex): held
//! while a training graph lives, given back by its backward pass (or by the next one, for a
//! graph dropped without it), never exceeded. Its own test binary, so no other test's graphs share the counter.
#![cfg(feature = "flex")]

use manners_model::burn::prelude::*;
use manners_model::burn::tensor::{Distribution, TensorData};
use manners_model::fused::{attention_kept_bytes, attention_qkv, set_attention_keep_limit};

/// One layer's probabilities at this shape, by hand: `t` (20) fits one block of queries, so
/// each row and head keeps its `t x t` scores (the causal half's block is square), 4 bytes each.
const B: usize = 2;
const H: usize = 3;
const T: usize = 20;
const HD: usize = 8;
const LAYER: usize = B * H * T * T * 4;

#[test]
fn kept_probabilities_are_held_while_the_graph_lives_and_never_exceed_the_budget() {
    let dev = Device::flex().autodiff();
    let docs = Tensor::<2>::zeros([B, T], &dev);
    let qkv = Tensor::<3>::random([B, T, 3 * H * HD], Distribution::Normal(0.0, 1.0), &dev)
        .require_grad();
    // A stack of attention layers: each output, `[b, t, h * hd]`, three times over is the
    // next layer's packed `qkv`.
    let layer = |x: Tensor<3>| {
        let y = attention_qkv(x, H, &docs, 0.35).expect("flex attention");
        let y = y.swap_dims(1, 2).reshape([B, T, H * HD]);
        Tensor::cat(vec![y.clone(), y.clone(), y], 2)
    };
    let grad_of = |y: Tensor<3>| {
        let grads = y.sum().backward();
        qkv.grad(&grads).expect("gradient").into_data()
    };

    set_attention_keep_limit(2 * LAYER);
    assert_eq!(attention_kept_bytes(), 0);
    // Two layers fit; the third recomputes.
    let one = layer(qkv.clone());
    assert_eq!(attention_kept_bytes(), LAYER);
    let two = layer(one.clone() * 0.5);
    let three = layer(two.clone() * 0.5);
    assert_eq!(
        attention_kept_bytes(),
        2 * LAYER,
        "the third layer did not fit"
    );
    let kept = grad_of(three);
    assert_eq!(
        attention_kept_bytes(),
        0,
        "the backward pass gave them back"
    );
    drop(one);
    drop(two);

    // A graph dropped without its backward pass gives them back too: Burn frees an abandoned
    // graph's states (with every other activation it saved) at the next backward pass.
    let unused = layer(qkv.clone());
    assert_eq!(attention_kept_bytes(), LAYER);
    drop(unused);
    let next = layer(qkv.clone());
    assert_eq!(attention_kept_bytes(), 2 * LAYER);
    let _ = grad_of(next);
    assert_eq!(attention_kept_bytes(), 0);

    // Nothing kept: the same gradient, bit for bit.
    set_attention_keep_limit(0);
    let recomputed = grad_of(layer(layer(layer(qkv.clone()) * 0.5) * 0.5));
    assert_eq!(attention_kept_bytes(), 0);
    assert_eq!(kept, recomputed);

    // Without autodiff (evaluation, generation) nothing is kept, whatever the budget.
    set_attention_keep_limit(usize::MAX);
    let plain = Device::flex();
    let x = Tensor::<3>::random([B, T, 3 * H * HD], Distribution::Normal(0.0, 1.0), &plain);
    let docs = Tensor::<2>::from_data(TensorData::zeros::<f32, _>([B, T]), &plain);
    let y = attention_qkv(x, H, &docs, 0.35).expect("flex attention");
    assert_eq!(attention_kept_bytes(), 0);
    drop(y);
}
