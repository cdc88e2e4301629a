//! Plain log mode: a progress bar (on a terminal) and one line per logging interval.

use std::fmt;
use std::io::{self, IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use manners_events::{EventSink, RunInfo, RunKind, StepStats, TrainEvent};

use crate::format::{
    fmt_count, fmt_duration, fmt_gnorm, fmt_loss, fmt_lr, fmt_pct, fmt_rate, fmt_si, run_eta,
    sanitize, truncate,
};

/// One interval's log line:
/// `step 120/800 | loss 1.2345 | lr 3.00e-4 | gnorm 0.81 | 4,120 tok/s | sup 38% | eta 2m10s`.
///
/// `Display` gives the exact text, so the format can be tested without a run.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StepLine {
    pub step: u64,
    /// Total steps (0 when unknown: then `step N` alone).
    pub total: u64,
    /// Mean training loss over the interval (`None` when every step was skipped); in runs that
    /// mix raw text, the conversations' loss.
    pub loss: Option<f64>,
    /// Mean loss of the mixed raw text over the interval (runs that mix it).
    pub mixed_loss: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    /// Supervised tokens / all tokens over the interval.
    pub supervised: Option<f64>,
    pub eta_secs: Option<f64>,
    /// Steps skipped in the interval (shown only when non-zero).
    pub skipped: u64,
    /// Data-parallel runs: each device's tokens per second over the interval, main first.
    pub devices: Vec<f64>,
}

impl fmt::Display for StepLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total > 0 {
            let w = self.total.to_string().len();
            write!(f, "step {:>w$}/{}", self.step, self.total)?;
        } else {
            write!(f, "step {}", self.step)?;
        }
        match self.loss {
            Some(l) => write!(f, " | loss {}", fmt_loss(l))?,
            None => write!(f, " | loss --")?,
        }
        if let Some(l) = self.mixed_loss {
            write!(f, " | raw text {}", fmt_loss(l))?;
        }
        write!(f, " | lr {}", fmt_lr(self.lr))?;
        write!(f, " | gnorm {}", fmt_gnorm(self.grad_norm))?;
        write!(f, " | {} tok/s", fmt_rate(self.tokens_per_sec))?;
        if let Some(s) = self.supervised {
            write!(f, " | sup {}", fmt_pct(s))?;
        }
        if let Some(e) = self.eta_secs {
            write!(f, " | eta {}", fmt_duration(e))?;
        }
        if self.skipped > 0 {
            write!(f, " | skipped {}", self.skipped)?;
        }
        if !self.devices.is_empty() {
            let each: Vec<String> = self.devices.iter().map(|&r| fmt_rate(r)).collect();
            write!(f, " | per device {}", each.join(" / "))?;
        }
        Ok(())
    }
}

/// Steps gathered since the last line.
#[derive(Clone, Debug, Default)]
struct Window {
    loss_sum: f64,
    loss_n: u64,
    mixed_sum: f64,
    mixed_n: u64,
    skipped: u64,
    tokens: u64,
    supervised: u64,
    /// Per device (data-parallel runs): tokens and busy seconds.
    device_tokens: Vec<(u64, f64)>,
    /// Elapsed seconds at the end of the previous line's step.
    t0: Option<f64>,
}

/// The plain-text view of a run: implements [`EventSink`], so the trainer (or a
/// [`manners_events::Fanout`]) can feed it directly.
///
/// Prints one line per `log_every` steps (and for the first and the last step), plus one line
/// for each evaluation, sample, checkpoint, warning, pause, and the end of the run. With a
/// visible progress bar, lines are printed through the bar so they never garble it.
///
/// ```
/// use manners_events::{EventSink, StepStats, TrainEvent};
/// use manners_tui::LogPrinter;
///
/// let mut log = LogPrinter::new(Vec::new(), 10);
/// log.send(TrainEvent::Step(StepStats { step: 10, total_steps: 100, loss: 1.5, ..Default::default() }));
/// let text = String::from_utf8(log.into_inner()).unwrap();
/// assert!(text.starts_with("step  10/100 | loss 1.5000"));
/// ```
pub struct LogPrinter<W: Write + Send = io::Stderr> {
    out: W,
    bar: ProgressBar,
    log_every: u64,
    total: u64,
    start_step: u64,
    first_seen: Option<(u64, f64)>,
    window: Window,
    best_eval: Option<(u64, f64)>,
}

