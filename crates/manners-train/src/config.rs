//! [`TrainConfig`]: everything a run needs, written to `run.toml` fully resolved so that
//! `--config run.toml` reproduces the run.

use std::path::{Path, PathBuf};

use manners_data::{BadRecordPolicy, Format, LengthPolicy, MaskMode};
use manners_events::RunKind;
use manners_model::{BackendKind, Reduce};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::schedule::{Schedule, ScheduleKind};

/// The shape of a model trained from scratch (pretraining).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
}

/// LoRA settings (parameter-efficient fine-tuning).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of the adapters.
    pub rank: usize,
    /// Scale numerator: the update is `alpha / rank * A @ B`.
    pub alpha: f64,
    /// Projections that get adapters, by the model's names (GPT-2: `c_attn`, `c_proj`,
    /// `c_fc`; Llama family: `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`,
    /// `down_proj`). Empty: every projection of the model.
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            targets: Vec::new(),
        }
    }
}

/// A training run, fully described. Field defaults follow common SFT practice (TRL, torchtune).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `sft` (loss on assistant tokens) or `pretrain` (loss on every token of raw text).
    pub kind: RunKind,

    // ---- model -------------------------------------------------------------------------
    /// Base model folder (a Hugging Face folder of any `model_type` manners loads, or a manners
    /// `final/` folder).
    pub model: Option<PathBuf>,
    /// Pretraining from scratch: the architecture (the vocabulary comes from `tokenizer`).
    pub init: Option<InitConfig>,
    /// Pretraining from scratch: a tokenizer folder (`tokenizer.json` or vocab + merges).
    pub tokenizer: Option<PathBuf>,

    // ---- data ----------------------------------------------------------------------------
    /// Training files (JSONL/JSON, `.gz` allowed; raw `.txt` for pretraining).
    pub data: Vec<PathBuf>,
    /// Dataset format: auto, messages, alpaca, sharegpt, prompt-completion, plain, text.
    pub format: Format,
    /// Held-out files; when empty, `eval_fraction` of the training data is held out.
    pub eval_data: Vec<PathBuf>,
    pub eval_fraction: f64,
    /// Most held-out examples used for the held-out loss; with `eval_fraction`, no more than
    /// this many are taken out of the training data.
    pub max_eval_examples: usize,
    /// Bad records: `skip` (counted in the report) or `fail` (stop at the first).
    pub bad_records: BadRecordPolicy,
    /// Drop exact duplicates among the training conversations (same roles and contents after
    /// Unicode NFKC, lower case and whitespace folding), keeping the first.
    pub dedup: bool,
    /// Quality filter on the training conversations' last assistant turn (0 turns a threshold
    /// off): fewest and most response tokens, most prompt tokens per response token, least
    /// share of distinct tokens in the response.
    pub min_response_tokens: usize,
    pub max_response_tokens: usize,
    pub max_prompt_ratio: f64,
    pub min_distinct_ratio: f64,
    /// Chat template: chatml, plain, llama2, a Jinja file, or a tokenizer_config.json. Empty:
    /// the template saved with the model, else the tokenizer's `chat_template`, else chatml.
    pub template: Option<String>,
    /// Which tokens are supervised: assistant (every assistant turn), last, all.
    pub mask: MaskMode,
    /// Keep assistant reasoning (`reasoning_content`) in the context but out of the loss.
    pub mask_reasoning: bool,
    /// Pack several conversations per row (attention stays within each).
    pub pack: bool,
    /// Most tokens per example (= positions per row + 1). 0: the model's context.
    pub max_len: usize,
    /// Examples longer than `max_len`: truncate (keep the start), drop, or fail.
    pub truncation: LengthPolicy,
    /// Raw-text files mixed into SFT data (every token supervised), to limit forgetting.
    pub mix_text: Vec<PathBuf>,
    /// Fraction of training examples that are raw text.
    pub mix_fraction: f64,

    // ---- optimisation ---------------------------------------------------------------------
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step (the loss is normalised by the supervised tokens of
    /// the whole step).
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Floor of the schedule, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    pub schedule: ScheduleKind,
    /// Warmup steps; when `None`, `warmup_ratio` of the total steps.
    pub warmup_steps: Option<u64>,
    pub warmup_ratio: f64,
    /// Passes over the training data (fractions allowed); ignored when `max_steps` is set.
    pub epochs: f64,
    pub max_steps: Option<u64>,
    /// AdamW decoupled weight decay on weight matrices (never on biases, LayerNorm or
    /// embeddings).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clipping (like `torch.nn.utils.clip_grad_norm_`); `None` = off.
    pub clip_grad_norm: Option<f64>,
    /// Dropout while training (overrides the model config; GPT-2 ships 0.1).
    pub dropout: f64,
    pub lora: Option<LoraConfig>,

    // ---- the loop ---------------------------------------------------------------------------
    /// Steps between held-out evaluations (0: ten per run).
    pub eval_every: u64,
    /// Steps between sample generations (0: five per run).
    pub sample_every: u64,
    /// Steps between checkpoints (0: every other evaluation).
    pub save_every: u64,
    /// Steps between log lines in plain mode.
    pub log_every: u64,
    /// Checkpoints kept: the newest this many, and the one with the best held-out loss.
    pub keep_checkpoints: usize,
    /// Stop when the held-out loss has not improved for this many evaluations.
    pub early_stopping_patience: Option<u32>,
    /// Steps in a row with a non-finite loss or gradient before the run stops.
    pub max_bad_steps: u32,
    /// Loss watchdog: the run stops when its smoothed training loss stays above this many
    /// times its lowest for `diverge_steps` steps in a row, or a held-out loss exceeds this
    /// many times the best one (0: off).
    pub diverge_ratio: f64,
    pub diverge_steps: u64,
    pub seed: u64,
    /// Prompts generated from during training (user messages; raw text for pretraining).
    /// Empty: the first held-out conversations.
    pub sample_prompts: Vec<String>,
    pub sample_max_new_tokens: usize,

    // ---- where ------------------------------------------------------------------------------
    /// auto, flex, ndarray, wgpu, cuda, rocm.
    pub backend: BackendKind,
    /// Data-parallel devices: a count of devices of `backend` (`"2"`) or names (`"cuda:0,cuda:1"`,
    /// `"wgpu:0,wgpu:1"`, `"wgpu:default,wgpu:cpu"`). Unset: one device. The global batch stays
    /// `batch_size x grad_accum` rows; the devices share its micro-batches.
    pub devices: Option<String>,
    /// How a data-parallel step sums gradients: auto (collectives on CUDA, else transfers),
    /// transfer, collective.
    pub reduce: Reduce,
    /// MiB of attention probabilities training may keep from the forward pass for the
    /// backward pass (flex, all layers together), where they would otherwise be recomputed:
    /// faster at long contexts (one product and one exponential pass fewer per block of
    /// queries), at `4 * heads * t^2 / 2` bytes per row and layer. Layers past the budget
    /// recompute, so memory stays linear in `t`. The gradients are the same bit for bit either
    /// way. 0: always recompute.
    pub attention_keep_mib: usize,
    /// Parent folder of run folders.
    pub out_dir: PathBuf,
    /// Run folder name (default: `<kind>-<UTC date>-<time>`).
    pub name: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            kind: RunKind::Sft,
            model: None,
            init: None,
            tokenizer: None,
            data: Vec::new(),
            format: Format::Auto,
            eval_data: Vec::new(),
            eval_fraction: 0.05,
            max_eval_examples: 256,
            bad_records: BadRecordPolicy::Skip,
            dedup: false,
            min_response_tokens: 0,
            max_response_tokens: 0,
            max_prompt_ratio: 0.0,
            min_distinct_ratio: 0.0,
            template: None,
            mask: MaskMode::Assistant,
            mask_reasoning: false,
            pack: true,
            max_len: 0,
            truncation: LengthPolicy::Truncate,
            mix_text: Vec::new(),
            mix_fraction: 0.0,
            batch_size: 8,
            grad_accum: 1,
            lr: 1e-4,
            min_lr_ratio: 0.1,
            schedule: ScheduleKind::Cosine,
            warmup_steps: None,
            warmup_ratio: 0.03,
            epochs: 3.0,
            max_steps: None,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip_grad_norm: Some(1.0),
            dropout: 0.0,
            lora: None,
            eval_every: 0,
            sample_every: 0,
            save_every: 0,
            log_every: 10,
            keep_checkpoints: 2,
            early_stopping_patience: None,
            max_bad_steps: 5,
            diverge_ratio: 4.0,
            diverge_steps: 20,
            seed: 42,
            sample_prompts: Vec::new(),
            sample_max_new_tokens: 48,
            backend: BackendKind::Auto,
            devices: None,
            reduce: Reduce::Auto,
            attention_keep_mib: manners_model::fused::DEFAULT_ATTENTION_KEEP >> 20,
            out_dir: PathBuf::from("runs"),
            name: None,
        }
    }
}

