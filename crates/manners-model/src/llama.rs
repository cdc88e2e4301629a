//! The Llama family, written once for every Burn device: `llama` (Llama 2/3/3.1/3.2,
//! SmolLM/SmolLM2, TinyLlama), `mistral` (without a sliding window), `qwen2` (Qwen2, Qwen2.5)
//! and `qwen3`. They differ from each other in a few switches of [`LlamaConfig`]: biases on
//! q/k/v (Qwen2), per-head RMSNorm on queries and keys (Qwen3), tied or untied LM head.
//!
//! Pre-RMSNorm decoder layers with rotary position embeddings (half-split, as transformers'
//! `rotate_half`; `rope_theta`, and `llama3` or `linear` scaling), grouped-query attention
//! (`num_key_value_heads` <= `num_attention_heads`, each key/value head serving a group of query
//! heads) and a SwiGLU MLP `down(silu(gate(x)) * up(x))`.
//!
//! Field names are Hugging Face's (`model.embed_tokens`, `model.layers.N.self_attn.q_proj`,
//! `model.layers.N.mlp.gate_proj`, `model.norm`, `lm_head`). HF `nn.Linear` weights are
//! `[out, in]`, Burn's `Linear` `[in, out]`: they are transposed on load and save.

use burn::module::Param;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm,
    RmsNormConfig,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::attention::{AttnMask, attend};
use crate::cache::KvCache;
use crate::config::{HfFields, human_count};
use crate::error::{ModelError, Result};
use crate::fused;
use crate::gguf::{GgufSource, GgufValue};
use crate::model::{ForwardOptions, HfParam, Slot};

// ---- config ---------------------------------------------------------------------------------

/// How rotary frequencies are scaled for contexts longer than pretraining's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Positions divided by `factor` (all frequencies divided by it).
    Linear { factor: f64 },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// The shape of a Llama-family model. Field names follow Hugging Face's configs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `llama`, `mistral`, `qwen2` or `qwen3`: written back to `config.json`.
    pub model_type: String,
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Hidden width of the SwiGLU MLP.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); equal to `num_attention_heads` for plain
    /// multi-head attention.
    pub num_key_value_heads: usize,
    /// Width of each head (`hidden_size / num_attention_heads` unless given).
    pub head_dim: usize,
    /// Longest context.
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// Biases on the q, k and v projections (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on the output projection (Llama's `attention_bias`).
    pub o_bias: bool,
    /// Biases on the MLP projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// RMSNorm over each head of the queries and keys before the rotation (Qwen3).
    pub qk_norm: bool,
    /// The LM head is the token embedding (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// Dropout on the residual branches while training (the trainer's setting; HF has none).
    #[serde(default)]
    pub dropout: f64,
    /// The `config.json` this was read from, written back with our fields updated, so fields
    /// manners does not use (`use_cache`, `initializer_range`, ...) survive an export.
    #[serde(skip)]
    pub source: Option<Map<String, Value>>,
}

impl LlamaConfig {
    /// A tiny model for tests: 2 layers, width 32, 4 heads over 2 key/value heads, untied.
    pub fn tiny(vocab_size: usize) -> Self {
        LlamaConfig {
            model_type: "llama".into(),
            vocab_size,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 8,
            max_position_embeddings: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: None,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_id: None,
            dropout: 0.0,
            source: None,
        }
    }

    /// SmolLM2-135M's shape (30 layers, width 576, 9 heads over 3 key/value heads, MLP 1536,
    /// vocabulary 49152, tied head, context 8192).
    pub fn smollm2_135m() -> Self {
        LlamaConfig {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            max_position_embeddings: 8192,
            rope_theta: 100_000.0,
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            ..Self::tiny(49152)
        }
    }

