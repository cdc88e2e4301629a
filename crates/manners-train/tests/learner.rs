//! The learner against PyTorch, and the invariances the SFT loss must have.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;

use manners_data::{BatchConfig, Encoded, HostBatch, batches};
use manners_model::burn::module::{Module, ModuleVisitor, Param};
use manners_model::burn::optim::GradientsParams;
use manners_model::burn::prelude::*;
use manners_model::{BackendKind, Model, load_model_dir, select_device};
use manners_train::{Learner, TrainConfig, build_burn_optimizer, build_optimizer};

fn fixture_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manners-model/tests/fixtures/tiny-gpt2")
}

fn flex_autodiff() -> Device {
    select_device(BackendKind::Flex).unwrap().device.autodiff()
}

fn learner(clip: Option<f64>, wd: f64) -> Learner {
    let dev = flex_autodiff();
    let m = load_model_dir(&fixture_model(), &dev).unwrap();
    let cfg = TrainConfig {
        weight_decay: wd,
        ..Default::default()
    };
    let optim = build_optimizer(&cfg, &m.model);
    Learner::new(m.model, optim, clip, dev)
}

fn rows(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// A batch with explicit targets and mask (every row one document starting at position 0).
fn host_batch(inputs: &[Vec<f64>], targets: &[Vec<f64>], mask: &[Vec<f64>]) -> HostBatch {
    let (b, t) = (inputs.len(), inputs[0].len());
    let flat = |v: &[Vec<f64>]| v.iter().flatten().map(|&x| x as u32).collect::<Vec<u32>>();
    let loss_mask: Vec<bool> = mask.iter().flatten().map(|&m| m > 0.5).collect();
    HostBatch {
        batch: b,
        seq_len: t,
        inputs: flat(inputs),
        targets: flat(targets),
        n_supervised: loss_mask.iter().filter(|&&m| m).count(),
        loss_mask,
        positions: (0..b).flat_map(|_| 0..t as u32).collect(),
        doc_ids: vec![1; b * t],
        mixed: vec![false; b * t],
        n_mixed: 0,
        n_tokens: b * t,
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn matches_pytorch_loss_grad_norm_and_three_adamw_steps() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sft-step-reference.json");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let batch = host_batch(&rows(&r["inputs"]), &rows(&r["targets"]), &rows(&r["mask"]));
    let mut l = learner(
        Some(r["clip"].as_f64().unwrap()),
        r["weight_decay"].as_f64().unwrap(),
    );
    let lr = r["lr"].as_f64().unwrap();
    for i in 0..3 {
        let s = l.step(std::slice::from_ref(&batch), lr).unwrap();
        let want_loss = r["losses"][i].as_f64().unwrap();
        let want_norm = r["grad_norms"][i].as_f64().unwrap();
        eprintln!(
            "step {i}: loss {} vs {want_loss}, norm {} vs {want_norm}",
            s.loss, s.grad_norm
        );
        assert!(
            rel(s.loss, want_loss) < 1e-4,
            "step {i} loss {} vs {want_loss}",
            s.loss
        );
        assert!(
            rel(s.grad_norm, want_norm) < 1e-4,
            "step {i} grad norm {} vs {want_norm}",
            s.grad_norm
        );
        assert!(s.applied);
    }
    let (_, after) = l.gradients(std::slice::from_ref(&batch)).unwrap();
    let want = r["loss_after_3_steps"].as_f64().unwrap();
    assert!(
        rel(after, want) < 1e-4,
        "loss after 3 steps {after} vs {want}"
    );
}

/// Eight examples of different lengths and supervised spans.
fn examples() -> Vec<Encoded> {
    let mut out = Vec::new();
    let mut seed = 11u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    for i in 0..8 {
        let n = 6 + (i * 5) % 17;
        let ids: Vec<u32> = (0..n).map(|_| 1 + next() % 499).collect();
        let start = 1 + i % 4;
        let loss_mask: Vec<bool> = (0..n).map(|j| j >= start && (j + i) % 5 != 0).collect();
        out.push(Encoded {
            ids,
            loss_mask,
            mixed: false,
        });
    }
    out
}

struct Flatten<'a> {
    grads: &'a GradientsParams,
    out: Vec<f32>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            self.out
                .extend(g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
        }
    }
}

