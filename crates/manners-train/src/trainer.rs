//! The SFT (and pretraining) loop, top to bottom: prepare the run (model, template, LoRA,
//! data, steps, run folder or resume), then for each step take micro-batches, forward, masked
//! loss, backward, clip, AdamW step, emit events; evaluate, sample and checkpoint on their
//! intervals; at the end export `final/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use manners_data::{
    BatchConfig, ChatTemplate, Conversation, Encoded, Examples, HostBatch, Loader, Message,
    ReadReport, Role, SpecialTokens, StreamOptions, TEMPLATE_FILE, choose_template, encode_dataset,
    encode_texts, format_utc, last_user, mix_pieces, now_secs, pack_stream, read_conversations,
    read_texts, split_heldout,
};
use manners_events::{
    CheckpointInfo, Control, DeviceRate, EvalStats, EventSink, RunInfo, RunKind, RunSummary,
    SampleOut, StepStats, TrainEvent,
};
use manners_model::burn::optim::ModuleOptimizer;
use manners_model::burn::prelude::*;
use manners_model::{
    BufferLimit, DeviceSet, GenerationConfig, GenerationDefaults, Gpt2Config, Model, ModelConfig,
    Tokenizer, WEIGHTS_FILE, WEIGHTS_INDEX_FILE, WeightsDtype, generate_batch, load_model_dir,
    save_model_dir,
};

use crate::checkpoint::{self, CheckpointState};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::files::{RunFiles, RunLock, create_unique_dir};
use crate::optim::build_optimizer;
use crate::schedule::Schedule;
use crate::step::{Learner, heldout_nll};

/// What a finished (or stopped) run leaves.
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    /// `final/`, a model folder the other commands load (absent when the run was stopped early).
    pub final_dir: Option<PathBuf>,
    pub summary: RunSummary,
    /// The trained model, without autodiff.
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
}

/// Trains a new run on one device (a [`manners_model::DeviceChoice`]) or data-parallel on
/// several (a [`DeviceSet`]).
pub fn train(
    cfg: TrainConfig,
    devices: impl Into<DeviceSet>,
    sink: &mut dyn EventSink,
    control: &Control,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    let mut run = Run::prepare(cfg, &devices.into(), None)?;
    run.fit(sink, control)
}

/// Continues the run in `run_dir` from its newest checkpoint, with its saved `run.toml`.
/// `edit` may change the config first: the settings in [`crate::RESUME_MAY_CHANGE`] (e.g. raise
/// `max_steps`; each change is reported as a warning), and nothing else (an error lists them).
/// The device count may differ from the run's first part: the global batch (and so the run) does
/// not depend on it.
pub fn resume(
    run_dir: &Path,
    devices: impl Into<DeviceSet>,
    edit: impl FnOnce(&mut TrainConfig),
    sink: &mut dyn EventSink,
    control: &Control,
) -> Result<TrainOutcome> {
    let saved = TrainConfig::from_toml_file(&run_dir.join("run.toml"))?;
    let mut cfg = saved.clone();
    edit(&mut cfg);
    let changes = saved.resume_changes(&cfg)?;
    cfg.validate()?;
    let mut run = Run::prepare(cfg, &devices.into(), Some(run_dir.to_path_buf()))?;
    if !changes.is_empty() {
        run.info.facts.push((
            "warning: resume".into(),
            format!("resumed with changed settings: {}", changes.join("; ")),
        ));
    }
    run.fit(sink, control)
}

/// The device RNG's seed for optimiser step `step` (SplitMix64 of the run seed and the step).
fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A prompt generated from during training.
#[derive(Clone, Debug)]
struct SamplePrompt {
    shown: String,
    ids: Vec<u32>,
}

struct Run {
    cfg: TrainConfig,
    run_dir: PathBuf,
    learner: Learner,
    model_config: ModelConfig,
    /// The dtype the base weights came in: `final/` is written in it.
    dtype: WeightsDtype,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    loader: Loader,
    eval_batches: Vec<HostBatch>,
    samples: Vec<SamplePrompt>,
    /// Token ids and strings generation stops at.
    stops: (Vec<u32>, Vec<String>),
    /// Ids of the special tokens added to the tokenizer for the template.
    added_ids: Vec<u32>,
    schedule: Schedule,
    total_steps: u64,
    state: CheckpointState,
    info: RunInfo,
    files: RunFiles,
    /// Held while the run lives.
    _lock: RunLock,
    /// The smallest storage-buffer limit among the run's GPU devices (`None` on the CPU).
    buffer_limit: Option<BufferLimit>,
    watchdog: Watchdog,
    /// Steps in a row whose update was skipped (non-finite loss or gradient).
    bad_streak: u32,
    /// The latest held-out loss and its step.
    last_eval: Option<(u64, f64)>,
    /// The first micro-batch of the latest step: a checkpoint is written only when the
    /// weights give it a finite loss.
    probe: Option<HostBatch>,
    /// Raw text is mixed into the conversations: steps report the two losses apart.
    mixes_text: bool,
    /// The conversations' loss of the last applied step (runs that mix raw text).
    last_sft_loss: Option<f64>,
    /// Short names of the devices of a data-parallel run, main first (`cuda:0`, ...).
    device_names: Vec<String>,
}

/// Stops a run whose loss explodes but stays finite (non-finite steps are skipped and counted
/// separately): the smoothed training loss above `ratio` times its lowest (and at least one
/// nat above it) for `steps` steps in a row, or a held-out loss that far above the best.
struct Watchdog {
    ratio: f64,
    steps: u64,
    smooth: manners_events::stats::Ema,
    lowest: Option<f64>,
    above: u64,
}

impl Watchdog {
    fn new(cfg: &TrainConfig) -> Self {
        Watchdog {
            ratio: cfg.diverge_ratio,
            steps: cfg.diverge_steps.max(1),
            smooth: manners_events::stats::Ema::new(0.9),
            lowest: None,
            above: 0,
        }
    }

    fn too_high(&self, value: f64, reference: f64) -> bool {
        value > (self.ratio * reference).max(reference + 1.0)
    }

