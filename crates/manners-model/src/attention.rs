//! Causal self-attention shared by every family: masks (plain causal, packed documents,
//! left padding), grouped-query heads, and the two ways of computing it.
//!
//! - Training (autodiff): Burn's `attention` op falls back to a decomposed version that
//!   re-applies the masks and differentiates through the max shift in every layer, so the
//!   additive mask is built once per forward and the backend's (fused on flex) softmax is used.
//! - Inference: Burn's fused attention with a boolean mask and bottom-right causal alignment,
//!   which stays right with a KV cache (queries fewer than keys). Decode steps on flex read the
//!   cache's buffers in place instead (`fused::cached_attention`, the same arithmetic).

use std::cell::OnceCell;

use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::fused;

/// Key/value tensors of one layer, `[b, kv_heads, t, head_dim]` each.
pub(crate) type LayerKv = (Tensor<4>, Tensor<4>);

/// How a forward pass masks attention.
#[derive(Clone, Debug)]
pub(crate) enum AttnMask {
    /// `[b, 1, t, t_k]`, `true` = masked, on top of causal masking; for Burn's fused attention.
    Bool(Option<Tensor<4, Bool>>),
    /// `[b or 1, 1, t, t]`: 0 where attention is allowed, -inf elsewhere (causality included).
    Bias(Tensor<4>),
    /// Document ids `[b, t]` as floats (all zero for plain causal attention), for the fused
    /// attention on flex, which masks from them without materialising a mask.
    Docs(Tensor<2>),
    /// New tokens after the positions a `KvCache` holds (queries aligned with the last keys):
    /// each row's left padding, `None` when no row has any ([`AttnMask::cached`]).
    Cached {
        pads: Option<Vec<usize>>,
        /// The padding as a [`padding_mask`], where the fused cached attention does not apply:
        /// built by the first layer that needs it, shared by the step's other layers.
        mask: OnceCell<Option<Tensor<4, Bool>>>,
    },
}

impl AttnMask {
    /// The mask of a decode step over a `KvCache` whose rows have `pads` left padding.
    pub(crate) fn cached(pads: Option<Vec<usize>>) -> Self {
        AttnMask::Cached {
            pads,
            mask: OnceCell::new(),
        }
    }

    /// The mask of a full-sequence forward over `b` rows of `t` tokens: `mask` is `[b, t, t]`
    /// (`true` = may not attend, a [`document_mask`]), `docs` the document ids `[b, t]` of
    /// packed rows (used when `mask` is `None`), neither for plain causal attention. On flex
    /// the ids go to the fused attention as they are; elsewhere they become a mask.
    pub(crate) fn for_sequence(
        mask: Option<Tensor<3, Bool>>,
        docs: Option<Tensor<2, Int>>,
        b: usize,
        t: usize,
        device: &Device,
    ) -> Self {
        if mask.is_none() && fused::attention_fusable(device) {
            let docs = docs.map_or_else(|| Tensor::zeros([b, t], device), |d| d.float());
            return AttnMask::Docs(docs);
        }
        let mask = mask.or_else(|| docs.map(|d| docs_mask(d.float())));
        Self::from_mask(mask, t, device)
    }

    fn from_mask(mask: Option<Tensor<3, Bool>>, t: usize, device: &Device) -> Self {
        let mask = mask.map(|m| m.unsqueeze_dim::<4>(1)); // [b, 1, t, t]
        if device.is_autodiff() {
            let mask =
                mask.unwrap_or_else(|| Tensor::<2, Bool>::tril_mask([t, t], 0, device).unsqueeze());
            AttnMask::Bias(
                Tensor::<4>::zeros(mask.dims(), device).mask_fill(mask, f32::NEG_INFINITY),
            )
        } else {
            AttnMask::Bool(mask)
        }
    }
}

/// The `[b, t, t]` mask (`true` = may not attend) of document ids `[b, t]`: later positions
/// and other documents. [`document_mask`] on the device.
fn docs_mask(docs: Tensor<2>) -> Tensor<3, Bool> {
    let [b, t] = docs.dims();
    let device = docs.device();
    let query = docs.clone().unsqueeze_dim::<3>(2).expand([b, t, t]);
    let key = docs.unsqueeze_dim::<3>(1).expand([b, t, t]);
    let later = Tensor::<2, Bool>::tril_mask([t, t], 0, &device)
        .unsqueeze::<3>()
        .expand([b, t, t]);
    query.not_equal(key).bool_or(later)
}