/// Settings a resumed run may change: how long it goes, what it logs and keeps, and where it
/// runs. Everything else (model, data, template, optimiser, batch, seed, ...) shaped the weights
/// already trained, so `--resume` refuses a different value.
pub const RESUME_MAY_CHANGE: &[&str] = &[
    "max_steps",
    "epochs",
    "eval_every",
    "sample_every",
    "save_every",
    "log_every",
    "keep_checkpoints",
    "early_stopping_patience",
    "max_bad_steps",
    "diverge_ratio",
    "diverge_steps",
    "sample_prompts",
    "sample_max_new_tokens",
    "backend",
    "devices",
    "reduce",
    "attention_keep_mib",
];

impl TrainConfig {
    /// What `edited` changes in this (saved) config, as `key: old -> new` lines; an error
    /// naming every change outside [`RESUME_MAY_CHANGE`].
    pub fn resume_changes(&self, edited: &TrainConfig) -> Result<Vec<String>> {
        let json = |c: &TrainConfig| serde_json::to_value(c).expect("config serialises");
        let (old, new) = (json(self), json(edited));
        let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
            return Ok(Vec::new());
        };
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for (key, was) in old {
            let now = new.get(key).unwrap_or(&serde_json::Value::Null);
            if was == now {
                continue;
            }
            let line = format!("{key}: {was} -> {now}");
            if RESUME_MAY_CHANGE.contains(&key.as_str()) {
                allowed.push(line);
            } else {
                refused.push(line);
            }
        }
        if !refused.is_empty() {
            return Err(TrainError::Config(format!(
                "a resumed run keeps the settings it was trained with, and these differ from its \
                 run.toml: {}. Start a new run to change them (e.g. --config RUN/run.toml \
                 --name NEW); with --resume only {} may change",
                refused.join("; "),
                RESUME_MAY_CHANGE.join(", ")
            )));
        }
        Ok(allowed)
    }

    /// Reads a TOML config; unknown keys are errors (a typo must not silently do nothing).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        toml::from_str(&text).map_err(|e| TrainError::ConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Checks values that would otherwise fail late or silently.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.data.is_empty() {
            return bad("no training data: give at least one data file".into());
        }
        if self.model.is_none() && (self.init.is_none() || self.tokenizer.is_none()) {
            return bad(
                "give a base model folder, or `init` + `tokenizer` to train from scratch".into(),
            );
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch_size and grad_accum must be at least 1".into());
        }
        if !(self.max_prompt_ratio >= 0.0 && self.max_prompt_ratio.is_finite()) {
            return bad(format!(
                "max_prompt_ratio must be >= 0 (0: off), got {}",
                self.max_prompt_ratio
            ));
        }
        if !(0.0..=1.0).contains(&self.min_distinct_ratio) {
            return bad(format!(
                "min_distinct_ratio must be in [0, 1], got {}",
                self.min_distinct_ratio
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "min_lr_ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return bad(format!(
                "eval_fraction must be in [0, 1), got {}",
                self.eval_fraction
            ));
        }
        if !(0.0..1.0).contains(&self.mix_fraction) {
            return bad(format!(
                "mix_fraction must be in [0, 1), got {}",
                self.mix_fraction
            ));
        }
        if self.max_steps.is_none()
            && self.epochs.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return bad("set epochs > 0 or max_steps".into());
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1 and beta2 must be in [0, 1)".into());
        }
        if let Some(c) = self.clip_grad_norm
            && c.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return bad(format!("clip_grad_norm must be positive, got {c}"));
        }
        if let Some(l) = &self.lora
            && l.rank == 0
        {
            return bad("lora rank must be at least 1".into());
        }
        Ok(())
    }

    /// The schedule for a run of `total` optimiser steps.
    pub fn schedule(&self, total: u64) -> Schedule {
        let warmup = self
            .warmup_steps
            .unwrap_or_else(|| (self.warmup_ratio * total as f64).round() as u64)
            .min(total);
        Schedule {
            kind: self.schedule,
            lr: self.lr,
            min_lr_ratio: self.min_lr_ratio,
            warmup,
            total,
        }
    }

    /// Fills the "auto" (zero) intervals for a run of `total` steps.
    pub(crate) fn resolve_intervals(&mut self, total: u64) {
        let every = |n: u64| (total / n).max(1);
        if self.eval_every == 0 {
            self.eval_every = every(10);
        }
        if self.sample_every == 0 {
            self.sample_every = every(5);
        }
        if self.save_every == 0 {
            // Every other evaluation, so that each checkpoint has its held-out loss (the best
            // one is kept, see `keep_checkpoints`).
            self.save_every = self.eval_every * 2;
        }
        if self.log_every == 0 {
            self.log_every = 1;
        }
        if self.warmup_steps.is_none() {
            self.warmup_steps = Some((self.warmup_ratio * total as f64).round() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_unknown_keys() {
        let mut c = TrainConfig {
            data: vec!["a.jsonl".into()],
            model: Some("m".into()),
            ..Default::default()
        };
        c.lora = Some(LoraConfig::default());
        let back: TrainConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        let err = toml::from_str::<TrainConfig>("batchsize = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batchsize"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = TrainConfig {
            data: vec!["a".into()],
            model: Some("m".into()),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let e = toml::from_str::<TrainConfig>("mask = \"everything\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("everything"), "{e}");
        let e = TrainConfig {
            lr: -1.0,
            ..ok.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("lr"));
        let e = toml::from_str::<TrainConfig>("backend = \"tpu\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tpu"), "{e}");
        assert!(ok.validate().is_ok());
    }
}