    /// A description of the divergence, when this training loss completes one.
    fn train_loss(&mut self, loss: f64) -> Option<String> {
        if self.ratio <= 0.0 {
            return None;
        }
        let smooth = self.smooth.push(loss)?;
        let lowest = self.lowest.map_or(smooth, |l| l.min(smooth));
        self.lowest = Some(lowest);
        self.above = if self.too_high(smooth, lowest) {
            self.above + 1
        } else {
            0
        };
        (self.above >= self.steps).then(|| {
            format!(
                "the smoothed training loss ({smooth:.4}) stayed above {}x its lowest ({lowest:.4}) \
                 for {} steps",
                self.ratio, self.steps
            )
        })
    }

    /// A description of the divergence, when this held-out loss is one.
    fn eval_loss(&self, loss: f64, best: Option<f64>) -> Option<String> {
        let best = best?;
        (self.ratio > 0.0 && (!loss.is_finite() || self.too_high(loss, best))).then(|| {
            format!(
                "the held-out loss ({loss:.4}) is more than {}x the best ({best:.4})",
                self.ratio
            )
        })
    }
}

/// The model a run starts from.
struct Base {
    model: Model,
    config: ModelConfig,
    tokenizer: Tokenizer,
    dtype: WeightsDtype,
}

/// Everything a run prepares before it touches its folder: the model (dropout, template
/// tokens, LoRA), the data, the batches and the schedule. `train` and `train --dry-run` both
/// take these steps, in this order.
pub(crate) struct Plan {
    pub(crate) model: Model,
    pub(crate) config: ModelConfig,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) dtype: WeightsDtype,
    pub(crate) template: Option<ChatTemplate>,
    pub(crate) added_ids: Vec<u32>,
    pub(crate) data: PreparedData,
    pub(crate) loader: Loader,
    pub(crate) eval_batches: Vec<HostBatch>,
    pub(crate) total_steps: u64,
    pub(crate) schedule: Schedule,
}

/// The named preparation steps; fills `cfg`'s automatic values (max_len, intervals, warmup).
pub(crate) fn plan(cfg: &mut TrainConfig, device: &Device) -> Result<Plan> {
    let Base {
        model,
        mut config,
        mut tokenizer,
        dtype,
    } = load_base(cfg, device)?;
    resolve_max_len(cfg, config.max_positions())?;
    // Dropout for training is the run's choice; the model config keeps its own for export.
    let model = model.with_dropout(cfg.dropout);
    let template = run_template(cfg, &tokenizer)?;
    let added_ids = add_template_tokens(template.as_ref(), &mut tokenizer);
    let mut grown = config.clone();
    grown.set_vocab_size(tokenizer.vocab_size().max(config.vocab_size()));
    grown.check_device(device)?;
    let model = model.resize_token_embeddings(tokenizer.vocab_size());
    config.set_vocab_size(model.vocab_size());
    let model = attach_lora(model, cfg, !added_ids.is_empty())?;
    let mut data = prepare_data(cfg, &tokenizer, template.as_ref())?;
    let (loader, eval_batches) = batching(cfg, &tokenizer, &mut data)?;
    let (total_steps, schedule) = plan_steps(cfg, &loader);
    Ok(Plan {
        model,
        config,
        tokenizer,
        dtype,
        template,
        added_ids,
        data,
        loader,
        eval_batches,
        total_steps,
        schedule,
    })
}

impl Run {
    fn prepare(
        mut cfg: TrainConfig,
        devices: &DeviceSet,
        resume_dir: Option<PathBuf>,
    ) -> Result<Self> {
        if devices.is_empty() {
            return Err(TrainError::Config("no device to train on".into()));
        }
        let reduce = devices.resolved_reduce()?;
        if devices.len() > cfg.grad_accum {
            return Err(TrainError::Config(format!(
                "{} devices but grad_accum {}: each optimiser step has grad_accum micro-batches \
                 of batch_size rows, dealt to the devices; set grad_accum to a multiple of {} \
                 (and batch_size to grad_accum/{} of it to keep the global batch)",
                devices.len(),
                cfg.grad_accum,
                devices.len(),
                devices.len()
            )));
        }
        // Process-wide, like the compute threads: it changes speed and memory, never a result.
        manners_model::fused::set_attention_keep_limit(
            cfg.attention_keep_mib.saturating_mul(1 << 20),
        );
        let choice = devices.main();
        let device = choice.device.clone().autodiff();
        device.seed(cfg.seed);
        let Plan {
            model,
            config,
            tokenizer,
            dtype,
            template,
            added_ids,
            data,
            loader,
            eval_batches,
            total_steps,
            schedule,
        } = plan(&mut cfg, &device)?;
        let stops = match &template {
            Some(t) => (t.stop_token_ids(tokenizer.hf()), t.stop_strings()),
            None => (tokenizer.eos_id().into_iter().collect(), Vec::new()),
        };
        // A GPU adapter's storage-buffer limit, met now with a clear error rather than by a
        // validation panic in the first kernel that binds too large a tensor.
        let buffer_limit = BufferLimit::of_all(devices.devices.iter().map(|d| &d.device));
        config.check_limit(buffer_limit.as_ref())?;
        for (i, b) in eval_batches.iter().enumerate() {
            check_batch(buffer_limit.as_ref(), model_shape(&config), b, &|| {
                format!("held-out batch {}", i + 1)
            })?;
        }
        let samples = sample_prompts(&cfg, &data.eval_convs, template.as_ref(), &tokenizer)?;

        let optim = build_optimizer(&cfg, &model);
        let start = open_run_dir(&cfg, resume_dir.as_deref(), model, optim, loader)?;
        let trainable = crate::lora::trainable_params(&start.model, added_ids.len());
        let mut info = run_info(
            &cfg,
            devices,
            &start,
            &config,
            &data,
            &template,
            total_steps,
            trainable,
        );
        for note in &start.notes {
            info.facts.push(("warning: resume".into(), note.clone()));
        }
        if devices.len() > 1 {
            let how = match reduce {
                manners_model::Reduce::Collective => "all_reduce (NCCL)",
                _ => "transfer to the first device",
            };
            info.facts.push((
                "devices".into(),
                format!(
                    "{} data-parallel: micro-batches dealt round-robin, gradients summed by {how}; \
                     optimiser, evaluation and samples on the first",
                    devices.len()
                ),
            ));
            if !cfg.grad_accum.is_multiple_of(devices.len()) {
                info.facts.push((
                    "warning: devices".into(),
                    format!(
                        "grad_accum {} is not a multiple of the {} devices: some devices run one \
                         more micro-batch per step than others, and the rest wait",
                        cfg.grad_accum,
                        devices.len()
                    ),
                ));
            }
        }
        let mut learner =
            Learner::new(start.model, start.optim, cfg.clip_grad_norm, device.clone());
        if devices.len() > 1 {
            let replicas = devices.devices[1..]
                .iter()
                .map(|c| c.device.clone().autodiff())
                .collect();
            learner = learner.with_replicas(replicas, reduce == manners_model::Reduce::Collective);
        }
        if cfg.lora.is_some() && !added_ids.is_empty() {
            learner = learner.with_trainable_token_rows(&added_ids);
        }
        Ok(Run {
            watchdog: Watchdog::new(&cfg),
            mixes_text: cfg.kind == RunKind::Sft
                && !cfg.mix_text.is_empty()
                && cfg.mix_fraction > 0.0,
            last_sft_loss: None,
            cfg,
            run_dir: start.run_dir,
            learner,
            model_config: config,
            dtype,
            tokenizer,
            template,
            loader: start.loader,
            eval_batches,
            samples,
            stops,
            added_ids,
            schedule,
            total_steps,
            state: start.state,
            info,
            files: start.files,
            _lock: start.lock,
            buffer_limit,
            bad_streak: 0,
            last_eval: None,
            probe: None,
            // `cuda:1`, `wgpu:0`, `ws://10.0.0.2:3000#0`: the description without its details.
            device_names: devices
                .devices
                .iter()
                .map(|d| {
                    let short = d.description.split(" (").next().unwrap_or_default();
                    short.to_string()
                })
                .collect(),
        })
    }

