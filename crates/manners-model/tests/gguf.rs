//! GGUF export: the file read back has every tensor bit-equal to the model's (in llama.cpp's
//! names and layout), the metadata llama.cpp needs, the tokenizer and the chat template; q8_0
//! follows llama.cpp's blocks; bad requests are clear errors.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use manners_model::burn::prelude::*;
use manners_model::gguf::{GgufChat, GgufDtype, GgufFile, GgufType, GgufValue, to_gguf};
use manners_model::{LlamaConfig, Model, ModelConfig, RopeScaling, load_model_dir};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn round_trip(m: &manners_model::ModelDir, dtype: GgufDtype) -> GgufFile {
    let chat = GgufChat {
        template: Some("{{ messages[0]['content'] }}".into()),
        end_of_turn: m.tokenizer.eos_token().map(str::to_string),
    };
    let f = to_gguf(&m.model, &m.config, &m.tokenizer, &chat, dtype).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("m.gguf");
    f.write(&p).unwrap();
    let back = GgufFile::read(&p).unwrap();
    assert_eq!(back, f, "what is read is what was written");
    back
}

fn u32_of(f: &GgufFile, k: &str) -> u32 {
    f.get(k)
        .and_then(GgufValue::as_u32)
        .unwrap_or_else(|| panic!("{k} missing"))
}

#[test]
fn gpt2_exports_every_tensor_bit_equal_with_its_metadata() {
    let m = load_model_dir(&tiny_dir(), &flex()).unwrap();
    let f = round_trip(&m, GgufDtype::F32);
    let g = m.model.as_gpt2().unwrap();
    assert_eq!(
        f.get("general.architecture").unwrap().as_str(),
        Some("gpt2")
    );
    assert_eq!(u32_of(&f, "gpt2.block_count"), 2);
    assert_eq!(u32_of(&f, "gpt2.embedding_length"), 32);
    assert_eq!(u32_of(&f, "gpt2.context_length"), 64);
    assert_eq!(u32_of(&f, "gpt2.attention.head_count"), 4);
    assert_eq!(u32_of(&f, "gpt2.feed_forward_length"), 128);
    // token_embd is wte as it is; attn_qkv is c_attn transposed to PyTorch's [out, in].
    let t = f.tensor("token_embd.weight").unwrap();
    assert_eq!((t.ty, t.dims.clone()), (GgufType::F32, vec![32, 512]));
    assert_eq!(t.values(), values(g.wte.weight.val()));
    let qkv = f.tensor("blk.1.attn_qkv.weight").unwrap();
    assert_eq!(qkv.dims, vec![32, 96]);
    assert_eq!(
        qkv.values(),
        values(g.h[1].attn.c_attn.weight.val().transpose())
    );
    assert_eq!(
        f.tensor("blk.0.ffn_norm.bias").unwrap().values(),
        values(g.h[0].ln_2.beta.as_ref().unwrap().val())
    );
    // 2 embeddings + 12 per block + 2 final norm; no `output` (tied).
    assert_eq!(f.tensors.len(), 2 + 2 * 12 + 2);
    assert!(f.tensor("output.weight").is_none());
    // The tokenizer: every row named, merges, ids, the template.
    let Some(GgufValue::Array(tokens)) = f.get("tokenizer.ggml.tokens") else {
        panic!("tokens")
    };
    assert_eq!(tokens.len(), 512, "one token per embedding row");
    assert_eq!(tokens[511], GgufValue::Str("[PAD511]".into()));
    assert_eq!(
        tokens[m.tokenizer.token_id("<|endoftext|>").unwrap() as usize],
        GgufValue::Str("<|endoftext|>".into())
    );
    let Some(GgufValue::Array(merges)) = f.get("tokenizer.ggml.merges") else {
        panic!("merges")
    };
    assert!(!merges.is_empty());
    assert_eq!(
        f.get("tokenizer.ggml.model").unwrap().as_str(),
        Some("gpt2")
    );
    assert_eq!(f.get("tokenizer.ggml.pre").unwrap().as_str(), Some("gpt-2"));
    let eos = m.tokenizer.eos_id().unwrap();
    assert_eq!(u32_of(&f, "tokenizer.ggml.eos_token_id"), eos);
    assert_eq!(u32_of(&f, "tokenizer.ggml.eot_token_id"), eos);
    // As llama.cpp's converter writes GPT-2: BOS = unknown = EOS, no padding token, and
    // neither BOS nor EOS added to prompts (templates write their own).
    assert_eq!(u32_of(&f, "tokenizer.ggml.bos_token_id"), eos);
    assert_eq!(u32_of(&f, "tokenizer.ggml.unknown_token_id"), eos);
    assert!(f.get("tokenizer.ggml.padding_token_id").is_none());
    for k in [
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_eos_token",
    ] {
        assert_eq!(f.get(k), Some(&GgufValue::Bool(false)), "{k}");
    }
    assert!(f.get("tokenizer.chat_template").unwrap().as_str().is_some());
}

