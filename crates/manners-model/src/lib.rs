//! GPT-style models on Burn 0.22, written once for every backend (`flex`, `ndarray`, `wgpu`).
//!
//! - [`Model`]: one type for every family ([`Gpt2`]; [`Llama`] for `llama`, `mistral`,
//!   `qwen2`, `qwen3`), with [`ModelConfig`] read from `config.json` by `model_type`. Each
//!   family is one file with Hugging Face names as field names; the model tells the learner
//!   what it needs (LoRA targets, weight-decay group, token-indexed parameters, the Hugging
//!   Face key table and which weights are transposed).
//! - [`load_model_dir`] / [`save_model_dir`]: Hugging Face model folders (weights in one file
//!   or shards, f32/f16/bf16 read and written back in the dtype they came in; config,
//!   tokenizer, chat template, generation config), with errors that name the file and key.
//! - [`Tokenizer`]: the `tokenizers` crate plus special tokens by role and the chat template.
//! - [`generate`] / [`generate_batch`]: KV-cache decoding, greedy or sampled, with stops.
//! - [`select_device`]: the one place a backend is chosen.
//!
//! ```no_run
//! use manners_model::{BackendKind, GenerationConfig, generate, load_model_dir, select_device};
//! # fn main() -> Result<(), manners_model::ModelError> {
//! let dev = select_device(BackendKind::Auto)?;
//! let m = load_model_dir(std::path::Path::new("SmolLM2-135M"), &dev.device)?;
//! println!("{}", m.config.describe());
//! let prompt = m.tokenizer.encode("The capital of France is")?;
//! let cfg = GenerationConfig { max_new_tokens: 8, ..Default::default() };
//! let out = generate(&m.model, &m.tokenizer, &prompt, &cfg, |piece| print!("{piece}"))?;
//! println!("\n[{} tokens]", out.tokens.len());
//! # Ok(()) }
//! ```

mod attention;
mod cache;
mod config;
mod device;
mod error;
pub mod fused;
mod generate;
pub mod gguf;
mod gpt2;
mod io;
mod llama;
mod model;
mod tokenizer;

pub use attention::document_mask;
pub use cache::KvCache;
pub use config::human_count;
pub use device::{
    BackendKind, BufferLimit, DeviceChoice, DeviceSet, Reduce, list_devices, parse_devices,
    remote_device, select_device, serve_devices, wgpu_for_tests,
};
pub use error::{ModelError, Result};
pub use fused::gelu_tanh;
pub use generate::{
    Generation, GenerationConfig, Sampler, Sampling, StopReason, generate, generate_batch,
    generate_greedy_uncached,
};
pub use gpt2::{Activation, Attention, Block, Gpt2, Gpt2Config, Mlp};
pub use io::{
    GenerationDefaults, MAX_SHARD_BYTES, ModelDir, NamedTensor, WEIGHTS_FILE, WEIGHTS_INDEX_FILE,
    WeightsDtype, load_model_dir, load_weights, read_json, save_model_dir, save_weights,
    unused_keys, write_atomic, write_dir_atomic, write_safetensors,
};
pub use llama::{DecoderLayer, Llama, LlamaAttention, LlamaConfig, LlamaMlp, RopeScaling};
pub use model::{Family, ForwardOptions, MODEL_TYPES, Model, ModelConfig, ModelDims, TokenParam};
pub use tokenizer::{CHAT_TEMPLATE_FILE, ENDOFTEXT, Tokenizer};

/// Burn itself, re-exported so embedders use the same version.
pub use burn;
