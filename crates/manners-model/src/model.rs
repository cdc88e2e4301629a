//! [`Model`]: the one model type the trainer, generation, LoRA, checkpoints, export and eval
//! use without knowing the family, and [`ModelConfig`], read from `config.json` by
//! `model_type`. Everything a learner needs to know about a family's parameters (LoRA targets,
//! weight-decay group, token-indexed rows, the Hugging Face key table) comes from here, so no
//! other crate names a family's fields.

use std::path::Path;

use burn::module::{LoraAdapter, Module, Param, ParamGroup, ParamId};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cache::KvCache;
use crate::error::{ModelError, Result};
use crate::gpt2::{Gpt2, Gpt2Config};
use crate::llama::{Llama, LlamaConfig};

/// Optional inputs of a forward pass beyond the token ids.
#[derive(Clone, Debug, Default)]
pub struct ForwardOptions {
    /// Position ids `[b, t]`. Default: `0..t` for every row. Packed rows restart at 0 for each
    /// document.
    pub positions: Option<Tensor<2, Int>>,
    /// Attention mask `[b, t, t]`, `true` = may NOT attend. Default: causal only. Packed rows
    /// pass a block-diagonal causal mask (see [`crate::document_mask`]).
    pub mask: Option<Tensor<3, Bool>>,
    /// Document ids `[b, t]` of packed rows, instead of `mask`: position `i` attends to `j`
    /// only when `j <= i` and both have the same id (the mask [`crate::document_mask`] builds).
    /// On flex the fused attention masks from the ids directly, never materialising a
    /// `[b, t, t]` mask. Ignored when `mask` is given.
    pub docs: Option<Tensor<2, Int>>,
}

impl ForwardOptions {
    /// The positions (`0..t` per row by default) and the attention mask of a full-sequence
    /// forward over `t` tokens in `b` rows.
    pub(crate) fn resolve(
        self,
        b: usize,
        t: usize,
        device: &Device,
    ) -> (Tensor<2, Int>, crate::attention::AttnMask) {
        let positions = self.positions.unwrap_or_else(|| {
            Tensor::<1, Int>::arange(0..t as i64, device)
                .unsqueeze::<2>()
                .expand([b, t])
        });
        (
            positions,
            crate::attention::AttnMask::for_sequence(self.mask, self.docs, b, t, device),
        )
    }
}

/// The architectures manners trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `gpt2`.
    Gpt2,
    /// `llama`, `mistral`, `qwen2`, `qwen3`.
    Llama,
}

/// The `model_type`s of `config.json` that load.
pub const MODEL_TYPES: &[&str] = &["gpt2", "llama", "mistral", "qwen2", "qwen3"];

/// A model's shape, as far as memory and compute estimates need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDims {
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    pub mlp: usize,
}

/// A model's shape, by family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum ModelConfig {
    Gpt2(Gpt2Config),
    Llama(LlamaConfig),
}

impl From<Gpt2Config> for ModelConfig {
    fn from(c: Gpt2Config) -> Self {
        ModelConfig::Gpt2(c)
    }
}

impl From<LlamaConfig> for ModelConfig {
    fn from(c: LlamaConfig) -> Self {
        ModelConfig::Llama(c)
    }
}

impl ModelConfig {
    pub fn family(&self) -> Family {
        match self {
            ModelConfig::Gpt2(_) => Family::Gpt2,
            ModelConfig::Llama(_) => Family::Llama,
        }
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let v = crate::io::read_json(path)?;
        Self::from_hf_value(&v).map_err(|(field, message)| ModelError::Json {
            path: path.to_path_buf(),
            field,
            message,
        })
    }

    /// Parses a Hugging Face config object by its `model_type` (GPT-2 when absent); errors name
    /// the field.
    pub fn from_hf_value(v: &Value) -> std::result::Result<Self, (String, String)> {
        match v.get("model_type") {
            None | Some(Value::Null) => Gpt2Config::from_hf_value(v).map(Self::Gpt2),
            Some(Value::String(t)) if t == "gpt2" => Gpt2Config::from_hf_value(v).map(Self::Gpt2),
            Some(Value::String(t)) if MODEL_TYPES.contains(&t.as_str()) => {
                LlamaConfig::from_hf_value(v).map(Self::Llama)
            }
            Some(Value::String(t)) => Err((
                "model_type".into(),
                format!(
                    "`{t}` is not a model type manners trains (one of {})",
                    MODEL_TYPES.join(", ")
                ),
            )),
            Some(other) => Err((
                "model_type".into(),
                format!("expected a string, got {other}"),
            )),
        }
    }

