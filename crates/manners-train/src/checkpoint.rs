//! Checkpoints: `checkpoints/step-NNNNNNNN/` holding the model and optimiser (burnpack), the
//! tokenizer, and `state.json` (step, data cursor, counters). Each is built in a temporary
//! folder and renamed into place, so a crash (even `kill -9`) never leaves a half-written
//! checkpoint; the newest `keep` are kept.

use std::fs;
use std::path::{Path, PathBuf};

use manners_data::LoaderState;
use manners_model::burn::optim::ModuleOptimizer;
use manners_model::burn::tensor::Bytes;
use manners_model::{Model, Tokenizer, write_atomic, write_dir_atomic};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// What a run needs besides the weights to continue exactly where it stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub version: u32,
    /// Optimiser steps done.
    pub step: u64,
    /// The training data cursor.
    pub loader: LoaderState,
    pub best_eval_loss: Option<f64>,
    pub evals_without_improvement: u32,
    pub tokens_seen: u64,
    pub supervised_seen: u64,
    /// Training seconds before this checkpoint (over all processes).
    pub elapsed_secs: f64,
    pub last_loss: Option<f64>,
}

impl CheckpointState {
    /// The state at the start of a run, with the loader's cursor.
    pub fn new(loader: LoaderState) -> Self {
        Self {
            version: 1,
            step: 0,
            loader,
            best_eval_loss: None,
            evals_without_improvement: 0,
            tokens_seen: 0,
            supervised_seen: 0,
            elapsed_secs: 0.0,
            last_loss: None,
        }
    }
}

pub const STATE_FILE: &str = "state.json";
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIM_FILE: &str = "optim.bpk";

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes a checkpoint atomically and prunes old ones; returns its folder.
pub fn save(
    run_dir: &Path,
    model: &Model,
    optim: &ModuleOptimizer,
    tokenizer: &Tokenizer,
    state: &CheckpointState,
    keep: usize,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir).join(format!("step-{:08}", state.step));
    let err = |m: String| TrainError::Checkpoint {
        path: dir.clone(),
        message: m,
    };
    write_dir_atomic(&dir, |tmp| {
        let e = |m: String| manners_model::ModelError::Checkpoint {
            path: tmp.to_path_buf(),
            message: m,
        };
        model.save_burnpack(&tmp.join(MODEL_FILE))?;
        let bytes = optim
            .into_bytes()
            .map_err(|x| e(format!("optimiser: {x:?}")))?;
        write_atomic(&tmp.join(OPTIM_FILE), &bytes)?;
        let tok = tokenizer
            .hf()
            .to_string(false)
            .map_err(|x| e(format!("tokenizer: {x}")))?;
        write_atomic(&tmp.join("tokenizer.json"), tok.as_bytes())?;
        // Written last: a folder with state.json is complete.
        let json = serde_json::to_vec_pretty(state).expect("state serialises");
        write_atomic(&tmp.join(STATE_FILE), &json)
    })
    .map_err(|x| err(x.to_string()))?;
    prune(run_dir, keep)?;
    Ok(dir)
}

/// Complete checkpoints, oldest first.
pub fn list(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(rd) = fs::read_dir(checkpoints_dir(run_dir)) else {
        return Vec::new();
    };
    let mut v: Vec<(u64, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

pub fn latest(run_dir: &Path) -> Option<(u64, PathBuf)> {
    list(run_dir).pop()
}

/// Removes temporary folders a killed process left in `checkpoints/` (a run has one writer, so
/// any `.step-*.tmp-*` or `.step-*.old-*` not of this process is stale).
pub fn clean_stale(run_dir: &Path) -> Result<()> {
    let Ok(rd) = fs::read_dir(checkpoints_dir(run_dir)) else {
        return Ok(());
    };
    let mine = format!("-{}", std::process::id());
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let temp = name.starts_with(".step-") && (name.contains(".tmp-") || name.contains(".old-"));
        if temp && !name.ends_with(&mine) {
            fs::remove_dir_all(e.path()).map_err(|x| TrainError::io(e.path(), x))?;
        }
    }
    Ok(())
}

fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    clean_stale(run_dir)?;
    let all = list(run_dir);
    let n = all.len().saturating_sub(keep.max(1));
    for (_, dir) in &all[..n] {
        fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    Ok(())
}

pub fn read_state(dir: &Path) -> Result<CheckpointState> {
    let p = dir.join(STATE_FILE);
    let text = fs::read_to_string(&p).map_err(|e| TrainError::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: p.clone(),
        message: e.to_string(),
    })
}

/// Loads weights and optimiser state into a model/optimiser built exactly as for a fresh run.
pub fn load(
    dir: &Path,
    model: Model,
    optim: ModuleOptimizer,
) -> Result<(Model, ModuleOptimizer, CheckpointState)> {
    let state = read_state(dir)?;
    let err = |m: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        message: m,
    };
    // Read both files whole: Burn's file loaders read each tensor lazily, on its first use, so
    // the run would otherwise depend on the checkpoint staying on disk (pruning removes it).
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| err(format!("{name}: {e}")));
    let model = model.load_burnpack_bytes(read(MODEL_FILE)?, &dir.join(MODEL_FILE))?;
    let optim = optim
        .from_bytes(Bytes::from_elems(read(OPTIM_FILE)?))
        .map_err(|e| err(format!("optimiser: {e:?}")))?;
    Ok((model, optim, state))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use manners_data::LoaderState;
    use manners_model::burn::module::{Module, ModuleVisitor, Param};
    use manners_model::burn::prelude::*;
    use manners_model::{BackendKind, load_model_dir, select_device};

    use super::*;
    use crate::config::TrainConfig;
    use crate::optim::build_optimizer;

    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let v = p.val().into_data().convert::<f32>();
            self.0.extend(v.try_to_vec::<f32>().unwrap());
        }
    }

    #[test]
    fn a_loaded_checkpoint_no_longer_needs_its_files() {
        let dev = select_device(BackendKind::Flex).unwrap().device.autodiff();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manners-model/tests/fixtures/tiny-gpt2");
        let m = load_model_dir(&fixture, &dev).unwrap();
        let cfg = TrainConfig::default();
        let state = CheckpointState {
            step: 7,
            ..CheckpointState::new(LoaderState {
                epoch: 0,
                index: 7,
                rng: 1,
                n_examples: 10,
                fingerprint: 2,
            })
        };
        let run = tempfile::tempdir().unwrap();
        let optim = build_optimizer(&cfg, &m.model);
        let dir = save(run.path(), &m.model, &optim, &m.tokenizer, &state, 1).unwrap();
        let fresh = load_model_dir(&fixture, &dev).unwrap().model;
        let (model, _optim, got) = load(&dir, fresh, build_optimizer(&cfg, &m.model)).unwrap();
        assert_eq!(got, state);
        // Pruning (or a user) removes the folder; the loaded weights must still be readable.
        fs::remove_dir_all(&dir).unwrap();
        let (mut a, mut b) = (Values(Vec::new()), Values(Vec::new()));
        model.visit(&mut a);
        m.model.visit(&mut b);
        assert_eq!(a.0, b.0);
    }
}
