//! Weights and model folders: Hugging Face `model.safetensors` (one file, or shards with
//! `model.safetensors.index.json`) in and out for every family, in the dtype the model came in;
//! atomic writes.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::{bf16, f16};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::{Value, json};

use crate::error::{ModelError, Result};
use crate::model::{Model, ModelConfig, Slot};
use crate::tokenizer::Tokenizer;

/// The floating-point type of a weights file. Compute is always f32; this is what is read and
/// written back, so a bf16 model stays bf16 (and half the size of f32) on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsDtype {
    #[default]
    F32,
    F16,
    Bf16,
}

impl WeightsDtype {
    /// The name transformers uses (`float32`, `float16`, `bfloat16`).
    pub fn torch_name(self) -> &'static str {
        match self {
            WeightsDtype::F32 => "float32",
            WeightsDtype::F16 => "float16",
            WeightsDtype::Bf16 => "bfloat16",
        }
    }

    fn safetensors(self) -> Dtype {
        match self {
            WeightsDtype::F32 => Dtype::F32,
            WeightsDtype::F16 => Dtype::F16,
            WeightsDtype::Bf16 => Dtype::BF16,
        }
    }

    fn bytes_of(self, values: &[f32]) -> Vec<u8> {
        match self {
            WeightsDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            WeightsDtype::F16 => values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
                .collect(),
            WeightsDtype::Bf16 => values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes())
                .collect(),
        }
    }
}

/// Hugging Face's single-file and sharded weight names.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
/// Shards are cut at this size when writing (transformers 4's default `max_shard_size`).
pub const MAX_SHARD_BYTES: usize = 5_000_000_000;

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

/// The weight files of a model folder: `model.safetensors`, or the shards its index names.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if index.is_file() {
        let v = read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| ModelError::Json {
                path: index.clone(),
                field: "weight_map".into(),
                message: "expected an object of key -> file".into(),
            })?;
        let mut files: Vec<String> = map
            .values()
            .map(|f| {
                f.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ModelError::Json {
                        path: index.clone(),
                        field: "weight_map".into(),
                        message: format!("expected file names, got {f}"),
                    })
            })
            .collect::<Result<_>>()?;
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let hint = if dir.join("pytorch_model.bin").is_file() {
        " (only pytorch_model.bin is present: convert it to safetensors first)"
    } else {
        ""
    };
    Err(ModelError::MissingFile {
        path: single,
        hint: hint.into(),
    })
}