    fn model(&self) -> &Model {
        self.learner.model()
    }

    fn emit(&mut self, sink: &mut dyn EventSink, ev: TrainEvent) {
        self.files.record(&ev);
        sink.send(ev);
    }

    fn fit(&mut self, sink: &mut dyn EventSink, control: &Control) -> Result<TrainOutcome> {
        let started = Instant::now();
        let elapsed_before = self.state.elapsed_secs;
        let elapsed = |s: &Instant| elapsed_before + s.elapsed().as_secs_f64();
        self.emit(sink, TrainEvent::Started(self.info.clone()));
        let warnings: Vec<String> = self
            .info
            .facts
            .iter()
            .filter(|(k, _)| k.starts_with("warning"))
            .map(|(_, v)| v.clone())
            .collect();
        for message in warnings {
            let ev = TrainEvent::Warning {
                step: self.state.step,
                message,
            };
            self.emit(sink, ev);
        }
        let mut reason = "completed".to_string();
        let mut paused = false;
        while self.state.step < self.total_steps {
            // ---- user requests at the step boundary ----
            while control.is_paused() && !control.should_stop() {
                if !paused {
                    paused = true;
                    let ev = TrainEvent::Paused {
                        step: self.state.step,
                        paused: true,
                    };
                    self.emit(sink, ev);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if paused {
                paused = false;
                let ev = TrainEvent::Paused {
                    step: self.state.step,
                    paused: false,
                };
                self.emit(sink, ev);
            }
            if control.should_stop() {
                reason = "stopped by user".into();
                break;
            }
            if control.take_eval()
                && let Some(what) = self.evaluate(sink)
            {
                return Err(self.diverged(sink, what));
            }
            if control.take_sample() {
                self.sample(sink)?;
            }
            if control.take_checkpoint() {
                self.state.elapsed_secs = elapsed(&started);
                self.checkpoint(sink)?;
            }

            // ---- one optimiser step ----
            let t0 = Instant::now();
            let step = self.state.step + 1;
            let lr = self.schedule.lr_at(step);
            let micro: Vec<HostBatch> = (0..self.cfg.grad_accum)
                .map(|_| self.loader.next_batch())
                .collect::<manners_data::Result<_>>()?;
            for (i, b) in micro.iter().enumerate() {
                check_batch(
                    self.buffer_limit.as_ref(),
                    model_shape(&self.model_config),
                    b,
                    &|| format!("micro-batch {} of step {step}", i + 1),
                )?;
            }
            let n_sup: usize = micro.iter().map(|b| b.n_supervised).sum();
            let n_tok: usize = micro.iter().map(|b| b.n_tokens).sum();
            // Dropout draws from the device RNG: seeding it from (seed, step) makes every step's
            // masks the same whether the run went straight through or was resumed.
            self.learner.seed(step_seed(self.cfg.seed, step));
            let outcome = self.learner.step(&micro, lr);
            self.probe = micro.into_iter().next();
            self.state.step = step;
            self.state.tokens_seen += n_tok as u64;
            self.state.supervised_seen += n_sup as u64;
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            let (loss, gnorm, skipped) = match outcome {
                Some(r) => (r.loss, r.grad_norm, !r.applied),
                None => (f64::NAN, f64::NAN, true),
            };
            // Runs that mix raw text report the conversations' loss apart from it (a step
            // without raw text is all conversation).
            let (sft_loss, mixed_loss) = match outcome {
                Some(r) if self.mixes_text => (r.sft_loss.or(Some(r.loss)), r.mixed_loss),
                _ => (None, None),
            };
            if skipped {
                self.bad_streak += 1;
                let ev = TrainEvent::Warning {
                    step,
                    message: format!(
                        "step {step} skipped: loss {loss}, grad norm {gnorm} (non-finite)"
                    ),
                };
                self.emit(sink, ev);
                if self.bad_streak >= self.cfg.max_bad_steps {
                    let err = TrainError::Diverged {
                        step,
                        count: self.bad_streak,
                        kept: self.kept_checkpoint(),
                    };
                    let ev = TrainEvent::Failed {
                        step,
                        error: err.to_string(),
                    };
                    self.emit(sink, ev);
                    return Err(err);
                }
            } else {
                self.bad_streak = 0;
                self.state.last_loss = Some(loss);
                self.last_sft_loss = sft_loss;
            }
            let exploded = if skipped {
                None
            } else {
                self.watchdog.train_loss(loss)
            };
            let ev = TrainEvent::Step(StepStats {
                step,
                total_steps: self.total_steps,
                epoch: self.loader.epoch(),
                loss,
                sft_loss,
                mixed_loss,
                lr,
                grad_norm: gnorm,
                tokens: n_tok as u64,
                supervised_tokens: n_sup as u64,
                tokens_per_sec: n_tok as f64 / secs,
                elapsed_secs: elapsed(&started),
                skipped,
                devices: self
                    .learner
                    .device_work()
                    .iter()
                    .zip(&self.device_names)
                    .map(|(w, name)| DeviceRate {
                        device: name.clone(),
                        tokens: w.tokens as u64,
                        tokens_per_sec: w.tokens as f64 / w.secs.max(1e-9),
                    })
                    .collect(),
            });
            self.emit(sink, ev);
            if let Some(what) = exploded {
                return Err(self.diverged(sink, what));
            }

            let last = step == self.total_steps;
            if step.is_multiple_of(self.cfg.eval_every) && !last {
                if let Some(what) = self.evaluate(sink) {
                    return Err(self.diverged(sink, what));
                }
                if self.early_stop() {
                    reason = "early stopping".into();
                    break;
                }
            }
            if step.is_multiple_of(self.cfg.sample_every) && !last {
                self.sample(sink)?;
            }
            if step.is_multiple_of(self.cfg.save_every) && !last {
                self.state.elapsed_secs = elapsed(&started);
                self.checkpoint(sink)?;
            }
        }

        // ---- the end: evaluate, sample, checkpoint, export ----
        let completed = reason != "stopped by user";
        if completed {
            if let Some(what) = self.evaluate(sink) {
                return Err(self.diverged(sink, what));
            }
            self.sample(sink)?;
        }
        self.state.elapsed_secs = elapsed(&started);
        if checkpoint::latest(&self.run_dir).map(|(s, _)| s) != Some(self.state.step)
            && self.state.step > 0
        {
            self.checkpoint(sink)?;
        }
        let final_dir = if completed {
            Some(self.export_final()?)
        } else {
            None
        };
        let summary = RunSummary {
            steps: self.state.step,
            // The conversations' loss where raw text is mixed in (comparable with held-out).
            final_loss: self.last_sft_loss.or(self.state.last_loss),
            final_eval_loss: self.files.last_eval_loss(),
            elapsed_secs: self.state.elapsed_secs,
            run_dir: self.run_dir.display().to_string(),
            reason,
        };
        self.emit(sink, TrainEvent::Finished(summary.clone()));
        Ok(TrainOutcome {
            run_dir: self.run_dir.clone(),
            final_dir,
            summary,
            model: self.model().valid(),
            tokenizer: self.tokenizer.clone(),
            template: self.template.clone(),
        })
    }

    /// Measures the held-out loss; a description of the divergence when the watchdog finds
    /// one.
    fn evaluate(&mut self, sink: &mut dyn EventSink) -> Option<String> {
        if self.eval_batches.is_empty() {
            return None;
        }
        let (sum, count) = heldout_nll(&self.model().valid(), &self.eval_batches);
        let loss = sum / count.max(1) as f64;
        let exploded = self.watchdog.eval_loss(loss, self.state.best_eval_loss);
        self.last_eval = Some((self.state.step, loss));
        let improved = self.state.best_eval_loss.is_none_or(|b| loss < b);
        if improved {
            self.state.best_eval_loss = Some(loss);
            self.state.evals_without_improvement = 0;
        } else {
            self.state.evals_without_improvement += 1;
        }
        let ev = TrainEvent::Eval(EvalStats {
            step: self.state.step,
            loss,
            perplexity: loss.exp(),
            tokens: count as u64,
            extra: Vec::new(),
        });
        self.emit(sink, ev);
        exploded
    }

    /// Which checkpoint a failed run leaves to continue from.
    fn kept_checkpoint(&self) -> String {
        match (
            checkpoint::best(&self.run_dir),
            checkpoint::latest(&self.run_dir),
        ) {
            (Some((_, dir, loss)), _) => format!(
                "the checkpoint with the best held-out loss ({loss:.4}) is kept: {}",
                dir.display()
            ),
            (None, Some((_, dir))) => {
                format!("the last good checkpoint is kept: {}", dir.display())
            }
            (None, None) => "no good checkpoint had been written".into(),
        }
    }

    /// Ends a diverged run: the error (and its `Failed` event) says which checkpoint is kept.
    fn diverged(&mut self, sink: &mut dyn EventSink, what: String) -> TrainError {
        let err = TrainError::LossDiverged {
            step: self.state.step,
            what,
            kept: self.kept_checkpoint(),
        };
        let ev = TrainEvent::Failed {
            step: self.state.step,
            error: err.to_string(),
        };
        self.emit(sink, ev);
        err
    }

    fn early_stop(&self) -> bool {
        self.cfg
            .early_stopping_patience
            .is_some_and(|p| self.state.evals_without_improvement >= p)
    }

    fn sample(&mut self, sink: &mut dyn EventSink) -> Result<()> {
        if self.samples.is_empty() {
            return Ok(());
        }
        let model = self.model().valid();
        let ctx = model.n_positions();
        let cfg = GenerationConfig::stopping_at(
            self.cfg.sample_max_new_tokens,
            ctx,
            self.stops.0.clone(),
            self.stops.1.clone(),
        );
        let longest = self.samples.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        let cfg = cfg.for_prompt(longest, ctx);
        let prompts: Vec<Vec<u32>> = self
            .samples
            .iter()
            .map(|s| cfg.fit(&s.ids, ctx).to_vec())
            .collect();
        let outs = generate_batch(&model, &self.tokenizer, &prompts, &cfg)?;
        for (s, g) in self.samples.clone().iter().zip(outs) {
            let ev = TrainEvent::Sample(SampleOut {
                step: self.state.step,
                prompt: s.shown.clone(),
                response: g.text.clone(),
                stopped: g.stopped_cleanly(),
            });
            self.emit(sink, ev);
        }
        Ok(())
    }

    fn checkpoint(&mut self, sink: &mut dyn EventSink) -> Result<()> {
        let t = Instant::now();
        // Never keep weights that came from a non-finite update: a resume would fail at once,
        // and pruning would have deleted the good checkpoints for it.
        let why_not = if self.bad_streak > 0 {
            Some("the last step had a non-finite loss or gradient".to_string())
        } else if self.watchdog.above > 0 {
            Some("the loss is above the divergence watchdog's threshold".to_string())
        } else {
            let model = self.model().valid();
            let bad = model.non_finite_params();
            if !bad.is_empty() {
                Some(format!(
                    "{} parameters are not finite (first: {})",
                    bad.len(),
                    bad[0]
                ))
            } else {
                // Finite but exploded weights (a huge learning rate) give a non-finite loss.
                let (sum, _) = heldout_nll(&model, self.probe.iter());
                (!sum.is_finite()).then(|| {
                    format!("the weights give a non-finite loss ({sum}) on the last batch")
                })
            }
        };
        if let Some(why) = why_not {
            let ev = TrainEvent::Warning {
                step: self.state.step,
                message: format!("checkpoint at step {} not written: {why}", self.state.step),
            };
            self.emit(sink, ev);
            return Ok(());
        }
        self.state.eval_loss = self
            .last_eval
            .filter(|(step, _)| *step == self.state.step)
            .map(|(_, loss)| loss);
        self.state.loader = self.loader.state();
        let dir = checkpoint::save(
            &self.run_dir,
            self.learner.model(),
            self.learner.optim(),
            &self.tokenizer,
            &self.state,
            self.cfg.keep_checkpoints,
        )?;
        let ev = TrainEvent::Checkpoint(CheckpointInfo {
            step: self.state.step,
            path: dir.display().to_string(),
            secs: t.elapsed().as_secs_f64(),
        });
        self.emit(sink, ev);
        Ok(())
    }

    /// Writes `final/`: a Hugging Face model folder in the dtype the base came in, with the
    /// template saved beside the tokenizer (as `manners_template.json`, and as the Jinja
    /// `chat_template` of `tokenizer_config.json` and `chat_template.jinja`).
    fn export_final(&mut self) -> Result<PathBuf> {
        let dir = self.run_dir.join("final");
        let mut tok = self.tokenizer.clone();
        let mut extra = Vec::new();
        if let Some(t) = &self.template {
            tok.set_chat_template(Some(t.to_jinja()));
            extra.push((TEMPLATE_FILE, t.spec_file()));
        }
        let generation = GenerationDefaults {
            eos_token_ids: self.stops.0.clone(),
            ..Default::default()
        };
        let model = self.model().valid();
        if let Some(l) = &self.cfg.lora {
            self.export_adapter(&self.run_dir.join("adapter"), &model, l, &tok)?;
        }
        // LoRA adapters are folded into the weights: final/ is a plain model of its family.
        let model = crate::lora::merge(model);
        save_model_dir(
            &dir,
            &model,
            &self.model_config,
            &tok,
            &generation,
            self.dtype,
            &extra,
        )?;
        Ok(dir)
    }

    /// The adapters alone (PEFT layout) with the added token rows and the tokenizer.
    fn export_adapter(
        &self,
        dir: &Path,
        model: &Model,
        l: &crate::config::LoraConfig,
        tok: &Tokenizer,
    ) -> Result<()> {
        let base = self.cfg.model.clone().unwrap_or_default();
        let weights = [WEIGHTS_FILE, WEIGHTS_INDEX_FILE]
            .map(|f| base.join(f))
            .into_iter()
            .find(|p| p.is_file());
        let fingerprint = match weights {
            Some(w) => crate::lora::fingerprint_file(&w)?,
            None => String::new(),
        };
        let cfg = crate::lora::AdapterConfig {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            r: l.rank,
            lora_alpha: l.alpha,
            lora_dropout: 0.0,
            target_modules: crate::lora::targets(model, l),
            fan_in_fan_out: model.fan_in_fan_out(),
            bias: "none".into(),
            base_model_name_or_path: base.display().to_string(),
            base_model_fingerprint: fingerprint,
            added_tokens: self
                .added_ids
                .iter()
                .filter_map(|&id| tok.id_to_token(id).map(|t| (t, id)))
                .collect(),
        };
        let rows = match (self.added_ids.iter().min(), self.added_ids.iter().max()) {
            (Some(&lo), Some(&hi)) => Some(crate::lora::AddedRows::of(model, lo, hi)),
            _ => None,
        };
        crate::lora::save_adapter_dir(dir, model, &cfg, rows)?;
        tok.save_dir(dir, self.model_config.max_positions())?;
        Ok(())
    }
}

// ---- preparing a run, step by step --------------------------------------------------------

/// The base model: a model folder, or (pretraining from scratch) a fresh GPT-2 of the
/// configured shape over the configured tokenizer.
fn load_base(cfg: &TrainConfig, device: &Device) -> Result<Base> {
    match (&cfg.model, &cfg.init) {
        (Some(dir), _) => {
            let m = load_model_dir(dir, device)?;
            Ok(Base {
                model: m.model,
                config: m.config,
                tokenizer: m.tokenizer,
                dtype: m.dtype,
            })
        }
        (None, Some(init)) => {
            let tdir = cfg
                .tokenizer
                .clone()
                .ok_or_else(|| TrainError::Config("init needs a tokenizer".into()))?;
            let tok = Tokenizer::from_dir(&tdir)?;
            let config = ModelConfig::Gpt2(Gpt2Config {
                n_layer: init.n_layer,
                n_head: init.n_head,
                n_embd: init.n_embd,
                n_positions: init.n_positions,
                bos_token_id: tok.bos_id(),
                eos_token_id: tok.eos_id(),
                ..Gpt2Config::tiny(tok.vocab_size()).with_dropout(cfg.dropout)
            });
            config.validate()?;
            config.check_device(device)?;
            Ok(Base {
                model: config.init(device),
                config,
                tokenizer: tok,
                dtype: WeightsDtype::F32,
            })
        }
        (None, None) => Err(TrainError::Config("no model given".into())),
    }
}

/// A batch's largest tensors on a GPU against its buffer limit (`None`: no limit), for a model
/// of `vocab` tokens and `heads` query heads: the logits of its supervised positions,
/// `[supervised, vocab]`, and attention's scores, `[rows, heads, t, t]` (attention is fused only
/// on flex; elsewhere the scores are one tensor). `which` names the batch in the error.
pub fn check_batch(
    limit: Option<&BufferLimit>,
    (vocab, heads): (usize, usize),
    b: &HostBatch,
    which: &dyn Fn() -> String,
) -> Result<()> {
    let Some(limit) = limit else {
        return Ok(());
    };
    const HINT: &str = "lower batch_size or max_len (and raise grad_accum to keep the batch)";
    let n = b.n_supervised;
    limit.check(
        (n * vocab) as u64,
        || format!("the logits of {} ([{n}, {vocab}], f32)", which()),
        HINT,
    )?;
    let (rows, t) = (b.batch, b.seq_len);
    limit.check(
        (rows * heads * t * t) as u64,
        || {
            format!(
                "the attention scores of {} ([{rows}, {heads}, {t}, {t}], f32)",
                which()
            )
        },
        HINT,
    )?;
    Ok(())
}

/// What [`check_batch`] needs of a model's shape: its vocabulary and query heads.
fn model_shape(config: &ModelConfig) -> (usize, usize) {
    (config.vocab_size(), config.dims().heads)
}

/// `max_len` 0 means the model's context (at most 512 positions).
fn resolve_max_len(cfg: &mut TrainConfig, n_pos: usize) -> Result<()> {
    if cfg.max_len == 0 {
        cfg.max_len = n_pos.min(512) + 1;
    }
    if cfg.max_len > n_pos + 1 {
        return Err(TrainError::Config(format!(
            "max_len {} exceeds the model's context: at most n_positions + 1 = {}",
            cfg.max_len,
            n_pos + 1
        )));
    }
    Ok(())
}

/// The chat template of an SFT run (the config's, else the model folder's, else chatml); none
/// for pretraining.
fn run_template(cfg: &TrainConfig, tok: &Tokenizer) -> Result<Option<ChatTemplate>> {
    if cfg.kind == RunKind::Pretrain {
        return Ok(None);
    }
    let specials = SpecialTokens::from_roles(tok.bos_token(), tok.eos_token(), tok.pad_token());
    let t = choose_template(
        cfg.template.as_deref(),
        cfg.model.as_deref(),
        tok.chat_template(),
        &specials,
    )?;
    t.check_renders_content()?;
    Ok(Some(t.with_mask_reasoning(cfg.mask_reasoning)))
}

/// Adds the special tokens the template writes and the tokenizer lacks; returns their ids.
fn add_template_tokens(template: Option<&ChatTemplate>, tok: &mut Tokenizer) -> Vec<u32> {
    let Some(t) = template else {
        return Vec::new();
    };
    let needed = t.required_special_tokens();
    tok.add_special_tokens(&needed.iter().map(String::as_str).collect::<Vec<_>>())
}

/// LoRA: base frozen, adapters on the target projections; the rows of tokens just added for
/// the template train too (otherwise they never learn a meaning).
fn attach_lora(model: Model, cfg: &TrainConfig, added_tokens: bool) -> Result<Model> {
    let Some(l) = &cfg.lora else {
        return Ok(model);
    };
    let m = crate::lora::apply(model, l)?;
    Ok(if added_tokens {
        m.unfreeze_token_params()
    } else {
        m
    })
}

/// The training loader (which takes the training examples) and the held-out batches.
fn batching(
    cfg: &TrainConfig,
    tok: &Tokenizer,
    data: &mut PreparedData,
) -> Result<(Loader, Vec<HostBatch>)> {
    if data.train.is_empty() {
        let why: Vec<&str> = data
            .facts
            .iter()
            .filter(|(k, _)| k.starts_with("warning") || k.starts_with("filter"))
            .map(|(_, v)| v.as_str())
            .collect();
        let files: Vec<String> = cfg.data.iter().map(|p| p.display().to_string()).collect();
        return Err(TrainError::NoData(format!(
            "no usable training examples in {}: {}",
            files.join(", "),
            if why.is_empty() {
                "the files hold no records".to_string()
            } else {
                why.join("; ")
            }
        )));
    }
    let batch_cfg = BatchConfig {
        batch_size: cfg.batch_size,
        seq_len: cfg.max_len - 1,
        pack: cfg.pack && cfg.kind == RunKind::Sft,
        shuffle: true,
        seed: cfg.seed,
        drop_last: false,
        pad_id: tok.eos_id().unwrap_or(0),
    };
    let eval = if data.eval.is_empty() {
        Vec::new()
    } else {
        manners_data::batches(&data.eval, &batch_cfg)?
    };
    let loader = Loader::new(data.train.clone(), batch_cfg)?;
    Ok((loader, eval))
}

/// Total optimiser steps (from `max_steps`, else epochs) and the learning-rate schedule; fills
/// the config's automatic intervals.
fn plan_steps(cfg: &mut TrainConfig, loader: &Loader) -> (u64, Schedule) {
    let per_epoch = (loader.steps_per_epoch() as u64)
        .div_ceil(cfg.grad_accum as u64)
        .max(1);
    let total = cfg
        .max_steps
        .unwrap_or_else(|| ((cfg.epochs * per_epoch as f64).ceil() as u64).max(1));
    cfg.resolve_intervals(total);
    (total, cfg.schedule(total))
}

/// Where a run starts: a fresh run folder, or the newest checkpoint of the one resumed.
struct Start {
    run_dir: PathBuf,
    model: Model,
    optim: ModuleOptimizer,
    loader: Loader,
    state: CheckpointState,
    files: RunFiles,
    /// What the user should know about how the run was opened (checkpoints skipped, ...).
    notes: Vec<String>,
    lock: RunLock,
}

fn open_run_dir(
    cfg: &TrainConfig,
    resume_dir: Option<&Path>,
    model: Model,
    optim: ModuleOptimizer,
    loader: Loader,
) -> Result<Start> {
    // The folder, locked before anything in it is read or written: one process per run.
    let run_dir = match (resume_dir, &cfg.name) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(name)) => {
            let d = cfg.out_dir.join(name);
            std::fs::create_dir_all(&d).map_err(|e| TrainError::io(&d, e))?;
            d
        }
        // Default names are times to the second: a second run in the same second gets `-2`.
        (None, None) => create_unique_dir(&cfg.out_dir, &default_run_name(cfg.kind))?,
    };
    let lock = RunLock::acquire(&run_dir)?;
    let (mut model, mut optim, mut loader) = (model, optim, loader);
    let mut state = CheckpointState::new(loader.state());
    let mut notes = Vec::new();
    let mut logs_from = None;
    if resume_dir.is_some() {
        checkpoint::clean_stale(&run_dir)?;
        let all = checkpoint::list(&run_dir);
        // The newest intact checkpoint; damaged ones are skipped and reported.
        let mut damaged = Vec::new();
        let mut found = None;
        for (_, dir) in all.iter().rev() {
            match checkpoint::read_checked(dir) {
                Ok(files) => {
                    found = Some(files);
                    break;
                }
                Err(e) => damaged.push(e.to_string()),
            }
        }
        match found {
            Some(files) => {
                for d in &damaged {
                    notes.push(format!("skipped a damaged checkpoint: {d}"));
                }
                if !files.verified {
                    notes.push(
                        "the checkpoint predates checksums: its files could not be checked".into(),
                    );
                }
                let dir = files.dir().to_path_buf();
                let (m, o, s) = files.apply(model, optim)?;
                model = m;
                optim = o;
                loader = checkpoint::restore_loader(&dir, &loader, &s)?;
                state = s;
                logs_from = Some(state.step);
            }
            None if all.is_empty() => {
                // Killed before its first checkpoint was complete: nothing was kept, so the run
                // starts again from step 0 in its own folder.
                notes.push("no complete checkpoint yet: the run starts again from step 0".into());
                for f in [manners_events::METRICS_FILE, "samples.jsonl"] {
                    let p = run_dir.join(f);
                    if p.exists() {
                        std::fs::remove_file(&p).map_err(|e| TrainError::io(&p, e))?;
                    }
                }
            }
            None => {
                return Err(TrainError::Checkpoint {
                    path: checkpoint::checkpoints_dir(&run_dir),
                    message: format!("every checkpoint is damaged: {}", damaged.join("; ")),
                });
            }
        }
    } else if run_dir.join("run.toml").exists() {
        return Err(TrainError::Config(format!(
            "{} already holds a run; resume it with --resume, or choose another --name",
            run_dir.display()
        )));
    }
    manners_model::write_atomic(&run_dir.join("run.toml"), cfg.to_toml().as_bytes())?;
    let files = RunFiles::open(&run_dir, logs_from)?;
    Ok(Start {
        run_dir,
        model,
        optim,
        loader,
        state,
        files,
        notes,
        lock,
    })
}

