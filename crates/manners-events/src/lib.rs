//! Plain data shared by the manners trainer, the dashboard, the log printer and embedders.
//!
//! The trainer only knows [`EventSink`]: it emits [`TrainEvent`]s and polls a [`Control`] for
//! requests from the user (stop, pause, evaluate now, ...). Everything that watches a run (the
//! ratatui dashboard, the plain log lines, `metrics.jsonl`, tests, an embedder's closure)
//! consumes the same enum.
//!
//! ```
//! use manners_events::{Control, EventSink, TrainEvent};
//! let mut seen = Vec::new();
//! seen.send(TrainEvent::Warning { step: 3, message: "loss spike".into() });
//! assert_eq!(seen.len(), 1);
//! let control = Control::new();
//! control.request_stop();
//! assert!(control.should_stop());
//! ```

pub mod host;
#[cfg(feature = "serde")]
mod log;
pub mod stats;

#[cfg(feature = "serde")]
pub use log::{METRICS_FILE, event_line, read_events};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// What kind of training a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(Serialize, Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum RunKind {
    /// Supervised fine-tuning: loss on assistant tokens.
    #[default]
    Sft,
    /// Language-model pretraining: loss on every token.
    Pretrain,
}

/// Facts about a run, sent once when it starts (or resumes).
#[derive(Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct RunInfo {
    /// Short run name (the run folder's name).
    pub name: String,
    /// The run folder.
    pub run_dir: String,
    pub kind: RunKind,
    /// Model description, e.g. `gpt2 12L/768d/12h vocab 50257`.
    pub model: String,
    /// All parameters of the model.
    pub params: u64,
    /// Parameters the optimiser updates (fewer than `params` with LoRA or frozen parts).
    pub trainable_params: u64,
    /// Backend and device, e.g. `flex (cpu)`.
    pub backend: String,
    /// Dataset description (files, formats).
    pub data: String,
    pub train_examples: u64,
    pub eval_examples: u64,
    /// Chat template name (empty for pretraining).
    pub template: String,
    /// Optimiser steps this run will take in total.
    pub total_steps: u64,
    /// The step this process starts at (non-zero when resuming).
    pub start_step: u64,
    /// Any further facts worth showing, as label/value pairs.
    pub facts: Vec<(String, String)>,
}

/// One optimiser step.
#[derive(Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct StepStats {
    /// 1-based step number (the number of optimiser steps done, this one included).
    pub step: u64,
    pub total_steps: u64,
    /// Fractional epoch reached.
    pub epoch: f64,
    /// Masked mean loss of this step (over supervised tokens): the objective.
    pub loss: f64,
    /// In runs that mix raw text into the conversations: the loss of the conversations'
    /// (assistant) targets alone, comparable with the held-out loss, and of the raw text alone
    /// (`None` in other runs, and for a part the step has no target of).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub sft_loss: Option<f64>,
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub mixed_loss: Option<f64>,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Non-padding tokens processed in this step.
    pub tokens: u64,
    /// Supervised tokens in this step.
    pub supervised_tokens: u64,
    /// Non-padding tokens per second over this step.
    pub tokens_per_sec: f64,
    /// Seconds since the run (this process) started.
    pub elapsed_secs: f64,
    /// True when the step was skipped (non-finite loss or gradient).
    pub skipped: bool,
    /// Data-parallel runs: what each device did in this step, main device first (empty on one
    /// device).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub devices: Vec<DeviceRate>,
}

/// One device's share of a data-parallel step.
#[derive(Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct DeviceRate {
    /// The device, as the run names it (`cuda:1`, `wgpu:0 (...)`).
    pub device: String,
    /// Non-padding tokens it processed.
    pub tokens: u64,
    /// Its tokens per second (forward and backward of its micro-batches).
    pub tokens_per_sec: f64,
}

/// A held-out evaluation.
#[derive(Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct EvalStats {
    pub step: u64,
    /// Masked mean loss over the held-out set.
    pub loss: f64,
    pub perplexity: f64,
    /// Supervised tokens the loss was taken over.
    pub tokens: u64,
    /// Further named metrics (e.g. raw-text loss).
    pub extra: Vec<(String, f64)>,
}

/// A generation from a fixed prompt, made during training.
#[derive(Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct SampleOut {
    pub step: u64,
    pub prompt: String,
    pub response: String,
    /// True when generation ended at a stop token (not at the token budget).
    pub stopped: bool,
}

/// A checkpoint written to disk.
#[derive(Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct CheckpointInfo {
    pub step: u64,
    pub path: String,
    /// Wall seconds spent writing it.
    pub secs: f64,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct RunSummary {
    pub steps: u64,
    pub final_loss: Option<f64>,
    pub final_eval_loss: Option<f64>,
    pub elapsed_secs: f64,
    pub run_dir: String,
    /// Why the run ended: `completed`, `stopped by user`, `early stopping`, ...
    pub reason: String,
}

/// Everything a training run reports.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(Serialize, Deserialize),
    serde(tag = "event", rename_all = "snake_case")
)]
pub enum TrainEvent {
    Started(RunInfo),
    Step(StepStats),
    Eval(EvalStats),
    Sample(SampleOut),
    Checkpoint(CheckpointInfo),
    /// Something worth the user's attention that does not stop the run.
    Warning {
        step: u64,
        message: String,
    },
    /// The run paused (true) or resumed (false) at the user's request.
    Paused {
        step: u64,
        paused: bool,
    },
    Finished(RunSummary),
    /// The run stopped on an error.
    Failed {
        step: u64,
        error: String,
    },
}