fn flat_grads(model: &Model, grads: &GradientsParams) -> Vec<f32> {
    let mut f = Flatten {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut f);
    f.out
}

fn split(rows_per_micro: usize, pack: bool) -> Vec<HostBatch> {
    let cfg = BatchConfig {
        batch_size: rows_per_micro,
        seq_len: 24,
        pack,
        shuffle: false,
        ..Default::default()
    };
    batches(&examples(), &cfg).unwrap()
}

#[test]
fn gradient_accumulation_is_token_normalised() {
    let l = learner(None, 0.0);
    let (g_8x1, loss_8x1) = l.gradients(&split(8, false)).unwrap();
    let reference = flat_grads(l.model(), &g_8x1);
    for (rows, micro) in [(2, 4), (1, 8)] {
        let mb = split(rows, false);
        assert_eq!(mb.len(), micro);
        let (g, loss) = l.gradients(&mb).unwrap();
        let v = flat_grads(l.model(), &g);
        let diff = v
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = reference.iter().map(|x| x.abs()).fold(0f32, f32::max);
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{rows}x{micro}: max grad diff {diff:e}"
        );
        assert!(
            rel(loss, loss_8x1) < 1e-5,
            "{rows}x{micro}: loss {loss} vs {loss_8x1}"
        );
    }
}

#[test]
fn packed_and_unpacked_batches_give_the_same_loss_and_gradient() {
    let l = learner(None, 0.0);
    let unpacked = split(8, false);
    let packed = split(8, true);
    assert!(
        packed[0].batch < unpacked[0].batch,
        "packing should need fewer rows"
    );
    let (gu, lu) = l.gradients(&unpacked).unwrap();
    let (gp, lp) = l.gradients(&packed).unwrap();
    assert!(rel(lp, lu) < 1e-5, "packed {lp} vs unpacked {lu}");
    let (a, b) = (flat_grads(l.model(), &gu), flat_grads(l.model(), &gp));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "max grad diff {diff:e}");
}

#[test]
fn masked_mean_is_not_the_plain_mean() {
    // The same batch with every position supervised gives a different loss: the mask matters.
    let l = learner(None, 0.0);
    let mut b = split(8, false).remove(0);
    let (_, masked) = l.gradients(std::slice::from_ref(&b)).unwrap();
    for i in 0..b.loss_mask.len() {
        b.loss_mask[i] = b.doc_ids[i] != 0;
    }
    b.n_supervised = b.loss_mask.iter().filter(|&&m| m).count();
    let (_, all) = l.gradients(std::slice::from_ref(&b)).unwrap();
    assert!((masked - all).abs() > 1e-3, "{masked} vs {all}");
}

#[test]
fn non_finite_steps_leave_the_weights_alone() {
    let b = split(8, false).remove(0);
    let (mut m, o) = learner(Some(1.0), 0.0).into_parts();
    // Poison the final LayerNorm gain: every logit, hence the loss, becomes NaN.
    let Model::Gpt2(g) = &mut m else {
        panic!("the fixture is a GPT-2")
    };
    g.ln_f.gamma = Param::from_tensor(g.ln_f.gamma.val().mul_scalar(f32::NAN).detach());
    let mut l = Learner::new(m, o, Some(1.0), flex_autodiff());
    let bits = |l: &Learner| -> Vec<u32> {
        let w = l.model().as_gpt2().unwrap().h[0]
            .attn
            .c_attn
            .weight
            .val()
            .into_data();
        w.try_to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    let before = bits(&l);
    let r = l.step(std::slice::from_ref(&b), 1e-3).unwrap();
    assert!(!r.applied, "a NaN step must not be applied");
    assert!(r.loss.is_nan());
    assert_eq!(bits(&l), before, "weights changed on a skipped step");
}

#[test]
fn training_on_wgpu_matches_flex() {
    let Some(wgpu) = manners_model::wgpu_for_tests() else {
        return;
    };
    let wgpu = wgpu.device.autodiff();
    let batch = split(8, true);
    let run = |dev: Device| -> Vec<f64> {
        let m = load_model_dir(&fixture_model(), &dev).unwrap();
        let cfg = TrainConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let optim = build_optimizer(&cfg, &m.model);
        let mut l = Learner::new(m.model, optim, Some(1.0), dev);
        (0..3).map(|_| l.step(&batch, 1e-2).unwrap().loss).collect()
    };
    let (a, b) = (run(flex_autodiff()), run(wgpu));
    for (x, y) in a.iter().zip(&b) {
        assert!(rel(*x, *y) < 1e-4, "flex {a:?} vs wgpu {b:?}");
    }
}

struct Values(Vec<f32>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let v = p.val().into_data().convert::<f32>();
        self.0.extend(v.try_to_vec::<f32>().unwrap());
    }
}

