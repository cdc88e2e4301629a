//! LoRA on the tiny fixture: only adapters (and added-token rows) train, the loss falls, merged
//! weights compute the same function, adapters round-trip through the PEFT layout and
//! checkpoints.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;

use manners_data::HostBatch;
use manners_model::burn::module::{Module, Param};
use manners_model::burn::prelude::*;
use manners_model::{BackendKind, Model, load_model_dir, select_device};
use manners_train::lora::{self, AdapterConfig};
use manners_train::{Learner, LoraConfig, TrainConfig, build_optimizer};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manners-model/tests/fixtures/tiny-gpt2")
}

fn dev() -> Device {
    select_device(BackendKind::Flex).unwrap().device.autodiff()
}

fn batch() -> HostBatch {
    let (b, t) = (4, 12);
    let n = b * t;
    HostBatch {
        batch: b,
        seq_len: t,
        inputs: (0..n).map(|i| (i * 37 % 499) as u32 + 1).collect(),
        // Targets include the "added" token 501 so its row gets a gradient through the head.
        targets: (0..n)
            .map(|i| {
                if i % 5 == 0 {
                    501
                } else {
                    (i * 11 % 499) as u32 + 1
                }
            })
            .collect(),
        loss_mask: (0..n).map(|i| i % 3 != 0).collect(),
        positions: (0..b).flat_map(|_| 0..t as u32).collect(),
        doc_ids: vec![1; n],
        mixed: vec![false; n],
        n_mixed: 0,
        n_supervised: (0..n).filter(|i| i % 3 != 0).count(),
        n_tokens: n,
    }
}

fn snapshot(m: &Model) -> Vec<(String, Vec<f32>)> {
    // Every base tensor, by name (the adapters are not base tensors).
    let m = m.as_gpt2().unwrap();
    let mut v = vec![
        (
            "wte".to_string(),
            m.wte.weight.base().into_data().try_to_vec::<f32>().unwrap(),
        ),
        (
            "wpe".to_string(),
            m.wpe.weight.base().into_data().try_to_vec::<f32>().unwrap(),
        ),
        (
            "ln_f".to_string(),
            m.ln_f.gamma.base().into_data().try_to_vec::<f32>().unwrap(),
        ),
    ];
    for (i, b) in m.h.iter().enumerate() {
        v.push((
            format!("h.{i}.c_attn"),
            b.attn
                .c_attn
                .weight
                .base()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        ));
        v.push((
            format!("h.{i}.c_attn.bias"),
            b.attn
                .c_attn
                .bias
                .as_ref()
                .unwrap()
                .base()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        ));
        v.push((
            format!("h.{i}.mlp.c_fc"),
            b.mlp
                .c_fc
                .weight
                .base()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        ));
    }
    v
}

