//! LoRA: low-rank adapters on the projection matrices, the base weights frozen (Burn's
//! `apply_lora`, restricted to the projections the model names). Adapters are saved alone in
//! the Hugging Face PEFT layout (`adapter_config.json` + `adapter_model.safetensors`), loaded
//! back onto a base model, and merged into the base weights.

use std::collections::HashMap;
use std::path::Path;

use manners_model::burn::module::{Lora, LoraAdapter, Module, Param, ParamId, Reparameterizer};
use manners_model::burn::prelude::*;
use manners_model::{Model, NamedTensor, WeightsDtype, write_atomic, write_safetensors};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::config::LoraConfig;
use crate::error::{Result, TrainError};

/// PEFT's adapter files.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// Embedding rows (and untied LM head rows) of the special tokens added for the chat template,
/// trained with the adapters.
pub const ADDED_ROWS: &str = "added_token_rows.safetensors";

/// The targets of `cfg`, or every projection of the model when it names none.
pub fn targets(model: &Model, cfg: &LoraConfig) -> Vec<String> {
    if cfg.targets.is_empty() {
        model
            .lora_target_names()
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        cfg.targets.clone()
    }
}

/// Freezes every base parameter and attaches adapters (A ~ N(0, 1/r), B = 0, so the model is
/// unchanged at first) to the target projections. Unknown target names are an error.
pub fn apply(model: Model, cfg: &LoraConfig) -> Result<Model> {
    let group = model.lora_group(&targets(&model, cfg))?;
    Ok(model.apply_lora(Lora::new(cfg.rank, cfg.alpha).set_param_group(group)))
}

/// Parameters the optimiser will update: adapter factors and any unfrozen tensor (for the
/// token-indexed parameters with trainable added rows, only those rows count).
pub fn trainable_params(model: &Model, added_rows: usize) -> u64 {
    let lora: usize = model
        .adapters()
        .iter()
        .map(|(_, a)| {
            a.a.val().dims().iter().product::<usize>() + a.b.val().dims().iter().product::<usize>()
        })
        .sum();
    if lora == 0 {
        return model.num_params() as u64;
    }
    (lora + added_rows * model.n_embd() * model.token_params().len()) as u64
}

/// What `adapter_config.json` records: PEFT's fields plus the base model's identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub task_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub target_modules: Vec<String>,
    /// True when the base stores weights `[in, out]` (GPT-2's `Conv1D`).
    pub fan_in_fan_out: bool,
    pub bias: String,
    pub base_model_name_or_path: String,
    /// Fingerprint (FNV-1a 64 and size) of the base weights the adapters were trained on:
    /// loading onto another base is refused.
    #[serde(default)]
    pub base_model_fingerprint: String,
    /// Special tokens added for the chat template (their rows are in
    /// `added_token_rows.safetensors`), with their ids.
    #[serde(default)]
    pub added_tokens: Vec<(String, u32)>,
}

/// Rows of the added tokens, from `start` on: the embedding's `[n, d]` and, for an untied
/// head, the head's (as rows too).
pub struct AddedRows {
    pub start: u32,
    pub embedding: Tensor<2>,
    pub head: Option<Tensor<2>>,
}

impl AddedRows {
    /// Rows `[start, end]` (inclusive) of the model's token-indexed parameters.
    pub fn of(model: &Model, start: u32, end: u32) -> Self {
        let n = (end - start + 1) as usize;
        AddedRows {
            start,
            embedding: model.token_embedding().val().narrow(0, start as usize, n),
            head: model
                .lm_head()
                .map(|h| h.val().narrow(1, start as usize, n).transpose()),
        }
    }
}

/// Writes the adapters in PEFT layout: `lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`
/// under `base_model.model.<module>`, and the added token rows when any.
pub fn save_adapter_dir(
    dir: &Path,
    model: &Model,
    cfg: &AdapterConfig,
    added: Option<AddedRows>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let f32 = WeightsDtype::F32;
    let mut tensors = Vec::new();
    for (name, a) in model.adapters() {
        let prefix = format!("base_model.model.{name}");
        let (ta, tb) = (a.a.val().transpose(), a.b.val().transpose()); // [r, in], [out, r]
        tensors.push(NamedTensor::from_tensor(
            format!("{prefix}.lora_A.weight"),
            ta,
            f32,
        )?);
        tensors.push(NamedTensor::from_tensor(
            format!("{prefix}.lora_B.weight"),
            tb,
            f32,
        )?);
    }
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
    if let Some(rows) = added {
        let start = rows.start;
        let mut t = vec![NamedTensor::from_tensor(
            format!("token_embedding.rows_from_{start}"),
            rows.embedding,
            f32,
        )?];
        if let Some(h) = rows.head {
            t.push(NamedTensor::from_tensor(
                format!("lm_head.rows_from_{start}"),
                h,
                f32,
            )?);
        }
        write_safetensors(&dir.join(ADDED_ROWS), &t)?;
    }
    let json = serde_json::to_vec_pretty(cfg).expect("config serialises");
    Ok(write_atomic(&dir.join(ADAPTER_CONFIG), &json)?)
}

/// Attaches given adapter factors (keyed by the adapted parameter's id) instead of fresh ones.
struct LoadedAdapters {
    factors: HashMap<ParamId, (Tensor<2>, Tensor<2>)>,
    scale: f64,
}

