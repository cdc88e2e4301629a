//! Command-line arguments: what the user typed. Conversion to library configs happens in the
//! command modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Supervised fine-tuning of GPT-style language models, on any Burn backend.
#[derive(Debug, Parser)]
#[command(name = "manners", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a prompt with a model folder.
    Generate(GenerateArgs),
    /// Show a model folder's config, parameter count, tokenizer and special tokens.
    Info(InfoArgs),
    /// Fine-tune a model on conversations (loss on assistant tokens), with a live dashboard.
    Train(Box<TrainArgs>),
    /// Chat with a model folder, using the chat template it was trained with.
    Chat(ChatArgs),
    /// Pretrain the shipped base model from the shipped corpus (tokenizer + model).
    Pretrain(PretrainArgs),
    /// Dataset tools: inspect, lint, build the default instruction set.
    Data(DataArgs),
    /// Evaluate a model: held-out answers (clean stops, accuracy), response loss, raw-text loss
    /// (forgetting), fact cloze.
    Eval(EvalArgs),
    /// Base vs tuned model side by side on the same questions and metrics.
    Compare(CompareArgs),
    /// Export a run's model: a Hugging Face folder (or LoRA adapters in PEFT layout), or a GGUF
    /// file for llama.cpp / Ollama.
    Export(ExportArgs),
    /// Print a prompt's token ids and last-position logits as JSON (parity checks).
    Logits(LogitsArgs),
    /// Measure training throughput, MFU, memory, generation speed and an SFT epoch.
    Bench(BenchArgs),
    /// Rerun an SFT experiment on the shipped data: noise, lr, mix, quality.
    Experiment(ExperimentArgs),
    /// Serve this machine's devices to a run on another machine (`train --devices
    /// ws://HOST:PORT`); a build with `--features remote`.
    ServeDevice(ServeDeviceArgs),
}