impl TrainEvent {
    /// The step the event belongs to (0 for `Started`).
    pub fn step(&self) -> u64 {
        match self {
            TrainEvent::Started(i) => i.start_step,
            TrainEvent::Step(s) => s.step,
            TrainEvent::Eval(e) => e.step,
            TrainEvent::Sample(s) => s.step,
            TrainEvent::Checkpoint(c) => c.step,
            TrainEvent::Warning { step, .. } => *step,
            TrainEvent::Paused { step, .. } => *step,
            TrainEvent::Finished(s) => s.steps,
            TrainEvent::Failed { step, .. } => *step,
        }
    }
}

/// Where the trainer sends its events. Sending never fails the run: a sink that cannot deliver
/// (a closed channel) drops the event.
pub trait EventSink: Send {
    fn send(&mut self, event: TrainEvent);
}

impl EventSink for Vec<TrainEvent> {
    fn send(&mut self, event: TrainEvent) {
        self.push(event);
    }
}

impl EventSink for mpsc::Sender<TrainEvent> {
    fn send(&mut self, event: TrainEvent) {
        // The receiver may be gone (dashboard closed): keep training.
        let _ = mpsc::Sender::send(self, event);
    }
}

/// Wraps a closure as a sink: `FnSink(|e| println!("{e:?}"))`.
pub struct FnSink<F>(pub F);

impl<F: FnMut(TrainEvent) + Send> EventSink for FnSink<F> {
    fn send(&mut self, event: TrainEvent) {
        (self.0)(event)
    }
}

/// A sink that drops everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn send(&mut self, _event: TrainEvent) {}
}

/// Sends every event to several sinks.
#[derive(Default)]
pub struct Fanout(pub Vec<Box<dyn EventSink>>);

impl EventSink for Fanout {
    fn send(&mut self, event: TrainEvent) {
        if let Some((last, rest)) = self.0.split_last_mut() {
            for s in rest {
                s.send(event.clone());
            }
            last.send(event);
        }
    }
}

impl<S: EventSink + ?Sized> EventSink for Box<S> {
    fn send(&mut self, event: TrainEvent) {
        (**self).send(event)
    }
}

impl<S: EventSink + ?Sized> EventSink for &mut S {
    fn send(&mut self, event: TrainEvent) {
        (**self).send(event)
    }
}

/// A request from the user to a running trainer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Checkpoint, then end the run.
    Stop,
    /// Pause or resume.
    TogglePause,
    /// Evaluate on the held-out set at the next step boundary.
    EvalNow,
    /// Generate the sample prompts at the next step boundary.
    SampleNow,
    /// Write a checkpoint at the next step boundary.
    CheckpointNow,
}

#[derive(Debug, Default)]
struct Flags {
    stop: AtomicBool,
    paused: AtomicBool,
    eval: AtomicBool,
    sample: AtomicBool,
    checkpoint: AtomicBool,
}

/// Shared control between whoever watches a run and the trainer. Cheap to clone; every clone
/// sees the same flags. The trainer checks it at step boundaries.
#[derive(Clone, Debug, Default)]
pub struct Control(Arc<Flags>);

impl Control {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a user request.
    pub fn request(&self, r: Request) {
        match r {
            Request::Stop => self.request_stop(),
            Request::TogglePause => {
                self.0.paused.fetch_xor(true, Ordering::SeqCst);
            }
            Request::EvalNow => self.0.eval.store(true, Ordering::SeqCst),
            Request::SampleNow => self.0.sample.store(true, Ordering::SeqCst),
            Request::CheckpointNow => self.0.checkpoint.store(true, Ordering::SeqCst),
        }
    }

    pub fn request_stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        // A paused run must wake up to stop.
        self.0.paused.store(false, Ordering::SeqCst);
    }

    pub fn should_stop(&self) -> bool {
        self.0.stop.load(Ordering::SeqCst)
    }

    pub fn is_paused(&self) -> bool {
        self.0.paused.load(Ordering::SeqCst)
    }

    pub fn set_paused(&self, paused: bool) {
        self.0.paused.store(paused, Ordering::SeqCst);
    }

    /// True once per `EvalNow` request.
    pub fn take_eval(&self) -> bool {
        self.0.eval.swap(false, Ordering::SeqCst)
    }

    /// True once per `SampleNow` request.
    pub fn take_sample(&self) -> bool {
        self.0.sample.swap(false, Ordering::SeqCst)
    }

    /// True once per `CheckpointNow` request.
    pub fn take_checkpoint(&self) -> bool {
        self.0.checkpoint.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_taken_once() {
        let c = Control::new();
        let seen_by_ui = c.clone();
        seen_by_ui.request(Request::EvalNow);
        assert!(c.take_eval());
        assert!(!c.take_eval());
        seen_by_ui.request(Request::TogglePause);
        assert!(c.is_paused());
        seen_by_ui.request(Request::Stop);
        assert!(c.should_stop());
        assert!(!c.is_paused(), "stop must wake a paused run");
    }

    #[test]
    fn fanout_delivers_to_every_sink() {
        let (tx, rx) = mpsc::channel();
        let mut f = Fanout(vec![Box::new(tx), Box::new(NullSink)]);
        f.send(TrainEvent::Warning {
            step: 1,
            message: "x".into(),
        });
        assert_eq!(rx.try_recv().map(|e| e.step()), Ok(1));
    }

    #[test]
    fn closed_channel_does_not_panic() {
        let (mut tx, rx) = mpsc::channel::<TrainEvent>();
        drop(rx);
        EventSink::send(
            &mut tx,
            TrainEvent::Paused {
                step: 2,
                paused: true,
            },
        );
    }
}
