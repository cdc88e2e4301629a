//! Weights and model folders: Hugging Face GPT-2 `model.safetensors` in and out, atomic writes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::{bf16, f16};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::{Value, json};

use crate::config::GptConfig;
use crate::error::{ModelError, Result};
use crate::gpt::Gpt;
use crate::tokenizer::Tokenizer;

/// A parameter of the model under its Hugging Face name.
enum Slot<'a> {
    Vector(&'a mut Param<Tensor<1>>),
    Matrix(&'a mut Param<Tensor<2>>),
}

impl Slot<'_> {
    fn shape(&self) -> Vec<usize> {
        match self {
            Slot::Vector(p) => p.val().dims().to_vec(),
            Slot::Matrix(p) => p.val().dims().to_vec(),
        }
    }
}

/// Every parameter with its Hugging Face key (no `transformer.` prefix).
fn slots(model: &mut Gpt) -> Vec<(String, Slot<'_>)> {
    fn linear<'a>(out: &mut Vec<(String, Slot<'a>)>, name: &str, l: &'a mut burn::nn::Linear) {
        out.push((format!("{name}.weight"), Slot::Matrix(&mut l.weight)));
        if let Some(b) = l.bias.as_mut() {
            out.push((format!("{name}.bias"), Slot::Vector(b)));
        }
    }
    fn norm<'a>(out: &mut Vec<(String, Slot<'a>)>, name: &str, n: &'a mut burn::nn::LayerNorm) {
        out.push((format!("{name}.weight"), Slot::Vector(&mut n.gamma)));
        if let Some(b) = n.beta.as_mut() {
            out.push((format!("{name}.bias"), Slot::Vector(b)));
        }
    }
    let mut out = Vec::new();
    out.push((
        "wte.weight".to_string(),
        Slot::Matrix(&mut model.wte.weight),
    ));
    out.push((
        "wpe.weight".to_string(),
        Slot::Matrix(&mut model.wpe.weight),
    ));
    for (i, b) in model.h.iter_mut().enumerate() {
        norm(&mut out, &format!("h.{i}.ln_1"), &mut b.ln_1);
        linear(&mut out, &format!("h.{i}.attn.c_attn"), &mut b.attn.c_attn);
        linear(&mut out, &format!("h.{i}.attn.c_proj"), &mut b.attn.c_proj);
        norm(&mut out, &format!("h.{i}.ln_2"), &mut b.ln_2);
        linear(&mut out, &format!("h.{i}.mlp.c_fc"), &mut b.mlp.c_fc);
        linear(&mut out, &format!("h.{i}.mlp.c_proj"), &mut b.mlp.c_proj);
    }
    norm(&mut out, "ln_f", &mut model.ln_f);
    out
}

/// Keys in HF GPT-2 files that are not parameters of ours (buffers, the tied head).
fn is_ignored_key(key: &str) -> bool {
    key == "lm_head.weight" || key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias")
}

