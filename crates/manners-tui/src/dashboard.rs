//! The dashboard's state: fed by [`TrainEvent`]s and key presses, free of I/O.

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use manners_events::{CheckpointInfo, EvalStats, Request, RunInfo, RunSummary, SampleOut};
use manners_events::{StepStats, TrainEvent};

use crate::format::{fmt_duration, fmt_loss, run_eta, sanitize};
use crate::history::{DEFAULT_HISTORY_CAP, LossHistory};
use manners_events::stats::Ema;

/// Raw points kept for the "recent" chart view and the throughput sparkline.
pub(crate) const RECENT_STEPS: usize = 512;
/// Lines kept in the event log panel.
const LOG_CAP: usize = 200;
/// Samples kept (the latest round of generations).
const SAMPLES_CAP: usize = 16;

/// Where the run stands, as the dashboard understands it.
#[derive(Clone, Debug, PartialEq)]
pub enum RunStatus {
    /// No `Started` event yet (the model and data are loading).
    Waiting,
    Running,
    Paused,
    /// The user asked to stop; the trainer is writing its last checkpoint.
    Stopping,
    Finished(RunSummary),
    Failed {
        step: u64,
        error: String,
    },
    /// The event channel closed without `Finished` or `Failed` (the trainer died); with the
    /// trainer thread's panic message when one was caught.
    Disconnected {
        reason: Option<String>,
    },
}

impl RunStatus {
    /// Short upper-case label for the status badge.
    pub fn label(&self) -> &'static str {
        match self {
            RunStatus::Waiting => "STARTING",
            RunStatus::Running => "RUNNING",
            RunStatus::Paused => "PAUSED",
            RunStatus::Stopping => "STOPPING",
            RunStatus::Finished(_) => "FINISHED",
            RunStatus::Failed { .. } => "FAILED",
            RunStatus::Disconnected { .. } => "DISCONNECTED",
        }
    }

    /// True once the run is over (no more events are expected).
    pub fn is_over(&self) -> bool {
        matches!(
            self,
            RunStatus::Finished(_) | RunStatus::Failed { .. } | RunStatus::Disconnected { .. }
        )
    }
}

/// What the chart shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChartView {
    /// Every step since the run began (downsampled).
    #[default]
    Full,
    /// The last few hundred steps at full resolution.
    Recent,
}

/// Kind of a line in the event log panel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogKind {
    Info,
    Eval,
    Checkpoint,
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LogLine {
    pub step: u64,
    pub kind: LogKind,
    pub text: String,
}

/// Requests sent to the trainer that it has not acknowledged yet (shown in the status bar).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    pub eval: bool,
    pub sample: bool,
    pub checkpoint: bool,
    pub pause: bool,
}

/// The live view of a training run: pure state, updated from [`TrainEvent`]s and key presses
/// and drawn with [`Dashboard::render`].
///
/// ```
/// use manners_events::{StepStats, TrainEvent};
/// use manners_tui::Dashboard;
/// use ratatui::{Terminal, backend::TestBackend};
///
/// let mut dash = Dashboard::new();
/// dash.update(&TrainEvent::Step(StepStats { step: 1, total_steps: 10, loss: 2.5, ..Default::default() }));
/// let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
/// terminal.draw(|frame| dash.render(frame)).unwrap();
/// ```
/// One device of a data-parallel run, as the dashboard shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceMeter {
    pub name: String,
    /// Tokens per second in the latest step.
    pub now: f64,
    /// Tokens and busy seconds over the run.
    pub tokens: u64,
    pub secs: f64,
}

impl DeviceMeter {
    /// Mean tokens per second over the run.
    pub fn mean(&self) -> Option<f64> {
        (self.secs > 0.0).then(|| self.tokens as f64 / self.secs)
    }
}

