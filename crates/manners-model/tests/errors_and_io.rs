//! Model folders: round trips, resizing, and clean errors for bad input.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::Path;

use common::*;
use manners_model::{
    BackendKind, GenerationConfig, ModelError, generate, load_model_dir, save_model_dir,
};

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    fs::write(p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn save_and_load_round_trip_is_bit_exact() {
    let dev = flex();
    let m = load_model_dir(&tiny_dir(), &dev).unwrap();
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
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let back = load_model_dir(&out, &dev).unwrap();
    assert_eq!(back.config, m.config);
    let ids = ids_tensor(&[vec![1, 2, 3, 4, 5]], &dev);
    assert_eq!(
        to_vec(m.model.forward(ids.clone())),
        to_vec(back.model.forward(ids))
    );
    assert_eq!(
        back.tokenizer.encode("Hello there").unwrap(),
        m.tokenizer.encode("Hello there").unwrap()
    );
    assert_eq!(back.default_stop_ids(), m.default_stop_ids());
    // Saving over an existing folder replaces it and leaves no temporary folders behind.
    save_model_dir(
        &out,
        &back.model,
        &back.config,
        &back.tokenizer,
        &back.generation,
        back.dtype,
        &[],
    )
    .unwrap();
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn missing_folder_and_files_are_named() {
    let dev = flex();
    let err = load_model_dir(Path::new("/no/such/model"), &dev).unwrap_err();
    assert!(err.to_string().contains("/no/such/model"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let err = load_model_dir(tmp.path(), &dev).unwrap_err();
    assert!(matches!(err, ModelError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn missing_key_is_named() {
    let dev = flex();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    // Rewrite the weights without one tensor.
    let p = tmp.path().join("model.safetensors");
    let bytes = fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("h.1.mlp.c_fc.bias"))
        .collect();
    let out = safetensors::serialize(kept, None).unwrap();
    fs::write(&p, out).unwrap();
    let err = load_model_dir(tmp.path(), &dev).unwrap_err();
    assert!(
        matches!(err, ModelError::MissingKey { ref key, .. } if key == "h.1.mlp.c_fc.bias"),
        "{err}"
    );
}

#[test]
fn wrong_shape_names_key_and_both_shapes() {
    let dev = flex();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    edit_config(tmp.path(), |v| v["n_positions"] = 128.into());
    let err = load_model_dir(tmp.path(), &dev).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("wpe.weight") && msg.contains("[64, 32]") && msg.contains("[128, 32]"),
        "{msg}"
    );
}

#[test]
fn truncated_weights_are_an_error_not_a_panic() {
    let dev = flex();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    let p = tmp.path().join("model.safetensors");
    let bytes = fs::read(&p).unwrap();
    for cut in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        fs::write(&p, &bytes[..cut]).unwrap();
        let err = load_model_dir(tmp.path(), &dev).unwrap_err();
        assert!(
            matches!(err, ModelError::CorruptWeights { .. }),
            "cut {cut}: {err}"
        );
    }
    fs::write(&p, b"this is not a safetensors file at all, just text").unwrap();
    assert!(matches!(
        load_model_dir(tmp.path(), &dev).unwrap_err(),
        ModelError::CorruptWeights { .. }
    ));
}

#[test]
fn tokenizer_larger_than_embedding_is_refused() {
    let dev = flex();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    edit_config(tmp.path(), |v| v["vocab_size"] = 300.into());
    let err = load_model_dir(tmp.path(), &dev).unwrap_err();
    assert!(
        matches!(err, ModelError::VocabMismatch { embedding: 300, .. }),
        "{err}"
    );
}

#[test]
fn invalid_config_json_names_the_field() {
    let dev = flex();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    edit_config(tmp.path(), |v| v["n_head"] = 5.into());
    let err = load_model_dir(tmp.path(), &dev).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("n_head"),
        "{err}"
    );
    fs::write(tmp.path().join("config.json"), "{ not json").unwrap();
    let err = load_model_dir(tmp.path(), &dev).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
}

/// Configs no model has, weights the config does not use, NaN weights and an empty
/// vocabulary: each a clear error, never a panic, an abort or a slow death by allocation.
#[test]
fn absurd_configs_and_bad_weights_are_refused_before_allocating() {
    let dev = flex();
    let check = |edit: &dyn Fn(&mut serde_json::Value), want: &[&str]| {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&tiny_dir(), tmp.path());
        edit_config(tmp.path(), |v| edit(v));
        let err = load_model_dir(tmp.path(), &dev).unwrap_err().to_string();
        assert!(
            want.iter().all(|w| err.contains(w)) && err.contains("config.json"),
            "{want:?}: {err}"
        );
    };
    check(
        &|v| v["n_positions"] = (1u64 << 62).into(),
        &["n_positions", "larger than"],
    );
    check(
        &|v| v["vocab_size"] = 10_000_000_000_000u64.into(),
        &["vocab_size"],
    );
    check(
        &|v| v["n_layer"] = 10_000_000.into(),
        &["n_layer", "larger than"],
    );
    check(
        &|v| v["n_embd"] = (1u64 << 40).into(),
        &["n_embd", "larger than"],
    );
    // Within bounds but far larger than the weights: refused before the model is built.
    check(
        &|v| v["n_layer"] = 1000.into(),
        &["describes", "does not belong"],
    );
    check(
        &|v| v["layer_norm_epsilon"] = (-1.0).into(),
        &["layer_norm_epsilon"],
    );
    check(&|v| v["model_type"] = 5.into(), &["model_type"]);
    // Fewer layers than the file: layer 1 used to be dropped silently.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    edit_config(tmp.path(), |v| v["n_layer"] = 1.into());
    let err = load_model_dir(tmp.path(), &dev).unwrap_err();
    assert!(
        matches!(&err, ModelError::UnusedKeys { first, .. } if first.contains("h.1.")),
        "{err}"
    );

    // A NaN in ln_f.weight.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    let p = tmp.path().join("model.safetensors");
    let mut bytes = fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let key = ["ln_f.weight", "transformer.ln_f.weight"]
        .into_iter()
        .find(|k| header.get(k).is_some())
        .unwrap();
    let at = 8 + n + header[key]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    fs::write(&p, bytes).unwrap();
    let err = load_model_dir(tmp.path(), &dev).unwrap_err();
    assert!(
        matches!(&err, ModelError::NonFiniteWeights { first, .. } if first.ends_with("ln_f.weight")),
        "{err}"
    );

    // A tokenizer with no vocabulary.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    let p = tmp.path().join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
    tok["model"]["vocab"] = serde_json::json!({});
    tok["model"]["merges"] = serde_json::json!([]);
    tok["added_tokens"] = serde_json::json!([]);
    fs::write(&p, tok.to_string()).unwrap();
    let err = load_model_dir(tmp.path(), &dev).unwrap_err().to_string();
    assert!(err.contains("vocabulary is empty"), "{err}");
}

#[test]
fn unknown_backend_is_an_error() {
    let err = "tpu".parse::<BackendKind>().unwrap_err();
    assert!(matches!(err, ModelError::UnknownBackend(_)));
}

#[test]
fn context_overflow_is_refused() {
    let dev = flex();
    let m = load_model_dir(&tiny_dir(), &dev).unwrap();
    let prompt = vec![5u32; 60];
    let cfg = GenerationConfig {
        max_new_tokens: 10,
        ..Default::default()
    };
    let err = generate(&m.model, &m.tokenizer, &prompt, &cfg, |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::ContextOverflow {
                needed: 69,
                max: 64
            }
        ),
        "{err}"
    );
    // Exactly filling the context is fine: 60 prompt + 5 new (the last is never fed back).
    let cfg = GenerationConfig {
        max_new_tokens: 5,
        ..Default::default()
    };
    assert!(generate(&m.model, &m.tokenizer, &prompt, &cfg, |_| {}).is_ok());
    // Out-of-vocabulary ids are refused, not a crash in gather.
    let err = generate(&m.model, &m.tokenizer, &[9999], &cfg, |_| {}).unwrap_err();
    assert!(err.to_string().contains("9999"), "{err}");
}

#[test]
fn resize_keeps_old_rows_and_starts_new_rows_at_the_mean() {
    let dev = flex();
    let m = load_model_dir(&tiny_dir(), &dev).unwrap();
    let old = m
        .model
        .token_embedding()
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let model = m.model.resize_token_embeddings(515);
    let new = model
        .token_embedding()
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(model.vocab_size(), 515);
    assert_eq!(&new[..old.len()], &old[..]);
    let d = 32;
    let mean: Vec<f32> = (0..d)
        .map(|j| (0..512).map(|i| old[i * d + j]).sum::<f32>() / 512.0)
        .collect();
    for r in 512..515 {
        let row = &new[r * d..(r + 1) * d];
        let dist = row
            .iter()
            .zip(&mean)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            .sqrt();
        // N(0, 0.02) noise in 32 dims has norm ~0.11; the rows themselves are ~0.2 * sqrt(32).
        assert!(dist < 0.25, "row {r} is {dist} from the mean");
    }
    // The tied head grows with it.
    let logits = model.forward(ids_tensor(&[vec![513, 1]], &dev));
    assert_eq!(logits.dims(), [1, 2, 515]);
}

#[test]
fn hf_buffers_and_a_stored_lm_head_are_ignored() {
    // Like openai-community/gpt2: no `transformer.` prefix, `h.N.attn.bias` causal-mask buffers,
    // and some exports carry `lm_head.weight` (tied: equal to wte).
    let dev = flex();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    let p = tmp.path().join("model.safetensors");
    let bytes = fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("transformer.").unwrap().to_string(),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    let wte = owned
        .iter()
        .find(|(k, _, _)| k == "wte.weight")
        .unwrap()
        .clone();
    owned.push(("lm_head.weight".into(), wte.1, wte.2));
    owned.push((
        "h.0.attn.bias".into(),
        vec![1, 1, 64, 64],
        vec![0u8; 64 * 64 * 4],
    ));
    owned.push(("h.0.attn.masked_bias".into(), vec![], vec![0u8; 4]));
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
    let m = load_model_dir(tmp.path(), &dev).unwrap();
    let reference = load_model_dir(&tiny_dir(), &dev).unwrap();
    let ids = ids_tensor(&[vec![3, 1, 4, 1, 5]], &dev);
    assert_eq!(
        to_vec(m.model.forward(ids.clone())),
        to_vec(reference.model.forward(ids))
    );
}

#[test]
fn checkpoints_written_before_model_families_still_load() {
    // Before model families a checkpoint was `Gpt::save_file`, the GPT-2 module itself (paths
    // `h.0.attn.c_attn.weight`, no family prefix). `Model::save_burnpack` writes the same, and
    // `load_burnpack_bytes` reads such a file into the GPT-2 variant, parameter ids included.
    use manners_model::Model;
    use manners_model::burn::module::Module;
    let dev = flex();
    let m = load_model_dir(&tiny_dir(), &dev).unwrap();
    let Model::Gpt2(inner) = &m.model else {
        panic!("the fixture is a GPT-2")
    };
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("model.bpk");
    inner.clone().save_file(&old).unwrap();
    let fresh = load_model_dir(&tiny_dir(), &dev).unwrap().model;
    let back = fresh
        .load_burnpack_bytes(fs::read(&old).unwrap(), &old)
        .unwrap();
    assert_eq!(back.token_embedding().id, m.model.token_embedding().id);
    let ids = ids_tensor(&[vec![3, 1, 4, 1, 5]], &dev);
    assert_eq!(
        to_vec(back.forward(ids.clone())),
        to_vec(m.model.forward(ids))
    );
    // A checkpoint of another family is a clear error, not a silently half-loaded model.
    let llama = tiny_dir().with_file_name("tiny-llama");
    let other = load_model_dir(&llama, &dev).unwrap().model;
    let err = other
        .load_burnpack_bytes(fs::read(&old).unwrap(), &old)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.bpk"), "{err}");
}
