//! `report.md` and `loss.png` of a run folder, written from its event log (`metrics.jsonl`):
//! every step, evaluation, sample and warning the run emitted, resumed parts included.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use manners_events::stats::median;
use manners_events::{
    EventSink, METRICS_FILE, RunInfo, RunSummary, SampleOut, TrainEvent, read_events,
};

use crate::plot::plot_losses;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no `started` event: not the event log of a run")]
    NotARun { path: PathBuf },
}

/// Loss curves of a run: `(step, loss)` points.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Curves {
    /// Training loss of every step that was applied (in runs that mix raw text into the
    /// conversations, the conversations' loss: comparable with the held-out loss).
    pub train: Vec<(f64, f64)>,
    /// Loss of the mixed raw text, per step that had some.
    pub mixed: Vec<(f64, f64)>,
    /// Held-out loss of every evaluation.
    pub eval: Vec<(f64, f64)>,
}

impl Curves {
    pub fn from_events(events: &[TrainEvent]) -> Self {
        let mut c = Curves::default();
        for ev in events {
            match ev {
                TrainEvent::Step(s) if !s.skipped => {
                    let x = s.step as f64;
                    c.train.push((x, s.sft_loss.unwrap_or(s.loss)));
                    if let Some(m) = s.mixed_loss {
                        c.mixed.push((x, m));
                    }
                }
                TrainEvent::Eval(e) => c.eval.push((e.step as f64, e.loss)),
                _ => {}
            }
        }
        c
    }

    /// The curves of the run in `run_dir` (empty when it has no event log).
    pub fn of_run(run_dir: &Path) -> Self {
        Self::from_events(&read_events(&run_dir.join(METRICS_FILE)).unwrap_or_default())
    }
}

/// Writes `loss.png` and `report.md` into `run_dir` from its event log. A plot that cannot be
/// drawn is noted in the report, not fatal.
pub fn write_report(run_dir: &Path) -> Result<PathBuf, ReportError> {
    let log = run_dir.join(METRICS_FILE);
    let events = read_events(&log).map_err(|source| ReportError::Io {
        path: log.clone(),
        source,
    })?;
    let info = events
        .iter()
        .rev()
        .find_map(|e| match e {
            TrainEvent::Started(i) => Some(i.clone()),
            _ => None,
        })
        .ok_or(ReportError::NotARun { path: log })?;
    let summary = events.iter().rev().find_map(|e| match e {
        TrainEvent::Finished(s) => Some(s.clone()),
        _ => None,
    });
    let curves = Curves::from_events(&events);
    let plot = run_dir.join("loss.png");
    let title = format!("{} — loss", info.name);
    let plot_note = match plot_losses(&plot, &title, &curves.train, &curves.mixed, &curves.eval) {
        Ok(()) => "![loss](loss.png)".to_string(),
        Err(e) => format!("(loss plot not drawn: {e})"),
    };
    let md = markdown(&info, summary.as_ref(), &events, &curves, &plot_note);
    let path = run_dir.join("report.md");
    std::fs::write(&path, md).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn markdown(
    info: &RunInfo,
    summary: Option<&RunSummary>,
    events: &[TrainEvent],
    curves: &Curves,
    plot_note: &str,
) -> String {
    let mut samples: Vec<&SampleOut> = Vec::new();
    let mut warnings = Vec::new();
    let mut tps = Vec::new();
    for ev in events {
        match ev {
            TrainEvent::Step(s) if !s.skipped => tps.push(s.tokens_per_sec),
            TrainEvent::Sample(s) => samples.push(s),
            TrainEvent::Warning { step, message } => {
                warnings.push(format!("step {step}: {message}"))
            }
            _ => {}
        }
    }
    let mut md = String::new();
    let _ = writeln!(md, "# Run `{}`\n", info.name);
    if let Some(s) = summary {
        let _ = writeln!(
            md,
            "Ended: **{}** after {} steps in {:.1} min.\n",
            s.reason,
            s.steps,
            s.elapsed_secs / 60.0
        );
    }
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| kind | {:?} |", info.kind);
    let _ = writeln!(md, "| model | {} |", info.model);
    let _ = writeln!(
        md,
        "| parameters | {} ({} trained) |",
        info.params, info.trainable_params
    );
    let _ = writeln!(md, "| backend | {} |", info.backend);
    let _ = writeln!(md, "| data | {} |", info.data);
    let _ = writeln!(
        md,
        "| examples | {} train, {} held out |",
        info.train_examples, info.eval_examples
    );
    if !info.template.is_empty() {
        let _ = writeln!(md, "| template | {} |", info.template);
    }
    for (k, v) in &info.facts {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md, "\n## Results\n");
    let _ = writeln!(md, "| metric | value |\n|---|---|");
    if let Some(l) = summary.and_then(|s| s.final_loss) {
        let _ = writeln!(md, "| final train loss | {l:.4} |");
    }
    if let Some(l) = summary.and_then(|s| s.final_eval_loss) {
        let _ = writeln!(
            md,
            "| final held-out loss | {l:.4} (perplexity {:.2}) |",
            l.exp()
        );
    }
    if let Some(first) = curves.eval.first() {
        let _ = writeln!(
            md,
            "| first held-out loss | {:.4} (step {}) |",
            first.1, first.0
        );
    }
    if let Some(m) = median(tps) {
        let _ = writeln!(md, "| median throughput | {m:.0} tokens/s |");
    }
    let _ = writeln!(md, "\n{plot_note}\n");
    let last_step = samples.last().map(|s| s.step);
    let last: Vec<_> = samples
        .iter()
        .filter(|s| Some(s.step) == last_step)
        .collect();
    if !last.is_empty() {
        let _ = writeln!(md, "## Samples at step {}\n", last_step.unwrap_or(0));
        for s in last {
            let _ = writeln!(md, "**Prompt:** {}\n", s.prompt.trim());
            let _ = writeln!(
                md,
                "**Response{}:** {}\n",
                if s.stopped {
                    ""
                } else {
                    " (hit the token budget)"
                },
                s.response.trim()
            );
        }
    }
    if !warnings.is_empty() {
        let _ = writeln!(md, "## Warnings\n");
        for w in warnings.iter().take(50) {
            let _ = writeln!(md, "- {w}");
        }
    }
    let _ = writeln!(
        md,
        "\nFull config: `run.toml`. Every event: `{METRICS_FILE}`."
    );
    md
}

/// An [`EventSink`] that writes the report when the run finishes (completed or stopped): put
/// it in a [`Fanout`](manners_events::Fanout) beside the dashboard or log printer. A report
/// that cannot be written is a warning on stderr, never a failed run; [`ReportSink::written`]
/// says what happened.
#[derive(Debug, Default)]
pub struct ReportSink {
    written: Option<Result<PathBuf, String>>,
}

impl ReportSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// `report.md`'s path once written, or why it was not.
    pub fn written(&self) -> Option<&Result<PathBuf, String>> {
        self.written.as_ref()
    }
}