/// The facts a run reports when it starts: shown by the dashboard and the log, kept in the
/// event log for the report.
#[allow(clippy::too_many_arguments)]
fn run_info(
    cfg: &TrainConfig,
    devices: &DeviceSet,
    start: &Start,
    config: &ModelConfig,
    data: &PreparedData,
    template: &Option<ChatTemplate>,
    total_steps: u64,
    trainable_params: u64,
) -> RunInfo {
    let mut facts = Vec::new();
    if template.is_some() {
        let mut mask = format!("{:?}", cfg.mask).to_lowercase();
        if cfg.mask_reasoning {
            mask.push_str(", reasoning masked");
        }
        facts.push(("mask".to_string(), mask));
    }
    facts.push((
        "batch".into(),
        format!(
            "{} rows x {} accumulation, max_len {}, packing {}",
            cfg.batch_size, cfg.grad_accum, cfg.max_len, cfg.pack
        ),
    ));
    facts.push((
        "optimiser".into(),
        format!(
            "AdamW lr {:e} ({:?}, warmup {}, floor {}x), wd {}, clip {:?}",
            cfg.lr,
            cfg.schedule,
            cfg.warmup_steps.unwrap_or(0),
            cfg.min_lr_ratio,
            cfg.weight_decay,
            cfg.clip_grad_norm
        ),
    ));
    facts.extend(data.facts.iter().cloned());
    RunInfo {
        name: start
            .run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        run_dir: start.run_dir.display().to_string(),
        kind: cfg.kind,
        model: format!(
            "{} ({})",
            cfg.model
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "from scratch".into()),
            config.describe()
        ),
        params: start.model.num_params() as u64,
        trainable_params,
        backend: devices.describe(),
        data: cfg
            .data
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        train_examples: start.loader.examples().len() as u64,
        eval_examples: data.eval.len() as u64,
        template: template
            .as_ref()
            .map(|t| t.name().to_string())
            .unwrap_or_default(),
        total_steps,
        start_step: start.state.step,
        facts,
    }
}