#[derive(Debug, Args)]
pub struct ServeDeviceArgs {
    /// The devices to serve: a list as for `train --devices` (default: the --backend device).
    #[arg(long)]
    pub devices: Option<String>,
    /// Address to listen on (0.0.0.0 for every interface; the protocol has no authentication:
    /// serve on a trusted network only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// noise (noisy vs clean), lr (three rates), mix (5% raw text vs none), quality (filter on/off,
    /// a few hundred examples vs all).
    pub name: String,
    /// Parent folder of the runs.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Where the write-up goes (`docs/experiments/<name>.md`).
    #[arg(long, default_value = "docs")]
    pub docs: PathBuf,
    /// Epochs of each run (default: the default run's).
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Examples in the "few" variant of the quality experiment.
    #[arg(long, default_value_t = 300)]
    pub few: usize,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    #[arg(long)]
    pub no_tui: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Timed runs per measurement (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Repeat every measurement this many times, each round running ours and PyTorch's back to
    /// back; the table shows medians over rounds (use 3 or more on a shared machine).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Only the measurements whose name contains one of these (train, generate, epoch, tiny, ...).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// A Python with torch: run scripts/bench/torch_bench.py and show its numbers beside ours.
    #[arg(long)]
    pub torch: Option<PathBuf>,
    /// Where PyTorch runs: `cpu` (2 threads) or `cuda` (compare with `--backend wgpu` on an
    /// NVIDIA GPU).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub torch_device: String,
    /// Also write every number as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run one measurement in this process and print it as JSON (used by the parent).
    #[arg(long, hide = true)]
    pub job: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run folder (its final/ model), or a model folder.
    #[arg(long, visible_alias = "model")]
    pub run: PathBuf,
    /// Output: a folder (`--format hf`) or a `.gguf` file (`--format gguf`).
    #[arg(long)]
    pub out: PathBuf,
    /// `hf`: a Hugging Face folder; `gguf`: one file for llama.cpp, Ollama and LM Studio, with
    /// the tokenizer and the chat template inside (LoRA runs export merged).
    #[arg(long, default_value = "hf", value_parser = ["hf", "gguf"])]
    pub format: String,
    /// GGUF weights: f32, f16, or q8_0 (8-bit blocks of 32, llama.cpp's layout); vectors stay
    /// f32.
    #[arg(long, default_value = "f16")]
    pub dtype: manners::gguf::GgufDtype,
    /// With `--format gguf`: also write an Ollama `Modelfile` beside the file.
    #[arg(long)]
    pub ollama: bool,
    /// For LoRA runs: fold the adapters into the weights (a plain model folder). Without it a
    /// LoRA run exports its adapters in PEFT layout.
    #[arg(long)]
    pub merge: bool,
}

#[derive(Debug, Args)]
pub struct LogitsArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Raw text prompt.
    #[arg(long, conflicts_with = "messages")]
    pub prompt: Option<String>,
    /// A JSONL file whose first line is a `messages` conversation, rendered with the template.
    #[arg(long)]
    pub messages: Option<PathBuf>,
    /// Render the messages as an inference prompt (ending where the assistant starts).
    #[arg(long)]
    pub generation_prompt: bool,
    #[arg(long)]
    pub template: Option<String>,
    /// How many final positions to print logits for.
    #[arg(long, default_value_t = 4)]
    pub positions: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// What to evaluate on (the default: the shipped held-out set).
#[derive(Debug, Args, Clone, Default)]
pub struct EvalDataArgs {
    /// Held-out conversations (default: assets/sft/heldout.jsonl, scored against the facts
    /// beside it).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Reference facts aligned with --data (heldout_facts.jsonl).
    #[arg(long)]
    pub facts: Option<PathBuf>,
    /// Held-out raw text for the forgetting measure (default: assets/base/heldout_text.jsonl).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Also run the "The capital of X is" cloze over every country.
    #[arg(long)]
    pub cloze: bool,
    /// Also measure tool use: held-out facts asked with the `lookup` tool's system prompt, the
    /// model's calls run against the knowledge tables (shipped held-out facts).
    #[arg(long)]
    pub tools: bool,
    /// Use only the first N conversations.
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model folder.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: EvalDataArgs,
    /// Put the question as plain text (how a base model sees it) instead of with the template.
    #[arg(long)]
    pub raw: bool,
    /// Chat template (default: the model's own, else chatml).
    #[arg(long)]
    pub template: Option<String>,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The base model folder.
    #[arg(long)]
    pub base: PathBuf,
    /// The fine-tuned model folder.
    #[arg(long)]
    pub tuned: PathBuf,
    /// Questions to show side by side (.txt: one per line; or a JSONL dataset).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[command(flatten)]
    pub data: EvalDataArgs,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// Responses shown side by side.
    #[arg(long, default_value_t = 6)]
    pub show: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

/// The tokenizer and template a dataset is rendered with.
#[derive(Debug, Args, Clone)]
pub struct TokenizerArgs {
    /// A model or tokenizer folder (default: the shipped base model's tokenizer).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Chat template: chatml, plain, llama2, a Jinja file, or a tokenizer_config.json.
    #[arg(long)]
    pub template: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Render examples with supervised tokens highlighted, and print statistics.
    Inspect {
        file: PathBuf,
        #[command(flatten)]
        tok: TokenizerArgs,
        /// Examples to render.
        #[arg(long, default_value_t = 3)]
        n: usize,
        #[arg(long, default_value = "auto")]
        format: manners::data::Format,
        #[arg(long, default_value = "assistant")]
        mask: manners::data::MaskMode,
        #[arg(long)]
        max_len: Option<usize>,
        /// One JSON object per example (file, line, ids, tokens, supervised, text) instead of
        /// the rendering and statistics, for other tools.
        #[arg(long)]
        json: bool,
    },
    /// Check datasets (template round trip, supervised end-of-turn tokens, BOS, roles,
    /// duplicates, train/held-out overlap); exits non-zero on failure.
    Lint {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        tok: TokenizerArgs,
        /// Held-out files that must not overlap the training files.
        #[arg(long)]
        heldout: Vec<PathBuf>,
        #[arg(long, default_value = "auto")]
        format: manners::data::Format,
        #[arg(long, default_value = "assistant")]
        mask: manners::data::MaskMode,
        #[arg(long)]
        max_len: Option<usize>,
    },
    /// Write the default instruction set (from the knowledge tables) into assets/sft.
    BuildDefault {
        /// Output folder (default: assets/sft).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 1234)]
        seed: u64,
    },
}

/// Which Burn backend runs the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// A hardware GPU through wgpu when one exists, else flex.
    #[default]
    Auto,
    /// Pure-Rust CPU backend (SIMD + threads).
    Flex,
    /// The ndarray CPU backend (deprecated upstream).
    Ndarray,
    /// wgpu: Vulkan, Metal or DX12 (any GPU vendor), or a software Vulkan driver.
    Wgpu,
    /// NVIDIA GPUs through CUDA (a build with `--features cuda`).
    Cuda,
    /// AMD GPUs through ROCm/HIP (a build with `--features rocm`).
    Rocm,
}

impl From<BackendArg> for manners::BackendKind {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Auto => manners::BackendKind::Auto,
            BackendArg::Flex => manners::BackendKind::Flex,
            BackendArg::Ndarray => manners::BackendKind::Ndarray,
            BackendArg::Wgpu => manners::BackendKind::Wgpu,
            BackendArg::Cuda => manners::BackendKind::Cuda,
            BackendArg::Rocm => manners::BackendKind::Rocm,
        }
    }
}

