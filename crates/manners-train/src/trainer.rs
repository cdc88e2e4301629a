//! The SFT (and pretraining) loop, top to bottom: prepare the run, then for each step take
//! micro-batches, forward, masked loss, backward, clip, AdamW step, emit events; evaluate,
//! sample and checkpoint on their intervals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manners_data::{
    BatchConfig, ChatTemplate, Conversation, Encoded, HostBatch, Loader, Message, ReadReport, Role,
    SpecialTokens, TemplateSpec, encode_dataset, encode_texts, mix_texts, pack_stream,
    read_conversations, read_texts, split_heldout,
};
use manners_events::{
    CheckpointInfo, Control, EvalStats, EventSink, RunInfo, RunKind, RunSummary, SampleOut,
    StepStats, TrainEvent,
};
use manners_model::burn::module::Module;
use manners_model::burn::prelude::*;
use manners_model::{
    DeviceChoice, GenerationConfig, GenerationDefaults, Gpt, GptConfig, Tokenizer, generate_batch,
    load_model_dir, resize_token_embeddings, save_model_dir,
};

use crate::checkpoint::{self, CheckpointState};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::files::RunFiles;
use crate::optim::build_optimizer;
use crate::schedule::Schedule;
use crate::step::{DeviceBatch, Learner, nll_sum, scalar};

/// The file beside a model's tokenizer that records the chat template it was trained with.
pub const TEMPLATE_FILE: &str = "manners_template.json";

/// What a finished (or stopped) run leaves.
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    /// `final/`, a model folder the other commands load (absent when the run was stopped early).
    pub final_dir: Option<PathBuf>,
    pub summary: RunSummary,
    /// The trained model, without autodiff.
    pub model: Gpt,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
}

/// Trains a new run.
pub fn train(
    cfg: TrainConfig,
    device: &DeviceChoice,
    sink: &mut dyn EventSink,
    control: &Control,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    let mut run = Run::prepare(cfg, device, None)?;
    run.fit(sink, control)
}

/// Continues the run in `run_dir` from its newest checkpoint, with its saved `run.toml`.
/// `edit` may change the config first (e.g. raise `max_steps`).
pub fn resume(
    run_dir: &Path,
    device: &DeviceChoice,
    edit: impl FnOnce(&mut TrainConfig),
    sink: &mut dyn EventSink,
    control: &Control,
) -> Result<TrainOutcome> {
    let mut cfg = TrainConfig::from_toml_file(&run_dir.join("run.toml"))?;
    edit(&mut cfg);
    cfg.validate()?;
    let mut run = Run::prepare(cfg, device, Some(run_dir.to_path_buf()))?;
    run.fit(sink, control)
}

/// The template a model folder was trained with, else its tokenizer's Jinja template.
pub fn saved_template(dir: &Path, tok: &Tokenizer) -> Result<Option<ChatTemplate>> {
    let p = dir.join(TEMPLATE_FILE);
    if p.is_file() {
        let text = std::fs::read_to_string(&p).map_err(|e| TrainError::io(&p, e))?;
        let spec: TemplateSpec =
            serde_json::from_str(&text).map_err(|e| TrainError::ConfigFile {
                path: p.clone(),
                message: e.to_string(),
            })?;
        return Ok(Some(ChatTemplate::from_spec(&spec)?));
    }
    match tok.chat_template() {
        Some(src) => Ok(Some(ChatTemplate::from_jinja(src, &specials_of(tok))?)),
        None => Ok(None),
    }
}

/// The tokenizer's special tokens by role, as templates want them.
pub fn specials_of(tok: &Tokenizer) -> SpecialTokens {
    SpecialTokens {
        bos: tok.bos_token().map(str::to_string),
        eos: tok.eos_token().map(str::to_string),
        pad: tok.pad_token().map(str::to_string),
        additional: Vec::new(),
    }
}

/// Picks the template: the config's, else the model's saved one, else chatml.
pub fn choose_template(
    arg: Option<&str>,
    model_dir: Option<&Path>,
    tok: &Tokenizer,
) -> Result<ChatTemplate> {
    if let Some(a) = arg {
        return Ok(ChatTemplate::resolve(a, &specials_of(tok))?);
    }
    if let Some(dir) = model_dir
        && let Some(t) = saved_template(dir, tok)?
    {
        return Ok(t);
    }
    Ok(ChatTemplate::builtin("chatml", &specials_of(tok))?)
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
    device: Device,
    learner: Learner,
    model_config: GptConfig,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    loader: Loader,
    eval_batches: Vec<HostBatch>,
    samples: Vec<SamplePrompt>,
    stop_ids: Vec<u32>,
    stop_strings: Vec<String>,
    /// Ids of the special tokens added to the tokenizer for the template.
    added_ids: Vec<u32>,
    schedule: Schedule,
    total_steps: u64,
    state: CheckpointState,
    info: RunInfo,
    files: RunFiles,
}