/// `sft-YYYYmmdd-HHMMSS` (UTC), or `pretrain-...`.
fn default_run_name(kind: RunKind) -> String {
    let prefix = match kind {
        RunKind::Sft => "sft",
        RunKind::Pretrain => "pretrain",
    };
    format!("{prefix}-{}", format_utc(now_secs(), "%Y%m%d-%H%M%S"))
}

// ---- data -----------------------------------------------------------------------------------

pub(crate) struct PreparedData {
    /// Conversations are in a token store on disk; pretraining text in memory.
    pub(crate) train: Examples,
    pub(crate) eval: Vec<Encoded>,
    eval_convs: Vec<Conversation>,
    pub(crate) facts: Vec<(String, String)>,
}

/// Reads every file with `read`, noting each file's rejected records as a warning fact.
fn read_all<T>(
    paths: &[PathBuf],
    facts: &mut Vec<(String, String)>,
    read: impl Fn(&Path) -> manners_data::Result<(Vec<T>, ReadReport)>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for p in paths {
        let (items, report) = read(p)?;
        note_rejections(&report, facts);
        out.extend(items);
    }
    Ok(out)
}

/// Training and held-out examples: conversations through the template (SFT, with raw text
/// mixed in when configured) or raw text stream-packed into full rows (pretraining).
fn prepare_data(
    cfg: &TrainConfig,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
) -> Result<PreparedData> {
    let policy = cfg.bad_records;
    let texts = |paths: &[PathBuf], facts: &mut Vec<(String, String)>| {
        read_all(paths, facts, |p| read_texts(p, policy))
    };
    let mut facts = Vec::new();
    let eos = tok.eos_id();
    let Some(template) = template else {
        let docs = texts(&cfg.data, &mut facts)?;
        let (train_txt, eval_txt) = if cfg.eval_data.is_empty() {
            split_heldout(&docs, cfg.eval_fraction, cfg.seed)
        } else {
            (docs, texts(&cfg.eval_data, &mut facts)?)
        };
        let enc = |v: &[String]| -> Result<Vec<Vec<u32>>> {
            Ok(encode_texts(v, tok.hf(), None)?
                .into_iter()
                .map(|e| e.ids)
                .collect())
        };
        let seq = cfg.max_len - 1;
        let train = pack_stream(&enc(&train_txt)?, eos, seq);
        let mut eval = pack_stream(&enc(&eval_txt)?, eos, seq);
        eval.truncate(cfg.max_eval_examples);
        facts.push((
            "documents".into(),
            format!("{} train, {} held out", train_txt.len(), eval_txt.len()),
        ));
        return Ok(PreparedData {
            train: train.into(),
            eval,
            eval_convs: Vec::new(),
            facts,
        });
    };
    let convs_of = |paths: &[PathBuf], facts: &mut Vec<(String, String)>| {
        read_all(paths, facts, |p| read_conversations(p, cfg.format, policy))
    };
    // The training files are read as a stream into a token store on disk (next to the runs):
    // memory holds an index of the examples, not the dataset.
    let split = cfg.eval_data.is_empty();
    let streamed = manners_data::encode_files(
        &cfg.data,
        &StreamOptions {
            format: cfg.format,
            policy,
            // No more held out than the held-out loss uses: 5% of a million conversations
            // would otherwise drop 50,000 from training to evaluate on 256.
            heldout_fraction: if split { cfg.eval_fraction } else { 0.0 },
            max_heldout: cfg.max_eval_examples,
            seed: cfg.seed,
            dedup: cfg.dedup,
            quality: quality_filter(cfg),
            template,
            tokenizer: tok.hf(),
            mask: cfg.mask,
            max_len: cfg.max_len,
            truncation: cfg.truncation,
            store_dir: &cfg.out_dir,
        },
    )?;
    for (_, report) in &streamed.read {
        note_rejections(report, &mut facts);
    }
    if let Some(r) = &streamed.dedup {
        note_filter(&mut facts, "duplicates", r);
    }
    if let Some(r) = &streamed.quality {
        note_filter(&mut facts, "quality", r);
    }
    let mut eval_convs = if split {
        streamed.heldout
    } else {
        convs_of(&cfg.eval_data, &mut facts)?
    };
    eval_convs.truncate(cfg.max_eval_examples);
    let report = streamed.encode;
    if report.truncated > 0 || report.dropped() > 0 {
        facts.push((
            "warning: length".into(),
            format!(
                "{} examples truncated ({} tokens lost), {} dropped (max_len {})",
                report.truncated,
                report.tokens_lost,
                report.dropped(),
                cfg.max_len
            ),
        ));
    }
    let (eval, _) = encode_dataset(
        &eval_convs,
        template,
        tok.hf(),
        cfg.mask,
        cfg.max_len,
        cfg.truncation,
    )?;
    let mut train = streamed.train;
    if !cfg.mix_text.is_empty() && cfg.mix_fraction > 0.0 {
        let raw = encode_texts(&texts(&cfg.mix_text, &mut facts)?, tok.hf(), eos)?;
        let (pieces, mix_report) = mix_pieces(
            train.len(),
            report.tokens,
            &raw,
            cfg.mix_fraction,
            cfg.seed,
            cfg.max_len,
        );
        for p in &pieces {
            train.push(p)?;
        }
        facts.push(("mix".into(), mix_report.to_string().trim().to_string()));
    }
    let train = train.finish()?;
    let toks = train.tokens() - train.len() as u64;
    facts.push((
        "supervised".into(),
        format!(
            "{:.1}% of {} training positions",
            100.0 * train.supervised() as f64 / toks.max(1) as f64,
            toks
        ),
    ));
    Ok(PreparedData {
        train: train.into(),
        eval,
        eval_convs,
        facts,
    })
}

