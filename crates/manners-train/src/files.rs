//! The run folder's event logs: `metrics.jsonl` (every event, one JSON object per line) and
//! `samples.jsonl` (the sample generations). On resume, entries after the checkpoint being
//! resumed are dropped, so the logs describe the run as it is continued; a partly written last
//! line (a killed process) is dropped too.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use manners_events::{METRICS_FILE, TrainEvent, event_line};

use crate::error::{Result, TrainError};

/// An exclusive lock on a run folder (an OS lock on its `.lock` file, released when the
/// process ends, even by `kill -9`): one process writes a run at a time.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(TrainError::Config(format!(
                "{} is in use: another manners process is training in it (wait for it to end, \
                 or choose another --name)",
                run_dir.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(TrainError::io(&path, e)),
        }
    }
}

/// Creates a new folder `parent/base`, or `base-2`, `base-3`, ... when taken (atomically: two
/// processes never get the same one).
pub fn create_unique_dir(parent: &Path, base: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    for i in 1u32.. {
        let name = if i == 1 {
            base.to_string()
        } else {
            format!("{base}-{i}")
        };
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(TrainError::io(&dir, e)),
        }
    }
    unreachable!("u32 names run out before folders do")
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unique_dirs_never_collide_and_locks_exclude() {
        let tmp = tempfile::tempdir().unwrap();
        let a = create_unique_dir(tmp.path(), "sft-20261202-120000").unwrap();
        let b = create_unique_dir(tmp.path(), "sft-20261202-120000").unwrap();
        let c = create_unique_dir(tmp.path(), "sft-20261202-120000").unwrap();
        assert_eq!(a.file_name().unwrap(), "sft-20261202-120000");
        assert_eq!(b.file_name().unwrap(), "sft-20261202-120000-2");
        assert_eq!(c.file_name().unwrap(), "sft-20261202-120000-3");
        let held = RunLock::acquire(&a).unwrap();
        let e = RunLock::acquire(&a).err().unwrap().to_string();
        assert!(e.contains("in use"), "{e}");
        drop(held);
        RunLock::acquire(&a).unwrap();
    }
}
