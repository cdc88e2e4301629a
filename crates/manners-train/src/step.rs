//! One micro-batch on the device: host vectors to tensors, forward, masked loss.
//!
//! The loss of a step is the sum of per-token cross-entropies over supervised targets divided
//! by the number of supervised targets **of the whole optimiser step** (all micro-batches),
//! so `8 x 1` and `2 x 4` give the same gradient. The LM head is applied only at supervised
//! positions: in SFT most positions are prompt, and the head is the largest matmul.

use manners_data::HostBatch;
use manners_model::burn::module::ParamId;
use manners_model::burn::prelude::*;
use manners_model::burn::tensor::activation::log_softmax;
use manners_model::{ForwardOptions, Model, document_mask};

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
    /// 1 where a supervised target belongs to mixed raw text, else 0 (`[n, 1]`); `None` when
    /// the batch has no mixed text.
    pub sup_mixed: Option<Tensor<2>>,
    pub n_supervised: usize,
    pub n_mixed: usize,
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
        let idx: Vec<i64> = (0..b * t)
            .filter(|&i| h.loss_mask[i])
            .map(|i| i as i64)
            .collect();
        let tgt: Vec<i64> = (0..b * t)
            .filter(|&i| h.loss_mask[i])
            .map(|i| i64::from(h.targets[i]))
            .collect();
        let n = idx.len();
        let sup_mixed = (h.n_mixed > 0).then(|| {
            let w: Vec<f32> = (0..b * t)
                .filter(|&i| h.loss_mask[i])
                .map(|i| if h.mixed[i] { 1.0 } else { 0.0 })
                .collect();
            Tensor::from_data(TensorData::new(w, [n, 1]), device)
        });
        DeviceBatch {
            inputs,
            positions,
            mask,
            sup_index: Tensor::from_data(TensorData::new(idx, [n]), device),
            sup_targets: Tensor::from_data(TensorData::new(tgt, [n, 1]), device),
            sup_mixed,
            n_supervised: n,
            n_mixed: h.n_mixed,
            n_tokens: h.n_tokens,
        }
    }
}

/// Logits at the supervised positions only: `[n_supervised, vocab]`.
fn supervised_logits(model: &Model, batch: &DeviceBatch) -> Tensor<2> {
    let hidden = model.hidden(
        batch.inputs.clone(),
        ForwardOptions {
            positions: Some(batch.positions.clone()),
            mask: batch.mask.clone(),
        },
    ); // [b, t, d]
    let [b, t, d] = hidden.dims();
    let sup = hidden
        .reshape([b * t, d])
        .select(0, batch.sup_index.clone()); // [n, d]
    model.head(sup) // [n, vocab]
}

/// Sum of the negative log-likelihoods of the supervised targets: `[1]` (for evaluation; for
/// training use [`loss_for_backward`]).
pub fn nll_sum(model: &Model, batch: &DeviceBatch) -> Tensor<1> {
    let logp = log_softmax(supervised_logits(model, batch), 1); // [n, vocab]
    logp.gather(1, batch.sup_targets.clone()).sum().neg() // [1]
}

/// The training loss of a micro-batch, in two parts: a surrogate whose gradient is exactly the
/// gradient of `nll_sum / normalizer`, and `nll_sum` itself (detached, for logging).
///
/// The head is the last layer, so the cross-entropy gradient with respect to the logits is known
/// in closed form: `(softmax(z) - onehot(y)) / normalizer`. It is computed without autodiff with
/// the backend's fused softmax and injected through `sum(z * G)`, whose gradient is `G`. Burn's
/// autodiff would otherwise differentiate a six-op `log_softmax` and keep its `[n, vocab]`
/// intermediates alive until backward; this way costs a few passes over the logits and keeps
/// none. The value is `-ln p(y)` from the same softmax (clamped at the smallest normal f32, which
/// only matters for losses above 87 nats).
pub fn loss_for_backward(
    model: &Model,
    batch: &DeviceBatch,
    normalizer: f32,
) -> (Tensor<1>, Tensor<1>) {
    let (surrogate, nll, _) = loss_for_backward_split(model, batch, normalizer);
    (surrogate, nll)
}