/// Notes a file's rejected records as a warning fact.
fn note_rejections(report: &ReadReport, facts: &mut Vec<(String, String)>) {
    if report.n_rejected() > 0 {
        facts.push((
            "warning: data".into(),
            format!(
                "{} records rejected and skipped: {}",
                report.n_rejected(),
                report.to_string().trim()
            ),
        ));
    }
}

/// Notes what `dedup` or the quality filter removed, the first few named by file:line.
fn note_filter(facts: &mut Vec<(String, String)>, what: &str, report: &manners_data::FilterReport) {
    if report.examples > report.kept {
        let lines: Vec<String> = report
            .to_string()
            .lines()
            .map(|l| l.trim().to_string())
            .collect();
        facts.push((format!("filter: {what}"), lines.join("; ")));
    }
}

/// The quality filter the config asks for, if any (applied after `dedup`, before the
/// held-out split's parts are encoded).
fn quality_filter(cfg: &TrainConfig) -> Option<manners_data::QualityFilter> {
    let off = |x: f64| if x > 0.0 { x } else { f64::INFINITY };
    let filter = manners_data::QualityFilter {
        min_response_tokens: cfg.min_response_tokens.max(1),
        max_response_tokens: match cfg.max_response_tokens {
            0 => usize::MAX,
            n => n,
        },
        max_ratio: off(cfg.max_prompt_ratio),
        min_distinct_ratio: cfg.min_distinct_ratio.max(0.0),
    };
    (filter != manners_data::QualityFilter::default()).then_some(filter)
}