/// Loads Hugging Face weights into `model` (whose shapes come from the config) from
/// `model.safetensors` or its shards. Keys may carry the family's optional prefix (GPT-2's
/// `transformer.`); buffers and a tied head's copy are ignored. Every missing key and every
/// shape mismatch is an error naming the key. Returns the model and the dtype of its weights.
pub fn load_weights(mut model: Model, dir: &Path) -> Result<(Model, WeightsDtype)> {
    let files = weight_files(dir)?;
    let mut blobs = Vec::with_capacity(files.len());
    for f in &files {
        blobs.push((f.clone(), fs::read(f).map_err(|e| ModelError::io(f, e))?));
    }
    let mut tables = Vec::with_capacity(blobs.len());
    for (f, bytes) in &blobs {
        let st = SafeTensors::deserialize(bytes).map_err(|e| ModelError::CorruptWeights {
            path: f.clone(),
            message: e.to_string(),
        })?;
        tables.push((f, st));
    }
    let prefix = model.optional_key_prefix();
    // Our key -> (table, key in the file).
    let mut names: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, (_, st)) in tables.iter().enumerate() {
        for n in st.names() {
            let ours = prefix.and_then(|p| n.strip_prefix(p)).unwrap_or(n);
            names.insert(ours.to_string(), (i, n.to_string()));
        }
    }
    let device = model.device();
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    let shown = files.first().cloned().unwrap_or_default();
    for p in model.hf_params() {
        let Some((t, file_key)) = names.get(&p.key) else {
            return Err(ModelError::MissingKey {
                path: shown,
                key: p.key,
                hint: prefix
                    .map(|x| format!(", with or without the `{x}` prefix"))
                    .unwrap_or_default(),
            });
        };
        let (path, st) = &tables[*t];
        let view = st
            .tensor(file_key)
            .map_err(|e| ModelError::CorruptWeights {
                path: (*path).clone(),
                message: format!("{file_key}: {e}"),
            })?;
        let expected = match &p.slot {
            Slot::Vector(x) => x.val().dims().to_vec(),
            Slot::Matrix(x) => x.val().dims().to_vec(),
        };
        let in_file: Vec<usize> = if p.transpose {
            expected.iter().rev().copied().collect()
        } else {
            expected.clone()
        };
        if view.shape() != in_file.as_slice() {
            return Err(ModelError::ShapeMismatch {
                path: (*path).clone(),
                key: file_key.clone(),
                expected: in_file,
                found: view.shape().to_vec(),
            });
        }
        *dtypes.entry(format!("{:?}", view.dtype())).or_default() += 1;
        let data = to_f32(path, file_key, &view)?;
        match p.slot {
            Slot::Vector(x) => {
                *x = Param::from_tensor(Tensor::from_data(TensorData::new(data, expected), &device))
            }
            Slot::Matrix(x) => {
                let t = Tensor::<2>::from_data(TensorData::new(data, in_file), &device);
                let t = if p.transpose { t.transpose() } else { t };
                *x = Param::from_tensor(t)
            }
        }
    }
    // Tensors the config does not use are a config of another shape (`n_layer: 1` on a
    // two-layer file would silently drop layer 1).
    let used: std::collections::HashSet<String> =
        model.hf_params().into_iter().map(|p| p.key).collect();
    let unused: Vec<&String> = names
        .iter()
        .filter(|(k, _)| !used.contains(*k) && !model.is_buffer_key(k))
        .map(|(_, (_, file_key))| file_key)
        .collect();
    if let Some(first) = unused.first() {
        return Err(ModelError::UnusedKeys {
            path: shown,
            count: unused.len(),
            first: (*first).clone(),
        });
    }
    let bad = model.non_finite_params();
    if let Some(first) = bad.first() {
        return Err(ModelError::NonFiniteWeights {
            path: shown,
            count: bad.len(),
            first: first.clone(),
        });
    }
    let dtype = match dtypes
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(d, _)| d.as_str())
    {
        Some("BF16") => WeightsDtype::Bf16,
        Some("F16") => WeightsDtype::F16,
        _ => WeightsDtype::F32,
    };
    Ok((model, dtype))
}