    /// Checks the shape is buildable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        crate::model::check_bounds(&[
            ("vocab_size", self.vocab_size, 1 << 24),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            ("num_key_value_heads", self.num_key_value_heads, 1 << 10),
            ("head_dim", self.head_dim, 1 << 12),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 24,
            ),
        ])?;
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim ({}) must be even for rotary embeddings",
                self.head_dim
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return bad(format!(
                "rms_norm_eps {} must be positive",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return bad(format!("rope_theta {} must be positive", self.rope_theta));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// Number of parameters (a tied head is not counted twice).
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let (q, kv) = (
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        );
        let f = self.intermediate_size;
        let bias = |on: bool, n: usize| if on { n } else { 0 };
        let layer = 2 * d
            + d * q
            + 2 * d * kv
            + bias(self.qkv_bias, q + 2 * kv)
            + q * d
            + bias(self.o_bias, d)
            + 3 * d * f
            + bias(self.mlp_bias, 2 * f + d)
            + bias(self.qk_norm, 2 * self.head_dim);
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_hidden_layers * layer + d + head
    }

    /// One line: `llama 30L/576d/9h (3 kv), vocab 49152, ctx 8192, tied, 134.5M params`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}L/{}d/{}h ({} kv), vocab {}, ctx {}, {}, {} params",
            self.model_type,
            self.num_hidden_layers,
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.vocab_size,
            self.max_position_embeddings,
            if self.tie_word_embeddings {
                "tied head"
            } else {
                "untied head"
            },
            human_count(self.num_params() as u64)
        )
    }

    /// Parses a Hugging Face `LlamaConfig`, `MistralConfig`, `Qwen2Config` or `Qwen3Config`;
    /// errors name the field.
    pub fn from_hf_value(v: &Value) -> std::result::Result<Self, (String, String)> {
        let f = HfFields(v);
        let model_type = f.str("model_type")?.unwrap_or("llama").to_string();
        let is = |t: &str| model_type == t;
        match f.str("hidden_act")? {
            None | Some("silu") | Some("swish") => {}
            Some(other) => {
                return Err((
                    "hidden_act".into(),
                    format!("unsupported activation `{other}` (the Llama family uses silu)"),
                ));
            }
        }
        let hidden_size = f.usize(&["hidden_size"], None)?;
        let heads = f.usize(&["num_attention_heads"], None)?;
        let head_dim = match f.opt_usize("head_dim")? {
            Some(h) => h,
            None if heads > 0 => hidden_size / heads,
            None => 0,
        };
        let max_pos = f.usize(&["max_position_embeddings"], None)?;
        // A sliding window that can never slide is no window.
        let window = f.opt_usize("sliding_window")?;
        let uses_window = match model_type.as_str() {
            "qwen2" | "qwen3" => f.bool("use_sliding_window")? == Some(true),
            _ => window.is_some(),
        };
        if uses_window && window.is_some_and(|w| w < max_pos) {
            return Err((
                "sliding_window".into(),
                format!(
                    "sliding-window attention ({} of {max_pos} positions) is not supported",
                    window.unwrap_or(0)
                ),
            ));
        }
        if let Some(Value::Array(types)) = v.get("layer_types")
            && types.iter().any(|t| t.as_str() != Some("full_attention"))
            && uses_window
        {
            return Err((
                "layer_types".into(),
                "layers with sliding-window attention are not supported".into(),
            ));
        }
        let (rope_theta, rope_scaling) = rope(v)?;
        let attention_bias = f.bool("attention_bias")?.unwrap_or(false);
        let cfg = LlamaConfig {
            vocab_size: f.usize(&["vocab_size"], None)?,
            hidden_size,
            intermediate_size: f.usize(&["intermediate_size"], None)?,
            num_hidden_layers: f.usize(&["num_hidden_layers"], None)?,
            num_attention_heads: heads,
            num_key_value_heads: f.usize(&["num_key_value_heads"], Some(heads))?,
            head_dim,
            max_position_embeddings: max_pos,
            rms_norm_eps: f.f64("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            // Qwen2 always has q/k/v biases and no output bias.
            qkv_bias: is("qwen2") || attention_bias,
            o_bias: !is("qwen2") && attention_bias,
            mlp_bias: f.bool("mlp_bias")?.unwrap_or(false),
            qk_norm: is("qwen3"),
            tie_word_embeddings: f
                .bool("tie_word_embeddings")?
                .unwrap_or(!matches!(model_type.as_str(), "llama" | "mistral")),
            bos_token_id: f.token_id("bos_token_id"),
            eos_token_id: f.token_id("eos_token_id"),
            dropout: 0.0,
            source: v.as_object().cloned(),
            model_type,
        };
        cfg.validate()
            .map_err(|e| ("<config>".to_string(), e.to_string()))?;
        Ok(cfg)
    }

    /// The Hugging Face `config.json`: the one read (when there was one) with every field manners
    /// owns written over it.
    pub fn to_hf_value(&self) -> Value {
        let arch = match self.model_type.as_str() {
            "mistral" => "MistralForCausalLM",
            "qwen2" => "Qwen2ForCausalLM",
            "qwen3" => "Qwen3ForCausalLM",
            _ => "LlamaForCausalLM",
        };
        let mut m = self.source.clone().unwrap_or_default();
        let rope_parameters = match &self.rope_scaling {
            None => json!({ "rope_type": "default", "rope_theta": self.rope_theta }),
            Some(RopeScaling::Linear { factor }) => {
                json!({ "rope_type": "linear", "factor": factor, "rope_theta": self.rope_theta })
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => json!({
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
                "rope_theta": self.rope_theta,
            }),
        };
        let mut scaling = rope_parameters.clone();
        if let Some(o) = scaling.as_object_mut() {
            o.remove("rope_theta");
        }
        let ours = json!({
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            // transformers 5 reads `rope_parameters`, 4.x `rope_scaling` (+ `rope_theta`).
            "rope_parameters": rope_parameters,
            "rope_scaling": if self.rope_scaling.is_some() { scaling } else { Value::Null },
            "attention_bias": self.o_bias || (self.qkv_bias && self.model_type != "qwen2"),
            "mlp_bias": self.mlp_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "use_cache": true,
        });
        for (k, v) in ours.as_object().into_iter().flatten() {
            m.insert(k.clone(), v.clone());
        }
        if self.eos_token_id.is_some() && !matches!(m.get("eos_token_id"), Some(Value::Array(_))) {
            m.insert("eos_token_id".into(), json!(self.eos_token_id));
        }
        if self.model_type == "qwen2" || self.model_type == "qwen3" {
            m.insert("use_sliding_window".into(), json!(false));
        }
        Value::Object(m)
    }

    /// Inverse rotary frequencies, `head_dim / 2` of them, scaled as configured (transformers'
    /// `_compute_default_rope_parameters` / `_compute_linear_scaling_rope_parameters` /
    /// `_compute_llama3_parameters`).
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base: Vec<f64> = (0..dim / 2)
            .map(|i| {
                // torch computes this in f32: round the exponent the same way.
                let e = ((2 * i) as f32 / dim as f32) as f64;
                1.0 / self.rope_theta.powf(e)
            })
            .collect();
        let scaled: Vec<f64> = match &self.rope_scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let old = *original_max_position_embeddings as f64;
                let (low_wl, high_wl) = (old / low_freq_factor, old / high_freq_factor);
                base.iter()
                    .map(|&f| {
                        let wl = 2.0 * std::f64::consts::PI / f;
                        if wl < high_wl {
                            f
                        } else if wl > low_wl {
                            f / factor
                        } else {
                            let s =
                                (old / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - s) * f / factor + s * f
                        }
                    })
                    .collect()
            }
        };
        scaled.into_iter().map(|f| f as f32).collect()
    }

    /// A freshly initialised model: weights N(0, 0.02), biases 0, norm gains 1.
    pub fn init(&self, device: &Device) -> Llama {
        let d = self.hidden_size;
        let (q, kv) = (
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        );
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let linear = |i: usize, o: usize, bias: bool| {
            let mut l = LinearConfig::new(i, o)
                .with_bias(bias)
                .with_initializer(normal.clone())
                .init(device);
            if let Some(b) = &l.bias {
                let [n] = b.val().dims();
                l.bias = Some(Initializer::Zeros.init([n], device));
            }
            l
        };
        let norm = |n: usize| {
            RmsNormConfig::new(n)
                .with_epsilon(self.rms_norm_eps)
                .init(device)
        };
        let drop = || DropoutConfig::new(self.dropout).init();
        let layers = (0..self.num_hidden_layers)
            .map(|_| DecoderLayer {
                input_layernorm: norm(d),
                self_attn: LlamaAttention {
                    q_proj: linear(d, q, self.qkv_bias),
                    k_proj: linear(d, kv, self.qkv_bias),
                    v_proj: linear(d, kv, self.qkv_bias),
                    o_proj: linear(q, d, self.o_bias),
                    q_norm: self.qk_norm.then(|| norm(self.head_dim)),
                    k_norm: self.qk_norm.then(|| norm(self.head_dim)),
                    n_heads: self.num_attention_heads,
                    n_kv_heads: self.num_key_value_heads,
                    head_dim: self.head_dim,
                },
                post_attention_layernorm: norm(d),
                mlp: LlamaMlp {
                    gate_proj: linear(d, self.intermediate_size, self.mlp_bias),
                    up_proj: linear(d, self.intermediate_size, self.mlp_bias),
                    down_proj: linear(self.intermediate_size, d, self.mlp_bias),
                },
                drop: drop(),
            })
            .collect();
        Llama {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(normal.clone())
                .init(device),
            layers,
            norm: norm(d),
            lm_head: (!self.tie_word_embeddings).then(|| linear(d, self.vocab_size, false)),
            drop: drop(),
            inv_freq: self.inv_freq(),
            max_positions: self.max_position_embeddings,
        }
    }
}