    /// The Hugging Face `config.json` for this model.
    pub fn to_hf_value(&self) -> Value {
        match self {
            ModelConfig::Gpt2(c) => c.to_hf_value(),
            ModelConfig::Llama(c) => c.to_hf_value(),
        }
    }

    /// Writes `config.json` in Hugging Face format.
    pub fn save_hf_file(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_hf_value()).expect("json value");
        crate::io::write_atomic(path, text.as_bytes())
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Gpt2(c) => c.validate(),
            ModelConfig::Llama(c) => c.validate(),
        }
    }

    /// Keys of Hugging Face files that are buffers or a tied head, not parameters.
    pub(crate) fn is_buffer_key(&self, key: &str) -> bool {
        match self {
            ModelConfig::Gpt2(_) => crate::gpt2::is_buffer_key(key),
            ModelConfig::Llama(c) => crate::llama::is_buffer_key(key, c.tie_word_embeddings),
        }
    }

    /// The prefix Hugging Face files may put before our keys (`transformer.` for GPT-2).
    pub(crate) fn optional_key_prefix(&self) -> Option<&'static str> {
        match self {
            ModelConfig::Gpt2(_) => Some("transformer."),
            ModelConfig::Llama(_) => None,
        }
    }

    /// A freshly initialised model.
    pub fn init(&self, device: &Device) -> Model {
        match self {
            ModelConfig::Gpt2(c) => Model::Gpt2(c.init(device)),
            ModelConfig::Llama(c) => Model::Llama(c.init(device)),
        }
    }

    pub fn num_params(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.num_params(),
            ModelConfig::Llama(c) => c.num_params(),
        }
    }

    /// One line, e.g. `gpt2 12L/768d/12h, vocab 50257, ctx 1024, 124.4M params`.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::Gpt2(c) => c.describe(),
            ModelConfig::Llama(c) => c.describe(),
        }
    }

    /// `gpt2`, `llama`, `qwen2`, ...
    pub fn model_type(&self) -> &str {
        match self {
            ModelConfig::Gpt2(_) => "gpt2",
            ModelConfig::Llama(c) => &c.model_type,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.vocab_size,
            ModelConfig::Llama(c) => c.vocab_size,
        }
    }

    pub fn set_vocab_size(&mut self, n: usize) {
        match self {
            ModelConfig::Gpt2(c) => c.vocab_size = n,
            ModelConfig::Llama(c) => c.vocab_size = n,
        }
    }

    /// Layers, model width, attention heads and MLP width.
    pub fn dims(&self) -> ModelDims {
        match self {
            ModelConfig::Gpt2(c) => ModelDims {
                layers: c.n_layer,
                width: c.n_embd,
                heads: c.n_head,
                mlp: c.n_inner.unwrap_or(4 * c.n_embd),
            },
            ModelConfig::Llama(c) => ModelDims {
                layers: c.num_hidden_layers,
                width: c.hidden_size,
                heads: c.num_attention_heads,
                mlp: c.intermediate_size,
            },
        }
    }

    /// The largest weight of this shape, `[rows, cols]` with its role: the token embedding
    /// (and the head, its gradient and optimiser moments, all the same size) unless a projection
    /// is wider.
    pub fn largest_weight(&self) -> (&'static str, [usize; 2]) {
        let d = self.dims();
        let qkv = match self {
            ModelConfig::Gpt2(_) => 3 * d.width,
            ModelConfig::Llama(_) => d.width,
        };
        // `max_by_key` keeps the last of equals: the embedding wins a tie, then the MLP.
        [
            ("an attention projection", [d.width, qkv]),
            ("an MLP projection", [d.width, d.mlp]),
            ("the token embedding", [self.vocab_size(), d.width]),
        ]
        .into_iter()
        .max_by_key(|(_, [rows, cols])| rows * cols)
        .expect("three weights")
    }

    /// A clear error when this model's largest weight cannot be one buffer on `device` (a GPU
    /// adapter with a small storage-buffer limit), before the weights are made there.
    pub fn check_device(&self, device: &Device) -> Result<()> {
        self.check_limit(crate::BufferLimit::of(device).as_ref())
    }

    /// [`Self::check_device`] against a known limit (`None`: no limit).
    pub fn check_limit(&self, limit: Option<&crate::BufferLimit>) -> Result<()> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let (role, [r, c]) = self.largest_weight();
        limit.check(
            (r * c) as u64,
            || format!("{role} of {} ([{r}, {c}], f32)", self.describe()),
            "run on the CPU (--backend flex) or on an adapter with a larger limit",
        )
    }

    /// Longest context.
    pub fn max_positions(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_positions,
            ModelConfig::Llama(c) => c.max_position_embeddings,
        }
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        match self {
            ModelConfig::Gpt2(c) => c.bos_token_id,
            ModelConfig::Llama(c) => c.bos_token_id,
        }
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        match self {
            ModelConfig::Gpt2(c) => c.eos_token_id,
            ModelConfig::Llama(c) => c.eos_token_id,
        }
    }

    /// Fills missing BOS/EOS ids (from the tokenizer).
    pub fn fill_token_ids(&mut self, bos: Option<u32>, eos: Option<u32>) {
        let (b, e) = match self {
            ModelConfig::Gpt2(c) => (&mut c.bos_token_id, &mut c.eos_token_id),
            ModelConfig::Llama(c) => (&mut c.bos_token_id, &mut c.eos_token_id),
        };
        if b.is_none() {
            *b = bos;
        }
        if e.is_none() {
            *e = eos;
        }
    }

    /// The dropout the config ships (the trainer sets its own).
    pub fn dropout(&self) -> f64 {
        match self {
            ModelConfig::Gpt2(c) => c.dropout,
            ModelConfig::Llama(c) => c.dropout,
        }
    }
}