/// The safetensors header of `path` (names, dtypes, shapes), read without the tensor data.
fn read_header(path: &Path) -> Result<serde_json::Map<String, Value>> {
    use std::io::Read;
    let corrupt = |m: String| ModelError::CorruptWeights {
        path: path.to_path_buf(),
        message: m,
    };
    let mut f = fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| corrupt(format!("header length: {e}")))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(corrupt(format!("a header of {n} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| corrupt(format!("header: {e}")))?;
    match serde_json::from_slice(&header) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(corrupt("the header is not a JSON object".into())),
        Err(e) => Err(corrupt(format!("header: {e}"))),
    }
}

/// Checks, before a model of `config` is allocated, that the weights in `dir` can hold it (a
/// config larger than its weights would allocate for nothing, or more than the machine has)
/// and that the machine has memory for it.
pub fn check_size(config: &ModelConfig, dir: &Path) -> Result<()> {
    let files = weight_files(dir)?;
    let prefix = config.optional_key_prefix();
    let (mut values, mut file_bytes) = (0u64, 0u64);
    for f in &files {
        file_bytes += fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        for (name, info) in read_header(f)? {
            let key = prefix.and_then(|p| name.strip_prefix(p)).unwrap_or(&name);
            if name == "__metadata__" || config.is_buffer_key(key) {
                continue;
            }
            let n = info
                .get("shape")
                .and_then(Value::as_array)
                .map(|d| d.iter().filter_map(Value::as_u64).product::<u64>())
                .unwrap_or(0);
            values = values.saturating_add(n);
        }
    }
    let want = config.num_params() as u64;
    // A config somewhat off the weights gets the key and shapes named by `load_weights`; one
    // far larger would allocate (possibly more than the machine has) for nothing.
    if want > values.saturating_mul(2).saturating_add(1 << 20) {
        return Err(ModelError::Config(format!(
            "config.json describes {} parameters ({}) but the weights in {} hold {}: the config \
             does not belong to these weights",
            crate::config::human_count(want),
            config.describe(),
            dir.display(),
            crate::config::human_count(values)
        )));
    }
    // Loading holds the files' bytes and an f32 copy of every parameter.
    let need = file_bytes.saturating_add(want.saturating_mul(4));
    if let Some(avail) = manners_events::host::available_memory()
        && need > avail
    {
        return Err(ModelError::Config(format!(
            "loading {} needs about {:.1} GB of memory ({} parameters in f32, and the files), \
             but {:.1} GB is available",
            dir.display(),
            need as f64 / 1e9,
            crate::config::human_count(want),
            avail as f64 / 1e9
        )));
    }
    Ok(())
}

/// Keys in a model folder's weights that [`load_weights`] does not use (besides known buffers):
/// a sign of a checkpoint of another shape or architecture.
pub fn unused_keys(model: &mut Model, dir: &Path) -> Result<Vec<String>> {
    let prefix = model.optional_key_prefix();
    let ours: Vec<String> = model.hf_params().into_iter().map(|p| p.key).collect();
    let mut out = Vec::new();
    for f in weight_files(dir)? {
        let bytes = fs::read(&f).map_err(|e| ModelError::io(&f, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::CorruptWeights {
            path: f.clone(),
            message: e.to_string(),
        })?;
        for n in st.names() {
            let k = prefix.and_then(|p| n.strip_prefix(p)).unwrap_or(n);
            if !model.is_buffer_key(k) && !ours.iter().any(|o| o == k) {
                out.push(n.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A named tensor ready to write: shape and little-endian bytes of `dtype`.
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: WeightsDtype,
    pub bytes: Vec<u8>,
}

impl NamedTensor {
    /// A tensor's values converted to `dtype`.
    pub fn from_tensor<const D: usize>(
        name: String,
        t: Tensor<D>,
        dtype: WeightsDtype,
    ) -> Result<Self> {
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::Checkpoint {
                path: PathBuf::from(&name),
                message: format!("{e:?}"),
            })?;
        Ok(NamedTensor {
            name,
            shape,
            dtype,
            bytes: dtype.bytes_of(&values),
        })
    }
}

/// Writes tensors as one safetensors file (with `format: pt` metadata, as PyTorch expects),
/// atomically. The one safetensors writer of the workspace (weights, adapters).
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype.safetensors(), t.shape.clone(), &t.bytes)
                    .expect("shape matches data"),
            )
        })
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| ModelError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Writes the model's weights into `dir` under Hugging Face keys, in `dtype`: one
/// `model.safetensors`, or shards of at most `max_shard_bytes` with
/// `model.safetensors.index.json` when larger.
pub fn save_weights(
    model: &Model,
    dir: &Path,
    dtype: WeightsDtype,
    max_shard_bytes: usize,
) -> Result<()> {
    let mut model = model.clone();
    let mut tensors = Vec::new();
    for p in model.hf_params() {
        let t = match p.slot {
            Slot::Vector(x) => NamedTensor::from_tensor(p.key, x.val(), dtype)?,
            Slot::Matrix(x) => {
                let v = x.val();
                let v = if p.transpose { v.transpose() } else { v };
                NamedTensor::from_tensor(p.key, v, dtype)?
            }
        };
        tensors.push(t);
    }
    let total: usize = tensors.iter().map(|t| t.bytes.len()).sum();
    if total <= max_shard_bytes {
        return write_safetensors(&dir.join(WEIGHTS_FILE), &tensors);
    }
    let mut shards: Vec<Vec<NamedTensor>> = vec![Vec::new()];
    let mut size = 0;
    for t in tensors {
        if size + t.bytes.len() > max_shard_bytes && !shards.last().is_some_and(Vec::is_empty) {
            shards.push(Vec::new());
            size = 0;
        }
        size += t.bytes.len();
        shards.last_mut().expect("one shard").push(t);
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        for t in shard {
            weight_map.insert(t.name.clone(), json!(name));
        }
        write_safetensors(&dir.join(&name), shard)?;
    }
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    let text = serde_json::to_string_pretty(&index).expect("json");
    write_atomic(&dir.join(WEIGHTS_INDEX_FILE), text.as_bytes())
}

/// Reads a JSON file; errors name the file.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Json {
        path: path.to_path_buf(),
        field: "<document>".into(),
        message: e.to_string(),
    })
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
        let v = read_json(path)?;
        let f = crate::config::HfFields(&v);
        Ok(GenerationDefaults {
            eos_token_ids: f.token_ids("eos_token_id"),
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

    pub fn to_value(&self, config: &ModelConfig) -> Value {
        let mut v = json!({
            "_from_model_config": true,
            "bos_token_id": config.bos_token_id(),
            "eos_token_id": match self.eos_token_ids.as_slice() {
                [] => json!(config.eos_token_id()),
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
    pub config: ModelConfig,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub generation: GenerationDefaults,
    /// The dtype the weights came in (written back in it).
    pub dtype: WeightsDtype,
}

impl ModelDir {
    /// Ids generation should stop at by default: `generation_config.json`'s EOS ids, else the
    /// config's, else the tokenizer's EOS.
    pub fn default_stop_ids(&self) -> Vec<u32> {
        if !self.generation.eos_token_ids.is_empty() {
            return self.generation.eos_token_ids.clone();
        }
        self.config
            .eos_token_id()
            .or(self.tokenizer.eos_id())
            .into_iter()
            .collect()
    }
}

/// Loads a model folder in Hugging Face layout: `config.json` (any `model_type` of
/// [`crate::MODEL_TYPES`]), the weights (one file or shards), the tokenizer (`tokenizer.json`
/// or `vocab.json` + `merges.txt`, `tokenizer_config.json`, `chat_template.jinja`) and
/// `generation_config.json` when present.
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<ModelDir> {
    if !dir.is_dir() {
        return Err(ModelError::MissingFile {
            path: dir.to_path_buf(),
            hint: " (expected a model folder)".into(),
        });
    }
    let config = ModelConfig::from_hf_file(&dir.join("config.json"))?;
    let tokenizer = Tokenizer::from_dir(dir)?;
    if tokenizer.vocab_size() > config.vocab_size() {
        return Err(ModelError::VocabMismatch {
            dir: dir.to_path_buf(),
            tokenizer: tokenizer.vocab_size(),
            embedding: config.vocab_size(),
        });
    }
    check_size(&config, dir)?;
    config.check_device(device)?;
    let (model, dtype) = load_weights(config.init(device), dir)?;
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
        dtype,
    })
}

/// Writes a model folder Hugging Face transformers loads, atomically (a temporary folder
/// renamed into place), weights in `dtype`. `extra` files (name, contents) are written beside
/// the others.
pub fn save_model_dir(
    dir: &Path,
    model: &Model,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    generation: &GenerationDefaults,
    dtype: WeightsDtype,
    extra: &[(&str, Vec<u8>)],
) -> Result<()> {
    let mut config = config.clone();
    config.set_vocab_size(model.vocab_size());
    config.fill_token_ids(
        tokenizer.bos_id().or(tokenizer.eos_id()),
        tokenizer.eos_id(),
    );
    write_dir_atomic(dir, |tmp| {
        let mut value = config.to_hf_value();
        if let Some(o) = value.as_object_mut() {
            // transformers 4 reads `torch_dtype`, 5 `dtype`.
            o.insert("torch_dtype".into(), json!(dtype.torch_name()));
            if !matches!(config, ModelConfig::Gpt2(_)) {
                o.insert("dtype".into(), json!(dtype.torch_name()));
            }
        }
        let text = serde_json::to_string_pretty(&value).expect("json value");
        write_atomic(&tmp.join("config.json"), text.as_bytes())?;
        save_weights(model, tmp, dtype, MAX_SHARD_BYTES)?;
        let gen_text = serde_json::to_string_pretty(&generation.to_value(&config)).expect("json");
        write_atomic(&tmp.join("generation_config.json"), gen_text.as_bytes())?;
        tokenizer.save_dir(tmp, config.max_positions())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LlamaConfig, ModelConfig};

    fn values(m: &mut Model) -> Vec<(String, Vec<f32>)> {
        m.hf_params()
            .into_iter()
            .map(|p| {
                let v = match p.slot {
                    Slot::Vector(x) => x.val().into_data(),
                    Slot::Matrix(x) => x.val().into_data(),
                };
                (p.key, v.convert::<f32>().try_into_vec::<f32>().unwrap())
            })
            .collect()
    }

    #[test]
    fn shards_and_half_precision_round_trip() {
        let dev = Device::flex();
        let cfg = ModelConfig::Llama(LlamaConfig::tiny(50));
        let mut m = cfg.init(&dev);
        let dir = tempfile::tempdir().unwrap();
        // Shards of at most 8 KB: several files and an index.
        save_weights(&m, dir.path(), WeightsDtype::F32, 8_000).unwrap();
        assert!(dir.path().join(WEIGHTS_INDEX_FILE).is_file());
        assert!(!dir.path().join(WEIGHTS_FILE).exists());
        let shards = std::fs::read_dir(dir.path()).unwrap().count() - 1;
        assert!(shards > 2, "{shards} shards");
        let (mut back, dtype) = load_weights(cfg.init(&dev), dir.path()).unwrap();
        assert_eq!(dtype, WeightsDtype::F32);
        assert_eq!(
            values(&mut back),
            values(&mut m),
            "f32 shards are bit-exact"
        );

        // bf16 in, bf16 out: half the bytes of f32, values rounded to bf16 once.
        let bf = tempfile::tempdir().unwrap();
        save_weights(&m, bf.path(), WeightsDtype::Bf16, MAX_SHARD_BYTES).unwrap();
        let (mut b1, dtype) = load_weights(cfg.init(&dev), bf.path()).unwrap();
        assert_eq!(dtype, WeightsDtype::Bf16);
        let again = tempfile::tempdir().unwrap();
        save_weights(&b1, again.path(), dtype, MAX_SHARD_BYTES).unwrap();
        let a = std::fs::read(bf.path().join(WEIGHTS_FILE)).unwrap();
        let b = std::fs::read(again.path().join(WEIGHTS_FILE)).unwrap();
        assert_eq!(a, b, "a bf16 model is written back unchanged");
        let f32_total: usize = cfg.num_params() * 4;
        assert!(
            a.len() < f32_total * 6 / 10,
            "bf16 file {} vs f32 {}",
            a.len(),
            f32_total
        );
        for ((k, x), (_, y)) in values(&mut b1).iter().zip(values(&mut m)) {
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= q.abs() / 128.0 + 1e-30, "{k}: {p} vs {q}");
            }
        }
    }
}
