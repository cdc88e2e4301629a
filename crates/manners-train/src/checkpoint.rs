//! Checkpoints: `checkpoints/step-NNNNNNNN/` holding the model and optimiser (burnpack), the
//! tokenizer, `checksums.json` (CRC-32 of every other file, as written) and `state.json` (step,
//! data cursor, counters). Each is built in a temporary folder and renamed into place, so a
//! crash (even `kill -9`) never leaves a half-written checkpoint; the newest `keep` are kept.
//! Loading checks every file against its checksum, so a file damaged after it was written is
//! an error naming it, never a silently different model.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
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
    /// The held-out loss measured at this checkpoint's step, if one was.
    #[serde(default)]
    pub eval_loss: Option<f64>,
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
            eval_loss: None,
        }
    }
}

pub const STATE_FILE: &str = "state.json";
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIM_FILE: &str = "optim.bpk";
pub const CHECKSUM_FILE: &str = "checksums.json";
const TOKENIZER_FILE: &str = "tokenizer.json";

/// CRC-32 (as zip and PNG use) of a file, read in chunks.
fn file_crc(path: &Path) -> std::io::Result<u32> {
    let mut f = fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

fn crc_hex(crc: u32) -> String {
    format!("{crc:08x}")
}

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
        let mut sums = BTreeMap::new();
        model.save_burnpack(&tmp.join(MODEL_FILE))?;
        let model_crc = file_crc(&tmp.join(MODEL_FILE)).map_err(|x| e(format!("{x}")))?;
        sums.insert(MODEL_FILE, crc_hex(model_crc));
        let bytes = optim
            .into_bytes()
            .map_err(|x| e(format!("optimiser: {x:?}")))?;
        write_atomic(&tmp.join(OPTIM_FILE), &bytes)?;
        sums.insert(OPTIM_FILE, crc_hex(crc32fast::hash(&bytes)));
        let tok = tokenizer
            .hf()
            .to_string(false)
            .map_err(|x| e(format!("tokenizer: {x}")))?;
        write_atomic(&tmp.join(TOKENIZER_FILE), tok.as_bytes())?;
        sums.insert(TOKENIZER_FILE, crc_hex(crc32fast::hash(tok.as_bytes())));
        let json = serde_json::to_vec_pretty(state).expect("state serialises");
        sums.insert(STATE_FILE, crc_hex(crc32fast::hash(&json)));
        let sums_json = serde_json::to_vec_pretty(&sums).expect("checksums serialise");
        write_atomic(&tmp.join(CHECKSUM_FILE), &sums_json)?;
        // Written last: a folder with state.json is complete.
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

/// The checkpoint with the lowest held-out loss measured at its step (the newest of equals).
pub fn best(run_dir: &Path) -> Option<(u64, PathBuf, f64)> {
    list(run_dir)
        .into_iter()
        .filter_map(|(step, dir)| {
            let loss = read_state(&dir).ok()?.eval_loss?;
            loss.is_finite().then_some((step, dir, loss))
        })
        .min_by(|a, b| a.2.total_cmp(&b.2).then(b.0.cmp(&a.0)))
}

/// Keeps the newest `keep` checkpoints and the best one.
fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    clean_stale(run_dir)?;
    let all = list(run_dir);
    let best = best(run_dir).map(|(step, _, _)| step);
    let n = all.len().saturating_sub(keep.max(1));
    for (step, dir) in &all[..n] {
        if Some(*step) != best {
            fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
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

/// A checkpoint's files, read whole and checked against the checksums written with them.
pub struct CheckpointFiles {
    dir: PathBuf,
    pub state: CheckpointState,
    model: Vec<u8>,
    optim: Vec<u8>,
    /// False for checkpoints written before checksums existed (nothing to check against).
    pub verified: bool,
}

/// Reads a checkpoint and checks every file against `checksums.json`: a damaged file is an
/// error naming it.
pub fn read_checked(dir: &Path) -> Result<CheckpointFiles> {
    let err = |path: PathBuf, m: String| TrainError::Checkpoint { path, message: m };
    // Read whole: Burn's file loaders read each tensor lazily, on its first use, so the run
    // would otherwise depend on the checkpoint staying on disk (pruning removes it).
    let read =
        |name: &str| fs::read(dir.join(name)).map_err(|e| err(dir.join(name), e.to_string()));
    let sums_path = dir.join(CHECKSUM_FILE);
    let sums: Option<BTreeMap<String, String>> = match fs::read(&sums_path) {
        Ok(b) => Some(
            serde_json::from_slice(&b)
                .map_err(|e| err(sums_path.clone(), format!("unreadable checksums: {e}")))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(err(sums_path, e.to_string())),
    };
    let model = read(MODEL_FILE)?;
    let optim = read(OPTIM_FILE)?;
    if let Some(sums) = &sums {
        for name in [MODEL_FILE, OPTIM_FILE, TOKENIZER_FILE, STATE_FILE] {
            let Some(want) = sums.get(name) else {
                return Err(err(sums_path.clone(), format!("no checksum for {name}")));
            };
            let got = match name {
                MODEL_FILE => crc32fast::hash(&model),
                OPTIM_FILE => crc32fast::hash(&optim),
                _ => file_crc(&dir.join(name)).map_err(|e| err(dir.join(name), e.to_string()))?,
            };
            if crc_hex(got) != *want {
                return Err(err(
                    dir.join(name),
                    format!(
                        "damaged: its CRC-32 is {} but was {want} when written",
                        crc_hex(got)
                    ),
                ));
            }
        }
    }
    Ok(CheckpointFiles {
        dir: dir.to_path_buf(),
        state: read_state(dir)?,
        model,
        optim,
        verified: sums.is_some(),
    })
}

impl CheckpointFiles {
    /// Loads the weights and optimiser state into a model/optimiser built exactly as for a
    /// fresh run.
    pub fn apply(
        self,
        model: Model,
        optim: ModuleOptimizer,
    ) -> Result<(Model, ModuleOptimizer, CheckpointState)> {
        let model = model.load_burnpack_bytes(self.model, &self.dir.join(MODEL_FILE))?;
        let optim = optim
            .from_bytes(Bytes::from_elems(self.optim))
            .map_err(|e| TrainError::Checkpoint {
                path: self.dir.join(OPTIM_FILE),
                message: format!("optimiser: {e:?}"),
            })?;
        Ok((model, optim, self.state))
    }
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
        let (model, _optim, got) = read_checked(&dir)
            .unwrap()
            .apply(fresh, build_optimizer(&cfg, &m.model))
            .unwrap();
        assert_eq!(got, state);
        // Pruning (or a user) removes the folder; the loaded weights must still be readable.
        fs::remove_dir_all(&dir).unwrap();
        let (mut a, mut b) = (Values(Vec::new()), Values(Vec::new()));
        model.visit(&mut a);
        m.model.visit(&mut b);
        assert_eq!(a.0, b.0);
    }

    /// Pruning keeps the newest `keep` and the one with the best held-out loss (before, a run
    /// whose loss rose kept only checkpoints written after its best).
    #[test]
    fn pruning_keeps_the_best_checkpoint() {
        let dev = select_device(BackendKind::Flex).unwrap().device.autodiff();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manners-model/tests/fixtures/tiny-gpt2");
        let m = load_model_dir(&fixture, &dev).unwrap();
        let optim = build_optimizer(&TrainConfig::default(), &m.model);
        let run = tempfile::tempdir().unwrap();
        let losses = [Some(3.0), Some(1.0), Some(2.0), None, Some(2.5)];
        for (i, eval_loss) in losses.into_iter().enumerate() {
            let state = CheckpointState {
                step: i as u64 + 1,
                eval_loss,
                ..CheckpointState::new(LoaderState {
                    epoch: 0,
                    index: 0,
                    rng: 1,
                    n_examples: 10,
                    fingerprint: 2,
                })
            };
            save(run.path(), &m.model, &optim, &m.tokenizer, &state, 2).unwrap();
        }
        let steps: Vec<u64> = list(run.path()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![2, 4, 5]);
        assert_eq!(best(run.path()).map(|(s, _, l)| (s, l)), Some((2, 1.0)));
    }

    /// A byte changed in any file after it was written is an error naming the file (before
    /// checksums, 100 flipped bytes in model.bpk resumed silently and trained a damaged model).
    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dev = select_device(BackendKind::Flex).unwrap().device.autodiff();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manners-model/tests/fixtures/tiny-gpt2");
        let m = load_model_dir(&fixture, &dev).unwrap();
        let cfg = TrainConfig::default();
        let state = CheckpointState::new(LoaderState {
            epoch: 0,
            index: 0,
            rng: 1,
            n_examples: 10,
            fingerprint: 2,
        });
        let run = tempfile::tempdir().unwrap();
        let optim = build_optimizer(&cfg, &m.model);
        let dir = save(run.path(), &m.model, &optim, &m.tokenizer, &state, 1).unwrap();
        assert!(read_checked(&dir).unwrap().verified);
        for name in [MODEL_FILE, OPTIM_FILE, TOKENIZER_FILE, STATE_FILE] {
            let path = dir.join(name);
            let good = fs::read(&path).unwrap();
            let mut bad = good.clone();
            // One flipped bit, in the middle (a tensor's bytes, or a digit of the state).
            let i = bad.len() / 2;
            bad[i] ^= 0x01;
            fs::write(&path, &bad).unwrap();
            let e = read_checked(&dir).err().unwrap().to_string();
            assert!(e.contains(name) && e.contains("damaged"), "{name}: {e}");
            fs::write(&path, &good).unwrap();
        }
        // A checkpoint from before checksums loads, and says it was not checked.
        fs::remove_file(dir.join(CHECKSUM_FILE)).unwrap();
        assert!(!read_checked(&dir).unwrap().verified);
    }
}
