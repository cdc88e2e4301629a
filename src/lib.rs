//! # manners
//!
//! Supervised fine-tuning (SFT) of GPT-style language models in Rust, on Burn: a base model
//! (a text completer) becomes an instruction follower. This facade re-exports what an embedder
//! needs from the workspace crates:
//!
//! - the model ([`Model`] of any family, [`ModelConfig`], [`load_model_dir`], [`generate`],
//!   [`Tokenizer`]),
//! - the data pipeline ([`data`]: readers, chat templates, masks, packing),
//! - the learner ([`train`]) and its events ([`events`]),
//! - with the default `report` feature, run reports and plots ([`report`]).
//!
//! ```no_run
//! use manners::{BackendKind, GenerationConfig, chat_template, generate, load_model_dir, select_device};
//! use manners::data::Message;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = select_device(BackendKind::Auto)?;
//! let dir = std::path::Path::new("runs/default/final");
//! let m = load_model_dir(dir, &dev.device)?;
//! let template = chat_template(&m.tokenizer, Some(dir), None)?; // the one it was trained with
//! let ids = template.encode_prompt(&[Message::user("What is the capital of Peru?")], m.tokenizer.hf())?;
//! let cfg = GenerationConfig::stopping_at(48, m.model.n_positions(), template.stop_token_ids(m.tokenizer.hf()), template.stop_strings());
//! let out = generate(&m.model, &m.tokenizer, &ids, &cfg, |_| {})?;
//! println!("{}", out.text);
//! # Ok(()) }
//! ```

use std::path::Path;

pub use manners_model::*;

/// The SFT data pipeline (no Burn): readers, chat templates, loss masks, packing, batches.
pub use manners_data as data;

/// Events a training run emits, and the control handle a watcher uses.
pub use manners_events as events;

/// The SFT learner: [`train::train`], [`train::resume`], [`train::TrainConfig`].
pub use manners_train as train;

/// Run reports (`report.md`, `loss.png`) and plots, written from a run's events.
#[cfg(feature = "report")]
pub use manners_report as report;

/// The chat template to use with a model folder's tokenizer: `arg` (a `--template` value: a
/// built-in name or a file), else the template the folder was trained with, else its
/// tokenizer's own Jinja template, else `chatml`.
pub fn chat_template(
    tok: &Tokenizer,
    dir: Option<&Path>,
    arg: Option<&str>,
) -> manners_data::Result<manners_data::ChatTemplate> {
    let specials =
        manners_data::SpecialTokens::from_roles(tok.bos_token(), tok.eos_token(), tok.pad_token());
    manners_data::choose_template(arg, dir, tok.chat_template(), &specials)
}