#[test]
fn the_llama_family_maps_to_llama_cpp_s_names_and_rotary_layout() {
    for family in ["llama", "qwen2", "qwen3"] {
        let dir = tiny_dir().with_file_name(format!("tiny-{family}"));
        let m = load_model_dir(&dir, &flex()).unwrap();
        let f = round_trip(&m, GgufDtype::F32);
        let arch = if family == "llama" { "llama" } else { family };
        assert_eq!(f.get("general.architecture").unwrap().as_str(), Some(arch));
        assert_eq!(u32_of(&f, &format!("{arch}.attention.head_count_kv")), 2);
        let l = m.model.as_llama().unwrap();
        let hd = l.layers[0].self_attn.head_dim;
        assert_eq!(
            u32_of(&f, &format!("{arch}.rope.dimension_count")),
            hd as u32
        );
        let q = l.layers[0].self_attn.q_proj.weight.val().transpose(); // [heads * hd, in]
        let [rows, cols] = q.dims();
        let want = values(q);
        let got = f.tensor("blk.0.attn_q.weight").unwrap().values();
        if family == "llama" {
            // llama.cpp's llama pairs neighbours: row h*hd + 2j + p holds HF row h*hd + p*hd/2 + j.
            for r in 0..rows {
                let (h, k) = (r / hd, r % hd);
                let src = h * hd + (k % 2) * (hd / 2) + k / 2;
                assert_eq!(
                    got[r * cols..(r + 1) * cols],
                    want[src * cols..(src + 1) * cols]
                );
            }
        } else {
            assert_eq!(got, want, "{family}: half-split rotary, rows as they are");
        }
        match family {
            "llama" => {
                assert!(f.tensor("output.weight").is_some(), "untied head");
                let factors = f.tensor("rope_freqs.weight").unwrap().values();
                let ModelConfig::Llama(c) = &m.config else {
                    panic!()
                };
                assert!(matches!(c.rope_scaling, Some(RopeScaling::Llama3 { .. })));
                // head_dim 8: frequencies 1, 0.1, 0.01, 0.001; original context 32 keeps the
                // first (wavelength 6.3 < 8) and divides the others by 8.
                assert_eq!(factors.len(), 4);
                assert!(
                    (factors[0] - 1.0).abs() < 1e-6 && (factors[3] - 8.0).abs() < 1e-4,
                    "{factors:?}"
                );
            }
            "qwen2" => {
                assert!(
                    f.tensor("blk.1.attn_q.bias").is_some() && f.tensor("output.weight").is_none()
                );
            }
            _ => {
                assert!(f.tensor("blk.1.attn_k_norm.weight").is_some());
                assert_eq!(u32_of(&f, "qwen3.attention.key_length"), 16);
            }
        }
    }
}

#[test]
fn q8_0_and_f16_store_matrices_and_keep_vectors_f32() {
    let m = load_model_dir(&tiny_dir().with_file_name("tiny-qwen2"), &flex()).unwrap();
    let f32f = round_trip(&m, GgufDtype::F32);
    for (dtype, ty, tol) in [
        (GgufDtype::F16, GgufType::F16, 1e-3f32),
        (GgufDtype::Q8_0, GgufType::Q8_0, 0.0),
    ] {
        let f = round_trip(&m, dtype);
        let w = f.tensor("blk.0.ffn_up.weight").unwrap();
        assert_eq!(w.ty, ty);
        assert_eq!(
            f.tensor("blk.0.attn_norm.weight").unwrap().ty,
            GgufType::F32
        );
        assert_eq!(f.tensor("blk.0.attn_q.bias").unwrap().ty, GgufType::F32);
        // The embedding (the tied head) stays f16 under q8_0.
        assert_eq!(f.tensor("token_embd.weight").unwrap().ty, GgufType::F16);
        let exact = f32f.tensor("blk.0.ffn_up.weight").unwrap().values();
        let got = w.values();
        for (block, want) in exact.chunks(32).zip(got.chunks(32)) {
            let amax = block.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let bound = if ty == GgufType::Q8_0 {
                amax / 127.0 * 0.5 + 1e-3 * amax
            } else {
                tol * amax + 1e-6
            };
            for (x, y) in block.iter().zip(want) {
                assert!(
                    (x - y).abs() <= bound,
                    "{dtype:?}: {x} vs {y} (bound {bound})"
                );
            }
        }
    }
}

#[test]
fn widths_q8_0_cannot_hold_are_a_clear_error() {
    let cfg = ModelConfig::Llama(LlamaConfig {
        hidden_size: 48,
        head_dim: 12,
        ..LlamaConfig::tiny(64)
    });
    let model: Model = cfg.init(&flex());
    let tok = load_model_dir(&tiny_dir(), &flex()).unwrap().tokenizer;
    let e = to_gguf(&model, &cfg, &tok, &GgufChat::default(), GgufDtype::Q8_0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("q8_0") && e.contains("48") && e.contains("blk.0."),
        "{e}"
    );
    assert!(
        "q4_0"
            .parse::<GgufDtype>()
            .unwrap_err()
            .to_string()
            .contains("q8_0")
    );
}