/// `(rope_theta, scaling)` from `rope_parameters` (transformers 5) or `rope_theta` +
/// `rope_scaling` (4.x).
fn rope(v: &Value) -> std::result::Result<(f64, Option<RopeScaling>), (String, String)> {
    let (field, params) = match (v.get("rope_parameters"), v.get("rope_scaling")) {
        (Some(p @ Value::Object(_)), _) => ("rope_parameters", Some(p)),
        (_, Some(p @ Value::Object(_))) => ("rope_scaling", Some(p)),
        _ => ("rope_scaling", None),
    };
    let f = HfFields(v);
    let theta = match params.and_then(|p| p.get("rope_theta")) {
        Some(_) => HfFields(params.unwrap_or(&Value::Null)).f64("rope_theta", 10_000.0),
        None => f.f64("rope_theta", 10_000.0),
    }
    .map_err(|(k, m)| (format!("{field}.{k}"), m))?;
    let Some(p) = params else {
        return Ok((theta, None));
    };
    let pf = HfFields(p);
    let err = |(k, m): (String, String)| (format!("{field}.{k}"), m);
    let kind = match pf.str("rope_type").map_err(err)? {
        Some(t) => t,
        None => pf.str("type").map_err(err)?.unwrap_or("default"),
    };
    let factor = || pf.f64("factor", f64::NAN).map_err(err);
    let scaling = match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: factor()? }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: pf.f64("low_freq_factor", 1.0).map_err(err)?,
            high_freq_factor: pf.f64("high_freq_factor", 4.0).map_err(err)?,
            original_max_position_embeddings: pf
                .usize(
                    &["original_max_position_embeddings"],
                    f.opt_usize("max_position_embeddings")?,
                )
                .map_err(err)?,
        }),
        other => {
            return Err((
                format!("{field}.rope_type"),
                format!("rotary scaling `{other}` is not supported (default, linear, llama3)"),
            ));
        }
    };
    if let Some(RopeScaling::Linear { factor } | RopeScaling::Llama3 { factor, .. }) = &scaling
        && !(*factor > 0.0 && factor.is_finite())
    {
        return Err((
            format!("{field}.factor"),
            format!("expected a positive number, got {factor}"),
        ));
    }
    Ok((theta, scaling))
}