fn logits(m: &Model, dev: &Device) -> Vec<f32> {
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new((1..=20i64).collect::<Vec<_>>(), [1, 20]),
        dev,
    );
    m.forward(ids)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn only_adapters_and_added_rows_train_and_merging_is_exact() {
    let dev = dev();
    let base = load_model_dir(&fixture(), &dev).unwrap().model;
    let cfg = LoraConfig::default();
    let model = lora::apply(base, &cfg).unwrap();
    assert_eq!(
        model.adapters().len(),
        2 * 4,
        "c_attn, attn.c_proj, c_fc, mlp.c_proj in 2 layers"
    );
    // The chat tokens (ids 500, 501 in this tokenizer) train too: unfreeze wte, mask its rows.
    let model = model.unfreeze_token_params();
    // By hand, rank 8 on GPT-2's Conv1D [in, out] weights (A: in x 8, B: 8 x out), d = 32:
    // c_attn 32->96, attn.c_proj 32->32, c_fc 32->128, mlp.c_proj 128->32 per layer:
    // 8 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32)) = 4096 per layer, 2 layers = 8192,
    // plus the 2 added token rows of the tied embedding: 2 * 32 = 64.
    let trainable = lora::trainable_params(&model, 2);
    assert_eq!(trainable, 8192 + 64, "of {}", model.num_params());
    assert!((trainable as usize) < model.num_params() / 2);

    let before = snapshot(&model);
    let tc = TrainConfig::default();
    let optim = build_optimizer(&tc, &model);
    let mut l =
        Learner::new(model, optim, Some(1.0), dev.clone()).with_trainable_token_rows(&[500, 501]);
    let b = batch();
    let first = l.step(std::slice::from_ref(&b), 1e-2).unwrap().loss;
    let mut last = first;
    for _ in 0..30 {
        last = l.step(std::slice::from_ref(&b), 1e-2).unwrap().loss;
    }
    assert!(last < first * 0.7, "loss {first} -> {last}");
    let model = l.into_parts().0;
    let after = snapshot(&model);
    for ((name, x), (_, y)) in before.iter().zip(&after) {
        if name == "wte" {
            let d = 32;
            for r in 0..512 {
                let changed = x[r * d..(r + 1) * d] != y[r * d..(r + 1) * d];
                assert_eq!(
                    changed,
                    r == 500 || r == 501,
                    "wte row {r} changed={changed}"
                );
            }
        } else {
            assert!(x == y, "{name} changed under LoRA");
        }
    }
    // The adapters did learn.
    assert!(
        model
            .adapters()
            .iter()
            .any(|(_, a)| a.b.val().abs().max().into_scalar::<f32>() > 0.0)
    );

    // Merged weights compute the same logits (1e-5).
    let adapted = model.valid();
    let plain = Device::flex();
    let want = logits(&adapted, &plain);
    let merged = lora::merge(adapted.clone());
    assert!(merged.adapters().is_empty());
    let got = logits(&merged, &plain);
    let diff = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "merged vs adapted: {diff:e}");

    // Adapters alone, PEFT layout, back onto a fresh base: same logits.
    let tmp = tempfile::tempdir().unwrap();
    let acfg = AdapterConfig {
        peft_type: "LORA".into(),
        task_type: "CAUSAL_LM".into(),
        r: cfg.rank,
        lora_alpha: cfg.alpha,
        lora_dropout: 0.0,
        target_modules: lora::targets(&adapted, &cfg),
        fan_in_fan_out: adapted.fan_in_fan_out(),
        bias: "none".into(),
        base_model_name_or_path: "tiny".into(),
        base_model_fingerprint: lora::fingerprint_file(&fixture().join("model.safetensors"))
            .unwrap(),
        added_tokens: vec![("<|im_start|>".into(), 500), ("<|im_end|>".into(), 501)],
    };
    let rows = lora::AddedRows::of(&adapted, 500, 501);
    lora::save_adapter_dir(tmp.path(), &adapted, &acfg, Some(rows)).unwrap();
    let size = std::fs::metadata(tmp.path().join(lora::ADAPTER_WEIGHTS))
        .unwrap()
        .len();
    assert!(
        size < std::fs::metadata(fixture().join("model.safetensors"))
            .unwrap()
            .len()
            / 2
    );
    let fresh = load_model_dir(&fixture(), &plain).unwrap().model;
    let (loaded, back) = lora::load_adapter_dir(tmp.path(), fresh).unwrap();
    assert_eq!(back, acfg);
    let got = logits(&loaded, &plain);
    let diff = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-6, "loaded adapters: {diff:e}");
}

#[test]
fn adapted_models_round_trip_through_burnpack_checkpoints() {
    let dev = dev();
    let base = load_model_dir(&fixture(), &dev).unwrap().model;
    let model = lora::apply(base, &LoraConfig::default()).unwrap();
    let tc = TrainConfig::default();
    let optim = build_optimizer(&tc, &model);
    let mut l = Learner::new(model, optim, Some(1.0), dev.clone());
    for _ in 0..3 {
        l.step(std::slice::from_ref(&batch()), 1e-2);
    }
    let model = l.into_parts().0;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("m.bpk");
    model.clone().save_file(&p).unwrap();
    // A fresh base with fresh adapters, then the record.
    let fresh = lora::apply(
        load_model_dir(&fixture(), &dev).unwrap().model,
        &LoraConfig::default(),
    )
    .unwrap();
    let loaded = fresh.try_load_file(&p).unwrap();
    let plain = Device::flex();
    assert_eq!(
        logits(&model.valid(), &plain),
        logits(&loaded.valid(), &plain)
    );
    let _ = Param::from_tensor(Tensor::<1>::zeros([1], &plain));
}