/// The prompts sampled during training: the configured ones (user messages; raw text when
/// pretraining), else the questions of the first three held-out conversations.
fn sample_prompts(
    cfg: &TrainConfig,
    eval_convs: &[Conversation],
    template: Option<&ChatTemplate>,
    tok: &Tokenizer,
) -> Result<Vec<SamplePrompt>> {
    let mut out = Vec::new();
    match template {
        None => {
            let prompts: Vec<String> = if cfg.sample_prompts.is_empty() {
                vec!["The".into(), "It was".into()]
            } else {
                cfg.sample_prompts.clone()
            };
            for p in prompts {
                out.push(SamplePrompt {
                    ids: tok.encode(&p)?,
                    shown: p,
                });
            }
        }
        Some(t) => {
            let convs: Vec<Vec<Message>> = if cfg.sample_prompts.is_empty() {
                eval_convs
                    .iter()
                    .filter_map(|c| {
                        let first = c.messages.iter().position(|m| m.role == Role::Assistant)?;
                        Some(c.messages[..first].to_vec())
                    })
                    .take(3)
                    .collect()
            } else {
                cfg.sample_prompts
                    .iter()
                    .map(|p| vec![Message::user(p.clone())])
                    .collect()
            };
            for msgs in convs {
                out.push(SamplePrompt {
                    ids: t.encode_prompt(&msgs, tok.hf())?,
                    shown: last_user(&msgs).unwrap_or_default().to_string(),
                });
            }
        }
    }
    Ok(out)
}