impl LogPrinter<io::Stderr> {
    /// Logs to stderr, with a progress bar when stderr is a terminal.
    pub fn stderr(log_every: u64) -> Self {
        let bar = if io::stderr().is_terminal() {
            styled_bar(ProgressBar::with_draw_target(
                None,
                ProgressDrawTarget::stderr(),
            ))
        } else {
            ProgressBar::hidden()
        };
        Self::with_bar(io::stderr(), log_every, bar)
    }
}

fn styled_bar(bar: ProgressBar) -> ProgressBar {
    let template = "{spinner:.cyan} {elapsed:>5} [{wide_bar:.cyan/blue}] {pos}/{len} {msg}";
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("━╸─");
    bar.with_style(style)
}

impl<W: Write + Send> LogPrinter<W> {
    /// Logs to `out` without a progress bar (files, pipes, tests).
    pub fn new(out: W, log_every: u64) -> Self {
        Self::with_bar(out, log_every, ProgressBar::hidden())
    }

    /// Logs to `out` with the given bar (its length and position are managed here).
    pub fn with_bar(out: W, log_every: u64, bar: ProgressBar) -> Self {
        Self {
            out,
            bar,
            log_every: log_every.max(1),
            total: 0,
            start_step: 0,
            first_seen: None,
            window: Window::default(),
            best_eval: None,
        }
    }

    /// Gives back the writer (clears the bar first).
    pub fn into_inner(self) -> W {
        self.bar.finish_and_clear();
        self.out
    }

    fn print(&mut self, line: &str) {
        let out = &mut self.out;
        // A log sink never fails the run: write errors are dropped.
        self.bar.suspend(|| {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        });
    }

    /// Handles one event (what [`EventSink::send`] calls).
    pub fn handle(&mut self, ev: &TrainEvent) {
        match ev {
            TrainEvent::Started(info) => {
                self.total = info.total_steps;
                self.start_step = info.start_step;
                if self.total > 0 {
                    self.bar.set_length(self.total);
                }
                self.bar.set_position(info.start_step);
                self.bar.reset_eta();
                for line in started_lines(info) {
                    self.print(&line);
                }
            }
            TrainEvent::Step(s) => self.on_step(s),
            TrainEvent::Eval(e) => {
                let best = match self.best_eval {
                    Some((_, b)) if b <= e.loss => false,
                    _ => e.loss.is_finite(),
                };
                if best {
                    self.best_eval = Some((e.step, e.loss));
                }
                let mut line = format!(
                    "eval step {} | loss {} | ppl {:.2}",
                    e.step,
                    fmt_loss(e.loss),
                    e.perplexity
                );
                if let Some((s, b)) = self.best_eval {
                    line += &format!(" | best {} @{s}", fmt_loss(b));
                }
                for (k, v) in &e.extra {
                    line += &format!(" | {} {}", sanitize(k, true), fmt_loss(*v));
                }
                self.print(&line);
            }
            TrainEvent::Sample(s) => {
                let cut = if s.stopped { "" } else { " [cut]" };
                let line = format!(
                    "sample step {} | {} → {}{cut}",
                    s.step,
                    truncate(&sanitize(&s.prompt, true), 80),
                    truncate(&sanitize(&s.response, true), 240),
                );
                self.print(&line);
            }
            TrainEvent::Checkpoint(c) => {
                self.print(&format!(
                    "checkpoint step {} | {} ({:.1}s)",
                    c.step, c.path, c.secs
                ));
            }
            TrainEvent::Warning { step, message } => {
                self.print(&format!(
                    "warning step {step} | {}",
                    sanitize(message, true)
                ));
            }
            TrainEvent::Paused { step, paused } => {
                let what = if *paused { "paused" } else { "resumed" };
                self.print(&format!("{what} at step {step}"));
            }
            TrainEvent::Finished(s) => {
                self.bar.finish_and_clear();
                let mut line = format!(
                    "finished: {} | {} steps in {}",
                    sanitize(&s.reason, true),
                    fmt_count(s.steps),
                    fmt_duration(s.elapsed_secs)
                );
                if let Some(l) = s.final_loss {
                    line += &format!(" | final loss {}", fmt_loss(l));
                }
                if let Some(l) = s.final_eval_loss {
                    line += &format!(" | held-out {}", fmt_loss(l));
                }
                if !s.run_dir.is_empty() {
                    line += &format!(" | {}", s.run_dir);
                }
                self.print(&line);
            }
            TrainEvent::Failed { step, error } => {
                self.bar.abandon();
                self.print(&format!("FAILED at step {step}: {}", sanitize(error, true)));
            }
        }
    }

