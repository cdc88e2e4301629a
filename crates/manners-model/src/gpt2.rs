//! GPT-2 (`model_type: "gpt2"`), written once for every Burn device.
//!
//! Names follow Hugging Face's `GPT2Model` so checkpoints load key by key: `wte`, `wpe`,
//! `h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `ln_f`. Pre-LayerNorm
//! blocks, a fused q/k/v projection, GELU (tanh approximation), learned positions, and an LM
//! head tied to `wte`. `Linear` weights are `[d_in, d_out]`, the same layout as HF's `Conv1D`:
//! no transpose on load or save.

use burn::module::Param;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::attention::{AttnMask, attend};
use crate::cache::KvCache;
use crate::config::{HfFields, human_count};
use crate::error::{ModelError, Result};
use crate::fused::{self, gelu_tanh};
use crate::gguf::{GgufSource, GgufValue};
use crate::model::{ForwardOptions, HfParam, Slot};

// ---- config ---------------------------------------------------------------------------------

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
pub struct Gpt2Config {
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

impl Gpt2Config {
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
        Gpt2Config {
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
        Gpt2Config {
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
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Checks the shape is buildable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        crate::model::check_bounds(&[
            ("n_layer", self.n_layer, 1 << 10),
            ("n_head", self.n_head, 1 << 10),
            ("n_embd", self.n_embd, 1 << 16),
            ("n_inner", self.inner(), 1 << 20),
            ("vocab_size", self.vocab_size, 1 << 24),
            ("n_positions", self.n_positions, 1 << 24),
        ])?;
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon < 1.0) {
            return bad(format!(
                "layer_norm_epsilon {} must be in (0, 1)",
                self.layer_norm_epsilon
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

    /// One line: `gpt2 12L/768d/12h, vocab 50257, ctx 1024, 124.4M params`.
    pub fn describe(&self) -> String {
        format!(
            "gpt2 {}L/{}d/{}h, vocab {}, ctx {}, {} params",
            self.n_layer,
            self.n_embd,
            self.n_head,
            self.vocab_size,
            self.n_positions,
            human_count(self.num_params() as u64)
        )
    }

    /// Parses a Hugging Face `GPT2Config` object; errors name the field.
    pub fn from_hf_value(v: &Value) -> std::result::Result<Self, (String, String)> {
        let f = HfFields(v);
        let activation = match f.str("activation_function")? {
            None => Activation::GeluTanh,
            Some(name) => Activation::from_hf(name).ok_or_else(|| {
                (
                    "activation_function".to_string(),
                    format!("unsupported activation `{name}` (expected gelu_new or gelu)"),
                )
            })?,
        };
        if f.bool("tie_word_embeddings")? == Some(false) {
            return Err((
                "tie_word_embeddings".into(),
                "untied LM heads are not supported for GPT-2 (it ties lm_head to wte)".into(),
            ));
        }
        let cfg = Gpt2Config {
            n_layer: f.usize(&["n_layer", "num_hidden_layers"], None)?,
            n_head: f.usize(&["n_head", "num_attention_heads"], None)?,
            n_embd: f.usize(&["n_embd", "hidden_size"], None)?,
            n_positions: f.usize(&["n_positions", "n_ctx", "max_position_embeddings"], None)?,
            vocab_size: f.usize(&["vocab_size"], None)?,
            n_inner: f.opt_usize("n_inner")?,
            layer_norm_epsilon: f.f64("layer_norm_epsilon", 1e-5)?,
            dropout: f.f64("resid_pdrop", 0.1)?,
            activation,
            bos_token_id: f.token_id("bos_token_id"),
            eos_token_id: f.token_id("eos_token_id"),
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

    /// A freshly initialised model, GPT-2 style: weights N(0, 0.02), residual projections
    /// N(0, 0.02/sqrt(2 n_layer)), biases 0, LayerNorm gain 1.
    pub fn init(&self, device: &Device) -> Gpt2 {
        let d = self.n_embd;
        let normal = |std: f64| Initializer::Normal { mean: 0.0, std };
        let proj_std = 0.02 / ((2 * self.n_layer) as f64).sqrt();
        let linear = |i: usize, o: usize, std: f64| {
            LinearConfig::new(i, o)
                .with_initializer(normal(std))
                .init(device)
                .with_zero_bias(device)
        };
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_epsilon)
                .init(device)
        };
        let drop = || DropoutConfig::new(self.dropout).init();
        let h = (0..self.n_layer)
            .map(|_| Block {
                ln_1: ln(),
                attn: Attention {
                    c_attn: linear(d, 3 * d, 0.02),
                    c_proj: linear(d, d, proj_std),
                    n_head: self.n_head,
                },
                ln_2: ln(),
                mlp: Mlp {
                    c_fc: linear(d, self.inner(), 0.02),
                    c_proj: linear(self.inner(), d, proj_std),
                    exact_gelu: self.activation == Activation::Gelu,
                },
                drop: drop(),
            })
            .collect();
        Gpt2 {
            wte: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(normal(0.02))
                .init(device),
            wpe: EmbeddingConfig::new(self.n_positions, d)
                .with_initializer(normal(0.02))
                .init(device),
            drop: drop(),
            h,
            ln_f: ln(),
            layer_norm_epsilon: self.layer_norm_epsilon,
        }
    }
}

trait ZeroBias {
    fn with_zero_bias(self, device: &Device) -> Self;
}

impl ZeroBias for Linear {
    fn with_zero_bias(mut self, device: &Device) -> Self {
        if let Some(b) = &self.bias {
            let [n] = b.val().dims();
            self.bias = Some(Initializer::Zeros.init([n], device));
        }
        self
    }
}

// ---- the model --------------------------------------------------------------------------------

/// The whole model.
#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embedding `[vocab, d]`; also the (tied) LM head.
    pub wte: Embedding,
    /// Learned position embedding `[n_positions, d]`.
    pub wpe: Embedding,
    pub drop: Dropout,
    /// The transformer blocks.
    pub h: Vec<Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// The epsilon of every LayerNorm (Burn's `LayerNorm` keeps its own private).
    pub layer_norm_epsilon: f64,
}

/// One pre-LayerNorm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
    pub drop: Dropout,
}

/// Causal self-attention with a fused q/k/v projection.
#[derive(Module, Debug)]
pub struct Attention {
    /// `[d, 3d]`: q, k, v side by side.
    pub c_attn: Linear,
    /// `[d, d]`.
    pub c_proj: Linear,
    pub n_head: usize,
}

/// The feed-forward network.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `[d, 4d]`.
    pub c_fc: Linear,
    /// `[4d, d]`.
    pub c_proj: Linear,
    /// false: GELU tanh approximation (GPT-2); true: exact erf GELU.
    pub exact_gelu: bool,
}

impl Gpt2 {
    /// Rows of the token embedding.
    pub fn vocab_size(&self) -> usize {
        self.wte.weight.val().dims()[0]
    }

