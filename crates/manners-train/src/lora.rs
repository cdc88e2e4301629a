//! LoRA: low-rank adapters on the projection matrices, the base weights frozen (Burn's
//! `apply_lora`, restricted by a parameter group). Adapters are saved alone in the Hugging Face
//! PEFT layout (`adapter_config.json` + `adapter_model.safetensors`), loaded back onto a base
//! model, and merged into the base weights.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use manners_model::burn::module::{Lora, LoraAdapter, Module, Param, ParamGroup, Reparameterizer};
use manners_model::burn::prelude::*;
use manners_model::{Gpt, write_atomic};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::config::LoraConfig;
use crate::error::{Result, TrainError};

/// PEFT's adapter files.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// Embedding rows of the special tokens added for the chat template (trained with the adapters).
pub const ADDED_ROWS: &str = "added_token_rows.safetensors";

/// The parameter group of the weights that get adapters, e.g. `h.3.attn.c_attn.weight`.
pub fn target_group(targets: &[String]) -> ParamGroup {
    let alt = targets
        .iter()
        .map(|t| regex_escape(t))
        .collect::<Vec<_>>()
        .join("|");
    ParamGroup::from_regex(format!(r"^h\.\d+\.(attn|mlp)\.({alt})\.weight$"))
        .expect("escaped regex is valid")
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// Freezes every base parameter and attaches adapters (A ~ N(0, 1/r), B = 0, so the model is
/// unchanged at first) to the target projections.
pub fn apply(model: Gpt, cfg: &LoraConfig) -> Gpt {
    model.apply_lora(Lora::new(cfg.rank, cfg.alpha).set_param_group(target_group(&cfg.targets)))
}

/// Every adapted projection: (`h.N.attn.c_attn`, adapter), in module order.
pub fn adapters(model: &Gpt) -> Vec<(String, &LoraAdapter)> {
    let mut out = Vec::new();
    for (i, b) in model.h.iter().enumerate() {
        for (name, w) in [
            ("attn.c_attn", &b.attn.c_attn.weight),
            ("attn.c_proj", &b.attn.c_proj.weight),
            ("mlp.c_fc", &b.mlp.c_fc.weight),
            ("mlp.c_proj", &b.mlp.c_proj.weight),
        ] {
            if let Some(a) = w.adapter() {
                out.push((format!("h.{i}.{name}"), a));
            }
        }
    }
    out
}

/// Parameters the optimiser will update: adapter factors and any unfrozen tensor (for `wte`
/// with trainable added rows, only those rows count).
pub fn trainable_params(model: &Gpt, added_rows: usize) -> u64 {
    let lora: usize = adapters(model)
        .iter()
        .map(|(_, a)| {
            a.a.val().dims().iter().product::<usize>() + a.b.val().dims().iter().product::<usize>()
        })
        .sum();
    if lora == 0 {
        return model.num_params() as u64;
    }
    (lora + added_rows * model.n_embd()) as u64
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
    /// GPT-2's `Conv1D` stores weights as `[in, out]`.
    pub fan_in_fan_out: bool,
    pub bias: String,
    pub base_model_name_or_path: String,
    /// Fingerprint (FNV-1a 64 and size) of the base `model.safetensors` the adapters were
    /// trained on: loading onto another base is refused.
    #[serde(default)]
    pub base_model_fingerprint: String,
    /// Special tokens added for the chat template (their embedding rows are in
    /// `added_token_rows.safetensors`), with their ids.
    #[serde(default)]
    pub added_tokens: Vec<(String, u32)>,
}

fn f32_bytes(t: Tensor<2>) -> Result<Vec<u8>> {
    let v = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Config(format!("{e:?}")))?;
    Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

fn write_tensors(path: &Path, tensors: Vec<(String, Vec<usize>, Vec<u8>)>) -> Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("shape matches data"),
            )
        })
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(write_atomic(path, &bytes)?)
}

