//! The run folder's event logs: `metrics.jsonl` (every event, one JSON object per line) and
//! `samples.jsonl` (the sample generations). On resume, entries after the checkpoint being
//! resumed are dropped, so the logs describe the run as it is continued; a partly written last
//! line (a killed process) is dropped too.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use manners_events::{METRICS_FILE, TrainEvent, event_line};

use crate::error::{Result, TrainError};

pub struct RunFiles {
    metrics: File,
    samples: File,
    metrics_path: PathBuf,
    last_eval: Option<f64>,
}

impl RunFiles {
    /// Opens the logs; `resume_step` truncates them to events at or before that step.
    pub fn open(run_dir: &Path, resume_step: Option<u64>) -> Result<Self> {
        let metrics_path = run_dir.join(METRICS_FILE);
        let samples_path = run_dir.join("samples.jsonl");
        let mut last_eval = None;
        if let Some(step) = resume_step {
            for p in [&metrics_path, &samples_path] {
                let kept = keep_until(p, step)?;
                for ev in &kept {
                    if let Ok(TrainEvent::Eval(e)) = serde_json::from_str::<TrainEvent>(ev) {
                        last_eval = Some(e.loss);
                    }
                }
                let mut text = kept.join("\n");
                if !text.is_empty() {
                    text.push('\n');
                }
                manners_model::write_atomic(p, text.as_bytes())?;
            }
        }
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| TrainError::io(p, e))
        };
        Ok(RunFiles {
            metrics: open(&metrics_path)?,
            samples: open(&samples_path)?,
            metrics_path,
            last_eval,
        })
    }

    /// Appends an event. A failed write must not stop training: it is reported once on stderr.
    pub fn record(&mut self, ev: &TrainEvent) {
        if let TrainEvent::Eval(e) = ev {
            self.last_eval = Some(e.loss);
        }
        let line = event_line(ev);
        let write = |f: &mut File| writeln!(f, "{line}");
        let ok = write(&mut self.metrics).is_ok()
            && (!matches!(ev, TrainEvent::Sample(_)) || write(&mut self.samples).is_ok());
        if !ok {
            eprintln!(
                "warning: could not append to {}",
                self.metrics_path.display()
            );
        }
    }

    pub fn last_eval_loss(&self) -> Option<f64> {
        self.last_eval
    }
}

/// Lines of a JSONL event log whose event belongs to a step at or before `step`.
fn keep_until(path: &Path, step: u64) -> Result<Vec<String>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if let Ok(ev) = serde_json::from_str::<TrainEvent>(&line)
            && ev.step() <= step
            && !matches!(ev, TrainEvent::Finished(_) | TrainEvent::Failed { .. })
        {
            out.push(line);
        }
    }
    Ok(out)
}