fn values(model: &Model) -> Vec<f32> {
    let mut v = Values(Vec::new());
    model.visit(&mut v);
    v.0
}

#[test]
fn fused_adamw_matches_burns_adamw_and_resumes_from_its_state() {
    let batch = split(8, true);
    let (lr, wd, clip) = (1e-2, 0.1, Some(1.0));
    let cfg = TrainConfig {
        weight_decay: wd,
        ..Default::default()
    };
    // flex takes the fused one-pass update; ndarray falls back to Burn's AdamW itself.
    for kind in [BackendKind::Flex, BackendKind::Ndarray] {
        let dev = select_device(kind).unwrap().device.autodiff();
        let fresh = || load_model_dir(&fixture_model(), &dev).unwrap().model;
        let (a, b) = (fresh(), fresh());
        let (oa, ob) = (build_optimizer(&cfg, &a), build_burn_optimizer(&cfg, &b));
        let mut ours = Learner::new(a, oa, clip, dev.clone());
        let mut burns = Learner::new(b, ob, clip, dev.clone());
        let start = values(ours.model());
        let mut resumed = None;
        for step in 0..3 {
            if step == 2 {
                // Burn's optimiser state after two steps, loaded into ours, steps on alike.
                let bytes = burns.optim().into_bytes().unwrap();
                let optim = build_optimizer(&cfg, burns.model())
                    .from_bytes(bytes)
                    .unwrap();
                resumed = Some(Learner::new(
                    burns.model().clone(),
                    optim,
                    clip,
                    dev.clone(),
                ));
            }
            let a = ours.step(&batch, lr).unwrap();
            let b = burns.step(&batch, lr).unwrap();
            assert!(a.applied && b.applied);
            assert!(
                rel(a.loss, b.loss) < 1e-5,
                "{kind:?} step {step}: {a:?} vs {b:?}"
            );
        }
        let mut resumed = resumed.unwrap();
        resumed.step(&batch, lr).unwrap();
        let (a, b, c) = (
            values(ours.model()),
            values(burns.model()),
            values(resumed.model()),
        );
        let moved = a.iter().zip(&start).filter(|(x, y)| x != y).count();
        assert!(
            moved > a.len() / 2,
            "{kind:?}: only {moved} of {} moved",
            a.len()
        );
        for (what, x) in [("fresh", &a), ("resumed", &c)] {
            let worst = x
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{kind:?} {what}: worst difference {worst:e}");
        }
    }
}