// ---- the model --------------------------------------------------------------------------------

/// The whole model (`LlamaForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM`).
#[derive(Module, Debug)]
pub struct Llama {
    /// `[vocab, d]`; also the LM head when tied.
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
    /// `[d, vocab]` when untied.
    pub lm_head: Option<Linear>,
    pub drop: Dropout,
    /// Inverse rotary frequencies (`head_dim / 2`), scaling applied.
    pub inv_freq: Vec<f32>,
    /// Longest context.
    pub max_positions: usize,
}

/// One pre-RMSNorm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: LlamaAttention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: LlamaMlp,
    pub drop: Dropout,
}

/// Grouped-query attention with rotary positions.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// `[d, heads * head_dim]`.
    pub q_proj: Linear,
    /// `[d, kv_heads * head_dim]`.
    pub k_proj: Linear,
    pub v_proj: Linear,
    /// `[heads * head_dim, d]`.
    pub o_proj: Linear,
    /// Qwen3: RMSNorm over each query head.
    pub q_norm: Option<RmsNorm>,
    /// Qwen3: RMSNorm over each key head.
    pub k_norm: Option<RmsNorm>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// SwiGLU: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

/// `cos` and `sin` of every position's rotation angles, `[b, 1, t, head_dim]` each.
struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rope {
    fn new(positions: Tensor<2, Int>, inv_freq: &[f32]) -> Self {
        let [b, t] = positions.dims();
        let device = positions.device();
        let half = inv_freq.len();
        let inv = Tensor::<1>::from_floats(inv_freq, &device).reshape([1, 1, half]);
        let freqs = positions.float().reshape([b, t, 1]) * inv; // [b, t, hd/2]
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1); // [b, 1, t, hd]
        Rope {
            cos: emb.clone().cos(),
            sin: emb.sin(),
        }
    }

    /// `x * cos + rotate_half(x) * sin` for `x` `[b, h, t, hd]`.
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let hd = x.dims()[3];
        let x1 = x.clone().narrow(3, 0, hd / 2);
        let x2 = x.clone().narrow(3, hd / 2, hd / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

impl Llama {
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.val().dims()[0]
    }

    pub fn hidden_size(&self) -> usize {
        self.embed_tokens.weight.val().dims()[1]
    }

    /// Final hidden states after `norm`: `[b, t] -> [b, t, d]`.
    pub fn hidden(&self, ids: Tensor<2, Int>, opts: ForwardOptions) -> Tensor<3> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let (positions, mask) = opts.resolve(b, t, &device);
        let rope = Rope::new(positions, &self.inv_freq);
        let mut x = self.drop.forward(fused::embedding(&self.embed_tokens, ids)); // [b, t, d]
        for layer in &self.layers {
            x = layer.forward(x, &rope, &mask, None);
        }
        fused::rms_norm(&self.norm, x)
    }

    /// The LM head: `[..., d] -> [..., vocab]` (the embedding when tied).
    pub fn head<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match &self.lm_head {
            Some(h) => fused::linear_layer(h, hidden),
            None => fused::linear(hidden, self.embed_tokens.weight.val().transpose(), None),
        }
    }

    /// Runs new tokens through the model, reading and extending `cache` (keys and values are
    /// cached per key/value head, before the grouped-query repeat); returns the logits of the
    /// LAST new position of each row: `[b, t_new] -> [b, vocab]`.
    pub fn forward_cached(&self, ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<2> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let rope = Rope::new(cache.positions(b, t, &device), &self.inv_freq);
        let mask = AttnMask::cached(cache.pads(b));
        let mut x = fused::embedding(&self.embed_tokens, ids);
        cache.ensure_layers(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, &rope, &mask, Some((&mut *cache, i)));
        }
        cache.advance(t);
        let d = self.hidden_size();
        let last = fused::rms_norm(&self.norm, x.narrow(1, t - 1, 1)).reshape([b, d]);
        self.head(last)
    }

    /// Every parameter under its Hugging Face key; `nn.Linear` weights are transposed.
    pub(crate) fn hf_params(&mut self) -> Vec<HfParam<'_>> {
        fn linear<'a>(out: &mut Vec<HfParam<'a>>, name: &str, l: &'a mut Linear) {
            out.push(
                HfParam::new(format!("{name}.weight"), Slot::Matrix(&mut l.weight)).transposed(),
            );
            if let Some(b) = l.bias.as_mut() {
                out.push(HfParam::new(format!("{name}.bias"), Slot::Vector(b)));
            }
        }
        fn norm<'a>(out: &mut Vec<HfParam<'a>>, name: &str, n: &'a mut RmsNorm) {
            out.push(HfParam::new(
                format!("{name}.weight"),
                Slot::Vector(&mut n.gamma),
            ));
        }
        let mut out = vec![HfParam::new(
            "model.embed_tokens.weight".into(),
            Slot::Matrix(&mut self.embed_tokens.weight),
        )];
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            norm(
                &mut out,
                &format!("{p}.input_layernorm"),
                &mut l.input_layernorm,
            );
            let a = &mut l.self_attn;
            linear(&mut out, &format!("{p}.self_attn.q_proj"), &mut a.q_proj);
            linear(&mut out, &format!("{p}.self_attn.k_proj"), &mut a.k_proj);
            linear(&mut out, &format!("{p}.self_attn.v_proj"), &mut a.v_proj);
            linear(&mut out, &format!("{p}.self_attn.o_proj"), &mut a.o_proj);
            if let Some(n) = a.q_norm.as_mut() {
                norm(&mut out, &format!("{p}.self_attn.q_norm"), n);
            }
            if let Some(n) = a.k_norm.as_mut() {
                norm(&mut out, &format!("{p}.self_attn.k_norm"), n);
            }
            norm(
                &mut out,
                &format!("{p}.post_attention_layernorm"),
                &mut l.post_attention_layernorm,
            );
            linear(
                &mut out,
                &format!("{p}.mlp.gate_proj"),
                &mut l.mlp.gate_proj,
            );
            linear(&mut out, &format!("{p}.mlp.up_proj"), &mut l.mlp.up_proj);
            linear(
                &mut out,
                &format!("{p}.mlp.down_proj"),
                &mut l.mlp.down_proj,
            );
        }
        norm(&mut out, "model.norm", &mut self.norm);
        if let Some(h) = self.lm_head.as_mut() {
            out.push(
                HfParam::new("lm_head.weight".into(), Slot::Matrix(&mut h.weight)).transposed(),
            );
        }
        out
    }

    /// The projection weights LoRA can adapt, by target name, with their HF module names.
    pub(crate) fn projections(&self) -> Vec<(&'static str, String, &Param<Tensor<2>>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &l.self_attn;
            out.push(("q_proj", format!("{p}.self_attn.q_proj"), &a.q_proj.weight));
            out.push(("k_proj", format!("{p}.self_attn.k_proj"), &a.k_proj.weight));
            out.push(("v_proj", format!("{p}.self_attn.v_proj"), &a.v_proj.weight));
            out.push(("o_proj", format!("{p}.self_attn.o_proj"), &a.o_proj.weight));
            out.push((
                "gate_proj",
                format!("{p}.mlp.gate_proj"),
                &l.mlp.gate_proj.weight,
            ));
            out.push(("up_proj", format!("{p}.mlp.up_proj"), &l.mlp.up_proj.weight));
            out.push((
                "down_proj",
                format!("{p}.mlp.down_proj"),
                &l.mlp.down_proj.weight,
            ));
        }
        out
    }

    pub(crate) fn with_dropout(mut self, p: f64) -> Self {
        self.drop = DropoutConfig::new(p).init();
        for l in &mut self.layers {
            l.drop = DropoutConfig::new(p).init();
        }
        self
    }
}

