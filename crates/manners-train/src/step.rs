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
use manners_model::{ForwardOptions, Model};

/// A micro-batch on the device.
pub struct DeviceBatch {
    pub inputs: Tensor<2, Int>,
    pub positions: Tensor<2, Int>,
    /// Document ids `[b, t]` when a row holds several documents (or padding): attention is
    /// causal within each document.
    pub docs: Option<Tensor<2, Int>>,
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
        let docs = needs_mask
            .then(|| Tensor::from_data(TensorData::new(ints(&h.doc_ids), [b, t]), device));
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
            docs,
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
            mask: None,
            docs: batch.docs.clone(),
        },
    ); // [b, t, d]
    let [b, t, d] = hidden.dims();
    let sup =
        manners_model::fused::select_rows(hidden.reshape([b * t, d]), batch.sup_index.clone()); // [n, d]
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
    // On flex: the per-row cross-entropy as one fused operation with a closed-form backward.
    if let Some(rows) =
        manners_model::fused::cross_entropy(logits.clone(), &batch.sup_targets.clone().float())
    {
        let [n, _] = rows.dims();
        let rows = rows.reshape([n]); // [n], tracked
        let values = rows.clone().detach();
        let mixed = batch
            .sup_mixed
            .clone()
            .map(|w| (values.clone() * w.reshape([n])).sum());
        return (rows.sum().div_scalar(normalizer), values.sum(), mixed);
    }
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
///
/// With [`Learner::with_replicas`] a step runs data-parallel: the step's micro-batches are dealt
/// round-robin to the devices (the first one holds the model and the optimiser), each device
/// runs forward and backward on a copy of the weights (`Module::fork`), the gradients are summed
/// on the first device (Burn's device-to-device transfer, or its `all_reduce` where the
/// backend has collectives), and one clip and AdamW update follow there. The loss of every
/// micro-batch is divided by the supervised count of the whole step, as on one device, so the
/// result is the same as one device with the same global batch, up to float summation order.
pub struct Learner {
    /// Taken out only while the optimiser updates it.
    model: Option<Model>,
    optim: manners_model::burn::optim::ModuleOptimizer,
    clip: Option<f64>,
    device: Device,
    /// The other devices of a data-parallel run (autodiff devices).
    replicas: Vec<Device>,
    /// Sum the gradients with Burn's collectives (`all_reduce`) instead of transfers.
    collective: Option<Collective>,
    /// What each device did in the last step (data-parallel runs only).
    last_work: Vec<DeviceWork>,
    /// Gradients of the token-indexed parameters (embedding; untied head) are multiplied by
    /// these masks (`[vocab, 1]` or `[1, vocab]`): only the rows of tokens added for the chat
    /// template learn (LoRA runs).
    token_masks: Vec<(ParamId, Tensor<2>)>,
}

/// Keeps Burn's collective machinery up for the run (dropping it tears it down).
struct Collective {
    /// The devices without autodiff, main first: the group every `all_reduce` names.
    group: Vec<Device>,
    _context: manners_model::burn::tensor::distributed::DistributedContext,
}

