//! `manners train --dry-run`: everything a run prepares (model, template, data, batching,
//! schedule), reported without training or writing anything.

use std::fmt;

use manners_data::Examples;
use manners_events::stats::fmt_bytes;
use manners_model::burn::module::Module;
use manners_model::{DeviceChoice, ModelDims};

use crate::config::TrainConfig;
use crate::error::Result;
use crate::trainer::plan;

/// What a run would do.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The resolved config (max_len, warmup, intervals filled in): what run.toml would hold.
    pub config: TrainConfig,
    pub model: String,
    pub params: u64,
    pub trainable_params: u64,
    pub train_examples: usize,
    pub eval_examples: usize,
    /// Tokens of the training examples and how many of them are supervised targets.
    pub train_tokens: usize,
    pub supervised_tokens: usize,
    /// Data report: rejected records, truncated or dropped examples, the raw-text mix.
    pub facts: Vec<(String, String)>,
    pub steps_per_epoch: usize,
    pub total_steps: u64,
    pub memory: MemoryEstimate,
}

/// Peak memory of training, estimated from the shapes (f32 everywhere, as manners trains).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub gradients: u64,
    /// AdamW's two moments.
    pub optimizer: u64,
    /// What the backward pass keeps of one micro-batch.
    pub activations: u64,
    /// The encoded dataset (ids and masks) on the host.
    pub data: u64,
}

impl MemoryEstimate {
    /// Bytes of f32 values kept for the backward pass of `rows` x `seq` positions: per layer
    /// about 8 model-width vectors (norms, q/k/v, attention output, residuals), 2 MLP-width
    /// ones and the attention scores and probabilities (2 per head and key); then the logits,
    /// their softmax and its gradient (3 vocabulary-width vectors).
    pub fn activations(dims: ModelDims, vocab: usize, rows: usize, seq: usize) -> u64 {
        let per_position =
            dims.layers * (8 * dims.width + 2 * dims.mlp + 2 * dims.heads * seq) + 3 * vocab;
        4 * (rows * seq * per_position) as u64
    }

    pub fn total(&self) -> u64 {
        self.weights + self.gradients + self.optimizer + self.activations + self.data
    }
}

/// Prepares the run `cfg` describes as `train` would (the same steps, in order) and reports it.
pub fn dry_run(mut cfg: TrainConfig, choice: &DeviceChoice) -> Result<DryRun> {
    let device = choice.device.clone().autodiff();
    let p = plan(&mut cfg, &device)?;
    let train = p.loader.examples();
    let (train_tokens, supervised_tokens) = train.totals();
    let train_tokens = train_tokens as usize;
    let params = p.model.num_params() as u64;
    let trainable = crate::lora::trainable_params(&p.model, p.added_ids.len());
    let memory = MemoryEstimate {
        weights: 4 * params,
        gradients: 4 * trainable,
        optimizer: 8 * trainable,
        activations: MemoryEstimate::activations(
            p.config.dims(),
            p.model.vocab_size(),
            cfg.batch_size,
            cfg.max_len - 1,
        ),
        // Examples in memory take 5 bytes a token; in a token store (conversations) only the
        // index stays in memory, 9 bytes an example.
        data: match train {
            Examples::Memory(_) => 5 * train_tokens as u64,
            Examples::Store(_) => 9 * train.len() as u64,
        },
    };
    Ok(DryRun {
        model: p.config.describe(),
        params,
        trainable_params: trainable,
        train_examples: train.len(),
        eval_examples: p.data.eval.len(),
        train_tokens,
        supervised_tokens: supervised_tokens as usize,
        steps_per_epoch: p.loader.steps_per_epoch(),
        total_steps: p.total_steps,
        memory,
        facts: p.data.facts,
        config: cfg,
    })
}

impl fmt::Display for DryRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.memory;
        writeln!(f, "dry run: nothing was trained or written")?;
        writeln!(
            f,
            "model      {} ({} trainable)",
            self.model, self.trainable_params
        )?;
        writeln!(
            f,
            "data       {} training examples ({} tokens, {} supervised targets), {} held out",
            self.train_examples, self.train_tokens, self.supervised_tokens, self.eval_examples
        )?;
        for (k, v) in &self.facts {
            writeln!(f, "  {k}: {v}")?;
        }
        writeln!(
            f,
            "steps      {} per epoch, {} in all ({} rows x {} accumulation, max_len {})",
            self.steps_per_epoch,
            self.total_steps,
            self.config.batch_size,
            self.config.grad_accum,
            self.config.max_len
        )?;
        writeln!(
            f,
            "memory     about {} at peak (estimate): weights {}, gradients {}, AdamW {}, \
             activations {}, data {}",
            fmt_bytes(m.total()),
            fmt_bytes(m.weights),
            fmt_bytes(m.gradients),
            fmt_bytes(m.optimizer),
            fmt_bytes(m.activations),
            fmt_bytes(m.data)
        )?;
        if let Some(devices) = &self.config.devices {
            // Data-parallel: the figure above is the first device's (it also holds AdamW and
            // the summed gradients); the others hold a weight copy, gradients, activations.
            writeln!(
                f,
                "           that is the first device of --devices {devices}; each other device \
                 about {} (weights, gradients, activations)",
                fmt_bytes(m.weights + m.gradients + m.activations)
            )?;
        }
        writeln!(f, "config     (run.toml would hold)")?;
        write!(f, "{}", self.config.to_toml())
    }
}