/// `text_loss` and `response_loss` against the mean negative log-likelihood computed here by
/// hand from the model's logits (f64 log-sum-exp), on the tokens their definitions name.
#[test]
fn eval_losses_match_a_hand_computed_mean() {
    use manners_data::{ChatTemplate, Conversation, MaskMode, Message, SpecialTokens};
    let dev = select_device(BackendKind::Flex).unwrap().device;
    let m = load_model_dir(&fixture_model(), &dev).unwrap();
    let v = m.model.vocab_size();
    // Sum over positions t of -log p(ids[t + 1] | ids[..= t]), and how many.
    let nll = |ids: &[u32], at: &[usize]| -> (f64, usize) {
        let input: Vec<i64> = ids[..ids.len() - 1].iter().map(|&x| i64::from(x)).collect();
        let n = input.len();
        let logits = m
            .model
            .forward(Tensor::<2, Int>::from_data(
                TensorData::new(input, [1, n]),
                &dev,
            ))
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        let mut sum = 0.0;
        for &t in at {
            let row = &logits[t * v..(t + 1) * v];
            let max = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            sum += lse - row[ids[t + 1] as usize] as f64;
        }
        (sum, at.len())
    };

    // Raw text: the documents joined by EOS, cut into rows of context + 1 tokens that share
    // their edge token; every next token counts, the incomplete tail row does not.
    let docs: Vec<String> = (0..6)
        .map(|i| {
            format!("The capital of country number {i} is a city with a long name and a river.")
        })
        .collect();
    let mut stream = Vec::new();
    for d in &docs {
        stream.extend(m.tokenizer.encode(d).unwrap());
        stream.extend(m.tokenizer.eos_id());
    }
    let seq = m.model.n_positions();
    let (mut sum, mut n, mut start) = (0.0, 0, 0);
    while start + seq < stream.len() {
        let (s, c) = nll(&stream[start..=start + seq], &(0..seq).collect::<Vec<_>>());
        sum += s;
        n += c;
        start += seq;
    }
    assert!(n >= 2 * seq, "the documents must fill two rows ({n})");
    let want = sum / n as f64;
    let got = manners_train::eval::text_loss(&m.model, &m.tokenizer, &docs).unwrap();
    assert!(
        (got - want).abs() < 1e-5 * want,
        "text_loss {got}, by hand {want}"
    );

    // Responses: the assistant tokens of each conversation (the plain template, EOS included),
    // pooled over all conversations (a mean per token, not per conversation).
    let specials = SpecialTokens::from_roles(None, Some("<|endoftext|>"), None);
    let template = ChatTemplate::builtin("plain", &specials).unwrap();
    let convs: Vec<Conversation> = [("Hi?", "Hello there."), ("Two plus two?", "Four, I think.")]
        .iter()
        .map(|(q, a)| Conversation::new(vec![Message::user(*q), Message::assistant(*a)]))
        .collect();
    let (mut sum, mut n) = (0.0, 0);
    for c in &convs {
        let e = template
            .encode(c, m.tokenizer.hf(), MaskMode::Assistant)
            .unwrap();
        let at: Vec<usize> = (0..e.ids.len() - 1)
            .filter(|&t| e.loss_mask[t + 1])
            .collect();
        let (s, k) = nll(&e.ids, &at);
        sum += s;
        n += k;
    }
    let want = sum / n as f64;
    let got =
        manners_train::eval::response_loss(&m.model, &m.tokenizer, &template, &convs).unwrap();
    assert!(
        (got - want).abs() < 1e-5 * want,
        "response_loss {got}, by hand {want}"
    );
}

/// With raw text mixed in, a step reports the conversations' loss and the raw text's apart,
/// each equal to the mean loss of those examples alone, packed together or not; the objective
/// stays the mean over all targets.
#[test]
fn a_step_splits_the_loss_of_conversations_and_mixed_text() {
    let l = learner(None, 0.0);
    let mut all = examples();
    for e in all.iter_mut().skip(5) {
        e.mixed = true;
        e.loss_mask = vec![true; e.ids.len()];
    }
    let (sft, mixed): (Vec<Encoded>, Vec<Encoded>) = all.iter().cloned().partition(|e| !e.mixed);
    let m = l.model().valid();
    let want_sft = manners_train::eval::mean_loss(&m, &sft, 8).unwrap();
    let want_mixed = manners_train::eval::mean_loss(&m, &mixed, 8).unwrap();
    let want_all = manners_train::eval::mean_loss(&m, &all, 8).unwrap();
    for pack in [false, true] {
        let cfg = BatchConfig {
            batch_size: 3,
            seq_len: 24,
            pack,
            shuffle: false,
            ..Default::default()
        };
        let micro = batches(&all, &cfg).unwrap();
        assert!(micro.iter().map(|b| b.n_mixed).sum::<usize>() > 0);
        let (_, got) = l.gradients_split(&micro).unwrap();
        assert!(rel(got.loss, want_all) < 1e-5, "{got:?} vs {want_all}");
        assert!(
            rel(got.sft.unwrap(), want_sft) < 1e-5,
            "{got:?} vs {want_sft}"
        );
        assert!(
            rel(got.mixed.unwrap(), want_mixed) < 1e-5,
            "{got:?} vs {want_mixed}"
        );
    }
    // Without mixed text there is nothing to split.
    let (_, plain) = l.gradients_split(&split(8, false)).unwrap();
    assert_eq!((plain.sft, plain.mixed), (None, None));
}

