//! Parity with Hugging Face transformers on a tiny random GPT-2 (fixture and reference written
//! by `scripts/reference/tiny_gpt2.py`), on every backend present.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use manners_model::burn::prelude::*;
use manners_model::{
    ForwardOptions, GenerationConfig, document_mask, generate, generate_batch,
    generate_greedy_uncached, load_model_dir,
};

fn ref_ids(r: &serde_json::Value, key: &str) -> Vec<u32> {
    r[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn ref_input(r: &serde_json::Value) -> Vec<Vec<u32>> {
    r["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn ref_logits(r: &serde_json::Value) -> Vec<f32> {
    let mut v = Vec::new();
    for seq in r["logits"].as_array().unwrap() {
        for row in seq.as_array().unwrap() {
            v.extend(
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32),
            );
        }
    }
    v
}

#[test]
fn logits_match_transformers_on_every_backend() {
    let r = reference();
    let want = ref_logits(&r);
    for (name, dev) in devices() {
        let m = load_model_dir(&tiny_dir(), &dev).unwrap();
        let got = to_vec(m.model.forward(ids_tensor(&ref_input(&r), &dev)));
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-4, "{name}: max |logit diff| = {diff:e}");
        eprintln!("{name}: max |logit diff| vs transformers = {diff:e}");
    }
}

#[test]
fn greedy_ids_match_transformers_on_every_backend() {
    let r = reference();
    let prompt = ref_ids(&r, "greedy_prompt");
    let want = ref_ids(&r, "greedy_ids");
    for (name, dev) in devices() {
        let m = load_model_dir(&tiny_dir(), &dev).unwrap();
        let cfg = GenerationConfig {
            max_new_tokens: want.len(),
            ..Default::default()
        };
        let got = generate(&m.model, &m.tokenizer, &prompt, &cfg, |_| {}).unwrap();
        assert_eq!(got.tokens, want, "{name}");
    }
}

#[test]
fn backends_agree_with_each_other() {
    let r = reference();
    let input = ref_input(&r);
    let devs = devices();
    let outs: Vec<(&str, Vec<f32>)> = devs
        .iter()
        .map(|(name, dev)| {
            let m = load_model_dir(&tiny_dir(), dev).unwrap();
            (*name, to_vec(m.model.forward(ids_tensor(&input, dev))))
        })
        .collect();
    for (name, v) in &outs[1..] {
        let diff = max_abs_diff(v, &outs[0].1);
        assert!(diff <= 1e-4, "{name} vs {}: {diff:e}", outs[0].0);
    }
}

#[test]
fn tokenizer_json_matches_hf_tokenizers() {
    let r = reference();
    let m = load_model_dir(&tiny_dir(), &flex()).unwrap();
    assert_eq!(
        m.tokenizer.vocab_size() as u64,
        r["tokenizer_vocab_size"].as_u64().unwrap()
    );
    for case in r["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(m.tokenizer.encode(text).unwrap(), want, "{text:?}");
    }
}

#[test]
fn kv_cache_gives_the_same_tokens_as_recomputing() {
    let dev = flex();
    let m = load_model_dir(&tiny_dir(), &dev).unwrap();
    let prompt = m.tokenizer.encode("It was the best of times").unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: 40,
        ..Default::default()
    };
    let cached = generate(&m.model, &m.tokenizer, &prompt, &cfg, |_| {}).unwrap();
    let uncached = generate_greedy_uncached(&m.model, &prompt, 40);
    assert_eq!(cached.tokens, uncached);
}

/// On every device: flex reads the padded cache in its fused attention, the others through a
/// padding mask shared by the step's layers.
#[test]
fn batched_generation_equals_one_at_a_time() {
    for (name, dev) in devices() {
        let m = load_model_dir(&tiny_dir(), &dev).unwrap();
        let prompts: Vec<Vec<u32>> = ["A", "Mr. Knightley said that", "She was the youngest of"]
            .iter()
            .map(|t| m.tokenizer.encode(t).unwrap())
            .collect();
        let cfg = GenerationConfig {
            max_new_tokens: 12,
            ..Default::default()
        };
        let batch = generate_batch(&m.model, &m.tokenizer, &prompts, &cfg).unwrap();
        for (p, g) in prompts.iter().zip(&batch) {
            let single = generate(&m.model, &m.tokenizer, p, &cfg, |_| {}).unwrap();
            assert_eq!(g.tokens, single.tokens, "{name}");
        }
    }
}

#[test]
fn streaming_pieces_concatenate_to_the_text() {
    let dev = flex();
    let m = load_model_dir(&tiny_dir(), &dev).unwrap();
    let prompt = m.tokenizer.encode("Emma").unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: 30,
        ..Default::default()
    };
    let mut streamed = String::new();
    let g = generate(&m.model, &m.tokenizer, &prompt, &cfg, |s| {
        streamed.push_str(s)
    })
    .unwrap();
    assert_eq!(streamed, g.text);
    assert_eq!(g.text, m.tokenizer.decode(&g.tokens, false));
}

#[test]
fn stop_tokens_and_strings_end_generation() {
    let dev = flex();
    let m = load_model_dir(&tiny_dir(), &dev).unwrap();
    let prompt = m.tokenizer.encode("Emma").unwrap();
    let free = generate(
        &m.model,
        &m.tokenizer,
        &prompt,
        &GenerationConfig {
            max_new_tokens: 20,
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    // Stop at the 5th token generated freely: output is the 4 before it.
    let stop_id = free.tokens[4];
    let first = free.tokens.iter().position(|&t| t == stop_id).unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: 20,
        stop_token_ids: vec![stop_id],
        ..Default::default()
    };
    let g = generate(&m.model, &m.tokenizer, &prompt, &cfg, |_| {}).unwrap();
    assert_eq!(g.tokens, free.tokens[..first]);
    assert_eq!(g.stop, manners_model::StopReason::StopToken(stop_id));
    // A stop string taken from the middle of the free text cuts the text there.
    let needle: String = free.text.chars().skip(3).take(3).collect();
    let cfg = GenerationConfig {
        max_new_tokens: 20,
        stop_strings: vec![needle.clone()],
        ..Default::default()
    };
    let mut streamed = String::new();
    let g = generate(&m.model, &m.tokenizer, &prompt, &cfg, |s| {
        streamed.push_str(s)
    })
    .unwrap();
    let cut = free.text.find(&needle).unwrap();
    assert_eq!(g.text, free.text[..cut]);
    assert_eq!(streamed, g.text, "a stop string must never be streamed");
}

#[test]
fn hidden_then_head_equals_forward() {
    let dev = flex();
    let r = reference();
    let m = load_model_dir(&tiny_dir(), &dev).unwrap();
    let ids = ids_tensor(&ref_input(&r), &dev);
    let a = to_vec(m.model.forward(ids.clone()));
    let b = to_vec(m.model.head(m.model.hidden(ids, ForwardOptions::default())));
    assert_eq!(a, b);
}

#[test]
fn packed_documents_match_separate_forwards() {
    let dev = flex();
    let m = load_model_dir(&tiny_dir(), &dev).unwrap();
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
        assert!(max_abs_diff(&got[..n1 * v], &a) < 1e-5);
        assert!(max_abs_diff(&got[n1 * v..], &b) < 1e-5);
    }
}