    /// Rows of the position embedding (longest context).
    pub fn n_positions(&self) -> usize {
        self.wpe.weight.val().dims()[0]
    }

    pub fn n_embd(&self) -> usize {
        self.wte.weight.val().dims()[1]
    }

    /// Final hidden states after `ln_f`: `[b, t] -> [b, t, d]`.
    pub fn hidden(&self, ids: Tensor<2, Int>, opts: ForwardOptions) -> Tensor<3> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let (positions, mask) = opts.resolve(b, t, &device);
        let mut x = fused::embedding(&self.wte, ids) + fused::embedding(&self.wpe, positions); // [b, t, d]
        x = self.drop.forward(x);
        for block in &self.h {
            x = block.forward(x, &mask, None, self.layer_norm_epsilon);
        }
        fused::layer_norm(&self.ln_f, x, self.layer_norm_epsilon)
    }

    /// The tied LM head: `[..., d] -> [..., vocab]`.
    pub fn head<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        fused::linear(hidden, self.wte.weight.val().transpose(), None)
    }

    /// Runs new tokens through the model, reading and extending `cache`; returns the logits of
    /// the LAST new position of each row: `[b, t_new] -> [b, vocab]`.
    pub fn forward_cached(&self, ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<2> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let positions = cache.positions(b, t, &device); // [b, t]
        let mask = AttnMask::cached(cache.pads(b));
        let mut x = fused::embedding(&self.wte, ids) + fused::embedding(&self.wpe, positions);
        cache.ensure_layers(self.h.len());
        for (i, block) in self.h.iter().enumerate() {
            x = block.forward(x, &mask, Some((&mut *cache, i)), self.layer_norm_epsilon);
        }
        cache.advance(t);
        let d = self.n_embd();
        let last = fused::layer_norm(&self.ln_f, x.narrow(1, t - 1, 1), self.layer_norm_epsilon)
            .reshape([b, d]); // [b, d]
        self.head(last)
    }