fn to_f32(path: &Path, key: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let b = view.data();
    let v = match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        other => {
            return Err(ModelError::UnsupportedDtype {
                path: path.to_path_buf(),
                key: key.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    };
    Ok(v)
}

/// Loads Hugging Face GPT-2 weights into `model` (whose shapes come from the config). Keys may
/// carry the `transformer.` prefix; `lm_head.weight` and the attention buffers are ignored.
/// Every missing key and every shape mismatch is an error naming the key.
pub fn load_safetensors(mut model: Gpt, path: &Path) -> Result<Gpt> {
    let bytes = fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::CorruptWeights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let names: BTreeMap<String, String> = st
        .names()
        .into_iter()
        .map(|n| {
            (
                n.strip_prefix("transformer.").unwrap_or(n).to_string(),
                n.to_string(),
            )
        })
        .collect();
    let device = model.wte.weight.val().device();
    for (key, slot) in slots(&mut model) {
        let Some(file_key) = names.get(&key) else {
            return Err(ModelError::MissingKey {
                path: path.to_path_buf(),
                key,
                hint: ", with or without the `transformer.` prefix".into(),
            });
        };
        let view = st
            .tensor(file_key)
            .map_err(|e| ModelError::CorruptWeights {
                path: path.to_path_buf(),
                message: format!("{file_key}: {e}"),
            })?;
        let expected = slot.shape();
        if view.shape() != expected.as_slice() {
            return Err(ModelError::ShapeMismatch {
                path: path.to_path_buf(),
                key: file_key.clone(),
                expected,
                found: view.shape().to_vec(),
            });
        }
        let data = to_f32(path, file_key, &view)?;
        match slot {
            Slot::Vector(p) => {
                *p = Param::from_tensor(Tensor::from_data(TensorData::new(data, expected), &device))
            }
            Slot::Matrix(p) => {
                *p = Param::from_tensor(Tensor::from_data(TensorData::new(data, expected), &device))
            }
        }
    }
    Ok(model)
}

/// Names of keys in a safetensors file that [`load_safetensors`] does not use (besides the
/// known buffers): useful to warn about checkpoints of another architecture.
pub fn unused_keys(model: &mut Gpt, path: &Path) -> Result<Vec<String>> {
    let bytes = fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::CorruptWeights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let ours: Vec<String> = slots(model).into_iter().map(|(k, _)| k).collect();
    Ok(st
        .names()
        .into_iter()
        .filter(|n| {
            let k = n.strip_prefix("transformer.").unwrap_or(n);
            !is_ignored_key(k) && !ours.iter().any(|o| o == k)
        })
        .map(str::to_string)
        .collect())
}

/// Writes the model as Hugging Face GPT-2 `model.safetensors` (f32, keys without prefix, like
/// `openai-community/gpt2`), atomically.
pub fn save_safetensors(model: &Gpt, path: &Path) -> Result<()> {
    let mut model = model.clone();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, slot) in slots(&mut model) {
        let (shape, data) = match slot {
            Slot::Vector(p) => (p.val().dims().to_vec(), p.val().into_data()),
            Slot::Matrix(p) => (p.val().dims().to_vec(), p.val().into_data()),
        };
        let values =
            data.convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| ModelError::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!("{key}: {e:?}"),
                })?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((key, shape, bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("shape matches data"),
            )
        })
        .collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| ModelError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Generation defaults of a model folder (`generation_config.json`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationDefaults {
    /// End-of-sequence ids generation stops at.
    pub eos_token_ids: Vec<u32>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub max_new_tokens: Option<usize>,
}

impl GenerationDefaults {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Json {
            path: path.to_path_buf(),
            field: "<document>".into(),
            message: e.to_string(),
        })?;
        let eos = match v.get("eos_token_id") {
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u32)
                .collect(),
            _ => Vec::new(),
        };
        Ok(GenerationDefaults {
            eos_token_ids: eos,
            do_sample: v.get("do_sample").and_then(Value::as_bool),
            temperature: v
                .get("temperature")
                .and_then(Value::as_f64)
                .map(|x| x as f32),
            top_k: v.get("top_k").and_then(Value::as_u64).map(|x| x as usize),
            top_p: v.get("top_p").and_then(Value::as_f64).map(|x| x as f32),
            max_new_tokens: v
                .get("max_new_tokens")
                .and_then(Value::as_u64)
                .map(|x| x as usize),
        })
    }

    pub fn to_value(&self, config: &GptConfig) -> Value {
        let mut v = json!({
            "_from_model_config": true,
            "bos_token_id": config.bos_token_id,
            "eos_token_id": match self.eos_token_ids.as_slice() {
                [] => json!(config.eos_token_id),
                [one] => json!(one),
                many => json!(many),
            },
        });
        let obj = v.as_object_mut().expect("object");
        if let Some(x) = self.do_sample {
            obj.insert("do_sample".into(), json!(x));
        }
        if let Some(x) = self.temperature {
            obj.insert("temperature".into(), json!(x));
        }
        if let Some(x) = self.top_k {
            obj.insert("top_k".into(), json!(x));
        }
        if let Some(x) = self.top_p {
            obj.insert("top_p".into(), json!(x));
        }
        if let Some(x) = self.max_new_tokens {
            obj.insert("max_new_tokens".into(), json!(x));
        }
        v
    }
}

