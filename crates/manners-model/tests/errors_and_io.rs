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

/// A small seeded generator (SplitMix64), so the fuzz cases are the same on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Odd JSON values a config field could hold.
fn odd_value(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    let vs = [
        json!(-1),
        json!(0),
        json!(1),
        json!(3),
        json!(7),
        json!(1u64 << 31),
        json!(1u64 << 62),
        json!(u64::MAX),
        json!(-0.5),
        json!(0.5),
        json!(1e300),
        json!(-1e300),
        json!(null),
        json!(true),
        json!("x"),
        json!("nan"),
        json!(""),
        json!([]),
        json!([1, 2]),
        json!({}),
        json!({"rope_type": "yarn"}),
        json!({"factor": -1.0, "rope_type": "linear"}),
    ];
    rng.pick(&vs).clone()
}

/// Changes one thing in a copy of a model folder; returns the file changed and what was done.
fn mutate_folder(dir: &Path, rng: &mut Rng) -> (&'static str, String) {
    let files = [
        "config.json",
        "config.json",
        "config.json",
        "model.safetensors",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ];
    let file = *rng.pick(&files);
    let path = dir.join(file);
    let mut bytes = fs::read(&path).unwrap();
    let what;
    match (file, rng.below(4)) {
        // A field of a JSON file set to an odd value, or removed.
        (f, 0 | 1) if f.ends_with(".json") => {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            if rng.below(5) == 0 {
                v.as_object_mut().unwrap().remove(&key);
                what = format!("removed {key}");
            } else {
                let val = odd_value(rng);
                what = format!("{key} = {val}");
                v[&key] = val;
            }
            bytes = serde_json::to_vec(&v).unwrap();
        }
        // The safetensors header rewritten: a dtype, shape or offset changed, a tensor renamed.
        ("model.safetensors", 0 | 1) => {
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
            let keys: Vec<String> = header
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "__metadata__")
                .cloned()
                .collect();
            let key = rng.pick(&keys).clone();
            let t = &mut header[&key];
            match rng.below(5) {
                0 => {
                    let d =
                        *rng.pick(&["F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "Q4"]);
                    t["dtype"] = d.into();
                    what = format!("{key} dtype {d}");
                }
                1 => {
                    let s = odd_value(rng);
                    what = format!("{key} shape {s}");
                    t["shape"] = s;
                }
                2 => {
                    let end = t["data_offsets"][1].as_u64().unwrap();
                    let o = *rng.pick(&[0, end + 4, u64::MAX / 2, 7]);
                    t["data_offsets"][1] = o.into();
                    what = format!("{key} end offset {o}");
                }
                3 => {
                    let v = header.as_object_mut().unwrap().remove(&key).unwrap();
                    header[format!("{key}.renamed")] = v;
                    what = format!("{key} renamed");
                }
                _ => {
                    header.as_object_mut().unwrap().remove(&key);
                    what = format!("{key} removed");
                }
            }
            let mut h = serde_json::to_vec(&header).unwrap();
            while !h.len().is_multiple_of(8) {
                h.push(b' ');
            }
            let data = bytes[8 + n..].to_vec();
            bytes = (h.len() as u64).to_le_bytes().to_vec();
            bytes.extend(h);
            bytes.extend(data);
        }
        // Bytes: cut short, a run overwritten with noise, or a garbage length prefix.
        (_, 2) => {
            let at = rng.below(bytes.len());
            bytes.truncate(at);
            what = format!("truncated to {at} bytes");
        }
        _ => {
            let at = rng.below(bytes.len().min(4096));
            let len = 1 + rng.below(16);
            for b in bytes.iter_mut().skip(at).take(len) {
                *b = rng.next() as u8;
            }
            what = format!("{len} random bytes at {at}");
        }
    }
    fs::write(&path, bytes).unwrap();
    (file, what)
}

/// Seeded fuzz over model folders (GPT-2 and Llama): 600 folders with one field, header,
/// byte run or length wrong. Each loads and runs, or is refused with an error naming the file;
/// never a panic (before the checks, absurd sizes panicked in Burn's shape code or aborted).
#[test]
fn fuzzed_model_folders_never_panic_and_every_error_names_its_file() {
    let dev = flex();
    let mut rng = Rng(0x5EED_F00D);
    let (mut refused, mut loaded) = (0, 0);
    let mut problems = Vec::new();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for case in 0..600 {
        let fixture = if case % 2 == 0 {
            "tiny-gpt2"
        } else {
            "tiny-llama"
        };
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&fixtures().join(fixture), tmp.path());
        let (file, what) = mutate_folder(tmp.path(), &mut rng);
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let m = load_model_dir(tmp.path(), &dev)?;
            // Whatever loads must also run.
            let ids = ids_tensor(&[vec![1, 2, 3]], &dev);
            let _ = to_vec(m.model.forward(ids));
            Ok::<_, ModelError>(())
        }));
        match got {
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                problems.push(format!("{case} {fixture} {file} {what}: PANIC {msg}"));
            }
            Ok(Err(e)) => {
                refused += 1;
                let e = e.to_string();
                if case % 37 == 0 {
                    eprintln!("{fixture} {file} {what}: {e}");
                }
                // Located: in this folder, and the changed file named (or config.json, when
                // the weights or tokenizer no longer match what it describes).
                let dir = tmp.path().display().to_string();
                if !e.contains(&dir) || !(e.contains(file) || e.contains("config.json")) {
                    problems.push(format!("{case} {fixture} {file} {what}: unlocated: {e}"));
                }
            }
            Ok(Ok(())) => loaded += 1,
        }
    }
    std::panic::set_hook(quiet);
    eprintln!("600 fuzzed model folders: {refused} refused, {loaded} loaded and ran");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The cases are not mostly harmless: most must be refused.
    assert!(
        refused > 300 && loaded > 20,
        "refused {refused}, loaded {loaded}"
    );
}