    /// Every parameter under its Hugging Face key (no `transformer.` prefix). `Conv1D` weights
    /// are `[in, out]` like Burn's `Linear`: nothing is transposed.
    pub(crate) fn hf_params(&mut self) -> Vec<HfParam<'_>> {
        fn linear<'a>(out: &mut Vec<HfParam<'a>>, name: &str, l: &'a mut Linear) {
            out.push(HfParam::new(
                format!("{name}.weight"),
                Slot::Matrix(&mut l.weight),
            ));
            if let Some(b) = l.bias.as_mut() {
                out.push(HfParam::new(format!("{name}.bias"), Slot::Vector(b)));
            }
        }
        fn norm<'a>(out: &mut Vec<HfParam<'a>>, name: &str, n: &'a mut LayerNorm) {
            out.push(HfParam::new(
                format!("{name}.weight"),
                Slot::Vector(&mut n.gamma),
            ));
            if let Some(b) = n.beta.as_mut() {
                out.push(HfParam::new(format!("{name}.bias"), Slot::Vector(b)));
            }
        }
        let mut out = vec![
            HfParam::new("wte.weight".into(), Slot::Matrix(&mut self.wte.weight)),
            HfParam::new("wpe.weight".into(), Slot::Matrix(&mut self.wpe.weight)),
        ];
        for (i, b) in self.h.iter_mut().enumerate() {
            norm(&mut out, &format!("h.{i}.ln_1"), &mut b.ln_1);
            linear(&mut out, &format!("h.{i}.attn.c_attn"), &mut b.attn.c_attn);
            linear(&mut out, &format!("h.{i}.attn.c_proj"), &mut b.attn.c_proj);
            norm(&mut out, &format!("h.{i}.ln_2"), &mut b.ln_2);
            linear(&mut out, &format!("h.{i}.mlp.c_fc"), &mut b.mlp.c_fc);
            linear(&mut out, &format!("h.{i}.mlp.c_proj"), &mut b.mlp.c_proj);
        }
        norm(&mut out, "ln_f", &mut self.ln_f);
        out
    }

    /// The projection weights LoRA can adapt, by target name, with their HF module names.
    pub(crate) fn projections(&self) -> Vec<(&'static str, String, &Param<Tensor<2>>)> {
        let mut out = Vec::new();
        for (i, b) in self.h.iter().enumerate() {
            out.push((
                "c_attn",
                format!("transformer.h.{i}.attn.c_attn"),
                &b.attn.c_attn.weight,
            ));
            out.push((
                "c_proj",
                format!("transformer.h.{i}.attn.c_proj"),
                &b.attn.c_proj.weight,
            ));
            out.push((
                "c_fc",
                format!("transformer.h.{i}.mlp.c_fc"),
                &b.mlp.c_fc.weight,
            ));
            out.push((
                "c_proj",
                format!("transformer.h.{i}.mlp.c_proj"),
                &b.mlp.c_proj.weight,
            ));
        }
        out
    }

    pub(crate) fn with_dropout(mut self, p: f64) -> Self {
        self.drop = DropoutConfig::new(p).init();
        for b in &mut self.h {
            b.drop = DropoutConfig::new(p).init();
        }
        self
    }
}

/// llama.cpp's `gpt2.*` hyperparameters.
pub(crate) fn gguf_metadata(c: &Gpt2Config) -> Vec<(String, GgufValue)> {
    let u = |k: &str, v: usize| (k.to_string(), GgufValue::U32(v as u32));
    vec![
        u("context_length", c.n_positions),
        u("embedding_length", c.n_embd),
        u("feed_forward_length", c.inner()),
        u("block_count", c.n_layer),
        u("attention.head_count", c.n_head),
        (
            "attention.layer_norm_epsilon".into(),
            GgufValue::F32(c.layer_norm_epsilon as f32),
        ),
    ]
}

impl Gpt2 {
    /// The weights under llama.cpp's `gpt2` names, in PyTorch's layout (`Conv1D` weights
    /// transposed to `[out, in]`, as llama.cpp's converter does). The head is tied: no `output`.
    pub(crate) fn gguf_tensors(&self) -> Vec<GgufSource> {
        fn linear(out: &mut Vec<GgufSource>, name: &str, l: &Linear) {
            out.push(GgufSource::matrix(
                format!("{name}.weight"),
                l.weight.val().transpose(),
            ));
            if let Some(b) = &l.bias {
                out.push(GgufSource::vector(format!("{name}.bias"), b.val()));
            }
        }
        fn norm(out: &mut Vec<GgufSource>, name: &str, n: &LayerNorm) {
            out.push(GgufSource::vector(format!("{name}.weight"), n.gamma.val()));
            if let Some(b) = &n.beta {
                out.push(GgufSource::vector(format!("{name}.bias"), b.val()));
            }
        }
        let mut out = vec![
            GgufSource::matrix("token_embd.weight", self.wte.weight.val()),
            GgufSource::matrix("position_embd.weight", self.wpe.weight.val()),
        ];
        for (i, b) in self.h.iter().enumerate() {
            norm(&mut out, &format!("blk.{i}.attn_norm"), &b.ln_1);
            linear(&mut out, &format!("blk.{i}.attn_qkv"), &b.attn.c_attn);
            linear(&mut out, &format!("blk.{i}.attn_output"), &b.attn.c_proj);
            norm(&mut out, &format!("blk.{i}.ffn_norm"), &b.ln_2);
            linear(&mut out, &format!("blk.{i}.ffn_up"), &b.mlp.c_fc);
            linear(&mut out, &format!("blk.{i}.ffn_down"), &b.mlp.c_proj);
        }
        norm(&mut out, "output_norm", &self.ln_f);
        out
    }
}