impl Reparameterizer for LoadedAdapters {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        _path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        let factors = self.factors.remove(&param.id);
        let base = param.set_require_grad(false);
        match factors {
            Some((a, b)) if D == 2 => (
                base,
                Some(LoraAdapter {
                    a: Param::from_tensor(a),
                    b: Param::from_tensor(b),
                    scale: self.scale,
                }),
            ),
            _ => (base, None),
        }
    }
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| TrainError::io(p, e))
}

fn matrix(st: &SafeTensors<'_>, key: &str, p: &Path, device: &Device) -> Result<Tensor<2>> {
    let v = st.tensor(key).map_err(|e| TrainError::Checkpoint {
        path: p.to_path_buf(),
        message: format!("{key}: {e}"),
    })?;
    if v.dtype() != Dtype::F32 || v.shape().len() != 2 {
        return Err(TrainError::Checkpoint {
            path: p.to_path_buf(),
            message: format!("{key}: expected a 2-D f32 tensor"),
        });
    }
    let data: Vec<f32> = v
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Tensor::from_data(
        TensorData::new(data, [v.shape()[0], v.shape()[1]]),
        device,
    ))
}

/// `old` with `rows` (`[n, d]`) written over rows `[start, start + n)` of axis `axis`, grown
/// when they go past its end.
fn splice(old: Tensor<2>, rows: Tensor<2>, start: usize, axis: usize) -> Tensor<2> {
    let rows = if axis == 0 { rows } else { rows.transpose() };
    let v = old.dims()[axis];
    let n = rows.dims()[axis];
    let mut parts = vec![old.clone().narrow(axis, 0, start), rows];
    if start + n < v {
        parts.push(old.narrow(axis, start + n, v - start - n));
    }
    Tensor::cat(parts, axis).detach()
}

/// Restores added token rows (written by [`save_adapter_dir`]) into `model`.
fn load_added_rows(model: Model, path: &Path) -> Result<Model> {
    let device = model.device();
    let bytes = read(path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut model = model;
    for key in st.names() {
        let start: usize = key
            .rsplit('_')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rows = matrix(&st, key, path, &device)?;
        let d = model.n_embd();
        if rows.dims()[1] != d || start > model.vocab_size() {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "{key}: rows from {start} do not fit an embedding of {} x {d}",
                    model.vocab_size()
                ),
            });
        }
        let n = rows.dims()[0];
        if start + n > model.vocab_size() {
            model = model.resize_token_embeddings(start + n);
        }
        // The embedding (`token_embedding.` or, in older adapters, `wte.`) or the untied head.
        let head = key.starts_with("lm_head.");
        model = model.map_token_param(head, |p| {
            let axis = if head { 1 } else { 0 };
            Param::from_tensor(splice(p.val(), rows.clone(), start, axis))
        })?;
    }
    Ok(model)
}

/// Loads a PEFT adapter folder onto `base` (same architecture), restoring added token rows
/// first when the folder has them. The result computes `W + alpha/r * A @ B`.
pub fn load_adapter_dir(dir: &Path, base: Model) -> Result<(Model, AdapterConfig)> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::io(&cfg_path, e))?;
    let cfg: AdapterConfig = serde_json::from_str(&text).map_err(|e| TrainError::ConfigFile {
        path: cfg_path.clone(),
        message: e.to_string(),
    })?;
    let device = base.device();
    let rows_path = dir.join(ADDED_ROWS);
    let mut model = if rows_path.is_file() {
        load_added_rows(base, &rows_path)?
    } else {
        base
    };
    let path = dir.join(ADAPTER_WEIGHTS);
    let bytes = read(&path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let ids: HashMap<String, ParamId> = model
        .projections()
        .into_iter()
        .map(|(_, hf, p)| (hf, p.id))
        .collect();
    let mut factors = HashMap::new();
    let mut unmatched = Vec::new();
    for name in st.names() {
        let Some(module) = name
            .strip_prefix("base_model.model.")
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
        else {
            continue;
        };
        let a = matrix(&st, name, &path, &device)?.transpose(); // [in, r]
        let b_key = format!("base_model.model.{module}.lora_B.weight");
        let b = matrix(&st, &b_key, &path, &device)?.transpose(); // [r, out]
        match ids.get(module) {
            Some(id) => {
                factors.insert(*id, (a, b));
            }
            None => unmatched.push(module.to_string()),
        }
    }
    if factors.is_empty() && unmatched.is_empty() {
        return Err(TrainError::Checkpoint {
            path,
            message: "no lora_A/lora_B tensors found".into(),
        });
    }
    if !unmatched.is_empty() {
        return Err(TrainError::Checkpoint {
            path,
            message: format!("adapters for modules the model does not have: {unmatched:?}"),
        });
    }
    let n = factors.len();
    model = model.apply_reparameterization(LoadedAdapters {
        factors,
        scale: cfg.lora_alpha / cfg.r as f64,
    });
    let attached = model.adapters().len();
    if attached != n {
        return Err(TrainError::Checkpoint {
            path,
            message: format!("{n} adapters in the file but {attached} attached"),
        });
    }
    Ok((model, cfg))
}

/// Folds the adapters into the weights: a plain model computing the same function.
pub fn merge(model: Model) -> Model {
    model.materialize()
}

/// Identity of a weights file: `fnv1a64:<hex>:<bytes>` over its whole content (an identity
/// check against the wrong base, not a security measure).
pub fn fingerprint_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut n: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).map_err(|e| TrainError::io(path, e))?;
        if k == 0 {
            break;
        }
        for &b in &buf[..k] {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        n += k as u64;
    }
    Ok(format!("fnv1a64:{h:016x}:{n}"))
}