#[derive(Clone, Debug)]
pub struct Dashboard {
    pub(crate) info: Option<RunInfo>,
    pub(crate) status: RunStatus,
    pub(crate) last: Option<StepStats>,
    /// Step and elapsed seconds of the first step this process saw (for the ETA).
    pub(crate) first_seen: Option<(u64, f64)>,
    pub(crate) train: LossHistory,
    pub(crate) ema: Ema,
    pub(crate) ema_value: Option<f64>,
    /// Loss of the raw text mixed into SFT data (runs that mix it): last value and smoothed.
    pub(crate) mixed_last: Option<f64>,
    pub(crate) mixed_ema: Ema,
    pub(crate) mixed_ema_value: Option<f64>,
    pub(crate) train_ema: LossHistory,
    pub(crate) eval: LossHistory,
    pub(crate) recent: VecDeque<(f64, f64)>,
    pub(crate) recent_ema: VecDeque<(f64, f64)>,
    pub(crate) tps: VecDeque<u64>,
    pub(crate) tokens_total: u64,
    pub(crate) supervised_total: u64,
    pub(crate) tps_sum: f64,
    pub(crate) tps_n: u64,
    /// Data-parallel runs, per device (main first): name, last step's tokens/s, and the
    /// tokens and busy seconds of the whole run (for the mean).
    pub(crate) devices: Vec<DeviceMeter>,
    pub(crate) skipped: u64,
    pub(crate) last_eval: Option<EvalStats>,
    pub(crate) best_eval: Option<(u64, f64)>,
    pub(crate) last_checkpoint: Option<CheckpointInfo>,
    pub(crate) samples: Vec<SampleOut>,
    pub(crate) sample_sel: usize,
    pub(crate) log: VecDeque<LogLine>,
    pub(crate) warnings: u64,
    pub(crate) pending: Pending,
    pub(crate) view: ChartView,
    pub(crate) ctrl_c: u8,
    pub(crate) force_quit: bool,
    pub(crate) exit_requested: bool,
    /// A one-line acknowledgement of the last key, shown in the key-help bar.
    pub(crate) notice: Option<String>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Dashboard {
    /// An empty dashboard waiting for `TrainEvent::Started`.
    pub fn new() -> Self {
        Self::with_history_cap(DEFAULT_HISTORY_CAP)
    }

    /// Like [`Dashboard::new`] with a custom number of stored chart buckets per series.
    pub fn with_history_cap(cap: usize) -> Self {
        Self {
            info: None,
            status: RunStatus::Waiting,
            last: None,
            first_seen: None,
            train: LossHistory::new(cap),
            ema: Ema::new(0.9),
            ema_value: None,
            mixed_last: None,
            mixed_ema: Ema::new(0.9),
            mixed_ema_value: None,
            train_ema: LossHistory::new(cap),
            eval: LossHistory::new(cap),
            recent: VecDeque::with_capacity(RECENT_STEPS),
            recent_ema: VecDeque::with_capacity(RECENT_STEPS),
            tps: VecDeque::with_capacity(RECENT_STEPS),
            tokens_total: 0,
            supervised_total: 0,
            tps_sum: 0.0,
            tps_n: 0,
            devices: Vec::new(),
            skipped: 0,
            last_eval: None,
            best_eval: None,
            last_checkpoint: None,
            samples: Vec::new(),
            sample_sel: 0,
            log: VecDeque::with_capacity(LOG_CAP),
            warnings: 0,
            pending: Pending::default(),
            view: ChartView::Full,
            ctrl_c: 0,
            force_quit: false,
            exit_requested: false,
            notice: None,
        }
    }

    /// Applies one event. No I/O.
    pub fn update(&mut self, ev: &TrainEvent) {
        match ev {
            TrainEvent::Started(info) => {
                let resumed = info.start_step > 0;
                self.info = Some(info.clone());
                if !self.status.is_over() && self.status != RunStatus::Stopping {
                    self.status = RunStatus::Running;
                }
                let text = if resumed {
                    format!("resumed {} at step {}", info.name, info.start_step)
                } else {
                    format!("started {}", info.name)
                };
                self.log_line(info.start_step, LogKind::Info, text);
            }
            TrainEvent::Step(s) => self.on_step(s),
            TrainEvent::Eval(e) => {
                self.acknowledge(|p| &mut p.eval);
                self.eval.push(e.step as f64, e.loss);
                let best = match self.best_eval {
                    Some((_, b)) if b <= e.loss => false,
                    _ => e.loss.is_finite(),
                };
                if best {
                    self.best_eval = Some((e.step, e.loss));
                }
                let mark = if best { "  best" } else { "" };
                self.log_line(
                    e.step,
                    LogKind::Eval,
                    format!("loss {}  ppl {:.2}{mark}", fmt_loss(e.loss), e.perplexity),
                );
                self.last_eval = Some(e.clone());
            }
            TrainEvent::Sample(s) => {
                self.acknowledge(|p| &mut p.sample);
                // A new round of samples replaces the previous round.
                if self.samples.first().is_some_and(|f| f.step != s.step) {
                    self.samples.clear();
                    self.sample_sel = 0;
                }
                if self.samples.len() >= SAMPLES_CAP {
                    self.samples.remove(0);
                }
                self.samples.push(s.clone());
            }
            TrainEvent::Checkpoint(c) => {
                self.acknowledge(|p| &mut p.checkpoint);
                self.log_line(
                    c.step,
                    LogKind::Checkpoint,
                    format!("{} ({:.1}s)", sanitize(&c.path, true), c.secs),
                );
                self.last_checkpoint = Some(c.clone());
            }
            TrainEvent::Warning { step, message } => {
                self.warnings += 1;
                self.log_line(*step, LogKind::Warning, sanitize(message, true));
            }
            TrainEvent::Paused { step, paused } => {
                self.acknowledge(|p| &mut p.pause);
                if !self.status.is_over() && self.status != RunStatus::Stopping {
                    self.status = if *paused {
                        RunStatus::Paused
                    } else {
                        RunStatus::Running
                    };
                }
                let text = if *paused { "paused" } else { "resumed" };
                self.log_line(*step, LogKind::Info, text.to_string());
            }
            TrainEvent::Finished(summary) => {
                self.pending = Pending::default();
                let text = format!(
                    "finished: {} after {} steps in {}",
                    summary.reason,
                    summary.steps,
                    fmt_duration(summary.elapsed_secs)
                );
                self.log_line(summary.steps, LogKind::Info, text);
                self.status = RunStatus::Finished(summary.clone());
                self.notice = None;
            }
            TrainEvent::Failed { step, error } => {
                self.pending = Pending::default();
                self.log_line(
                    *step,
                    LogKind::Error,
                    format!("failed: {}", sanitize(error, true)),
                );
                self.status = RunStatus::Failed {
                    step: *step,
                    error: error.clone(),
                };
                self.notice = None;
            }
        }
    }

    fn on_step(&mut self, s: &StepStats) {
        if self.status == RunStatus::Waiting {
            self.status = RunStatus::Running;
        }
        self.first_seen.get_or_insert((s.step, s.elapsed_secs));
        if s.skipped || !s.loss.is_finite() {
            self.skipped += 1;
        } else {
            // Runs that mix raw text plot the conversations' loss (comparable with the
            // held-out loss); the objective includes the raw text's, several times higher.
            let x = s.step as f64;
            let loss = s.sft_loss.unwrap_or(s.loss);
            self.train.push(x, loss);
            self.ema_value = self.ema.push(loss);
            if let Some(m) = self.ema_value {
                self.train_ema.push(x, m);
                push_bounded(&mut self.recent_ema, (x, m), RECENT_STEPS);
            }
            push_bounded(&mut self.recent, (x, loss), RECENT_STEPS);
            // The raw text's own loss, several times higher, gets its own stats row rather
            // than a series that would flatten the conversations' curve.
            if let Some(m) = s.mixed_loss.filter(|m| m.is_finite()) {
                self.mixed_last = Some(m);
                self.mixed_ema_value = self.mixed_ema.push(m);
            }
        }
        if s.tokens_per_sec.is_finite() && s.tokens_per_sec >= 0.0 {
            push_bounded(&mut self.tps, s.tokens_per_sec.round() as u64, RECENT_STEPS);
            self.tps_sum += s.tokens_per_sec;
            self.tps_n += 1;
        }
        self.tokens_total += s.tokens;
        self.supervised_total += s.supervised_tokens;
        for (i, d) in s.devices.iter().enumerate() {
            if self.devices.len() <= i {
                self.devices.push(DeviceMeter::default());
            }
            let m = &mut self.devices[i];
            m.name.clone_from(&d.device);
            m.now = d.tokens_per_sec;
            if d.tokens_per_sec > 0.0 && d.tokens_per_sec.is_finite() {
                m.tokens += d.tokens;
                m.secs += d.tokens as f64 / d.tokens_per_sec;
            }
        }
        self.last = Some(s.clone());
    }

    /// The trainer did what was asked: clear the pending flag and the key's notice.
    fn acknowledge(&mut self, flag: impl FnOnce(&mut Pending) -> &mut bool) {
        let f = flag(&mut self.pending);
        if std::mem::take(f) && self.status != RunStatus::Stopping {
            self.notice = None;
        }
    }

    fn log_line(&mut self, step: u64, kind: LogKind, text: String) {
        push_bounded(&mut self.log, LogLine { step, kind, text }, LOG_CAP);
    }

    /// Handles a key. Returns the request to forward to the trainer's `Control`, if any.
    ///
    /// `q` stop, `p` pause/resume, `e` evaluate now, `s` sample now, `c` checkpoint now,
    /// `v` switch the chart between full history and recent steps, `Tab` next sample.
    /// Ctrl-C stops like `q`; a second Ctrl-C asks to quit at once ([`Dashboard::force_quit`]).
    /// Once the run is over, any key asks to close the dashboard ([`Dashboard::exit_requested`]).
    /// Only key presses count (not releases or repeats).
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Request> {
        if key.kind != KeyEventKind::Press {
            return None;
        }
        let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C'));
        if self.status.is_over() {
            self.exit_requested = true;
            return None;
        }
        if ctrl_c {
            self.ctrl_c = self.ctrl_c.saturating_add(1);
            if self.ctrl_c >= 2 {
                self.force_quit = true;
                return Some(Request::Stop);
            }
            self.notice = Some("stopping after a checkpoint; Ctrl-C again to quit now".into());
            return self.request_stop();
        }
        let code = match key.code {
            KeyCode::Char(c) => KeyCode::Char(c.to_ascii_lowercase()),
            other => other,
        };
        match code {
            KeyCode::Char('q') => {
                self.notice = Some("stopping: writing a checkpoint, then exiting".into());
                self.request_stop()
            }
            KeyCode::Char('v') => {
                self.view = match self.view {
                    ChartView::Full => ChartView::Recent,
                    ChartView::Recent => ChartView::Full,
                };
                None
            }
            KeyCode::Tab | KeyCode::Right => {
                if !self.samples.is_empty() {
                    self.sample_sel = (self.sample_sel + 1) % self.samples.len();
                }
                None
            }
            KeyCode::BackTab | KeyCode::Left => {
                if !self.samples.is_empty() {
                    let n = self.samples.len();
                    self.sample_sel = (self.sample_sel + n - 1) % n;
                }
                None
            }
            KeyCode::Char(c @ ('p' | 'e' | 's' | 'c')) => {
                if self.status == RunStatus::Stopping {
                    self.notice = Some("already stopping (Ctrl-C twice quits at once)".into());
                    return None;
                }
                let (req, what) = match c {
                    'p' => {
                        self.pending.pause = true;
                        let what = if self.status == RunStatus::Paused {
                            "resume requested"
                        } else {
                            "pause requested: at the next step boundary"
                        };
                        (Request::TogglePause, what)
                    }
                    'e' => {
                        self.pending.eval = true;
                        (
                            Request::EvalNow,
                            "evaluation requested: at the next step boundary",
                        )
                    }
                    's' => {
                        self.pending.sample = true;
                        (
                            Request::SampleNow,
                            "samples requested: at the next step boundary",
                        )
                    }
                    _ => {
                        self.pending.checkpoint = true;
                        (
                            Request::CheckpointNow,
                            "checkpoint requested: at the next step boundary",
                        )
                    }
                };
                self.notice = Some(what.into());
                Some(req)
            }
            _ => None,
        }
    }

    fn request_stop(&mut self) -> Option<Request> {
        if self.status == RunStatus::Stopping {
            self.notice = Some("already stopping (Ctrl-C twice quits at once)".into());
            return None;
        }
        self.status = RunStatus::Stopping;
        Some(Request::Stop)
    }

    /// Marks the run as over because the event channel closed without a final event;
    /// `reason` is what is known about why (a panic message of the trainer thread).
    pub fn disconnect(&mut self, reason: Option<String>) {
        if !self.status.is_over() {
            let step = self.last.as_ref().map_or(0, |s| s.step);
            let text = match &reason {
                Some(r) => format!("trainer died: {}", sanitize(r, true)),
                None => "the trainer stopped sending events".to_string(),
            };
            self.log_line(step, LogKind::Error, text);
            self.status = RunStatus::Disconnected { reason };
        }
    }

    /// Current status.
    pub fn status(&self) -> &RunStatus {
        &self.status
    }

    /// The run's facts, once `Started` arrived.
    pub fn info(&self) -> Option<&RunInfo> {
        self.info.as_ref()
    }

    /// The latest step.
    pub fn last_step(&self) -> Option<&StepStats> {
        self.last.as_ref()
    }

    /// The summary, once the run finished.
    pub fn summary(&self) -> Option<&RunSummary> {
        match &self.status {
            RunStatus::Finished(s) => Some(s),
            _ => None,
        }
    }

    /// The whole-run training loss (downsampled): `(step, loss)`.
    pub fn train_history(&self) -> &LossHistory {
        &self.train
    }

    /// The whole-run smoothed training loss (downsampled).
    pub fn train_ema_history(&self) -> &LossHistory {
        &self.train_ema
    }

    /// Held-out losses: `(step, loss)`.
    pub fn eval_history(&self) -> &LossHistory {
        &self.eval
    }

    /// The latest round of sample generations.
    pub fn samples(&self) -> &[SampleOut] {
        &self.samples
    }

    /// Steps skipped because of a non-finite loss or gradient.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// True after a second Ctrl-C: quit without waiting for the trainer.
    pub fn force_quit(&self) -> bool {
        self.force_quit
    }

    /// True when the run is over and the user pressed a key to close the dashboard.
    pub fn exit_requested(&self) -> bool {
        self.exit_requested
    }

    /// The chart view in use.
    pub fn chart_view(&self) -> ChartView {
        self.view
    }

    /// Seconds left, estimated from the steps this process has done so far.
    pub fn eta_secs(&self) -> Option<f64> {
        let s = self.last.as_ref()?;
        run_eta(s, self.first_seen?, self.start_step(), self.total_steps())
    }

    /// Wall seconds per step over the steps this process has done (after the first).
    pub fn secs_per_step(&self) -> Option<f64> {
        let s = self.last.as_ref()?;
        let (step0, t0) = self.first_seen?;
        if s.step > step0 {
            let dt = s.elapsed_secs - t0;
            (dt > 0.0).then(|| dt / (s.step - step0) as f64)
        } else {
            let n = s.step.saturating_sub(self.start_step());
            (n > 0 && s.elapsed_secs > 0.0).then(|| s.elapsed_secs / n as f64)
        }
    }

    fn start_step(&self) -> u64 {
        self.info.as_ref().map_or(0, |i| i.start_step)
    }

    pub(crate) fn total_steps(&self) -> u64 {
        let from_step = self.last.as_ref().map_or(0, |s| s.total_steps);
        let from_info = self.info.as_ref().map_or(0, |i| i.total_steps);
        from_step.max(from_info)
    }

    /// Fraction of tokens that are supervised, over the whole run so far.
    pub fn supervised_fraction(&self) -> Option<f64> {
        (self.tokens_total > 0).then(|| self.supervised_total as f64 / self.tokens_total as f64)
    }

    /// Per-device meters of a data-parallel run (empty on one device).
    pub fn devices(&self) -> &[DeviceMeter] {
        &self.devices
    }

    pub(crate) fn mean_tps(&self) -> Option<f64> {
        (self.tps_n > 0).then(|| self.tps_sum / self.tps_n as f64)
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    if q.len() >= cap {
        q.pop_front();
    }
    q.push_back(v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyEventState;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn running() -> Dashboard {
        let mut d = Dashboard::new();
        d.update(&TrainEvent::Started(RunInfo {
            total_steps: 100,
            ..Default::default()
        }));
        d
    }

    #[test]
    fn eta_with_a_single_step() {
        let mut d = running();
        d.update(&TrainEvent::Step(StepStats {
            step: 1,
            total_steps: 100,
            elapsed_secs: 2.0,
            ..Default::default()
        }));
        assert_eq!(d.eta_secs(), Some(198.0));
    }

    #[test]
    fn eta_after_a_resume_uses_the_step_duration() {
        // Resumed at step 1816 with 3,700 s already on the clock: one step of 4096 tokens at
        // 2048 tok/s takes 2 s, so 2274 - 1817 = 457 steps left take 914 s, not days.
        let mut d = running();
        d.update(&TrainEvent::Step(StepStats {
            step: 1817,
            total_steps: 2274,
            elapsed_secs: 3700.0,
            tokens: 4096,
            tokens_per_sec: 2048.0,
            ..Default::default()
        }));
        assert_eq!(d.eta_secs(), Some(914.0));
    }

    #[test]
    fn keys_map_to_requests() {
        let mut d = running();
        assert_eq!(
            d.on_key(press(KeyCode::Char('p'))),
            Some(Request::TogglePause)
        );
        assert_eq!(d.on_key(press(KeyCode::Char('e'))), Some(Request::EvalNow));
        assert_eq!(
            d.on_key(press(KeyCode::Char('s'))),
            Some(Request::SampleNow)
        );
        assert_eq!(
            d.on_key(press(KeyCode::Char('c'))),
            Some(Request::CheckpointNow)
        );
        assert_eq!(d.on_key(press(KeyCode::Char('E'))), Some(Request::EvalNow));
        assert_eq!(d.on_key(press(KeyCode::Char('x'))), None);
        assert_eq!(d.on_key(press(KeyCode::Char('v'))), None);
        assert_eq!(d.chart_view(), ChartView::Recent);
        assert_eq!(d.on_key(press(KeyCode::Char('q'))), Some(Request::Stop));
        assert_eq!(d.status(), &RunStatus::Stopping);
        // Stopping: a second q and the other requests are ignored.
        assert_eq!(d.on_key(press(KeyCode::Char('q'))), None);
        assert_eq!(d.on_key(press(KeyCode::Char('e'))), None);
        assert!(!d.force_quit());
    }

    #[test]
    fn only_presses_count() {
        let mut d = running();
        let mut release = press(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(d.on_key(release), None);
        let repeat = KeyEvent::new_with_kind_and_state(
            KeyCode::Char('e'),
            KeyModifiers::NONE,
            KeyEventKind::Repeat,
            KeyEventState::NONE,
        );
        assert_eq!(d.on_key(repeat), None);
        assert_eq!(d.status(), &RunStatus::Running);
    }

    #[test]
    fn ctrl_c_stops_then_forces() {
        let mut d = running();
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(d.on_key(ctrl_c), Some(Request::Stop));
        assert!(!d.force_quit());
        assert_eq!(d.on_key(ctrl_c), Some(Request::Stop));
        assert!(d.force_quit());
    }

    #[test]
    fn any_key_closes_a_finished_run() {
        let mut d = running();
        d.update(&TrainEvent::Finished(RunSummary::default()));
        assert!(!d.exit_requested());
        assert_eq!(d.on_key(press(KeyCode::Char('q'))), None);
        assert!(d.exit_requested());
    }

    #[test]
    fn pause_events_drive_status() {
        let mut d = running();
        d.update(&TrainEvent::Paused {
            step: 3,
            paused: true,
        });
        assert_eq!(d.status(), &RunStatus::Paused);
        d.update(&TrainEvent::Paused {
            step: 3,
            paused: false,
        });
        assert_eq!(d.status(), &RunStatus::Running);
    }

    #[test]
    fn skipped_steps_are_not_charted() {
        let mut d = running();
        for (i, loss) in [2.0, f64::NAN, 1.0].into_iter().enumerate() {
            d.update(&TrainEvent::Step(StepStats {
                step: i as u64 + 1,
                loss,
                skipped: loss.is_nan(),
                ..Default::default()
            }));
        }
        assert_eq!(d.skipped_steps(), 1);
        assert_eq!(d.train_history().points(), vec![(1.0, 2.0), (3.0, 1.0)]);
    }

    #[test]
    fn eta_uses_this_process_rate() {
        let mut d = running();
        // Resumed at step 40: step 41 ends at 1 s (slow warm-up), then 0.5 s per step.
        for step in 41..=60u64 {
            d.update(&TrainEvent::Step(StepStats {
                step,
                total_steps: 100,
                loss: 1.0,
                elapsed_secs: (step - 41) as f64 * 0.5 + 1.0,
                ..Default::default()
            }));
        }
        // 19 steps since step 41 in 9.5 s -> 0.5 s/step, 40 left -> 20 s.
        let eta = d.eta_secs().unwrap_or(f64::NAN);
        assert!((eta - 20.0).abs() < 1e-9, "{eta}");
    }

    #[test]
    fn best_eval_tracks_minimum() {
        let mut d = running();
        for (step, loss) in [(10, 2.0), (20, 1.5), (30, 1.7)] {
            d.update(&TrainEvent::Eval(EvalStats {
                step,
                loss,
                ..Default::default()
            }));
        }
        assert_eq!(d.best_eval, Some((20, 1.5)));
    }
}