/// A loaded model folder.
#[derive(Debug)]
pub struct ModelDir {
    pub path: PathBuf,
    pub config: GptConfig,
    pub model: Gpt,
    pub tokenizer: Tokenizer,
    pub generation: GenerationDefaults,
}

impl ModelDir {
    /// Ids generation should stop at by default: `generation_config.json`'s EOS ids, else the
    /// config's, else the tokenizer's EOS.
    pub fn default_stop_ids(&self) -> Vec<u32> {
        if !self.generation.eos_token_ids.is_empty() {
            return self.generation.eos_token_ids.clone();
        }
        self.config
            .eos_token_id
            .or(self.tokenizer.eos_id())
            .into_iter()
            .collect()
    }
}

/// Loads a model folder in Hugging Face layout: `config.json`, `model.safetensors`, the
/// tokenizer (`tokenizer.json` or `vocab.json` + `merges.txt`, `tokenizer_config.json`), and
/// `generation_config.json` when present.
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<ModelDir> {
    if !dir.is_dir() {
        return Err(ModelError::MissingFile {
            path: dir.to_path_buf(),
            hint: " (expected a model folder)".into(),
        });
    }
    let config = GptConfig::from_hf_file(&dir.join("config.json"))?;
    let tokenizer = Tokenizer::from_dir(dir)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(ModelError::VocabMismatch {
            tokenizer: tokenizer.vocab_size(),
            embedding: config.vocab_size,
        });
    }
    let weights = dir.join("model.safetensors");
    if !weights.is_file() {
        let hint = if dir.join("model.safetensors.index.json").is_file() {
            " (sharded checkpoints are not supported; GPT-2 sizes fit one file)"
        } else if dir.join("pytorch_model.bin").is_file() {
            " (only pytorch_model.bin is present: convert it to safetensors first)"
        } else {
            ""
        };
        return Err(ModelError::MissingFile {
            path: weights,
            hint: hint.into(),
        });
    }
    let model = load_safetensors(config.init(device), &weights)?;
    let gen_path = dir.join("generation_config.json");
    let generation = if gen_path.is_file() {
        GenerationDefaults::from_file(&gen_path)?
    } else {
        GenerationDefaults::default()
    };
    Ok(ModelDir {
        path: dir.to_path_buf(),
        config,
        model,
        tokenizer,
        generation,
    })
}

/// Writes a model folder Hugging Face transformers loads as a GPT-2, atomically (a temporary
/// folder renamed into place). `extra` files (name, contents) are written beside the others.
pub fn save_model_dir(
    dir: &Path,
    model: &Gpt,
    config: &GptConfig,
    tokenizer: &Tokenizer,
    generation: &GenerationDefaults,
    extra: &[(&str, Vec<u8>)],
) -> Result<()> {
    let mut config = config.clone();
    config.vocab_size = model.vocab_size();
    if config.eos_token_id.is_none() {
        config.eos_token_id = tokenizer.eos_id();
    }
    if config.bos_token_id.is_none() {
        config.bos_token_id = tokenizer.bos_id().or(tokenizer.eos_id());
    }
    write_dir_atomic(dir, |tmp| {
        config.save_hf_file(&tmp.join("config.json"))?;
        save_safetensors(model, &tmp.join("model.safetensors"))?;
        let gen_text = serde_json::to_string_pretty(&generation.to_value(&config)).expect("json");
        write_atomic(&tmp.join("generation_config.json"), gen_text.as_bytes())?;
        tokenizer.save_dir(tmp, config.n_positions)?;
        for (name, bytes) in extra {
            write_atomic(&tmp.join(name), bytes)?;
        }
        Ok(())
    })
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced and renamed, so a
/// crash leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ModelError::io(path, e)
    })
}

/// Builds a folder in a temporary sibling, then swaps it into place. A crash before the swap
/// leaves the old folder untouched; the swap itself is two renames.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if dir.exists() {
        fs::rename(dir, &old).map_err(|e| ModelError::io(dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| ModelError::io(dir, e))?;
    if old.exists() {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}
