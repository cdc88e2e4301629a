//! # manners-train
//!
//! The SFT learner. [`train`] fine-tunes a model of any family on conversations with the loss
//! on assistant tokens only (or pretrains on raw text), emitting
//! [`TrainEvent`](manners_events::TrainEvent)s to any [`EventSink`](manners_events::EventSink)
//! and obeying a [`Control`](manners_events::Control) (stop, pause, evaluate/sample/checkpoint
//! now). [`resume`] continues a run from its newest checkpoint exactly.
//!
//! ```no_run
//! use manners_events::{Control, FnSink, TrainEvent};
//! use manners_model::{BackendKind, select_device};
//! use manners_train::{TrainConfig, train};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = TrainConfig {
//!     model: Some("SmolLM2-135M".into()), // any Hugging Face folder manners loads
//!     data: vec!["chats.jsonl".into()],   // messages, Alpaca, ShareGPT, ... (auto-detected)
//!     epochs: 2.0,
//!     ..TrainConfig::default()
//! };
//! let device = select_device(BackendKind::Auto)?;
//! let mut sink = FnSink(|e: TrainEvent| {
//!     if let TrainEvent::Step(s) = e {
//!         println!("step {} loss {:.3}", s.step, s.loss);
//!     }
//! });
//! let out = train(cfg, &device, &mut sink, &Control::new())?;
//! println!("model in {:?}", out.final_dir);
//! # Ok(()) }
//! ```
//!
//! - Loss: per-token cross-entropy summed over supervised targets, divided by the supervised
//!   count of the whole optimiser step (gradient accumulation is token-normalised); the LM head
//!   runs only at supervised positions.
//! - AdamW (betas 0.9/0.999, eps 1e-8; decay only on the model's projection matrices), warmup +
//!   cosine/linear/constant with a floor, global-norm clipping, non-finite guards, early
//!   stopping. LoRA on the projections the model names ([`lora`]).
//! - Run folder: `run.toml`, `metrics.jsonl` (every event), `samples.jsonl`, `checkpoints/`,
//!   `final/` (a Hugging Face folder in the base's dtype). `report.md` and `loss.png` come from
//!   an event consumer (`manners-report`), not from the learner.
//! - [`eval`]: held-out answers, losses and cloze checks of any model.

mod checkpoint;
mod clip;
mod config;
mod dry_run;
mod error;
pub mod eval;
mod files;
pub mod lora;
mod optim;
mod schedule;
mod step;
mod trainer;

pub use checkpoint::{CheckpointState, latest as latest_checkpoint, list as list_checkpoints};
pub use clip::{clip_global_norm, global_norm};
pub use config::{InitConfig, LoraConfig, RESUME_MAY_CHANGE, TrainConfig};
pub use dry_run::{DryRun, MemoryEstimate, dry_run};
pub use error::{Result, TrainError};
pub use optim::{FusedAdamW, build_burn_optimizer, build_optimizer};
pub use schedule::{Schedule, ScheduleKind};
pub use step::{
    DeviceBatch, DeviceWork, Learner, StepLoss, StepResult, heldout_nll, loss_for_backward,
    loss_for_backward_split, nll_sum,
};
pub use trainer::{TrainOutcome, check_batch, resume, train};