/// [`loss_for_backward`], plus the summed NLL of the mixed raw-text targets when the batch has
/// any.
pub fn loss_for_backward_split(
    model: &Model,
    batch: &DeviceBatch,
    normalizer: f32,
) -> (Tensor<1>, Tensor<1>, Option<Tensor<1>>) {
    use manners_model::burn::tensor::activation::softmax;
    use manners_model::burn::tensor::ops::IndexingUpdateOp;
    let logits = supervised_logits(model, batch); // [n, vocab], tracked
    let targets = batch.sup_targets.clone().without_autodiff(); // [n, 1]
    let p = softmax(logits.clone().without_autodiff(), 1); // [n, vocab], untracked
    let logp = p
        .clone()
        .gather(1, targets.clone())
        .clamp_min(f32::MIN_POSITIVE)
        .log(); // [n, 1]
    let mixed = batch
        .sup_mixed
        .clone()
        .map(|w| (logp.clone() * w).sum().neg());
    let nll = logp.sum().neg(); // [1]
    let n = targets.dims()[0];
    let minus_one = Tensor::<2>::full([n, 1], -1.0, &targets.device());
    let grad = p
        .scatter(1, targets, minus_one, IndexingUpdateOp::Add)
        .div_scalar(normalizer); // [n, vocab]
    ((logits * grad).sum(), nll, mixed)
}

/// Reads a one-element tensor as f64 (a device sync).
pub fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

/// The summed NLL of the supervised targets of `batches` and their count, without gradients:
/// the held-out loss is `sum / count`. `model` must not be on an autodiff device.
pub fn heldout_nll<'a>(
    model: &Model,
    batches: impl IntoIterator<Item = &'a HostBatch>,
) -> (f64, usize) {
    let device = model.device();
    let (mut sum, mut count) = (0.0, 0usize);
    for hb in batches {
        if hb.n_supervised == 0 {
            continue;
        }
        let db = DeviceBatch::from_host(hb, &device);
        sum += scalar(nll_sum(model, &db));
        count += hb.n_supervised;
    }
    (sum, count)
}

/// The model and optimiser of a run, and one optimiser step over micro-batches.
pub struct Learner {
    /// Taken out only while the optimiser updates it.
    model: Option<Model>,
    optim: manners_model::burn::optim::ModuleOptimizer,
    clip: Option<f64>,
    device: Device,
    /// Gradients of the token-indexed parameters (embedding; untied head) are multiplied by
    /// these masks (`[vocab, 1]` or `[1, vocab]`): only the rows of tokens added for the chat
    /// template learn (LoRA runs).
    token_masks: Vec<(ParamId, Tensor<2>)>,
}

/// A step's loss and, when raw text was mixed in, its two parts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLoss {
    /// Masked mean over every supervised target (what the gradient is of).
    pub loss: f64,
    /// Over the conversations' targets alone (`None` without mixed text, or none of these).
    pub sft: Option<f64>,
    /// Over the mixed raw text's targets alone.
    pub mixed: Option<f64>,
}

/// What one optimiser step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepResult {
    /// Masked mean loss over the step's supervised targets.
    pub loss: f64,
    /// When raw text is mixed into the step: the loss of the conversations' targets alone
    /// and of the raw text's alone (`None` for a part the step has no target of).
    pub sft_loss: Option<f64>,
    pub mixed_loss: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// False when the loss or gradient was non-finite and the weights were left unchanged.
    pub applied: bool,
}

impl Learner {
    /// `device` is the autodiff device the model lives on.
    pub fn new(
        model: Model,
        optim: manners_model::burn::optim::ModuleOptimizer,
        clip: Option<f64>,
        device: Device,
    ) -> Self {
        Learner {
            model: Some(model),
            optim,
            clip,
            device,
            token_masks: Vec::new(),
        }
    }

    /// Trains only the given token rows of the token-indexed parameters (the embedding, and an
    /// untied head; they must require grad): the rows of tokens added for a chat template,
    /// under LoRA. With a zero gradient from the start, AdamW leaves the other rows
    /// bit-for-bit unchanged.
    pub fn with_trainable_token_rows(mut self, rows: &[u32]) -> Self {
        let v = self.model().vocab_size();
        let mut m = vec![0f32; v];
        for &r in rows {
            if (r as usize) < v {
                m[r as usize] = 1.0;
            }
        }
        let inner = self.device.clone().without_autodiff();
        self.token_masks = self
            .model()
            .token_params()
            .into_iter()
            .map(|p| {
                let shape = if p.axis == 0 { [v, 1] } else { [1, v] };
                let t = Tensor::from_data(TensorData::new(m.clone(), shape), &inner);
                (p.id, t)
            })
            .collect();
        self
    }

