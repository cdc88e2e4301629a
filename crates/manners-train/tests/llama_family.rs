//! The learner on the Llama-family fixtures (`llama`, `qwen2`, `qwen3`) against PyTorch: masked
//! SFT loss, global gradient norm and three AdamW steps on every backend present; LoRA on all
//! seven projections (with an untied head's added-token rows) merges exactly and round-trips
//! through the PEFT layout.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;

use manners_data::HostBatch;
use manners_model::burn::prelude::*;
use manners_model::{BackendKind, Model, load_model_dir, select_device};
use manners_train::lora::{self, AdapterConfig};
use manners_train::{Learner, LoraConfig, TrainConfig, build_optimizer};

const FAMILIES: [&str; 3] = ["llama", "qwen2", "qwen3"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manners-model/tests/fixtures")
}

fn reference(family: &str) -> serde_json::Value {
    let p = fixtures().join("tiny-llama-family-reference.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v[family]["sft"].clone()
}

/// Autodiff devices: flex and ndarray always; wgpu when an adapter exists.
fn devices() -> Vec<(&'static str, Device)> {
    let mut v = vec![
        ("flex", select_device(BackendKind::Flex).unwrap().device),
        (
            "ndarray",
            select_device(BackendKind::Ndarray).unwrap().device,
        ),
    ];
    if let Some(c) = manners_model::wgpu_for_tests() {
        v.push(("wgpu", c.device));
    }
    v.into_iter().map(|(n, d)| (n, d.autodiff())).collect()
}

fn host_batch(r: &serde_json::Value) -> HostBatch {
    let grid = |k: &str| -> Vec<Vec<f64>> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let (inputs, targets, mask) = (grid("inputs"), grid("targets"), grid("mask"));
    let (b, t) = (inputs.len(), inputs[0].len());
    let flat = |v: &[Vec<f64>]| v.iter().flatten().map(|&x| x as u32).collect::<Vec<u32>>();
    let loss_mask: Vec<bool> = mask.iter().flatten().map(|&m| m > 0.5).collect();
    HostBatch {
        batch: b,
        seq_len: t,
        inputs: flat(&inputs),
        targets: flat(&targets),
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
fn sft_steps_match_pytorch_on_every_backend() {
    for family in FAMILIES {
        let r = reference(family);
        let batch = host_batch(&r);
        let lr = r["lr"].as_f64().unwrap();
        for (name, dev) in devices() {
            let m = load_model_dir(&fixtures().join(format!("tiny-{family}")), &dev).unwrap();
            let cfg = TrainConfig {
                weight_decay: r["weight_decay"].as_f64().unwrap(),
                ..Default::default()
            };
            let optim = build_optimizer(&cfg, &m.model);
            let mut l = Learner::new(m.model, optim, r["clip"].as_f64(), dev);
            for i in 0..3 {
                let s = l.step(std::slice::from_ref(&batch), lr).unwrap();
                let (wl, wn) = (
                    r["losses"][i].as_f64().unwrap(),
                    r["grad_norms"][i].as_f64().unwrap(),
                );
                eprintln!(
                    "{family} on {name}, step {i}: loss {} vs {wl}, norm {} vs {wn}",
                    s.loss, s.grad_norm
                );
                assert!(
                    rel(s.loss, wl) < 1e-4,
                    "{family} on {name} step {i} loss {} vs {wl}",
                    s.loss
                );
                assert!(
                    rel(s.grad_norm, wn) < 1e-4,
                    "{family} on {name} step {i} norm {} vs {wn}",
                    s.grad_norm
                );
                assert!(s.applied);
            }
            let (_, after) = l.gradients(std::slice::from_ref(&batch)).unwrap();
            let want = r["loss_after_3_steps"].as_f64().unwrap();
            assert!(
                rel(after, want) < 1e-4,
                "{family} on {name}: loss after 3 steps {after} vs {want}"
            );
        }
    }
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

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn lora_on_all_seven_projections_trains_merges_and_reloads() {
    let r = reference("llama");
    let batch = host_batch(&r);
    let dev = select_device(BackendKind::Flex).unwrap().device.autodiff();
    let dir = fixtures().join("tiny-llama");
    let base = load_model_dir(&dir, &dev).unwrap().model;
    let cfg = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: Vec::new(), // every projection the model has
    };
    let model = lora::apply(base, &cfg).unwrap();
    // 7 projections x 2 layers.
    assert_eq!(model.adapters().len(), 14);
    let names: Vec<String> = model.adapters().iter().map(|(n, _)| n.clone()).collect();
    assert!(
        names.contains(&"model.layers.1.mlp.down_proj".to_string()),
        "{names:?}"
    );
    // Pretend two ids of the batch were added for a template: their rows of the embedding and
    // of the untied head train, nothing else of the base.
    let (x, y) = (batch.inputs[0], batch.inputs[1]);
    assert_ne!(x, y);
    let model = model.unfreeze_token_params();
    let optim = build_optimizer(&TrainConfig::default(), &model);
    let mut l = Learner::new(model, optim, Some(1.0), dev).with_trainable_token_rows(&[x, y]);
    let before_emb = l
        .model()
        .token_embedding()
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let before_head = l
        .model()
        .lm_head()
        .unwrap()
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let first = l.step(std::slice::from_ref(&batch), 1e-2).unwrap().loss;
    let mut last = first;
    for _ in 0..20 {
        last = l.step(std::slice::from_ref(&batch), 1e-2).unwrap().loss;
    }
    assert!(last < first, "loss {first} -> {last}");
    let model = l.into_parts().0;
    let emb = model
        .token_embedding()
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let head = model
        .lm_head()
        .unwrap()
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let d = 32;
    for row in 0..512 {
        let changed = emb[row * d..(row + 1) * d] != before_emb[row * d..(row + 1) * d];
        let added = row == x as usize || row == y as usize;
        assert_eq!(changed, added, "embedding row {row}");
        // The head is [d, vocab]: token `row` is column `row`.
        let col_changed = (0..d).any(|i| head[i * 512 + row] != before_head[i * 512 + row]);
        assert_eq!(col_changed, added, "head column {row}");
    }

    let plain = Device::flex();
    let adapted = model.valid();
    let want = logits(&adapted, &plain);
    let merged = lora::merge(adapted.clone());
    assert!(merged.adapters().is_empty());
    assert!(
        max_diff(&want, &logits(&merged, &plain)) < 1e-5,
        "merged vs adapted"
    );

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
        base_model_name_or_path: dir.display().to_string(),
        base_model_fingerprint: String::new(),
        added_tokens: Vec::new(),
    };
    assert!(!acfg.fan_in_fan_out, "Llama's nn.Linear is [out, in]");
    let rows = lora::AddedRows::of(&adapted, x.min(y), x.max(y));
    lora::save_adapter_dir(tmp.path(), &adapted, &acfg, Some(rows)).unwrap();
    let fresh = load_model_dir(&dir, &plain).unwrap().model;
    let (loaded, back) = lora::load_adapter_dir(tmp.path(), fresh).unwrap();
    assert_eq!(back, acfg);
    assert!(
        max_diff(&want, &logits(&loaded, &plain)) < 1e-6,
        "reloaded adapters"
    );
}

#[test]
fn unknown_lora_targets_name_the_model_s_projections() {
    let dev = select_device(BackendKind::Flex).unwrap().device.autodiff();
    let base = load_model_dir(&fixtures().join("tiny-qwen2"), &dev)
        .unwrap()
        .model;
    let cfg = LoraConfig {
        targets: vec!["c_attn".into()],
        ..LoraConfig::default()
    };
    let e = lora::apply(base, &cfg).unwrap_err().to_string();
    assert!(e.contains("c_attn") && e.contains("q_proj"), "{e}");
}