/// Refuses sizes no model has (they would panic in shape code, abort on allocation or grow
/// until the kernel kills the process): `(field, value, largest accepted)`.
pub(crate) fn check_bounds(fields: &[(&str, usize, usize)]) -> Result<()> {
    for (name, value, max) in fields {
        if *value == 0 {
            return Err(ModelError::Config(format!("{name} must be positive")));
        }
        if value > max {
            return Err(ModelError::Config(format!(
                "{name} = {value} is larger than any model has (at most {max} accepted)"
            )));
        }
    }
    Ok(())
}

/// A model of any family. Burn derives `Module` for the enum, so the optimiser, autodiff,
/// LoRA and device moves work on it unchanged. Parameter paths start with the variant
/// (`Gpt2.h.0.attn.c_attn.weight`); checkpoints store the inner module (no prefix), so a
/// checkpoint written before model families resumes.
#[derive(Module, Debug)]
pub enum Model {
    Gpt2(Gpt2),
    Llama(Llama),
}

/// A parameter under its Hugging Face key: which tensor, and whether the file stores it
/// transposed relative to Burn (`nn.Linear` is `[out, in]`, Burn's `Linear` `[in, out]`).
pub(crate) struct HfParam<'a> {
    pub key: String,
    pub slot: Slot<'a>,
    pub transpose: bool,
}

impl<'a> HfParam<'a> {
    pub fn new(key: String, slot: Slot<'a>) -> Self {
        HfParam {
            key,
            slot,
            transpose: false,
        }
    }

    pub fn transposed(mut self) -> Self {
        self.transpose = true;
        self
    }
}

/// A parameter tensor of either rank.
pub(crate) enum Slot<'a> {
    Vector(&'a mut Param<Tensor<1>>),
    Matrix(&'a mut Param<Tensor<2>>),
}

/// A parameter whose rows (axis 0) or columns (axis 1) are indexed by token id: the token
/// embedding, and an untied LM head (`[d, vocab]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenParam {
    pub id: ParamId,
    /// The axis indexed by token id.
    pub axis: usize,
}

macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            Model::Gpt2($m) => $e,
            Model::Llama($m) => $e,
        }
    };
}

impl Model {
    pub fn family(&self) -> Family {
        match self {
            Model::Gpt2(_) => Family::Gpt2,
            Model::Llama(_) => Family::Llama,
        }
    }