/// llama.cpp's architecture for a config: `llama` (Llama, Mistral; interleaved rotary pairs)
/// or `qwen2` / `qwen3` (half-split pairs, like transformers).
pub(crate) fn gguf_arch(c: &LlamaConfig) -> Result<&'static str> {
    match c.model_type.as_str() {
        "llama" | "mistral" => Ok("llama"),
        "qwen2" => Ok("qwen2"),
        "qwen3" => Ok("qwen3"),
        other => Err(ModelError::Config(format!(
            "no llama.cpp architecture for model_type `{other}`"
        ))),
    }
}

/// llama.cpp's `<arch>.*` hyperparameters.
pub(crate) fn gguf_metadata(c: &LlamaConfig) -> Vec<(String, GgufValue)> {
    let u = |k: &str, v: usize| (k.to_string(), GgufValue::U32(v as u32));
    let mut md = vec![
        u("context_length", c.max_position_embeddings),
        u("embedding_length", c.hidden_size),
        u("feed_forward_length", c.intermediate_size),
        u("block_count", c.num_hidden_layers),
        u("attention.head_count", c.num_attention_heads),
        u("attention.head_count_kv", c.num_key_value_heads),
        u("attention.key_length", c.head_dim),
        u("attention.value_length", c.head_dim),
        u("rope.dimension_count", c.head_dim),
        ("rope.freq_base".into(), GgufValue::F32(c.rope_theta as f32)),
        (
            "attention.layer_norm_rms_epsilon".into(),
            GgufValue::F32(c.rms_norm_eps as f32),
        ),
    ];
    if let Some(RopeScaling::Linear { factor }) = &c.rope_scaling {
        md.push(("rope.scaling.type".into(), GgufValue::Str("linear".into())));
        md.push(("rope.scaling.factor".into(), GgufValue::F32(*factor as f32)));
    }
    md
}