/// `softmax(q k^T / sqrt(hd) + mask) v` for `q` `[b, h, t, hd]` and `k`, `v`
/// `[b, kv_h, t_k, hd]` with `h` a multiple of `kv_h` (grouped-query attention: each key/value
/// head serves `h / kv_h` query heads). Returns `[b, h, t, hd]`.
pub(crate) fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: &AttnMask) -> Tensor<4> {
    let [b, h, t, hd] = q.dims();
    if let AttnMask::Docs(docs) = mask {
        let scale = 1.0 / (hd as f64).sqrt();
        if let Some(y) = fused::attention(q.clone(), k.clone(), v.clone(), docs, scale) {
            return y;
        }
        // Not fusable after all (a dtype other than f32): the same mask, materialised.
        let m = AttnMask::from_mask(Some(docs_mask(docs.clone())), t, &q.device());
        return attend(q, k, v, &m);
    }
    if let AttnMask::Cached { pads, mask } = mask {
        let scale = 1.0 / (hd as f64).sqrt();
        if let Some(y) = fused::cached_attention(&q, &k, &v, pads.as_deref(), scale) {
            return y;
        }
        let t_k = k.dims()[2];
        let m = mask.get_or_init(|| {
            pads.as_ref()
                .map(|pads| padding_mask(pads, t, t_k, &q.device()))
        });
        return attend(q, k, v, &AttnMask::Bool(m.clone()));
    }
    let kv_h = k.dims()[1];
    let (k, v) = (repeat_kv(k, h / kv_h), repeat_kv(v, h / kv_h));
    let t_k = k.dims()[2];
    match mask {
        AttnMask::Bool(mask) => {
            let mask = mask.clone().map(|m| m.expand([b, h, t, t_k]));
            let opts = AttentionModuleOptions {
                is_causal: true,
                ..Default::default()
            };
            attention(q, k, v, mask, None, opts)
        }
        AttnMask::Bias(bias) => {
            // Scale q (hd wide) rather than the scores (t wide).
            let q = q * (1.0 / (hd as f64).sqrt());
            let scores = q.matmul(k.swap_dims(2, 3)); // [b, h, t, t]
            fused::softmax_with_bias(scores, bias.clone()).matmul(v)
        }
        AttnMask::Docs(_) | AttnMask::Cached { .. } => unreachable!("handled above"),
    }
}

/// The mask `[b, 1, t, t_k]` (`true` = masked, on top of causal masking) hiding the left
/// padding of rows whose first `pads[r]` slots are padding, for `t` queries after `t_k - t`
/// cached positions. A padding query may still see itself, so no row of the softmax is empty.
pub(crate) fn padding_mask(
    pads: &[usize],
    t: usize,
    t_k: usize,
    device: &Device,
) -> Tensor<4, Bool> {
    let b = pads.len();
    let past = t_k - t;
    let mut m = vec![false; b * t * t_k];
    for (r, &pad) in pads.iter().enumerate() {
        for i in 0..t {
            for j in 0..pad.min(t_k) {
                m[(r * t + i) * t_k + j] = j != past + i;
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [b, 1, t, t_k]), device)
}

/// `[b, kv_h, t, hd] -> [b, kv_h * n, t, hd]`, each head repeated `n` times in place (HF's
/// `repeat_kv`: query head `i` uses key head `i / n`).
fn repeat_kv(x: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return x;
    }
    let [b, kv_h, t, hd] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv_h, n, t, hd])
        .reshape([b, kv_h * n, t, hd])
}

/// The attention mask for packed rows: position `i` may attend to `j` only when `j <= i` and both
/// belong to the same document. `doc_ids` is row-major `[b, t]`; returns `[b, t, t]` with
/// `true` = masked. Padding (doc id 0) attends only to padding, so no row is fully masked.
pub fn document_mask(doc_ids: &[u32], b: usize, t: usize, device: &Device) -> Tensor<3, Bool> {
    assert_eq!(doc_ids.len(), b * t, "doc_ids must be [b, t]");
    let mut m = vec![false; b * t * t];
    for r in 0..b {
        let row = &doc_ids[r * t..(r + 1) * t];
        for i in 0..t {
            for j in 0..t {
                m[(r * t + i) * t + j] = j > i || row[j] != row[i];
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [b, t, t]), device)
}