    fn on_step(&mut self, s: &StepStats) {
        if s.total_steps > 0 && s.total_steps != self.total {
            self.total = s.total_steps;
            self.bar.set_length(self.total);
        }
        let first = self.first_seen.is_none();
        let (step0, t0) = *self.first_seen.get_or_insert((s.step, s.elapsed_secs));
        let w = &mut self.window;
        if s.skipped || !s.loss.is_finite() {
            w.skipped += 1;
        } else {
            w.loss_sum += s.sft_loss.unwrap_or(s.loss);
            w.loss_n += 1;
            if let Some(m) = s.mixed_loss {
                w.mixed_sum += m;
                w.mixed_n += 1;
            }
        }
        w.tokens += s.tokens;
        w.supervised += s.supervised_tokens;
        if w.device_tokens.len() < s.devices.len() {
            w.device_tokens.resize(s.devices.len(), (0, 0.0));
        }
        for (acc, d) in w.device_tokens.iter_mut().zip(&s.devices) {
            if d.tokens_per_sec > 0.0 {
                acc.0 += d.tokens;
                acc.1 += d.tokens as f64 / d.tokens_per_sec;
            }
        }
        let eta = run_eta(s, (step0, t0), self.start_step, self.total);
        self.bar.set_position(s.step);
        if s.loss.is_finite() {
            let eta_msg = eta
                .map(|e| format!(" · eta {}", fmt_duration(e)))
                .unwrap_or_default();
            self.bar.set_message(format!(
                "loss {}{eta_msg}",
                fmt_loss(s.sft_loss.unwrap_or(s.loss))
            ));
        }
        let last = self.total > 0 && s.step >= self.total;
        if !(first || last || s.step.is_multiple_of(self.log_every)) {
            return;
        }
        let w = std::mem::take(&mut self.window);
        let dt = w.t0.map(|t| s.elapsed_secs - t);
        let tps = match dt {
            Some(dt) if dt > 0.0 => w.tokens as f64 / dt,
            _ => s.tokens_per_sec,
        };
        let line = StepLine {
            step: s.step,
            total: self.total,
            loss: (w.loss_n > 0).then(|| w.loss_sum / w.loss_n as f64),
            mixed_loss: (w.mixed_n > 0).then(|| w.mixed_sum / w.mixed_n as f64),
            lr: s.lr,
            grad_norm: s.grad_norm,
            tokens_per_sec: tps,
            supervised: (w.tokens > 0).then(|| w.supervised as f64 / w.tokens as f64),
            eta_secs: if last { None } else { eta },
            skipped: w.skipped,
            devices: w
                .device_tokens
                .iter()
                .map(|&(t, secs)| if secs > 0.0 { t as f64 / secs } else { 0.0 })
                .collect(),
        };
        self.window.t0 = Some(s.elapsed_secs);
        self.print(&line.to_string());
    }
}

fn started_lines(info: &RunInfo) -> Vec<String> {
    let kind = match info.kind {
        RunKind::Sft => "sft",
        RunKind::Pretrain => "pretrain",
    };
    let mut first = format!("run {} ({kind})", sanitize(&info.name, true));
    if !info.model.is_empty() {
        first += &format!(" | model {}", sanitize(&info.model, true));
    }
    if info.params > 0 {
        first += &format!(" | {} params", fmt_si(info.params));
        if info.trainable_params > 0 && info.trainable_params != info.params {
            first += &format!(", {} trainable", fmt_si(info.trainable_params));
        }
    }
    if !info.backend.is_empty() {
        first += &format!(" | {}", sanitize(&info.backend, true));
    }
    let mut second = String::new();
    let mut add = |s: String| {
        if !second.is_empty() {
            second += " | ";
        }
        second += &s;
    };
    if !info.data.is_empty() {
        add(format!("data {}", sanitize(&info.data, true)));
    }
    if info.train_examples > 0 || info.eval_examples > 0 {
        add(format!(
            "{} train, {} held-out",
            fmt_count(info.train_examples),
            fmt_count(info.eval_examples)
        ));
    }
    if !info.template.is_empty() {
        add(format!("template {}", info.template));
    }
    if info.total_steps > 0 {
        add(format!("{} steps", fmt_count(info.total_steps)));
    }
    if info.start_step > 0 {
        add(format!("resumed at step {}", info.start_step));
    }
    for (k, v) in &info.facts {
        add(format!("{} {}", sanitize(k, true), sanitize(v, true)));
    }
    let mut lines = vec![first];
    if !second.is_empty() {
        lines.push(second);
    }
    lines
}