/// llama.cpp's `llama` architecture rotates consecutive pairs of each head where transformers
/// rotates its two halves; its converter reorders the q and k rows to match
/// (`[heads, 2, hd/2, ...] -> [heads, hd/2, 2, ...]`). `t` is `[heads * hd]` or
/// `[heads * hd, in]`, flattened row-major with `rest` values per row.
fn interleave_heads(values: Vec<f32>, heads: usize, rows: usize, rest: usize) -> Vec<f32> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0.0f32; values.len()];
    for h in 0..heads {
        for j in 0..half {
            for pair in 0..2 {
                let from = h * hd + pair * half + j;
                let to = h * hd + 2 * j + pair;
                out[to * rest..(to + 1) * rest]
                    .copy_from_slice(&values[from * rest..(from + 1) * rest]);
            }
        }
    }
    out
}

impl Llama {
    /// The weights under llama.cpp's names, in PyTorch's layout (`nn.Linear` `[out, in]`); q/k
    /// rows interleaved for the `llama` architecture; `rope_freqs` for llama3 scaling.
    pub(crate) fn gguf_tensors(&self, c: &LlamaConfig) -> Vec<GgufSource> {
        let interleave = gguf_arch(c).is_ok_and(|a| a == "llama");
        let device = self.embed_tokens.weight.val().device();
        let permuted = |t: Tensor<2>, heads: usize| -> Tensor<2> {
            let [rows, rest] = t.dims();
            let v = t
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default();
            Tensor::from_data(
                TensorData::new(interleave_heads(v, heads, rows, rest), [rows, rest]),
                &device,
            )
        };
        // A bias is a one-column matrix to interleave.
        let permuted1 = |t: Tensor<1>, heads: usize| -> Tensor<1> {
            let [rows] = t.dims();
            permuted(t.reshape([rows, 1]), heads).reshape([rows])
        };
        let mut out = vec![GgufSource::matrix(
            "token_embd.weight",
            self.embed_tokens.weight.val(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let b = format!("blk.{i}");
            let a = &l.self_attn;
            out.push(GgufSource::vector(
                format!("{b}.attn_norm.weight"),
                l.input_layernorm.gamma.val(),
            ));
            for (name, lin, heads) in [
                ("attn_q", &a.q_proj, Some(a.n_heads)),
                ("attn_k", &a.k_proj, Some(a.n_kv_heads)),
                ("attn_v", &a.v_proj, None),
                ("attn_output", &a.o_proj, None),
            ] {
                let w = lin.weight.val().transpose();
                let w = match heads.filter(|_| interleave) {
                    Some(h) => permuted(w, h),
                    None => w,
                };
                out.push(GgufSource::matrix(format!("{b}.{name}.weight"), w));
                if let Some(bias) = &lin.bias {
                    let v = match heads.filter(|_| interleave) {
                        Some(h) => permuted1(bias.val(), h),
                        None => bias.val(),
                    };
                    out.push(GgufSource::vector(format!("{b}.{name}.bias"), v));
                }
            }
            if let Some(n) = &a.q_norm {
                out.push(GgufSource::vector(
                    format!("{b}.attn_q_norm.weight"),
                    n.gamma.val(),
                ));
            }
            if let Some(n) = &a.k_norm {
                out.push(GgufSource::vector(
                    format!("{b}.attn_k_norm.weight"),
                    n.gamma.val(),
                ));
            }
            out.push(GgufSource::vector(
                format!("{b}.ffn_norm.weight"),
                l.post_attention_layernorm.gamma.val(),
            ));
            for (name, lin) in [
                ("ffn_gate", &l.mlp.gate_proj),
                ("ffn_up", &l.mlp.up_proj),
                ("ffn_down", &l.mlp.down_proj),
            ] {
                out.push(GgufSource::matrix(
                    format!("{b}.{name}.weight"),
                    lin.weight.val().transpose(),
                ));
                if let Some(bias) = &lin.bias {
                    out.push(GgufSource::vector(format!("{b}.{name}.bias"), bias.val()));
                }
            }
        }
        out.push(GgufSource::vector(
            "output_norm.weight",
            self.norm.gamma.val(),
        ));
        if let Some(h) = &self.lm_head {
            out.push(GgufSource::matrix(
                "output.weight",
                h.weight.val().transpose(),
            ));
        }
        if let Some(RopeScaling::Llama3 { .. }) = &c.rope_scaling {
            // The divisor of each frequency (llama.cpp multiplies the angle by 1 / factor).
            let base = LlamaConfig {
                rope_scaling: None,
                ..c.clone()
            }
            .inv_freq();
            let factors: Vec<f32> = base.iter().zip(c.inv_freq()).map(|(b, s)| b / s).collect();
            let n = factors.len();
            out.push(GgufSource::vector(
                "rope_freqs.weight",
                Tensor::from_data(TensorData::new(factors, [n]), &device),
            ));
        }
        out
    }
}

/// Keys in HF files that are not parameters of ours: rotary buffers of old checkpoints, and
/// `lm_head.weight` of a tied model (some exports write it anyway).
pub(crate) fn is_buffer_key(key: &str, tied: bool) -> bool {
    key.ends_with(".rotary_emb.inv_freq") || (tied && key == "lm_head.weight")
}

impl DecoderLayer {
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        mask: &AttnMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let h = fused::rms_norm(&self.input_layernorm, x.clone());
        let a = self.self_attn.forward(h, rope, mask, cache);
        let x = x + self.drop.forward(a);
        let m = self
            .mlp
            .forward(fused::rms_norm(&self.post_attention_layernorm, x.clone()));
        x + self.drop.forward(m)
    }
}

impl LlamaAttention {
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        mask: &AttnMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kv_h, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let split = |y: Tensor<3>, n: usize, norm: &Option<RmsNorm>| {
            let y = y.reshape([b, t, n, hd]); // [b, t, n, hd]
            let y = match norm {
                Some(nm) => fused::rms_norm(nm, y),
                None => y,
            };
            y.swap_dims(1, 2) // [b, n, t, hd]
        };
        let q = rope.apply(split(
            fused::linear_layer(&self.q_proj, x.clone()),
            h,
            &self.q_norm,
        ));
        let mut k = rope.apply(split(
            fused::linear_layer(&self.k_proj, x.clone()),
            kv_h,
            &self.k_norm,
        ));
        let mut v = split(fused::linear_layer(&self.v_proj, x), kv_h, &None);
        if let Some((cache, layer)) = cache {
            (k, v) = cache.append(layer, k, v); // [b, kv_h, past + t, hd]
        }
        let y = attend(q, k, v, mask); // [b, h, t, hd]
        let y = y.swap_dims(1, 2).reshape([b, t, h * hd]);
        fused::linear_layer(&self.o_proj, y)
    }
}

