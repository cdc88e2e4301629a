//! GPT-2 on Burn 0.22, written once for every backend (`flex`, `ndarray`, `wgpu`).
//!
//! - [`GptConfig`] with presets and Hugging Face `config.json` IO; [`Gpt`], the module, with HF
//!   names so `model.safetensors` loads without a mapping table.
//! - [`load_model_dir`] / [`save_model_dir`]: Hugging Face model folders (weights, config,
//!   tokenizer, generation config), with errors that name the file and key.
//! - [`Tokenizer`]: the `tokenizers` crate plus special tokens by role; [`resize_token_embeddings`]
//!   for tokens a chat template adds.
//! - [`generate`] / [`generate_batch`]: KV-cache decoding, greedy or sampled, with stops.
//! - [`select_device`]: the one place a backend is chosen.
//!
//! ```no_run
//! use manners_model::{BackendKind, GenerationConfig, generate, load_model_dir, select_device};
//! # fn main() -> Result<(), manners_model::ModelError> {
//! let dev = select_device(BackendKind::Auto)?;
//! let m = load_model_dir(std::path::Path::new("gpt2"), &dev.device)?;
//! let prompt = m.tokenizer.encode("The capital of France is")?;
//! let cfg = GenerationConfig { max_new_tokens: 8, ..Default::default() };
//! let out = generate(&m.model, &m.tokenizer, &prompt, &cfg, |piece| print!("{piece}"))?;
//! println!("\n[{} tokens]", out.tokens.len());
//! # Ok(()) }
//! ```

mod cache;
mod config;
mod device;
mod error;
pub mod fused;
mod generate;
mod gpt;
mod io;
mod resize;
mod tokenizer;

pub use cache::KvCache;
pub use config::{Activation, GptConfig, human_count};
pub use device::{BackendKind, DeviceChoice, select_device};
pub use error::{ModelError, Result};
pub use fused::gelu_tanh;
pub use generate::{
    Generation, GenerationConfig, Sampler, Sampling, StopReason, generate, generate_batch,
    generate_greedy_uncached,
};
pub use gpt::{Attention, Block, ForwardOptions, Gpt, Mlp, document_mask};
pub use io::{
    GenerationDefaults, ModelDir, load_model_dir, load_safetensors, save_model_dir,
    save_safetensors, unused_keys, write_atomic, write_dir_atomic,
};
pub use resize::resize_token_embeddings;
pub use tokenizer::{ENDOFTEXT, Tokenizer};

/// Burn itself, re-exported so embedders use the same version.
pub use burn;