    pub fn model(&self) -> &Model {
        self.model.as_ref().expect("model present between steps")
    }

    pub fn optim(&self) -> &manners_model::burn::optim::ModuleOptimizer {
        &self.optim
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn into_parts(self) -> (Model, manners_model::burn::optim::ModuleOptimizer) {
        (self.model.expect("model present between steps"), self.optim)
    }

    /// Gradients of the step's masked mean loss, accumulated over the micro-batches, and the
    /// loss (one device read). Each micro-batch's NLL sum is divided by the supervised count
    /// of the WHOLE step, so the result does not depend on how rows are split into micro-batches.
    pub fn gradients(
        &self,
        micro: &[HostBatch],
    ) -> Option<(manners_model::burn::optim::GradientsParams, f64)> {
        self.gradients_split(micro).map(|(g, l)| (g, l.loss))
    }

    /// [`Learner::gradients`] with the loss split into conversations and mixed raw text.
    pub fn gradients_split(
        &self,
        micro: &[HostBatch],
    ) -> Option<(manners_model::burn::optim::GradientsParams, StepLoss)> {
        use manners_model::burn::optim::{GradientsAccumulator, GradientsParams};
        let n_sup: usize = micro.iter().map(|b| b.n_supervised).sum();
        if n_sup == 0 {
            return None;
        }
        let model = self.model();
        let mut acc = GradientsAccumulator::<Model>::new();
        let mut sums = Vec::with_capacity(micro.len());
        let mut mixed_sums = Vec::new();
        for hb in micro.iter().filter(|b| b.n_supervised > 0) {
            let db = DeviceBatch::from_host(hb, &self.device);
            let (surrogate, sum, mixed) = loss_for_backward_split(model, &db, n_sup as f32);
            mixed_sums.extend(mixed);
            acc.accumulate(
                model,
                GradientsParams::from_grads(surrogate.backward(), model),
            );
            sums.push(sum);
        }
        let n_mixed: usize = micro.iter().map(|b| b.n_mixed).sum();
        let total = scalar(Tensor::cat(sums, 0).sum());
        let loss = total / n_sup as f64;
        let split = if mixed_sums.is_empty() {
            StepLoss {
                loss,
                sft: None,
                mixed: None,
            }
        } else {
            let mixed = scalar(Tensor::cat(mixed_sums, 0).sum());
            StepLoss {
                loss,
                sft: (n_sup > n_mixed).then(|| (total - mixed) / (n_sup - n_mixed) as f64),
                mixed: Some(mixed / n_mixed as f64),
            }
        };
        let mut grads = acc.grads();
        for (id, mask) in &self.token_masks {
            if let Some(g) = grads.remove::<2>(*id) {
                grads.register::<2>(*id, g * mask.clone());
            }
        }
        Some((grads, split))
    }

    /// Forward, backward, clip and AdamW update over the micro-batches of one step. `None` when
    /// the step has no supervised target. A non-finite loss or gradient leaves the weights and
    /// the optimiser state unchanged.
    pub fn step(&mut self, micro: &[HostBatch], lr: f64) -> Option<StepResult> {
        let (grads, split) = self.gradients_split(micro)?;
        let loss = split.loss;
        let model = self.model();
        let (grads, norm) = match self.clip {
            Some(max) => crate::clip::clip_global_norm(model, grads, max),
            None => {
                let n = crate::clip::global_norm(model, &grads);
                (grads, n)
            }
        };
        let applied = loss.is_finite() && norm.is_finite();
        if applied {
            let model = self.model.take().expect("model present between steps");
            self.model = Some(self.optim.step(lr, model, grads));
        }
        Some(StepResult {
            loss,
            sft_loss: split.sft,
            mixed_loss: split.mixed,
            grad_norm: norm,
            applied,
        })
    }

    /// Replaces the model and optimiser (after loading a checkpoint).
    pub fn replace(&mut self, model: Model, optim: manners_model::burn::optim::ModuleOptimizer) {
        self.model = Some(model);
        self.optim = optim;
    }
}