/// What one device did in a data-parallel step.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceWork {
    /// Non-padding tokens of the micro-batches it ran.
    pub tokens: usize,
    /// Wall seconds of its forward and backward passes (to its last result).
    pub secs: f64,
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
            replicas: Vec::new(),
            collective: None,
            last_work: Vec::new(),
            token_masks: Vec::new(),
        }
    }

    /// Trains data-parallel over the main device and `replicas` (autodiff devices). With
    /// `collective`, gradients are summed by Burn's `all_reduce` (every device must be on a
    /// backend that has it: CUDA); otherwise by device-to-device transfer to the main device.
    pub fn with_replicas(mut self, replicas: Vec<Device>, collective: bool) -> Self {
        use manners_model::burn::tensor::distributed::{
            DistributedConfig, DistributedContext, ReduceOperation,
        };
        self.replicas = replicas;
        self.collective = (collective && !self.replicas.is_empty()).then(|| {
            let group: Vec<Device> = std::iter::once(&self.device)
                .chain(&self.replicas)
                .map(|d| d.clone().inner())
                .collect();
            let config = DistributedConfig {
                all_reduce_op: ReduceOperation::Sum,
            };
            Collective {
                _context: DistributedContext::init(group.clone(), config),
                group,
            }
        });
        self
    }

    /// How many devices a step runs on.
    pub fn n_devices(&self) -> usize {
        1 + self.replicas.len()
    }

    /// Seeds every device's RNG for a step (dropout): the main device with `seed`, the others
    /// with values derived from it.
    pub fn seed(&self, seed: u64) {
        self.device.seed(seed);
        for (i, d) in self.replicas.iter().enumerate() {
            // A device listed twice shares its RNG with the main one: seeding it again would
            // override the main seed.
            if d != &self.device {
                d.seed(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)));
            }
        }
    }

    /// Per-device work of the last step, main device first (empty on one device).
    pub fn device_work(&self) -> &[DeviceWork] {
        &self.last_work
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
        self.gradients_work(micro).map(|(g, l, _)| (g, l))
    }

    /// [`Learner::gradients_split`] and, on several devices, what each did.
    fn gradients_work(
        &self,
        micro: &[HostBatch],
    ) -> Option<(
        manners_model::burn::optim::GradientsParams,
        StepLoss,
        Vec<DeviceWork>,
    )> {
        let n_sup: usize = micro.iter().map(|b| b.n_supervised).sum();
        if n_sup == 0 {
            return None;
        }
        let (grads, split, mut work) = self.gradients_on_devices(micro, n_sup);
        if self.replicas.is_empty() {
            work.clear(); // per-device work is reported for data-parallel runs only
        }
        Some((self.mask_token_rows(grads), split, work))
    }

    /// Zeroes the gradient rows of tokens that must not learn (LoRA runs that add tokens).
    fn mask_token_rows(
        &self,
        mut grads: manners_model::burn::optim::GradientsParams,
    ) -> manners_model::burn::optim::GradientsParams {
        for (id, mask) in &self.token_masks {
            if let Some(g) = grads.remove::<2>(*id) {
                grads.register::<2>(*id, g * mask.clone());
            }
        }
        grads
    }

    /// Micro-batch `i` runs on device `i % n` (one thread per extra device, the main device on
    /// this thread), then the gradients are summed on the main device. With one device this is
    /// the plain accumulation loop.
    fn gradients_on_devices(
        &self,
        micro: &[HostBatch],
        n_sup: usize,
    ) -> (
        manners_model::burn::optim::GradientsParams,
        StepLoss,
        Vec<DeviceWork>,
    ) {
        use manners_model::burn::optim::GradientsAccumulator;
        let model = self.model();
        let n = self.n_devices();
        let share = |d: usize| -> Vec<(usize, &HostBatch)> {
            micro.iter().enumerate().skip(d).step_by(n).collect()
        };
        let group = self.collective.as_ref().map(|c| c.group.as_slice());
        let normalizer = n_sup as f32;
        let mut shares: Vec<Share> = std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .replicas
                .iter()
                .enumerate()
                .map(|(i, device)| {
                    let batches = share(i + 1);
                    let replica = model.clone();
                    scope.spawn(move || {
                        // A fresh copy of this step's weights on the device, tracked for grads.
                        let replica = replica.fork(device);
                        run_share(&replica, device, &batches, normalizer, group)
                    })
                })
                .collect();
            let mut out = vec![run_share(model, &self.device, &share(0), normalizer, group)];
            for w in workers {
                match w.join() {
                    Ok(s) => out.push(s),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            out
        });
        let work = shares
            .iter()
            .map(|s| DeviceWork {
                tokens: s.tokens,
                secs: s.secs,
            })
            .collect();
        // The NLL sums of the micro-batches, gathered on the main device and added in
        // micro-batch order, as one device adds them.
        let main = self.device.clone().inner();
        let gather = |parts: Vec<(usize, Tensor<1>)>| -> Option<f64> {
            let mut parts: Vec<(usize, Tensor<1>)> = parts
                .into_iter()
                .map(|(i, t)| (i, t.to_device(&main)))
                .collect();
            parts.sort_by_key(|(i, _)| *i);
            let parts: Vec<Tensor<1>> = parts.into_iter().map(|(_, t)| t).collect();
            (!parts.is_empty()).then(|| scalar(Tensor::cat(parts, 0).sum()))
        };
        let nll = gather(shares.iter_mut().flat_map(|s| s.sums.drain(..)).collect()).unwrap_or(0.0);
        let mixed = gather(
            shares
                .iter_mut()
                .flat_map(|s| s.mixed_sums.drain(..))
                .collect(),
        );
        let grads = if self.collective.is_some() {
            // `all_reduce` left the sum on every device: the main device's copy is the result.
            shares.swap_remove(0).grads
        } else {
            let mut acc = GradientsAccumulator::<Model>::new();
            for (i, s) in shares.into_iter().enumerate() {
                let g = if i == 0 {
                    s.grads
                } else {
                    s.grads.to_device(&main, model)
                };
                acc.accumulate(model, g);
            }
            acc.grads()
        };
        let n_mixed: usize = micro.iter().map(|b| b.n_mixed).sum();
        let loss = nll / n_sup as f64;
        let split = match mixed {
            None => StepLoss {
                loss,
                sft: None,
                mixed: None,
            },
            Some(m) => StepLoss {
                loss,
                sft: (n_sup > n_mixed).then(|| (nll - m) / (n_sup - n_mixed) as f64),
                mixed: Some(m / n_mixed as f64),
            },
        };
        (grads, split, work)
    }

    /// Forward, backward, clip and AdamW update over the micro-batches of one step. `None` when
    /// the step has no supervised target. A non-finite loss or gradient leaves the weights and
    /// the optimiser state unchanged.
    pub fn step(&mut self, micro: &[HostBatch], lr: f64) -> Option<StepResult> {
        let device = self.device.clone();
        manners_model::fused::on_compute_threads(&device, || self.step_here(micro, lr))
    }

    fn step_here(&mut self, micro: &[HostBatch], lr: f64) -> Option<StepResult> {
        let (grads, split, work) = self.gradients_work(micro)?;
        self.last_work = work;
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

/// One device's part of a data-parallel step.
struct Share {
    grads: manners_model::burn::optim::GradientsParams,
    /// `(micro-batch index, NLL sum)` of each micro-batch with a supervised target.
    sums: Vec<(usize, Tensor<1>)>,
    /// The same for the mixed raw text's targets.
    mixed_sums: Vec<(usize, Tensor<1>)>,
    tokens: usize,
    secs: f64,
}

/// Forward and backward of `batches` on `device` (where `model` lives), gradients accumulated;
/// with a collective `group`, the gradients are then all-reduced (summed) across it, every
/// device calling in the same parameter order.
fn run_share(
    model: &Model,
    device: &Device,
    batches: &[(usize, &HostBatch)],
    normalizer: f32,
    group: Option<&[Device]>,
) -> Share {
    use manners_model::burn::optim::{GradientsAccumulator, GradientsParams};
    let t0 = std::time::Instant::now();
    let mut acc = GradientsAccumulator::<Model>::new();
    let (mut sums, mut mixed_sums) = (Vec::new(), Vec::new());
    let mut tokens = 0;
    for &(i, hb) in batches {
        tokens += hb.n_tokens;
        if hb.n_supervised == 0 {
            continue;
        }
        let db = DeviceBatch::from_host(hb, device);
        let (surrogate, sum, mixed) = loss_for_backward_split(model, &db, normalizer);
        mixed_sums.extend(mixed.map(|m| (i, m)));
        acc.accumulate(
            model,
            GradientsParams::from_grads(surrogate.backward(), model),
        );
        sums.push((i, sum));
    }
    let mut grads = if sums.is_empty() {
        GradientsParams::new()
    } else {
        acc.grads()
    };
    if let Some(group) = group {
        grads = crate::clip::all_reduce_sum(model, grads, group);
    }
    // Wait for the device so the time is its work, not the time to queue it.
    let _ = device.sync();
    Share {
        grads,
        sums,
        mixed_sums,
        tokens,
        secs: t0.elapsed().as_secs_f64(),
    }
}
