//! # manners
//!
//! Supervised fine-tuning (SFT) of GPT-style language models in Rust, on Burn: a base model
//! (a text completer) becomes an instruction follower. This facade re-exports what an embedder
//! needs from the workspace crates:
//!
//! - the model ([`Gpt`], [`GptConfig`], [`load_model_dir`], [`generate`], [`Tokenizer`]),
//! - the data pipeline ([`data`]: readers, chat templates, masks, packing),
//! - training events ([`events`]).
//!
//! ```no_run
//! use manners::{BackendKind, GenerationConfig, generate, load_model_dir, select_device};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = select_device(BackendKind::Auto)?;
//! let m = load_model_dir(std::path::Path::new("runs/default/final"), &dev.device)?;
//! let ids = m.tokenizer.encode("The capital of Peru is")?;
//! let out = generate(&m.model, &m.tokenizer, &ids, &GenerationConfig::default(), |_| {})?;
//! println!("{}", out.text);
//! # Ok(()) }
//! ```

pub use manners_model::*;

/// The SFT data pipeline (no Burn): readers, chat templates, loss masks, packing, batches.
pub use manners_data as data;

/// Events a training run emits, and the control handle a watcher uses.
pub use manners_events as events;

/// The SFT learner: [`train::train`], [`train::resume`], [`train::TrainConfig`].
pub use manners_train as train;