impl Run {
    fn prepare(
        mut cfg: TrainConfig,
        choice: &DeviceChoice,
        resume_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let device = choice.device.clone().autodiff();
        device.seed(cfg.seed);

        // ---- model and tokenizer ------------------------------------------------------------
        let (model, mut model_config, mut tokenizer) = match (&cfg.model, &cfg.init) {
            (Some(dir), _) => {
                let m = load_model_dir(dir, &device)?;
                (m.model, m.config, m.tokenizer)
            }
            (None, Some(init)) => {
                let tdir = cfg
                    .tokenizer
                    .clone()
                    .ok_or_else(|| TrainError::Config("init needs a tokenizer".into()))?;
                let tok = Tokenizer::from_dir(&tdir)?;
                let mc = GptConfig {
                    n_layer: init.n_layer,
                    n_head: init.n_head,
                    n_embd: init.n_embd,
                    n_positions: init.n_positions,
                    vocab_size: tok.vocab_size(),
                    n_inner: None,
                    layer_norm_epsilon: 1e-5,
                    dropout: cfg.dropout,
                    activation: manners_model::Activation::GeluTanh,
                    bos_token_id: tok.bos_id(),
                    eos_token_id: tok.eos_id(),
                };
                mc.validate()?;
                (mc.init(&device), mc, tok)
            }
            (None, None) => return Err(TrainError::Config("no model given".into())),
        };
        let n_pos = model_config.n_positions;
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
        // Dropout for training is the run's choice; the model keeps its own value on export.
        let model = set_dropout(model, cfg.dropout);

        // ---- template and special tokens -----------------------------------------------------
        let template = match cfg.kind {
            RunKind::Sft => Some(choose_template(
                cfg.template.as_deref(),
                cfg.model.as_deref(),
                &tokenizer,
            )?),
            RunKind::Pretrain => None,
        };
        let mut added_ids = Vec::new();
        if let Some(t) = &template {
            let needed = t.required_special_tokens();
            let refs: Vec<&str> = needed.iter().map(String::as_str).collect();
            added_ids = tokenizer.add_special_tokens(&refs);
        }
        let model = if tokenizer.vocab_size() > model.vocab_size() {
            let m = resize_token_embeddings(model, tokenizer.vocab_size());
            model_config.vocab_size = m.vocab_size();
            m
        } else {
            model
        };
        // LoRA: base frozen, adapters on the target projections; the embedding rows of tokens
        // just added for the template train too (otherwise they never learn a meaning).
        let model = match &cfg.lora {
            Some(l) => {
                let mut m = crate::lora::apply(model, l);
                if !added_ids.is_empty() {
                    m.wte.weight = m.wte.weight.clone().set_require_grad(true);
                }
                m
            }
            None => model,
        };
        let (stop_ids, stop_strings) = match &template {
            Some(t) => (t.stop_token_ids(tokenizer.hf()), t.stop_strings()),
            None => (tokenizer.eos_id().into_iter().collect(), Vec::new()),
        };

        // ---- data ---------------------------------------------------------------------------
        let data = prepare_data(&cfg, &tokenizer, template.as_ref())?;
        if data.train.is_empty() {
            return Err(TrainError::NoData(format!(
                "no usable training examples in {:?} (see the report above)",
                cfg.data
            )));
        }
        let batch_cfg = BatchConfig {
            batch_size: cfg.batch_size,
            seq_len: cfg.max_len - 1,
            pack: cfg.pack && cfg.kind == RunKind::Sft,
            shuffle: true,
            seed: cfg.seed,
            drop_last: false,
            pad_id: tokenizer.eos_id().unwrap_or(0),
        };
        let train = Arc::new(data.train);
        let n_train = train.len();
        let mut loader = Loader::new(train, batch_cfg.clone())?;
        let eval_batches = if data.eval.is_empty() {
            Vec::new()
        } else {
            manners_data::batches(&data.eval, &batch_cfg)?
        };

        // ---- steps and schedule ---------------------------------------------------------------
        let per_epoch = (loader.steps_per_epoch() as u64)
            .div_ceil(cfg.grad_accum as u64)
            .max(1);
        let total_steps = cfg
            .max_steps
            .unwrap_or_else(|| ((cfg.epochs * per_epoch as f64).ceil() as u64).max(1));
        cfg.resolve_intervals(total_steps);
        let schedule = cfg.schedule(total_steps);

        // ---- optimiser, run folder, resume ------------------------------------------------------
        let mut optim = build_optimizer(&cfg);
        let run_dir = match &resume_dir {
            Some(d) => d.clone(),
            None => cfg.out_dir.join(
                cfg.name
                    .clone()
                    .unwrap_or_else(|| default_run_name(cfg.kind)),
            ),
        };
        let mut model = model;
        let mut state = CheckpointState::new(loader.state());
        if resume_dir.is_some() {
            let (_, dir) = checkpoint::latest(&run_dir).ok_or_else(|| TrainError::Checkpoint {
                path: checkpoint::checkpoints_dir(&run_dir),
                message: "no complete checkpoint to resume from".into(),
            })?;
            checkpoint::clean_stale(&run_dir)?;
            let (m, o, s) = checkpoint::load(&dir, model, optim)?;
            model = m;
            optim = o;
            loader = Loader::restore(loader.examples().clone(), loader.config().clone(), s.loader)?;
            state = s;
        } else if run_dir.join("run.toml").exists() {
            return Err(TrainError::Config(format!(
                "{} already holds a run; resume it with --resume, or choose another --name",
                run_dir.display()
            )));
        }
        std::fs::create_dir_all(&run_dir).map_err(|e| TrainError::io(&run_dir, e))?;
        manners_model::write_atomic(&run_dir.join("run.toml"), cfg.to_toml().as_bytes())?;
        let files = RunFiles::open(&run_dir, resume_dir.is_some().then_some(state.step))?;

        let samples = sample_prompts(&cfg, &data.eval_convs, template.as_ref(), &tokenizer)?;
        let trainable = crate::lora::trainable_params(&model, added_ids.len());
        let info = RunInfo {
            name: run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            run_dir: run_dir.display().to_string(),
            kind: cfg.kind,
            model: format!(
                "{} ({})",
                cfg.model
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "from scratch".into()),
                model_config.describe()
            ),
            params: model.num_params() as u64,
            trainable_params: trainable,
            backend: choice.description.clone(),
            data: cfg
                .data
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            train_examples: n_train as u64,
            eval_examples: data.eval.len() as u64,
            template: template
                .as_ref()
                .map(|t| t.name().to_string())
                .unwrap_or_default(),
            total_steps,
            start_step: state.step,
            facts: data.facts,
        };
        let mut learner = Learner::new(model, optim, cfg.clip_grad_norm, device.clone());
        if cfg.lora.is_some() && !added_ids.is_empty() {
            learner = learner.with_trainable_wte_rows(&added_ids);
        }
        Ok(Run {
            learner,
            cfg,
            run_dir,
            device,
            model_config,
            tokenizer,
            template,
            loader,
            eval_batches,
            samples,
            stop_ids,
            stop_strings,
            added_ids,
            schedule,
            total_steps,
            state,
            info,
            files,
        })
    }

    fn model(&self) -> &Gpt {
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
        let mut bad_in_a_row = 0u32;
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
            if control.take_eval() {
                self.evaluate(sink);
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
                .collect();
            let n_sup: usize = micro.iter().map(|b| b.n_supervised).sum();
            let n_tok: usize = micro.iter().map(|b| b.n_tokens).sum();
            let outcome = self.learner.step(&micro, lr);
            self.state.step = step;
            self.state.tokens_seen += n_tok as u64;
            self.state.supervised_seen += n_sup as u64;
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            let (loss, gnorm, skipped) = match outcome {
                Some(r) => (r.loss, r.grad_norm, !r.applied),
                None => (f64::NAN, f64::NAN, true),
            };
            if skipped {
                bad_in_a_row += 1;
                let ev = TrainEvent::Warning {
                    step,
                    message: format!(
                        "step {step} skipped: loss {loss}, grad norm {gnorm} (non-finite)"
                    ),
                };
                self.emit(sink, ev);
                if bad_in_a_row >= self.cfg.max_bad_steps {
                    let err = TrainError::Diverged {
                        step,
                        count: bad_in_a_row,
                    };
                    let ev = TrainEvent::Failed {
                        step,
                        error: err.to_string(),
                    };
                    self.emit(sink, ev);
                    return Err(err);
                }
            } else {
                bad_in_a_row = 0;
                self.state.last_loss = Some(loss);
            }
            let ev = TrainEvent::Step(StepStats {
                step,
                total_steps: self.total_steps,
                epoch: self.loader.epoch(),
                loss,
                lr,
                grad_norm: gnorm,
                tokens: n_tok as u64,
                supervised_tokens: n_sup as u64,
                tokens_per_sec: n_tok as f64 / secs,
                elapsed_secs: elapsed(&started),
                skipped,
            });
            self.emit(sink, ev);

            let last = step == self.total_steps;
            if step.is_multiple_of(self.cfg.eval_every) && !last {
                self.evaluate(sink);
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
            self.evaluate(sink);
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
            final_loss: self.state.last_loss,
            final_eval_loss: self.files.last_eval_loss(),
            elapsed_secs: self.state.elapsed_secs,
            run_dir: self.run_dir.display().to_string(),
            reason,
        };
        crate::report::write(&self.run_dir, &self.cfg, &self.info, &summary, &self.files)?;
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

    fn evaluate(&mut self, sink: &mut dyn EventSink) {
        if self.eval_batches.is_empty() {
            return;
        }
        let model = self.model().valid();
        let device = self.device.clone().without_autodiff();
        let (mut sum, mut count) = (0.0, 0usize);
        for hb in &self.eval_batches {
            if hb.n_supervised == 0 {
                continue;
            }
            let db = DeviceBatch::from_host(hb, &device);
            sum += scalar(nll_sum(&model, &db));
            count += hb.n_supervised;
        }
        let loss = sum / count.max(1) as f64;
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
        let max_ctx = model.n_positions();
        let budget = self.cfg.sample_max_new_tokens;
        let prompts: Vec<Vec<u32>> = self
            .samples
            .iter()
            .map(|s| {
                let keep = max_ctx.saturating_sub(budget).max(1);
                s.ids[s.ids.len().saturating_sub(keep)..].to_vec()
            })
            .collect();
        let cfg = GenerationConfig {
            max_new_tokens: budget.min(max_ctx.saturating_sub(1)),
            stop_token_ids: self.stop_ids.clone(),
            stop_strings: self.stop_strings.clone(),
            ..Default::default()
        };
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

    /// Writes `final/`: a Hugging Face model folder with the template saved beside the tokenizer
    /// (as `manners_template.json` and as the Jinja `chat_template` of `tokenizer_config.json`).
    fn export_final(&mut self) -> Result<PathBuf> {
        let dir = self.run_dir.join("final");
        let mut tok = self.tokenizer.clone();
        let mut extra = Vec::new();
        if let Some(t) = &self.template {
            tok.set_chat_template(Some(t.to_jinja()));
            extra.push((
                TEMPLATE_FILE,
                serde_json::to_vec_pretty(&t.spec()).expect("spec serialises"),
            ));
        }
        let generation = GenerationDefaults {
            eos_token_ids: self.stop_ids.clone(),
            ..Default::default()
        };
        let model = self.model().valid();
        if let Some(l) = &self.cfg.lora {
            self.export_adapter(&self.run_dir.join("adapter"), &model, l, &tok)?;
        }
        // LoRA adapters are folded into the weights: final/ is a plain GPT-2.
        let model = crate::lora::merge(model);
        save_model_dir(&dir, &model, &self.model_config, &tok, &generation, &extra)?;
        Ok(dir)
    }

    /// The adapters alone (PEFT layout) with the added token rows and the tokenizer.
    fn export_adapter(
        &self,
        dir: &Path,
        model: &Gpt,
        l: &crate::config::LoraConfig,
        tok: &Tokenizer,
    ) -> Result<()> {
        let base = self.cfg.model.clone().unwrap_or_default();
        let weights = base.join("model.safetensors");
        let fingerprint = if weights.is_file() {
            crate::lora::fingerprint_file(&weights)?
        } else {
            String::new()
        };
        let cfg = crate::lora::AdapterConfig {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            r: l.rank,
            lora_alpha: l.alpha,
            lora_dropout: 0.0,
            target_modules: l.targets.clone(),
            fan_in_fan_out: true,
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
            (Some(&lo), Some(&hi)) => Some((
                lo,
                model
                    .wte
                    .weight
                    .val()
                    .narrow(0, lo as usize, (hi - lo + 1) as usize),
            )),
            _ => None,
        };
        crate::lora::save_adapter_dir(dir, model, &cfg, rows)?;
        tok.save_dir(dir, self.model_config.n_positions)?;
        Ok(())
    }
}

fn set_dropout(mut model: Gpt, p: f64) -> Gpt {
    use manners_model::burn::nn::DropoutConfig;
    model.drop = DropoutConfig::new(p).init();
    for b in &mut model.h {
        b.drop = DropoutConfig::new(p).init();
    }
    model
}

fn default_run_name(kind: RunKind) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let prefix = match kind {
        RunKind::Sft => "sft",
        RunKind::Pretrain => "pretrain",
    };
    format!("{prefix}-{}", utc_stamp(secs))
}

/// `YYYYmmdd-HHMMSS` in UTC (civil-from-days, Howard Hinnant's algorithm).
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

struct PreparedData {
    train: Vec<Encoded>,
    eval: Vec<Encoded>,
    eval_convs: Vec<Conversation>,
    facts: Vec<(String, String)>,
}

fn prepare_data(
    cfg: &TrainConfig,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
) -> Result<PreparedData> {
    let policy = cfg.bad_record_policy()?;
    let mut facts = Vec::new();
    let eos = tok.eos_id();
    let Some(template) = template else {
        // Pretraining: raw text, stream-packed into full rows.
        let mut texts = Vec::new();
        for p in &cfg.data {
            let (t, report) = read_texts(p, policy)?;
            note_rejections(&mut facts, p, &report);
            texts.extend(t);
        }
        let (train_txt, eval_txt) = if cfg.eval_data.is_empty() {
            split_heldout(&texts, cfg.eval_fraction, cfg.seed)
        } else {
            let mut ev = Vec::new();
            for p in &cfg.eval_data {
                let (t, report) = read_texts(p, policy)?;
                note_rejections(&mut facts, p, &report);
                ev.extend(t);
            }
            (texts, ev)
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
            train,
            eval,
            eval_convs: Vec::new(),
            facts,
        });
    };
    let format = cfg.format()?;
    let mut convs = Vec::new();
    for p in &cfg.data {
        let (c, report) = read_conversations(p, format, policy)?;
        note_rejections(&mut facts, p, &report);
        convs.extend(c);
    }
    let (train_convs, mut eval_convs) = if cfg.eval_data.is_empty() {
        split_heldout(&convs, cfg.eval_fraction, cfg.seed)
    } else {
        let mut ev = Vec::new();
        for p in &cfg.eval_data {
            let (c, report) = read_conversations(p, format, policy)?;
            note_rejections(&mut facts, p, &report);
            ev.extend(c);
        }
        (convs, ev)
    };
    eval_convs.truncate(cfg.max_eval_examples);
    let mask = cfg.mask_mode()?;
    let lp = cfg.length_policy()?;
    let (mut train, report) =
        encode_dataset(&train_convs, template, tok.hf(), mask, cfg.max_len, lp)?;
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
    let (eval, _) = encode_dataset(&eval_convs, template, tok.hf(), mask, cfg.max_len, lp)?;
    if !cfg.mix_text.is_empty() && cfg.mix_fraction > 0.0 {
        let mut texts = Vec::new();
        for p in &cfg.mix_text {
            let (t, report) = read_texts(p, policy)?;
            note_rejections(&mut facts, p, &report);
            texts.extend(t);
        }
        let raw = encode_texts(&texts, tok.hf(), eos)?;
        let (mixed, mix_report) = mix_texts(train, &raw, cfg.mix_fraction, cfg.seed, cfg.max_len);
        facts.push(("mix".into(), mix_report.to_string().trim().to_string()));
        train = mixed;
    }
    let sup: usize = train.iter().map(Encoded::n_supervised).sum();
    let toks: usize = train.iter().map(|e| e.len().saturating_sub(1)).sum();
    facts.push((
        "supervised".into(),
        format!(
            "{:.1}% of {} training positions",
            100.0 * sup as f64 / toks.max(1) as f64,
            toks
        ),
    ));
    Ok(PreparedData {
        train,
        eval,
        eval_convs,
        facts,
    })
}

fn note_rejections(facts: &mut Vec<(String, String)>, path: &Path, report: &ReadReport) {
    if report.n_rejected() > 0 {
        facts.push((
            "warning: data".into(),
            format!(
                "{}: {} records rejected and skipped: {}",
                path.display(),
                report.n_rejected(),
                report.to_string().trim()
            ),
        ));
    }
}

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
                let shown = msgs
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::User)
                    .map(|m| m.content.clone())
                    .unwrap_or_default();
                out.push(SamplePrompt {
                    ids: t.encode_prompt(&msgs, tok.hf())?,
                    shown,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2026-11-22 07:22:33 UTC
        assert_eq!(utc_stamp(1_795_332_153), "20261122-072233");
        // 2024-02-29 (leap day) 12:00:00
        assert_eq!(utc_stamp(1_709_208_000), "20240229-120000");
    }
}
