//! [`GptConfig`]: the shape of a GPT-2 model, its presets, and Hugging Face `config.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ModelError, Result};

/// The MLP activation. GPT-2 uses the tanh approximation of GELU (`gelu_new` in Hugging Face).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`: HF `gelu_new`, `gelu_pytorch_tanh`.
    #[default]
    GeluTanh,
    /// Exact erf GELU: HF `gelu`.
    Gelu,
}

impl Activation {
    fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "gelu" => Some(Activation::Gelu),
            _ => None,
        }
    }

    fn hf_name(self) -> &'static str {
        match self {
            Activation::GeluTanh => "gelu_new",
            Activation::Gelu => "gelu",
        }
    }
}

/// The shape of a GPT-2 model. Field names follow Hugging Face's `GPT2Config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; `n_embd` must be a multiple of it.
    pub n_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Longest context (rows of the learned position embedding).
    pub n_positions: usize,
    /// Rows of the token embedding (and columns of the tied LM head).
    pub vocab_size: usize,
    /// Hidden width of the MLP; `None` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// LayerNorm epsilon (GPT-2: 1e-5).
    pub layer_norm_epsilon: f64,
    /// Dropout on embeddings and residual branches while training (GPT-2: 0.1). Attention
    /// probabilities get no dropout: Burn's fused attention has none.
    pub dropout: f64,
    #[serde(default)]
    pub activation: Activation,
    /// Token id that starts a text, if the tokenizer has one.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// Token id that ends a text.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

impl GptConfig {
    /// GPT-2 small, 124M parameters.
    pub fn gpt2() -> Self {
        Self::preset(12, 12, 768)
    }

    /// GPT-2 medium, 355M parameters.
    pub fn gpt2_medium() -> Self {
        Self::preset(24, 16, 1024)
    }

    /// GPT-2 large, 774M parameters.
    pub fn gpt2_large() -> Self {
        Self::preset(36, 20, 1280)
    }

    fn preset(n_layer: usize, n_head: usize, n_embd: usize) -> Self {
        GptConfig {
            n_layer,
            n_head,
            n_embd,
            n_positions: 1024,
            vocab_size: 50257,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            dropout: 0.1,
            activation: Activation::GeluTanh,
            bos_token_id: Some(50256),
            eos_token_id: Some(50256),
        }
    }

    /// A tiny model for tests: 2 layers, width 32, 4 heads, 64 positions.
    pub fn tiny(vocab_size: usize) -> Self {
        GptConfig {
            n_layer: 2,
            n_head: 4,
            n_embd: 32,
            n_positions: 64,
            vocab_size,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            dropout: 0.0,
            activation: Activation::GeluTanh,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    /// A preset by name: `gpt2`, `gpt2-medium`, `gpt2-large`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "gpt2" | "gpt2-small" => Some(Self::gpt2()),
            "gpt2-medium" => Some(Self::gpt2_medium()),
            "gpt2-large" => Some(Self::gpt2_large()),
            _ => None,
        }
    }

    pub fn with_vocab_size(mut self, vocab_size: usize) -> Self {
        self.vocab_size = vocab_size;
        self
    }

    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    pub fn with_n_positions(mut self, n_positions: usize) -> Self {
        self.n_positions = n_positions;
        self
    }