/// Runs `steps` optimiser steps over `micro` on `main` (+ `replicas`, data-parallel) and
/// returns the losses, the final weights and the per-device work of the last step.
fn parallel_run(
    micro: &[HostBatch],
    main: Device,
    replicas: Vec<Device>,
    steps: usize,
) -> (Vec<f64>, Vec<f32>, Vec<manners_train::DeviceWork>) {
    let m = load_model_dir(&fixture_model(), &main).unwrap();
    let cfg = TrainConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let optim = build_optimizer(&cfg, &m.model);
    let mut l = Learner::new(m.model, optim, Some(1.0), main);
    if !replicas.is_empty() {
        l = l.with_replicas(replicas, false);
    }
    let losses = (0..steps)
        .map(|_| {
            let r = l.step(micro, 1e-3).unwrap();
            assert!(r.applied);
            r.loss
        })
        .collect();
    let work = l.device_work().to_vec();
    (losses, values(l.model()), work)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    for (x, y) in a.iter().zip(b) {
        assert!(rel(*y, *x) < tol, "{what}: losses {a:?} vs {b:?}");
    }
}

/// Data parallelism over two devices gives the losses and weights of one device with the same
/// global batch: two wgpu devices (on a machine without a GPU, Burn's default and CPU wgpu
/// devices are two devices with their own memory and queues on Mesa's software driver).
///
/// With one micro-batch per device the gradients are summed in the order one device sums them,
/// so only the kernels could differ. With two per device each device sums its own first (one
/// transfer per device, not per micro-batch): the losses agree to float rounding, but the
/// weights need not agree to 1e-5, since AdamW divides by the gradient's running RMS and
/// so turns rounding noise in near-zero gradient entries into updates of up to ~lr.
#[test]
fn two_wgpu_devices_train_like_one() {
    let Some(one) = manners_model::wgpu_for_tests() else {
        return;
    };
    let set = manners_model::parse_devices("wgpu:default,wgpu:cpu", BackendKind::Wgpu).unwrap();
    assert_eq!(set.len(), 2);
    assert_ne!(set.devices[0].device, set.devices[1].device);
    let (a, b) = (set.devices[0].device.clone(), set.devices[1].device.clone());
    let micro = split(4, false);
    assert_eq!(micro.len(), 2);
    let single = parallel_run(&micro, one.device.clone().autodiff(), Vec::new(), 5);
    let pair = parallel_run(&micro, a.clone().autodiff(), vec![b.clone().autodiff()], 5);
    eprintln!("one device: {:?}\ntwo devices: {:?}", single.0, pair.0);
    assert_close("wgpu x2", &single.0, &pair.0, 1e-5);
    // The two devices may pick different kernels (cubecl autotunes each device by timing), so
    // the gradients can differ in their last bits; AdamW divides by each entry's running RMS,
    // which turns that noise into updates of up to ~lr in entries whose gradient is near zero
    // (seen on a 2-core Xeon with lavapipe: up to 2.4e-4 after 5 steps at lr 1e-3, 60 of the
    // 43,904 weights beyond 1e-5; the one-device run itself varied between runs there). So the
    // weights must agree to 1e-5 in all but 1% and to lr everywhere; a lost or doubled gradient
    // share would move the losses above and most of the weights.
    let d = max_abs_diff(&single.1, &pair.1);
    let off = single
        .1
        .iter()
        .zip(&pair.1)
        .filter(|(x, y)| (*x - *y).abs() > 1e-5)
        .count();
    let share = off as f64 / single.1.len() as f64;
    eprintln!("after 5 steps: max weight difference {d:e}, {off} weights beyond 1e-5 ({share:e})");
    assert!(d < 1e-3, "weights differ by {d:e}");
    assert!(
        share < 1e-2,
        "{off} of {} weights differ by more than 1e-5",
        single.1.len()
    );
    // Each device ran one of the two micro-batches.
    assert_eq!(pair.2.len(), 2);
    for (w, b) in pair.2.iter().zip(&micro) {
        assert_eq!(w.tokens, b.n_tokens);
        assert!(w.secs > 0.0);
    }
    assert!(single.2.is_empty());

    // Two micro-batches per device: the losses still match.
    let micro = split(2, false);
    let single = parallel_run(&micro, one.device.autodiff(), Vec::new(), 2);
    let pair = parallel_run(&micro, a.autodiff(), vec![b.autodiff()], 2);
    assert_close("wgpu x2, 2 micro-batches each", &single.0, &pair.0, 1e-5);
}

