//! One micro-batch on the device: host vectors to tensors, forward, masked loss.
//!
//! The loss of a step is the sum of per-token cross-entropies over supervised targets divided
//! by the number of supervised targets **of the whole optimiser step** (all micro-batches),
//! so `8 x 1` and `2 x 4` give the same gradient. The LM head is applied only at supervised
//! positions: in SFT most positions are prompt, and the head is the largest matmul.

use manners_data::HostBatch;
use manners_model::burn::prelude::*;
use manners_model::burn::tensor::activation::log_softmax;
use manners_model::{ForwardOptions, Gpt, document_mask};

/// A micro-batch on the device.
pub struct DeviceBatch {
    pub inputs: Tensor<2, Int>,
    pub positions: Tensor<2, Int>,
    /// Block-diagonal causal mask when a row holds several documents (or padding).
    pub mask: Option<Tensor<3, Bool>>,
    /// Flat indices (into `b * t`) of supervised positions.
    pub sup_index: Tensor<1, Int>,
    /// Targets at those positions.
    pub sup_targets: Tensor<2, Int>,
    pub n_supervised: usize,
    pub n_tokens: usize,
}

impl DeviceBatch {
    pub fn from_host(h: &HostBatch, device: &Device) -> Self {
        let (b, t) = (h.batch, h.seq_len);
        let ints = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>();
        let inputs = Tensor::from_data(TensorData::new(ints(&h.inputs), [b, t]), device);
        let positions = Tensor::from_data(TensorData::new(ints(&h.positions), [b, t]), device);
        // A mask is needed only when some row is not a single document from position 0.
        let needs_mask = (0..b).any(|r| {
            let docs = &h.doc_ids[r * t..(r + 1) * t];
            docs.iter().any(|&d| d != docs[0])
        });
        let mask = needs_mask.then(|| document_mask(&h.doc_ids, b, t, device));
        let idx: Vec<i64> =
            (0..b * t).filter(|&i| h.loss_mask[i]).map(|i| i as i64).collect();
        let tgt: Vec<i64> = (0..b * t).filter(|&i| h.loss_mask[i]).map(|i| i64::from(h.targets[i])).collect();
        let n = idx.len();
        DeviceBatch {
            inputs,
            positions,
            mask,
            sup_index: Tensor::from_data(TensorData::new(idx, [n]), device),
            sup_targets: Tensor::from_data(TensorData::new(tgt, [n, 1]), device),
            n_supervised: n,
            n_tokens: h.n_tokens,
        }
    }
}

/// Sum of the negative log-likelihoods of the supervised targets: `[1]`.
pub fn nll_sum(model: &Gpt, batch: &DeviceBatch) -> Tensor<1> {
    let hidden = model.hidden(
        batch.inputs.clone(),
        ForwardOptions { positions: Some(batch.positions.clone()), mask: batch.mask.clone() },
    ); // [b, t, d]
    let [b, t, d] = hidden.dims();
    let sup = hidden.reshape([b * t, d]).select(0, batch.sup_index.clone()); // [n, d]
    let logits = model.head(sup); // [n, vocab]
    let logp = log_softmax(logits, 1); // [n, vocab]
    logp.gather(1, batch.sup_targets.clone()).sum().neg() // [1]
}

/// Reads a one-element tensor as f64 (a device sync).
pub fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}