impl EventSink for ReportSink {
    fn send(&mut self, event: TrainEvent) {
        if let TrainEvent::Finished(s) = event {
            let r = write_report(Path::new(&s.run_dir)).map_err(|e| e.to_string());
            if let Err(e) = &r {
                eprintln!("warning: the run report was not written: {e}");
            }
            self.written = Some(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use manners_events::{EvalStats, StepStats, event_line};

    use super::*;

    #[test]
    fn the_report_is_written_from_the_event_log() {
        let dir = std::env::temp_dir().join(format!("manners-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let info = RunInfo {
            name: "r".into(),
            run_dir: dir.display().to_string(),
            template: "chatml".into(),
            facts: vec![("mask".into(), "assistant".into())],
            ..Default::default()
        };
        let step = |n: u64, loss: f64| {
            TrainEvent::Step(StepStats {
                step: n,
                loss,
                tokens_per_sec: 100.0 * n as f64,
                ..Default::default()
            })
        };
        let events = vec![
            TrainEvent::Started(info),
            step(1, 3.0),
            step(2, 2.0),
            TrainEvent::Eval(EvalStats {
                step: 2,
                loss: 2.5,
                ..Default::default()
            }),
            step(3, 1.0),
            TrainEvent::Finished(RunSummary {
                steps: 3,
                final_loss: Some(1.0),
                run_dir: dir.display().to_string(),
                reason: "completed".into(),
                ..Default::default()
            }),
        ];
        let text: String = events.iter().map(|e| event_line(e) + "\n").collect();
        std::fs::write(dir.join(METRICS_FILE), text).expect("write log");
        let mut sink = ReportSink::new();
        for e in events {
            sink.send(e);
        }
        let md = std::fs::read_to_string(dir.join("report.md")).expect("report written");
        assert!(dir.join("loss.png").is_file());
        assert!(md.contains("Ended: **completed** after 3 steps"), "{md}");
        assert!(md.contains("| mask | assistant |"), "{md}");
        assert!(
            md.contains("| first held-out loss | 2.5000 (step 2) |"),
            "{md}"
        );
        // Median of 100, 200, 300 tokens/s.
        assert!(md.contains("| median throughput | 200 tokens/s |"), "{md}");
        assert_eq!(
            Curves::of_run(&dir).train,
            vec![(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