impl<W: Write + Send> EventSink for LogPrinter<W> {
    fn send(&mut self, event: TrainEvent) {
        self.handle(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manners_events::{CheckpointInfo, EvalStats, RunSummary, SampleOut};

    #[test]
    fn step_line_format() {
        let line = StepLine {
            step: 120,
            total: 800,
            loss: Some(1.23449),
            mixed_loss: None,
            lr: 3e-4,
            grad_norm: 0.8123,
            tokens_per_sec: 4120.4,
            supervised: Some(0.38),
            eta_secs: Some(130.0),
            skipped: 0,
            devices: Vec::new(),
        };
        assert_eq!(
            line.to_string(),
            "step 120/800 | loss 1.2345 | lr 3.00e-4 | gnorm 0.81 | 4,120 tok/s | sup 38% | eta 2m10s"
        );
        let early = StepLine {
            step: 5,
            loss: None,
            skipped: 2,
            eta_secs: None,
            supervised: None,
            ..line.clone()
        };
        assert_eq!(
            early.to_string(),
            "step   5/800 | loss -- | lr 3.00e-4 | gnorm 0.81 | 4,120 tok/s | skipped 2"
        );
        let mixing = StepLine {
            loss: Some(0.9),
            mixed_loss: Some(4.61),
            ..line.clone()
        };
        assert_eq!(
            mixing.to_string(),
            "step 120/800 | loss 0.9000 | raw text 4.6100 | lr 3.00e-4 | gnorm 0.81 | 4,120 tok/s | sup 38% | eta 2m10s"
        );
        let parallel = StepLine {
            devices: vec![2100.0, 2020.4],
            ..line
        };
        assert!(
            parallel
                .to_string()
                .ends_with("| eta 2m10s | per device 2,100 / 2,020"),
            "{parallel}"
        );
    }

    /// A data-parallel run's line gives each device's rate over the interval: its tokens over
    /// its busy seconds, summed over the steps.
    #[test]
    fn per_device_rates_are_averaged_over_the_interval() {
        let mut log = LogPrinter::new(Vec::new(), 2);
        for (i, (a, b)) in [(1000.0, 500.0), (3000.0, 500.0)].into_iter().enumerate() {
            log.send(TrainEvent::Step(StepStats {
                step: i as u64 + 1,
                total_steps: 10,
                loss: 1.0,
                tokens: 2000,
                tokens_per_sec: 1000.0,
                elapsed_secs: i as f64 + 1.0,
                devices: vec![
                    manners_events::DeviceRate {
                        device: "a".into(),
                        tokens: 1000,
                        tokens_per_sec: a,
                    },
                    manners_events::DeviceRate {
                        device: "b".into(),
                        tokens: 1000,
                        tokens_per_sec: b,
                    },
                ],
                ..Default::default()
            }));
        }
        let text = String::from_utf8(log.into_inner()).unwrap();
        // Step 1 is printed alone; step 2 covers step 2 only: 1000 tokens in 1/3 s and in 2 s.
        assert!(text.contains("per device 1,000 / 500"), "{text}");
        assert!(text.contains("per device 3,000 / 500"), "{text}");
    }

    fn step(step: u64, loss: f64) -> TrainEvent {
        TrainEvent::Step(StepStats {
            step,
            total_steps: 40,
            epoch: step as f64 / 20.0,
            loss,
            lr: 1e-3,
            grad_norm: 1.5,
            tokens: 1000,
            supervised_tokens: 250,
            tokens_per_sec: 2000.0,
            elapsed_secs: step as f64 * 0.5,
            skipped: false,
            ..Default::default()
        })
    }

    fn run_log(events: &[TrainEvent], every: u64) -> String {
        let mut log = LogPrinter::new(Vec::new(), every);
        for e in events {
            log.handle(e);
        }
        String::from_utf8(log.into_inner()).unwrap_or_default()
    }

    #[test]
    fn one_line_per_interval_with_interval_means() {
        let events: Vec<_> = (1..=40)
            .map(|s| step(s, if s <= 20 { 2.0 } else { 1.0 }))
            .collect();
        let text = run_log(&events, 20);
        let lines: Vec<&str> = text.lines().collect();
        // First step (its eta from that step alone: 0.5 s x 39), step 20, step 40.
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "step  1/40 | loss 2.0000 | lr 1.00e-3 | gnorm 1.50 | 2,000 tok/s | sup 25% | eta 20s"
        );
        // 19 steps since step 1 took 9.5 s: 0.5 s/step, 20 left -> 10 s; 19,000 tokens / 9.5 s.
        assert_eq!(
            lines[1],
            "step 20/40 | loss 2.0000 | lr 1.00e-3 | gnorm 1.50 | 2,000 tok/s | sup 25% | eta 10s"
        );
        assert_eq!(
            lines[2],
            "step 40/40 | loss 1.0000 | lr 1.00e-3 | gnorm 1.50 | 2,000 tok/s | sup 25%"
        );
    }

    #[test]
    fn every_event_kind_prints_a_line() {
        let events = vec![
            TrainEvent::Started(RunInfo {
                name: "demo".into(),
                model: "gpt2 2L/64d".into(),
                params: 1_234_567,
                trainable_params: 1_234_567,
                backend: "flex (cpu)".into(),
                data: "chat.jsonl".into(),
                train_examples: 80,
                eval_examples: 8,
                template: "chatml".into(),
                total_steps: 40,
                ..Default::default()
            }),
            TrainEvent::Eval(EvalStats {
                step: 10,
                loss: 1.5,
                perplexity: 4.48,
                ..Default::default()
            }),
            TrainEvent::Sample(SampleOut {
                step: 10,
                prompt: "Hi\nthere".into(),
                response: "Hello!".into(),
                stopped: false,
            }),
            TrainEvent::Checkpoint(CheckpointInfo {
                step: 10,
                path: "runs/demo/checkpoints/step-10".into(),
                secs: 0.31,
            }),
            TrainEvent::Warning {
                step: 11,
                message: "non-finite loss; step skipped".into(),
            },
            TrainEvent::Paused {
                step: 12,
                paused: true,
            },
            TrainEvent::Finished(RunSummary {
                steps: 40,
                final_loss: Some(0.5),
                final_eval_loss: Some(0.75),
                elapsed_secs: 130.0,
                run_dir: "runs/demo".into(),
                reason: "completed".into(),
            }),
            TrainEvent::Failed {
                step: 40,
                error: "disk full".into(),
            },
        ];
        let text = run_log(&events, 10);
        let want = "\
run demo (sft) | model gpt2 2L/64d | 1.23M params | flex (cpu)
data chat.jsonl | 80 train, 8 held-out | template chatml | 40 steps
eval step 10 | loss 1.5000 | ppl 4.48 | best 1.5000 @10
sample step 10 | Hi ⏎ there → Hello! [cut]
checkpoint step 10 | runs/demo/checkpoints/step-10 (0.3s)
warning step 11 | non-finite loss; step skipped
paused at step 12
finished: completed | 40 steps in 2m10s | final loss 0.5000 | held-out 0.7500 | runs/demo
FAILED at step 40: disk full
";
        assert_eq!(text, want);
    }

    #[test]
    fn skipped_steps_do_not_poison_the_mean() {
        let mut events = vec![step(1, 3.0)];
        let mut bad = step(2, f64::NAN);
        if let TrainEvent::Step(s) = &mut bad {
            s.skipped = true;
        }
        events.push(bad);
        events.push(step(3, 1.0));
        events.push(step(4, 2.0));
        let text = run_log(&events, 4);
        let last = text.lines().last().unwrap_or_default();
        assert!(last.starts_with("step  4/40 | loss 1.5000"), "{last}");
        assert!(last.ends_with("| skipped 1"), "{last}");
    }
}