/// The same on the CPU backends, run on every machine: flex twice (two threads on one
/// device) is bit-for-bit one device; flex beside ndarray (two backends, gradients cross by
/// Burn's transfer) agrees to their kernels' rounding.
#[test]
fn data_parallel_on_cpu_devices_trains_like_one_device() {
    let flex = flex_autodiff();
    #[allow(deprecated)]
    let ndarray = Device::ndarray().autodiff();
    let micro = split(4, false);
    let single = parallel_run(&micro, flex.clone(), Vec::new(), 3);
    let twice = parallel_run(&micro, flex.clone(), vec![flex.clone()], 3);
    assert_eq!(single.0, twice.0, "flex x2: losses");
    assert_eq!(max_abs_diff(&single.1, &twice.1), 0.0, "flex x2: weights");
    let mixed = parallel_run(&micro, flex, vec![ndarray], 3);
    assert_close("flex + ndarray", &single.0, &mixed.0, 1e-5);
    let d = max_abs_diff(&single.1, &mixed.1);
    eprintln!("flex + ndarray: max weight difference after 3 steps {d:e}");
}

/// Devices on another machine, through Burn's remote backend: two flex devices, each served by
/// `serve_devices` on 127.0.0.1 (as `manners serve-device` does). Two of them train like one of
/// them with the same global batch; against a local flex device the losses agree (the weights
/// drift by ~5e-4, as flex beside ndarray: manners' fused flex kernels run only on a local flex
/// device, a remote one runs the composite operations). Only in a build with the `remote`
/// feature (`cargo test --release --workspace --features manners-train/remote --test learner --
/// remote`).
#[cfg(feature = "remote")]
#[test]
fn two_remote_devices_on_localhost_train_like_one() {
    let serve = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || manners_model::serve_devices(vec![Device::flex()], listener));
        format!("ws://127.0.0.1:{port}")
    };
    let spec = format!("{},{}", serve(), serve());
    let set = manners_model::parse_devices(&spec, BackendKind::Auto).unwrap();
    assert_eq!(set.len(), 2);
    assert!(set.devices.iter().all(|d| d.backend == BackendKind::Remote));
    let (a, b) = (set.devices[0].device.clone(), set.devices[1].device.clone());
    let micro = split(4, false);
    let one = parallel_run(&micro, a.clone().autodiff(), Vec::new(), 3);
    let two = parallel_run(&micro, a.autodiff(), vec![b.autodiff()], 3);
    eprintln!("remote: {:?}\nremote x2: {:?}", one.0, two.0);
    assert_close("remote x2", &one.0, &two.0, 1e-6);
    let d = max_abs_diff(&one.1, &two.1);
    eprintln!("max weight difference after 3 steps: {d:e}");
    assert!(d < 1e-5, "weights differ by {d:e}");
    let local = parallel_run(&micro, flex_autodiff(), Vec::new(), 3);
    assert_close("remote vs local", &local.0, &two.0, 1e-5);
}