/// Keys in HF GPT-2 files that are not parameters of ours (attention buffers, the tied head).
pub(crate) fn is_buffer_key(key: &str) -> bool {
    key == "lm_head.weight" || key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias")
}

impl Block {
    /// Returns the block output and, when a cache is in use, the layer's full keys/values.
    fn forward(
        &self,
        x: Tensor<3>,
        mask: &AttnMask,
        cache: Option<(&mut KvCache, usize)>,
        eps: f64,
    ) -> Tensor<3> {
        let a = self
            .attn
            .forward(fused::layer_norm(&self.ln_1, x.clone(), eps), mask, cache);
        let x = x + self.drop.forward(a);
        let m = self
            .mlp
            .forward(fused::layer_norm(&self.ln_2, x.clone(), eps));
        x + self.drop.forward(m)
    }
}

impl Attention {
    fn forward(
        &self,
        x: Tensor<3>,
        mask: &AttnMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let nh = self.n_head;
        let hd = d / nh;
        let qkv = fused::linear_layer(&self.c_attn, x); // [b, t, 3d]
        if let (None, AttnMask::Docs(docs)) = (&cache, mask) {
            // Whole sequences on flex: attention straight from the packed projection.
            let scale = 1.0 / (hd as f64).sqrt();
            if let Some(y) = fused::attention_qkv(qkv.clone(), nh, docs, scale) {
                let y = y.swap_dims(1, 2).reshape([b, t, d]); // [b, t, d], no copy
                return fused::linear_layer(&self.c_proj, y);
            }
        }
        let qkv = qkv.reshape([b, t, 3, nh, hd]).permute([2, 0, 3, 1, 4]); // [3, b, nh, t, hd]
        let take = |i: usize| qkv.clone().narrow(0, i, 1).squeeze_dim::<4>(0); // [b, nh, t, hd]
        let (q, mut k, mut v) = (take(0), take(1), take(2));
        if let Some((cache, layer)) = cache {
            (k, v) = cache.append(layer, k, v); // [b, nh, past + t, hd]
        }
        let y = attend(q, k, v, mask); // [b, nh, t, hd]
        let y = y.swap_dims(1, 2).reshape([b, t, d]); // [b, t, d]
        fused::linear_layer(&self.c_proj, y)
    }
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hdn = fused::linear_layer(&self.c_fc, x); // [b, t, 4d]
        let hdn = if self.exact_gelu {
            gelu(hdn)
        } else {
            gelu_tanh(hdn)
        };
        fused::linear_layer(&self.c_proj, hdn) // [b, t, d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_124m_params() {
        // Hugging Face reports 124,439,808 parameters for gpt2 (tied head).
        assert_eq!(Gpt2Config::gpt2().num_params(), 124_439_808);
        // gpt2-medium: 354,823,168.
        assert_eq!(Gpt2Config::gpt2_medium().num_params(), 354_823_168);
    }

    #[test]
    fn hf_round_trip() {
        let c = Gpt2Config::gpt2();
        let back = Gpt2Config::from_hf_value(&c.to_hf_value()).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn hf_errors_name_the_field() {
        let mut v = Gpt2Config::gpt2().to_hf_value();
        v["n_head"] = json!("twelve");
        let (field, _) = Gpt2Config::from_hf_value(&v).unwrap_err();
        assert_eq!(field, "n_head");
        let mut v = Gpt2Config::gpt2().to_hf_value();
        v.as_object_mut().unwrap().remove("vocab_size");
        assert_eq!(Gpt2Config::from_hf_value(&v).unwrap_err().0, "vocab_size");
    }

    #[test]
    fn invalid_shapes_are_rejected() {
        let mut c = Gpt2Config::tiny(10);
        c.n_head = 5;
        assert!(c.validate().is_err());
    }

    #[test]
    fn gelu_tanh_matches_the_tanh_formula() {
        let dev = Device::flex();
        let xs: Vec<f32> = (-60..=60).map(|i| i as f32 * 0.1).collect();
        let x = Tensor::<1>::from_floats(xs.as_slice(), &dev);
        let fused = gelu_tanh(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let composite = fused::gelu_tanh_composite(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (x, g) in xs.iter().chain(&xs).zip(fused.into_iter().chain(composite)) {
            let x = f64::from(*x);
            let want = 0.5
                * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!((f64::from(g) - want).abs() < 2e-6, "x {x}: {g} vs {want}");
        }
    }
}