    /// Query heads per layer (0 for a model without layers).
    pub fn n_heads(&self) -> usize {
        match self {
            Model::Gpt2(m) => m.h.first().map_or(0, |b| b.attn.n_head),
            Model::Llama(m) => m.layers.first().map_or(0, |l| l.self_attn.n_heads),
        }
    }

    /// The GPT-2 inside, if it is one.
    pub fn as_gpt2(&self) -> Option<&Gpt2> {
        match self {
            Model::Gpt2(m) => Some(m),
            _ => None,
        }
    }

    /// The Llama-family model inside, if it is one.
    pub fn as_llama(&self) -> Option<&Llama> {
        match self {
            Model::Llama(m) => Some(m),
            _ => None,
        }
    }

    /// Rows of the token embedding.
    pub fn vocab_size(&self) -> usize {
        self.token_embedding().val().dims()[0]
    }

    /// Width of the residual stream.
    pub fn n_embd(&self) -> usize {
        self.token_embedding().val().dims()[1]
    }

    /// Longest context.
    pub fn n_positions(&self) -> usize {
        match self {
            Model::Gpt2(m) => m.n_positions(),
            Model::Llama(m) => m.max_positions,
        }
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.token_embedding().val().device()
    }

    /// The token embedding `[vocab, d]`.
    pub fn token_embedding(&self) -> &Param<Tensor<2>> {
        match self {
            Model::Gpt2(m) => &m.wte.weight,
            Model::Llama(m) => &m.embed_tokens.weight,
        }
    }

    fn token_embedding_mut(&mut self) -> &mut Param<Tensor<2>> {
        match self {
            Model::Gpt2(m) => &mut m.wte.weight,
            Model::Llama(m) => &mut m.embed_tokens.weight,
        }
    }

    /// The untied LM head weight `[d, vocab]`, if the model has one.
    pub fn lm_head(&self) -> Option<&Param<Tensor<2>>> {
        match self {
            Model::Gpt2(_) => None,
            Model::Llama(m) => m.lm_head.as_ref().map(|h| &h.weight),
        }
    }