#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Backend: auto (CUDA when compiled in and present, else a hardware GPU via wgpu, else
    /// flex), flex, ndarray, wgpu, cuda, rocm.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto, env = "MANNERS_BACKEND")]
    pub backend: BackendArg,
}

/// Sampling options shared by generate, chat and eval.
#[derive(Debug, Args, Clone)]
pub struct SamplingArgs {
    /// Most new tokens to generate (default 64, or half the model's context when that is
    /// smaller).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to p.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the text contains this string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// `--max-new-tokens`, or its default for a model of `ctx` positions.
    pub fn max_new_tokens(&self, ctx: usize) -> usize {
        self.max_new_tokens.unwrap_or(64.min(ctx / 2).max(1))
    }

    /// The sampling the flags ask for; NaN, infinite or negative temperatures, `--top-k 0`
    /// and `--top-p` outside (0, 1] are errors.
    pub fn sampling(&self) -> anyhow::Result<manners::Sampling> {
        Ok(manners::Sampling::new(
            self.temperature,
            self.top_k,
            self.top_p,
        )?)
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model folder (Hugging Face layout of any model type manners loads, or one it wrote).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt text, continued as it is.
    #[arg(long, required_unless_present = "chat", conflicts_with = "chat")]
    pub prompt: Option<String>,
    /// A question asked as one user turn with the model's chat template (the one it was trained
    /// with); generation stops at the end of the assistant's turn.
    #[arg(long)]
    pub chat: Option<String>,
    /// Chat template for `--chat` (default: the model's own).
    #[arg(long, requires = "chat")]
    pub template: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Do not stop at the end-of-text token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print one JSON object (prompt ids, new ids, text, why it stopped) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

/// `manners train`. Every flag overrides the `--config` file (or the defaults); the run writes
/// the full resolved config to `<out>/<name>/run.toml`.
#[derive(Debug, Args, Default)]
pub struct TrainArgs {
    /// A TOML config (e.g. a previous run's run.toml); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in this folder from its newest checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    pub resume: Option<PathBuf>,
    /// Base model folder: Hugging Face layout (gpt2, llama, mistral, qwen2, qwen3), or a
    /// manners final/ folder.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training data (JSONL/JSON, .gz allowed); repeatable.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Held-out data; without it a fraction of the training data is held out.
    #[arg(long)]
    pub eval_data: Vec<PathBuf>,
    /// Dataset format: auto, messages, alpaca, sharegpt, prompt-completion, plain.
    #[arg(long)]
    pub format: Option<manners::data::Format>,
    /// Chat template: chatml, plain, llama2, a Jinja file, or a tokenizer_config.json.
    #[arg(long)]
    pub template: Option<String>,
    /// Supervised tokens: assistant (every assistant turn), last, all.
    #[arg(long)]
    pub mask: Option<manners::data::MaskMode>,
    /// Keep assistant reasoning traces in the context but out of the loss.
    #[arg(long)]
    pub mask_reasoning: bool,
    /// Pack several conversations per row (default on).
    #[arg(long, overrides_with = "no_pack")]
    pub pack: bool,
    /// One conversation per row, padded.
    #[arg(long)]
    pub no_pack: bool,
    /// Most tokens per example.
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Rows per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimiser step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Warmup steps.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Learning-rate schedule after warmup: cosine, linear, constant.
    #[arg(long)]
    pub schedule: Option<manners::train::ScheduleKind>,
    /// Passes over the data.
    #[arg(long, conflicts_with = "max_steps")]
    pub epochs: Option<f64>,
    /// Optimiser steps (instead of epochs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// AdamW weight decay on weight matrices (default 0).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// AdamW beta1 (default 0.9).
    #[arg(long)]
    pub beta1: Option<f64>,
    /// AdamW beta2 (default 0.999).
    #[arg(long)]
    pub beta2: Option<f64>,
    /// Floor of the learning-rate schedule, as a fraction of --lr (default 0.1).
    #[arg(long)]
    pub min_lr_ratio: Option<f64>,
    /// Examples longer than --max-len: drop (counted), truncate (keep the start) or fail.
    #[arg(long)]
    pub truncation: Option<manners::data::LengthPolicy>,
    /// Dataset records that cannot be used: skip (counted, first ones shown with file:line) or
    /// fail (stop at the first).
    #[arg(long)]
    pub bad_records: Option<manners::data::BadRecordPolicy>,
    /// Fraction of the training data held out when no --eval-data is given (default 0.05).
    #[arg(long)]
    pub eval_fraction: Option<f64>,
    /// Drop exact duplicate conversations (after Unicode, case and whitespace folding).
    #[arg(long)]
    pub dedup: bool,
    /// Quality filter: drop conversations whose answer has fewer tokens.
    #[arg(long)]
    pub min_response_tokens: Option<usize>,
    /// Quality filter: drop conversations whose answer has more tokens.
    #[arg(long)]
    pub max_response_tokens: Option<usize>,
    /// Quality filter: drop conversations with more prompt tokens per answer token.
    #[arg(long)]
    pub max_prompt_ratio: Option<f64>,
    /// Quality filter: drop answers whose share of distinct tokens is lower (repetition).
    #[arg(long)]
    pub min_distinct_ratio: Option<f64>,
    /// Checkpoints kept: the newest N, plus the one with the best held-out loss (default 2).
    #[arg(long)]
    pub keep_checkpoints: Option<usize>,
    /// Global gradient-norm clipping (0 turns it off).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Dropout while training.
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Raw-text file mixed into the SFT data (repeatable).
    #[arg(long)]
    pub mix_text: Vec<PathBuf>,
    /// Fraction of training examples that are raw text.
    #[arg(long)]
    pub mix_fraction: Option<f64>,
    /// Steps between held-out evaluations.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Steps between sample generations.
    #[arg(long)]
    pub sample_every: Option<u64>,
    /// Steps between checkpoints.
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Prompt to sample from during training (repeatable).
    #[arg(long = "sample-prompt")]
    pub sample_prompts: Vec<String>,
    /// Loss watchdog: stop when the smoothed loss stays this many times above its lowest, or a
    /// held-out loss this far above the best (default 4; 0: off).
    #[arg(long)]
    pub diverge_ratio: Option<f64>,
    /// Stop when the held-out loss has not improved for N evaluations.
    #[arg(long)]
    pub early_stopping: Option<u32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Parent folder of run folders.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run folder name.
    #[arg(long)]
    pub name: Option<String>,
    /// Backend: auto, flex, ndarray, wgpu, cuda, rocm.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Train data-parallel on several devices: a count (`2`: two devices of --backend) or a
    /// list (`cuda:0,cuda:1`, `wgpu:0,wgpu:1`). Each optimiser step's grad_accum micro-batches
    /// are dealt to the devices, so the global batch, and the run, do not change.
    #[arg(long)]
    pub devices: Option<String>,
    /// How data-parallel gradients are summed: auto (NCCL all_reduce on CUDA, else transfer to
    /// the first device), transfer, collective.
    #[arg(long, requires = "devices")]
    pub reduce: Option<manners::Reduce>,
    /// MiB of attention probabilities (all layers together) training on flex may keep from the
    /// forward pass instead of recomputing them in the backward pass (default 1024; 0 always
    /// recomputes). Faster at long contexts; the gradients are the same bit for bit either way.
    #[arg(long, value_name = "MIB")]
    pub attention_keep_mib: Option<usize>,
    /// LoRA: train rank-R adapters on the target projections, base weights frozen.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA scale numerator (the update is alpha / rank * A @ B; default 2 x rank).
    #[arg(long, requires = "lora_rank")]
    pub lora_alpha: Option<f64>,
    /// LoRA target projections, comma-separated (GPT-2: c_attn, c_proj, c_fc; Llama family:
    /// q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj). Default: all of them.
    #[arg(long, requires = "lora_rank", value_delimiter = ',')]
    pub lora_targets: Vec<String>,
    /// Prepare everything (model, template, data, batches, schedule), print the resolved
    /// config, the data report, the steps and a peak-memory estimate, and exit without training.
    #[arg(long)]
    pub dry_run: bool,
    /// Plain log lines instead of the dashboard (automatic without a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Steps between log lines in plain mode.
    #[arg(long)]
    pub log_every: Option<u64>,
}

/// `manners pretrain`: the defaults reproduce the shipped base model (`assets/base`).
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Parent folder of run folders.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Run folder name.
    #[arg(long, default_value = "pretrain")]
    pub name: String,
    /// Continue a stopped pretraining run.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// BPE vocabulary size (special tokens included).
    #[arg(long, default_value_t = 8192)]
    pub vocab_size: usize,
    #[arg(long, default_value_t = 4)]
    pub n_layer: usize,
    #[arg(long, default_value_t = 4)]
    pub n_head: usize,
    #[arg(long, default_value_t = 256)]
    pub n_embd: usize,
    /// Context length.
    #[arg(long, default_value_t = 256)]
    pub n_positions: usize,
    /// Rows (of n_positions tokens) per step.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Passes over the corpus.
    #[arg(long, default_value_t = 2.0)]
    pub epochs: f64,
    /// Optimiser steps (instead of epochs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Paragraphs per country/element/state in the corpus.
    #[arg(long, default_value_t = 32)]
    pub fact_repeats: usize,
    /// Steps of the knowledge-focus stage after the main one (0: none).
    #[arg(long, default_value_t = 700)]
    pub focus_steps: u64,
    /// Peak learning rate of the knowledge-focus stage.
    #[arg(long, default_value_t = 1e-3)]
    pub focus_lr: f64,
    /// Copies of the instruction set's training questions and answers (as "Q:/A:" prose, no
    /// chat tokens) in the knowledge-focus mix (0: none).
    #[arg(long, default_value_t = 4)]
    pub focus_qa_repeats: usize,
    /// Share of book text (by characters) in the knowledge-focus mix.
    #[arg(long, default_value_t = 0.2)]
    pub focus_book_fraction: f64,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Plain log lines instead of the dashboard.
    #[arg(long)]
    pub no_tui: bool,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Override the chat template (default: the one the model was trained with).
    #[arg(long)]
    pub template: Option<String>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Functions the model may call: a JSON file holding a list of OpenAI tool schemas. The
    /// model's calls are printed as calls; answer one with `/tool RESULT`.
    #[arg(long)]
    pub tools: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Model folder.
    #[arg(long, required_unless_present = "devices")]
    pub model: Option<PathBuf>,
    /// List the devices each compiled backend sees (for --devices and --backend).
    #[arg(long)]
    pub devices: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