    /// MLP hidden width.
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Checks the shape is buildable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 {
            return bad(format!(
                "n_layer ({}), n_head ({}) and n_embd ({}) must be positive",
                self.n_layer, self.n_head, self.n_embd
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.vocab_size == 0 || self.n_positions == 0 {
            return bad("vocab_size and n_positions must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// Number of parameters (the LM head is tied to `wte` and not counted twice).
    pub fn num_params(&self) -> usize {
        let d = self.n_embd;
        let f = self.inner();
        let block = 2 * 2 * d          // ln_1, ln_2
            + d * 3 * d + 3 * d        // c_attn
            + d * d + d                // attn.c_proj
            + d * f + f                // c_fc
            + f * d + d; // mlp.c_proj
        self.vocab_size * d + self.n_positions * d + self.n_layer * block + 2 * d
    }

    /// One line: `12L/768d/12h, vocab 50257, ctx 1024, 124.4M params`.
    pub fn describe(&self) -> String {
        format!(
            "{}L/{}d/{}h, vocab {}, ctx {}, {} params",
            self.n_layer,
            self.n_embd,
            self.n_head,
            self.vocab_size,
            self.n_positions,
            human_count(self.num_params() as u64)
        )
    }

    /// Reads a Hugging Face `config.json` (GPT-2 family).
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Json {
            path: path.to_path_buf(),
            field: "<document>".into(),
            message: e.to_string(),
        })?;
        Self::from_hf_value(&v).map_err(|(field, message)| ModelError::Json {
            path: path.to_path_buf(),
            field,
            message,
        })
    }

    /// Parses a Hugging Face config object; errors name the field.
    pub fn from_hf_value(v: &Value) -> std::result::Result<Self, (String, String)> {
        if let Some(mt) = v.get("model_type").and_then(Value::as_str)
            && mt != "gpt2"
        {
            return Err((
                "model_type".into(),
                format!("`{mt}` is not a GPT-2 model; manners loads model_type \"gpt2\""),
            ));
        }
        let usize_field = |names: &[&str], default: Option<usize>| {
            for n in names {
                match v.get(*n) {
                    Some(Value::Number(x)) => {
                        return x.as_u64().map(|x| x as usize).ok_or_else(|| {
                            (
                                n.to_string(),
                                format!("expected a non-negative integer, got {x}"),
                            )
                        });
                    }
                    Some(Value::Null) | None => continue,
                    Some(other) => {
                        return Err((n.to_string(), format!("expected an integer, got {other}")));
                    }
                }
            }
            default.ok_or_else(|| (names[0].to_string(), "missing".to_string()))
        };
        let f64_field = |name: &str, default: f64| match v.get(name) {
            Some(Value::Number(x)) => x
                .as_f64()
                .ok_or_else(|| (name.to_string(), "expected a number".to_string())),
            None | Some(Value::Null) => Ok(default),
            Some(other) => Err((name.to_string(), format!("expected a number, got {other}"))),
        };
        let id_field = |name: &str| -> std::result::Result<Option<u32>, (String, String)> {
            match v.get(name) {
                Some(Value::Number(x)) => Ok(x.as_u64().map(|x| x as u32)),
                // Some configs list several eos ids; the first is the primary one.
                Some(Value::Array(a)) => Ok(a.first().and_then(Value::as_u64).map(|x| x as u32)),
                _ => Ok(None),
            }
        };
        let activation = match v.get("activation_function").and_then(Value::as_str) {
            None => Activation::GeluTanh,
            Some(name) => Activation::from_hf(name).ok_or_else(|| {
                (
                    "activation_function".to_string(),
                    format!("unsupported activation `{name}` (expected gelu_new or gelu)"),
                )
            })?,
        };
        if v.get("tie_word_embeddings").and_then(Value::as_bool) == Some(false) {
            return Err((
                "tie_word_embeddings".into(),
                "untied LM heads are not supported; GPT-2 ties lm_head to wte".into(),
            ));
        }
        let resid = f64_field("resid_pdrop", 0.1)?;
        let cfg = GptConfig {
            n_layer: usize_field(&["n_layer", "num_hidden_layers"], None)?,
            n_head: usize_field(&["n_head", "num_attention_heads"], None)?,
            n_embd: usize_field(&["n_embd", "hidden_size"], None)?,
            n_positions: usize_field(&["n_positions", "n_ctx", "max_position_embeddings"], None)?,
            vocab_size: usize_field(&["vocab_size"], None)?,
            n_inner: match v.get("n_inner") {
                Some(Value::Number(x)) => x.as_u64().map(|x| x as usize),
                _ => None,
            },
            layer_norm_epsilon: f64_field("layer_norm_epsilon", 1e-5)?,
            dropout: resid,
            activation,
            bos_token_id: id_field("bos_token_id")?,
            eos_token_id: id_field("eos_token_id")?,
        };
        cfg.validate()
            .map_err(|e| ("<config>".to_string(), e.to_string()))?;
        Ok(cfg)
    }

    /// The Hugging Face `config.json` for this model (`GPT2LMHeadModel`).
    pub fn to_hf_value(&self) -> Value {
        json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "activation_function": self.activation.hf_name(),
            "attn_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "resid_pdrop": self.dropout,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "initializer_range": 0.02,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "n_layer": self.n_layer,
            "n_positions": self.n_positions,
            "reorder_and_upcast_attn": false,
            "scale_attn_by_inverse_layer_idx": false,
            "scale_attn_weights": true,
            "summary_activation": null,
            "summary_first_dropout": 0.1,
            "summary_proj_to_labels": true,
            "summary_type": "cls_index",
            "summary_use_proj": true,
            "tie_word_embeddings": true,
            "torch_dtype": "float32",
            "use_cache": true,
            "vocab_size": self.vocab_size,
        })
    }

    /// Writes `config.json` in Hugging Face format.
    pub fn save_hf_file(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_hf_value()).expect("json value");
        crate::io::write_atomic(path, text.as_bytes())
    }
}

/// `124439808` -> `124.4M`.
pub fn human_count(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_124m_params() {
        // Hugging Face reports 124,439,808 parameters for gpt2 (tied head).
        assert_eq!(GptConfig::gpt2().num_params(), 124_439_808);
        // gpt2-medium: 354,823,168.
        assert_eq!(GptConfig::gpt2_medium().num_params(), 354_823_168);
    }

    #[test]
    fn hf_round_trip() {
        let c = GptConfig::gpt2();
        let back = GptConfig::from_hf_value(&c.to_hf_value()).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn hf_errors_name_the_field() {
        let mut v = GptConfig::gpt2().to_hf_value();
        v["n_head"] = json!("twelve");
        let (field, _) = GptConfig::from_hf_value(&v).unwrap_err();
        assert_eq!(field, "n_head");
        let mut v = GptConfig::gpt2().to_hf_value();
        v.as_object_mut().unwrap().remove("vocab_size");
        assert_eq!(GptConfig::from_hf_value(&v).unwrap_err().0, "vocab_size");
        let mut v = GptConfig::gpt2().to_hf_value();
        v["model_type"] = json!("llama");
        assert_eq!(GptConfig::from_hf_value(&v).unwrap_err().0, "model_type");
    }

    #[test]
    fn invalid_shapes_are_rejected() {
        let mut c = GptConfig::tiny(10);
        c.n_head = 5;
        assert!(c.validate().is_err());
    }
}
