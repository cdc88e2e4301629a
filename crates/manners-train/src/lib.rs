//! The manners SFT learner.
//!
//! [`train`] fine-tunes a GPT-2 on conversations with the loss on assistant tokens only
//! (or pretrains on raw text), emitting [`TrainEvent`](manners_events::TrainEvent)s to any
//! [`EventSink`](manners_events::EventSink) and obeying a [`Control`](manners_events::Control)
//! (stop, pause, evaluate/sample/checkpoint now). [`resume`] continues a run from its newest
//! checkpoint exactly.
//!
//! - Loss: per-token cross-entropy summed over supervised targets, divided by the supervised
//!   count of the whole optimiser step (gradient accumulation is token-normalised); the LM head
//!   runs only at supervised positions.
//! - AdamW (PyTorch defaults; decay on weight matrices only), warmup + cosine/linear/constant
//!   with a floor, global-norm clipping, non-finite guards, early stopping.
//! - Run folder: `run.toml`, `metrics.jsonl`, `samples.jsonl`, `checkpoints/`, `final/`,
//!   `loss.png`, `report.md`.

pub mod bench;
mod checkpoint;
mod clip;
mod config;
mod error;
pub mod eval;
mod files;
pub mod lora;
mod optim;
mod report;
mod schedule;
mod step;
mod trainer;

pub use checkpoint::{CheckpointState, latest as latest_checkpoint, list as list_checkpoints};
pub use clip::{clip_global_norm, global_norm};
pub use config::{InitConfig, LoraConfig, TrainConfig};
pub use error::{Result, TrainError};
pub use files::read_events;
pub use optim::{DECAY_PATHS, FusedAdamW, build_burn_optimizer, build_optimizer};
pub use schedule::{Schedule, ScheduleKind};
pub use step::{DeviceBatch, Learner, StepResult, loss_for_backward, nll_sum};
pub use trainer::{
    TEMPLATE_FILE, TrainOutcome, choose_template, resume, saved_template, specials_of, train,
};