impl LlamaMlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = fused::linear_layer(&self.gate_proj, x.clone());
        let up = fused::linear_layer(&self.up_proj, x);
        fused::linear_layer(&self.down_proj, fused::silu_mul(gate, up))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_of_each_family_parse_and_round_trip() {
        let llama = json!({
            "model_type": "llama", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
            "tie_word_embeddings": false, "initializer_range": 0.02
        });
        let c = LlamaConfig::from_hf_value(&llama).unwrap();
        assert_eq!(c.head_dim, 8);
        assert!(!c.qkv_bias && !c.qk_norm && !c.tie_word_embeddings);
        assert!(
            matches!(c.rope_scaling, Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0)
        );
        let back = LlamaConfig::from_hf_value(&c.to_hf_value()).unwrap();
        assert_eq!(
            LlamaConfig {
                source: None,
                ..back.clone()
            },
            LlamaConfig { source: None, ..c }
        );
        assert_eq!(
            back.to_hf_value()["initializer_range"],
            json!(0.02),
            "unknown fields survive"
        );

        let mut qwen2 = llama.clone();
        qwen2["model_type"] = json!("qwen2");
        qwen2.as_object_mut().unwrap().remove("tie_word_embeddings");
        let c = LlamaConfig::from_hf_value(&qwen2).unwrap();
        assert!(c.qkv_bias && !c.o_bias && c.tie_word_embeddings);
        let mut qwen3 = llama.clone();
        qwen3["model_type"] = json!("qwen3");
        qwen3["head_dim"] = json!(16);
        let c = LlamaConfig::from_hf_value(&qwen3).unwrap();
        assert!(c.qk_norm && !c.qkv_bias && c.head_dim == 16);

        let mut windowed = llama;
        windowed["model_type"] = json!("mistral");
        windowed["sliding_window"] = json!(16);
        assert_eq!(
            LlamaConfig::from_hf_value(&windowed).unwrap_err().0,
            "sliding_window"
        );
        windowed["sliding_window"] = json!(null);
        assert!(LlamaConfig::from_hf_value(&windowed).is_ok());
        windowed["rope_scaling"] = json!({"rope_type": "yarn", "factor": 2.0});
        assert_eq!(
            LlamaConfig::from_hf_value(&windowed).unwrap_err().0,
            "rope_scaling.rope_type"
        );
    }

    #[test]
    fn llama3_frequencies_follow_the_three_bands() {
        // head_dim 8: base frequencies 1, 0.1, 0.01, 0.001 with theta 10^4; wavelengths 2pi,
        // 62.8, 628, 6283. With an original context of 1000, factor 8, low 1, high 4: high band
        // (wavelength < 250) kept, low band (> 1000) divided by 8, 628 blended.
        let c = LlamaConfig {
            head_dim: 8,
            rope_scaling: Some(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 1000,
            }),
            ..LlamaConfig::tiny(10)
        };
        let f = c.inv_freq();
        let wl = 2.0 * std::f64::consts::PI / 0.01;
        let s = (1000.0 / wl - 1.0) / 3.0;
        let blended = ((1.0 - s) * 0.01 / 8.0 + s * 0.01) as f32;
        let want = [1.0, 0.1, blended, 0.001 / 8.0];
        for (g, w) in f.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                "{f:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn parameter_counts() {
        // SmolLM2-135M: 134,515,008 parameters (Hugging Face model card / num_parameters()).
        assert_eq!(LlamaConfig::smollm2_135m().num_params(), 134_515_008);
    }
}