/// Writes the adapters in PEFT layout: `lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`
/// under `base_model.model.transformer.<module>`, and the added embedding rows when any.
pub fn save_adapter_dir(
    dir: &Path,
    model: &Gpt,
    cfg: &AdapterConfig,
    added_rows: Option<(u32, Tensor<2>)>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut tensors = Vec::new();
    for (name, a) in adapters(model) {
        let (ta, tb) = (a.a.val().transpose(), a.b.val().transpose()); // [r, in], [out, r]
        let prefix = format!("base_model.model.transformer.{name}");
        tensors.push((
            format!("{prefix}.lora_A.weight"),
            ta.dims().to_vec(),
            f32_bytes(ta)?,
        ));
        tensors.push((
            format!("{prefix}.lora_B.weight"),
            tb.dims().to_vec(),
            f32_bytes(tb)?,
        ));
    }
    write_tensors(&dir.join(ADAPTER_WEIGHTS), tensors)?;
    if let Some((start, rows)) = added_rows {
        let shape = rows.dims().to_vec();
        write_tensors(
            &dir.join(ADDED_ROWS),
            vec![(format!("wte.rows_from_{start}"), shape, f32_bytes(rows)?)],
        )?;
    }
    let json = serde_json::to_vec_pretty(cfg).expect("config serialises");
    Ok(write_atomic(&dir.join(ADAPTER_CONFIG), &json)?)
}

/// Attaches given adapter factors (keyed by weight path) instead of fresh ones.
struct LoadedAdapters {
    factors: BTreeMap<String, (Tensor<2>, Tensor<2>)>,
    scale: f64,
}

impl Reparameterizer for LoadedAdapters {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        let base = param.set_require_grad(false);
        match self.factors.remove(path) {
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

/// Loads a PEFT adapter folder onto `base` (same architecture), restoring added embedding rows
/// first when the folder has them. The result computes `W + alpha/r * A @ B`.
pub fn load_adapter_dir(dir: &Path, base: Gpt) -> Result<(Gpt, AdapterConfig)> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::io(&cfg_path, e))?;
    let cfg: AdapterConfig = serde_json::from_str(&text).map_err(|e| TrainError::ConfigFile {
        path: cfg_path.clone(),
        message: e.to_string(),
    })?;
    let device = base.wte.weight.val().device();
    let read = |p: &Path| -> Result<Vec<u8>> { std::fs::read(p).map_err(|e| TrainError::io(p, e)) };
    let tensor = |st: &SafeTensors<'_>, key: &str, p: &Path| -> Result<Tensor<2>> {
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
            &device,
        ))
    };
    let mut model = base;
    let rows_path = dir.join(ADDED_ROWS);
    if rows_path.is_file() {
        let bytes = read(&rows_path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| TrainError::Checkpoint {
            path: rows_path.clone(),
            message: e.to_string(),
        })?;
        let key = st
            .names()
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let start: usize = key
            .rsplit('_')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rows = tensor(&st, &key, &rows_path)?;
        let old = model.wte.weight.val();
        let [v, d] = old.dims();
        let n = rows.dims()[0];
        if rows.dims()[1] != d || start > v {
            return Err(TrainError::Checkpoint {
                path: rows_path,
                message: format!("rows from {start} do not fit an embedding of {v} x {d}"),
            });
        }
        // Rows [start, start + n) replace the base's (growing the embedding when they go past it).
        let mut parts = vec![old.clone().narrow(0, 0, start), rows];
        if start + n < v {
            parts.push(old.narrow(0, start + n, v - start - n));
        }
        model.wte.weight = Param::from_tensor(Tensor::cat(parts, 0).detach());
    }
    let path = dir.join(ADAPTER_WEIGHTS);
    let bytes = read(&path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let mut factors = BTreeMap::new();
    for name in st.names() {
        let Some(module) = name
            .strip_prefix("base_model.model.transformer.")
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
        else {
            continue;
        };
        let a = tensor(&st, name, &path)?.transpose(); // [in, r]
        let b = tensor(
            &st,
            &format!("base_model.model.transformer.{module}.lora_B.weight"),
            &path,
        )?
        .transpose(); // [r, out]
        factors.insert(format!("{module}.weight"), (a, b));
    }
    if factors.is_empty() {
        return Err(TrainError::Checkpoint {
            path,
            message: "no lora_A/lora_B tensors found".into(),
        });
    }
    let n = factors.len();
    let names: Vec<String> = factors.keys().cloned().collect();
    model = model.apply_reparameterization(LoadedAdapters {
        factors,
        scale: cfg.lora_alpha / cfg.r as f64,
    });
    let attached = adapters(&model).len();
    if attached != n {
        return Err(TrainError::Checkpoint {
            path,
            message: format!(
                "{n} adapters in the file ({names:?}) but only {attached} match modules of the model"
            ),
        });
    }
    Ok((model, cfg))
}

/// Folds the adapters into the weights: a plain model computing the same function.
pub fn merge(model: Gpt) -> Gpt {
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