    /// Logits for every position: `[b, t] -> [b, t, vocab]`, causal attention, positions `0..t`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.head(self.hidden(ids, ForwardOptions::default()))
    }

    /// Logits with explicit positions and attention mask (packed rows).
    pub fn forward_with(&self, ids: Tensor<2, Int>, opts: ForwardOptions) -> Tensor<3> {
        self.head(self.hidden(ids, opts))
    }

    /// Final hidden states (after the last norm): `[b, t] -> [b, t, d]`. Apply
    /// [`Model::head`] to the positions you need (e.g. only supervised ones: the head is the
    /// largest matmul).
    pub fn hidden(&self, ids: Tensor<2, Int>, opts: ForwardOptions) -> Tensor<3> {
        each!(self, m => m.hidden(ids, opts))
    }

    /// The LM head: `[..., d] -> [..., vocab]`.
    pub fn head<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        each!(self, m => m.head(hidden))
    }

    /// Runs new tokens through the model, reading and extending `cache`, and returns the
    /// logits of the LAST new position of each row: `[b, t_new] -> [b, vocab]`. Each decode
    /// step costs the compute of its own tokens, not a re-run of the prefix.
    pub fn forward_cached(&self, ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<2> {
        each!(self, m => m.forward_cached(ids, cache))
    }

    /// The same model with dropout `p` on the residual branches while training.
    pub fn with_dropout(self, p: f64) -> Self {
        match self {
            Model::Gpt2(m) => Model::Gpt2(m.with_dropout(p)),
            Model::Llama(m) => Model::Llama(m.with_dropout(p)),
        }
    }

    /// Grows the token embedding (and an untied LM head) to `new_vocab` rows for added special
    /// tokens. New rows start at the mean of the existing rows plus N(0, 0.02) noise (new tokens
    /// begin "average" rather than random, as in HF's `resize_token_embeddings(mean_resizing=
    /// True)`). Does nothing when already large enough. The parameters get new ids: build the
    /// optimiser after resizing.
    pub fn resize_token_embeddings(mut self, new_vocab: usize) -> Self {
        let v = self.vocab_size();
        if new_vocab <= v {
            return self;
        }
        let n_new = new_vocab - v;
        let emb = self.token_embedding_mut();
        *emb = grow(emb, 0, n_new);
        if let Model::Llama(m) = &mut self
            && let Some(h) = m.lm_head.as_mut()
        {
            h.weight = grow(&h.weight, 1, n_new);
        }
        self
    }

    /// The parameters indexed by token id (the embedding; an untied head), for training only the
    /// rows of added tokens.
    pub fn token_params(&self) -> Vec<TokenParam> {
        let mut out = vec![TokenParam {
            id: self.token_embedding().id,
            axis: 0,
        }];
        if let Some(h) = self.lm_head() {
            out.push(TokenParam { id: h.id, axis: 1 });
        }
        out
    }

    /// Replaces the token embedding (`head` false) or the untied LM head (`head` true) by
    /// `f(current)`. A model with a tied head has no separate head to replace.
    pub fn map_token_param(
        mut self,
        head: bool,
        f: impl FnOnce(&Param<Tensor<2>>) -> Param<Tensor<2>>,
    ) -> Result<Self> {
        if !head {
            let emb = self.token_embedding_mut();
            *emb = f(emb);
            return Ok(self);
        }
        match &mut self {
            Model::Llama(m) if m.lm_head.is_some() => {
                let h = m.lm_head.as_mut().expect("checked");
                h.weight = f(&h.weight);
                Ok(self)
            }
            _ => Err(ModelError::Config(
                "the model has no untied LM head to replace".into(),
            )),
        }
    }

    /// Makes the token-indexed parameters trainable again (after LoRA froze everything).
    pub fn unfreeze_token_params(mut self) -> Self {
        let emb = self.token_embedding_mut();
        *emb = emb.clone().set_require_grad(true);
        if let Model::Llama(m) = &mut self
            && let Some(h) = m.lm_head.as_mut()
        {
            h.weight = h.weight.clone().set_require_grad(true);
        }
        self
    }

    /// Names of the projections LoRA can adapt (`c_attn`, `c_proj`, `c_fc` for GPT-2; `q_proj`,
    /// ..., `down_proj` for the Llama family).
    pub fn lora_target_names(&self) -> &'static [&'static str] {
        match self {
            Model::Gpt2(_) => &["c_attn", "c_proj", "c_fc"],
            Model::Llama(_) => &[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
        }
    }

    /// The parameter group of the projection weights named by `targets` (checked against
    /// [`Model::lora_target_names`]).
    pub fn lora_group(&self, targets: &[String]) -> Result<ParamGroup> {
        let known = self.lora_target_names();
        if let Some(bad) = targets.iter().find(|t| !known.contains(&t.as_str())) {
            return Err(ModelError::Config(format!(
                "LoRA target `{bad}` is not a projection of this {} model (one of {})",
                self.family_name(),
                known.join(", ")
            )));
        }
        let ids = self
            .projections()
            .into_iter()
            .filter(|(name, _, _)| targets.iter().any(|t| t == name))
            .map(|(_, _, p)| p.id)
            .collect();
        Ok(ParamGroup::from_ids(ids))
    }

    /// Every adapted projection: (its Hugging Face module name, e.g.
    /// `transformer.h.0.attn.c_attn` or `model.layers.0.self_attn.q_proj`, the adapter), in
    /// module order.
    pub fn adapters(&self) -> Vec<(String, &LoraAdapter)> {
        self.projections()
            .into_iter()
            .filter_map(|(_, hf, p)| p.adapter().map(|a| (hf, a)))
            .collect()
    }

    /// Whether the Hugging Face layer stores the weight `[in, out]` (GPT-2's `Conv1D`: PEFT's
    /// `fan_in_fan_out`).
    pub fn fan_in_fan_out(&self) -> bool {
        matches!(self, Model::Gpt2(_))
    }

    /// The projection weights LoRA can adapt: (target name, Hugging Face module name,
    /// parameter), in module order.
    pub fn projections(&self) -> Vec<(&'static str, String, &Param<Tensor<2>>)> {
        each!(self, m => m.projections())
    }

    /// The weights that get weight decay: the projection matrices. Biases, norms and
    /// embeddings (and the LM head, tied or not) get none, as in GPT-2/nanoGPT practice.
    /// Matched by path, so the group still holds after a checkpoint restores parameter ids.
    pub fn decay_group(&self) -> ParamGroup {
        let names = self.lora_target_names().join("|");
        ParamGroup::from_regex(format!(r"\.({names})\.weight$")).expect("static regex is valid")
    }

    /// Hugging Face keys of the parameters holding a NaN or an infinity (empty when every
    /// weight is finite): one reduction per parameter, read back once.
    pub fn non_finite_params(&self) -> Vec<String> {
        let mut m = self.clone();
        let mut keys = Vec::new();
        let mut sums = Vec::new();
        for p in m.hf_params() {
            // x * 0 is 0 for finite x and NaN for NaN or +-inf, so the sum is NaN iff any is.
            let s = match &p.slot {
                Slot::Vector(t) => t.val().mul_scalar(0.0).sum(),
                Slot::Matrix(t) => t.val().mul_scalar(0.0).sum(),
            };
            keys.push(p.key);
            sums.push(s);
        }
        if sums.is_empty() {
            return Vec::new();
        }
        let data = Tensor::cat(sums, 0).into_data().convert::<f32>();
        let values = data
            .as_slice::<f32>()
            .map(<[f32]>::to_vec)
            .unwrap_or_default();
        keys.into_iter()
            .zip(values)
            .filter(|(_, v)| !v.is_finite())
            .map(|(k, _)| k)
            .collect()
    }

    /// Every parameter under its Hugging Face key.
    pub(crate) fn hf_params(&mut self) -> Vec<HfParam<'_>> {
        each!(self, m => m.hf_params())
    }

    /// Keys of Hugging Face files that are buffers or a tied head, not parameters.
    pub(crate) fn is_buffer_key(&self, key: &str) -> bool {
        match self {
            Model::Gpt2(_) => crate::gpt2::is_buffer_key(key),
            Model::Llama(m) => crate::llama::is_buffer_key(key, m.lm_head.is_none()),
        }
    }

    /// The prefix Hugging Face files may put before our keys (`transformer.` for GPT-2).
    pub(crate) fn optional_key_prefix(&self) -> Option<&'static str> {
        match self {
            Model::Gpt2(_) => Some("transformer."),
            Model::Llama(_) => None,
        }
    }

    fn family_name(&self) -> &'static str {
        match self {
            Model::Gpt2(_) => "GPT-2",
            Model::Llama(_) => "Llama-family",
        }
    }

    /// Writes the model's weights in Burn's format (`.bpk`), as its family module: checkpoints
    /// hold no family prefix.
    pub fn save_burnpack(&self, path: &Path) -> Result<()> {
        let r = each!(self, m => m.clone().save_file(path));
        r.map_err(|e| ModelError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("{e:?}"),
        })
    }

    /// Loads weights written by [`Model::save_burnpack`] (read whole, so the file may go
    /// away afterwards).
    pub fn load_burnpack_bytes(self, bytes: Vec<u8>, path: &Path) -> Result<Self> {
        use burn::store::ModuleRecord;
        use burn::tensor::Bytes;
        let err = |e: String| ModelError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("model: {e}"),
        };
        let record = ModuleRecord::from_bytes(Bytes::from_elems(bytes))
            .map_err(|e| err(format!("{e:?}")))?;
        Ok(match self {
            Model::Gpt2(m) => Model::Gpt2(
                m.try_load_record(record)
                    .map_err(|e| err(format!("{e:?}")))?,
            ),
            Model::Llama(m) => Model::Llama(
                m.try_load_record(record)
                    .map_err(|e| err(format!("{e:?}")))?,
            ),
        })
    }
}

/// `p` with `n_new` rows (axis 0) or columns (axis 1) appended: the mean of the existing ones
/// plus N(0, 0.02) noise.
fn grow(p: &Param<Tensor<2>>, axis: usize, n_new: usize) -> Param<Tensor<2>> {
    let old = p.val().detach();
    let [a, b] = old.dims();
    let device = old.device();
    let mean = old.clone().mean_dim(axis); // [1, d] or [d, 1]
    let shape = if axis == 0 { [n_new, b] } else { [a, n_new] };
    let noise = Tensor::<2>::random(shape, Distribution::Normal(0.0, 0.02), &device);
    let rows = mean.repeat_dim(axis, n_new) + noise;
    let grown = Tensor::cat(vec![old, rows], axis).detach();
    Param::from_tensor(grown).set_require_grad(p.is_require_grad())
}
