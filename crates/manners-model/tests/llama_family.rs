//! Parity with Hugging Face transformers on tiny random `llama` (GQA, untied head, llama3 rope
//! scaling), `qwen2` (q/k/v biases, tied head) and `qwen3` (q/k norms, explicit head_dim, bf16
//! weights) checkpoints written by `scripts/reference/tiny_llama_family.py`, on every backend
//! present; the KV cache, packing and the dtype round trip.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use manners_model::burn::prelude::*;
use manners_model::{
    ForwardOptions, GenerationConfig, ModelConfig, WeightsDtype, document_mask, generate,
    generate_batch, generate_greedy_uncached, load_model_dir, save_model_dir,
};

const FAMILIES: [&str; 3] = ["llama", "qwen2", "qwen3"];

fn dir(family: &str) -> std::path::PathBuf {
    fixtures().join(format!("tiny-{family}"))
}

fn reference(family: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(fixtures().join("tiny-llama-family-reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[family].clone()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(ids).collect()
}

fn logits(r: &serde_json::Value) -> Vec<f32> {
    r["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_array().unwrap().iter())
        .flat_map(|row| row.as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn configs_load_as_their_family() {
    for family in FAMILIES {
        let m = load_model_dir(&dir(family), &flex()).unwrap();
        let ModelConfig::Llama(c) = &m.config else {
            panic!("{family} loaded as {:?}", m.config.family());
        };
        assert_eq!(c.model_type, family);
        match family {
            "llama" => {
                assert!(!c.tie_word_embeddings && c.rope_scaling.is_some());
                assert!(m.model.lm_head().is_some());
            }
            "qwen2" => assert!(c.qkv_bias && c.tie_word_embeddings && !c.qk_norm),
            _ => {
                assert!(c.qk_norm && c.head_dim == 16 && c.hidden_size == 32);
                assert_eq!(m.dtype, WeightsDtype::Bf16);
            }
        }
    }
}

#[test]
fn logits_match_transformers_on_every_backend() {
    for family in FAMILIES {
        let r = reference(family);
        let want = logits(&r);
        for (name, dev) in devices() {
            let m = load_model_dir(&dir(family), &dev).unwrap();
            let got = to_vec(m.model.forward(ids_tensor(&rows(&r["input_ids"]), &dev)));
            let diff = max_abs_diff(&got, &want);
            eprintln!("{family} on {name}: max |logit diff| vs transformers = {diff:e}");
            assert!(diff <= 1e-4, "{family} on {name}: {diff:e}");
        }
    }
}

#[test]
fn greedy_ids_match_transformers_on_every_backend() {
    for family in FAMILIES {
        let r = reference(family);
        let want = ids(&r["greedy_ids"]);
        for (name, dev) in devices() {
            let m = load_model_dir(&dir(family), &dev).unwrap();
            let cfg = GenerationConfig {
                max_new_tokens: want.len(),
                ..Default::default()
            };
            let got = generate(
                &m.model,
                &m.tokenizer,
                &ids(&r["greedy_prompt"]),
                &cfg,
                |_| {},
            );
            assert_eq!(got.unwrap().tokens, want, "{family} on {name}");
        }
    }
}

#[test]
fn kv_cache_with_grouped_heads_equals_recomputing() {
    for family in FAMILIES {
        let m = load_model_dir(&dir(family), &flex()).unwrap();
        let prompt = m.tokenizer.encode("It was the best of times").unwrap();
        let cfg = GenerationConfig {
            max_new_tokens: 30,
            ..Default::default()
        };
        let cached = generate(&m.model, &m.tokenizer, &prompt, &cfg, |_| {}).unwrap();
        let uncached = generate_greedy_uncached(&m.model, &prompt, 30);
        assert_eq!(cached.tokens, uncached, "{family}");
        // Left-padded batches (positions start after the padding) give each prompt's tokens.
        let prompts: Vec<Vec<u32>> = ["A", "Mr. Knightley said that", "She was"]
            .iter()
            .map(|t| m.tokenizer.encode(t).unwrap())
            .collect();
        let batch = generate_batch(&m.model, &m.tokenizer, &prompts, &cfg).unwrap();
        for (p, g) in prompts.iter().zip(&batch) {
            assert_eq!(
                g.tokens,
                generate_greedy_uncached(&m.model, p, 30),
                "{family}"
            );
        }
    }
}

#[test]
fn packed_rows_with_restarted_positions_match_separate_rows() {
    // Both attention paths: the fused boolean mask (inference) and the additive mask of
    // training (autodiff).
    for family in FAMILIES {
        for dev in [flex(), flex().autodiff()] {
            let m = load_model_dir(&dir(family), &dev).unwrap();
            let d1 = m.tokenizer.encode("Emma Woodhouse, handsome").unwrap();
            let d2 = m.tokenizer.encode("It is a truth").unwrap();
            let (n1, n2) = (d1.len(), d2.len());
            let packed: Vec<u32> = d1.iter().chain(&d2).copied().collect();
            let t = n1 + n2;
            let positions: Vec<i64> = (0..n1 as i64).chain(0..n2 as i64).collect();
            let docs: Vec<u32> = std::iter::repeat_n(1, n1)
                .chain(std::iter::repeat_n(2, n2))
                .collect();
            let positions = Tensor::<2, Int>::from_data(TensorData::new(positions, [1, t]), &dev);
            let ids: Vec<i64> = docs.iter().map(|&d| i64::from(d)).collect();
            // The materialised mask, and the document ids (on flex: the fused attention's own masking).
            let with_mask = ForwardOptions {
                positions: Some(positions.clone()),
                mask: Some(document_mask(&docs, 1, t, &dev)),
                docs: None,
            };
            let with_docs = ForwardOptions {
                positions: Some(positions),
                mask: None,
                docs: Some(Tensor::from_data(TensorData::new(ids, [1, t]), &dev)),
            };
            let v = m.model.vocab_size();
            let a = to_vec(m.model.forward(ids_tensor(std::slice::from_ref(&d1), &dev)));
            let b = to_vec(m.model.forward(ids_tensor(std::slice::from_ref(&d2), &dev)));
            for opts in [with_mask, with_docs] {
                let got = to_vec(
                    m.model
                        .forward_with(ids_tensor(std::slice::from_ref(&packed), &dev), opts),
                );
                assert!(max_abs_diff(&got[..n1 * v], &a) < 1e-5, "{family}");
                assert!(max_abs_diff(&got[n1 * v..], &b) < 1e-5, "{family}");
            }
        }
    }
}

#[test]
fn saved_folders_keep_the_dtype_and_reload_the_same_model() {
    for family in FAMILIES {
        let dev = flex();
        let m = load_model_dir(&dir(family), &dev).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("saved");
        save_model_dir(
            &out,
            &m.model,
            &m.config,
            &m.tokenizer,
            &m.generation,
            m.dtype,
            &[],
        )
        .unwrap();
        let size = |d: &std::path::Path| {
            std::fs::metadata(d.join("model.safetensors"))
                .unwrap()
                .len()
        };
        let (before, after) = (size(&dir(family)), size(&out));
        // Same tensors in the same dtype: the same size up to the header.
        assert!(
            after.abs_diff(before) < 4096,
            "{family}: {before} -> {after} bytes"
        );
        let back = load_model_dir(&out, &dev).unwrap();
        assert_eq!(back.dtype, m.dtype, "{family}");
        assert_eq!(back.tokenizer.chat_template(), m.tokenizer.chat_template());
        assert!(out.join("chat_template.jinja").is_file(), "{family}");
        let input = ids_tensor(&[vec![1, 5, 9, 2, 7, 3]], &dev);
        assert_eq!(
            to_vec(m.model.forward(input.clone())),
            to_vec(back.model.forward(input)),
            "{family}"
        );
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["model_type"], family);
        assert_eq!(cfg["dtype"], m.dtype.torch_name());
    }
}

#[test]
fn chat_templates_come_from_the_jinja_file_or_the_tokenizer_config() {
    // llama and qwen3 keep it in chat_template.jinja (transformers 5), qwen2 in
    // tokenizer_config.json (transformers 4).
    for family in FAMILIES {
        let m = load_model_dir(&dir(family), &flex()).unwrap();
        let t = m.tokenizer.chat_template().unwrap();
        assert!(t.contains("message['content']"), "{family}");
        let eos = m.tokenizer.eos_token().unwrap();
        assert_eq!(
            eos,
            if family == "llama" {
                "<|eot_id|>"
            } else {
                "<|im_end|>"
            }
        );
    }
}
