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

use manners_data::{Loader, LoaderState};
use manners_model::burn::optim::ModuleOptimizer;
use manners_model::burn::tensor::Bytes;
use manners_model::{Model, Tokenizer, write_atomic, write_dir_atomic};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The state format written now. Version 2 checkpoints always carry `checksums.json`, so one
/// without it is damaged; version 1 (before checksums) loads unchecked, with a warning.
pub const STATE_VERSION: u32 = 2;

/// What a run needs besides the weights to continue exactly where it stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// `STATE_VERSION` when written; 1 for checkpoints from before checksums.
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
            version: STATE_VERSION,
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

    /// Refuses values no run writes (a hand-edited state.json, or one damaged and re-summed).
    fn check(&self) -> std::result::Result<(), String> {
        /// More optimiser steps than any run takes (2^40): larger counts would overflow.
        const MAX_STEPS: u64 = 1 << 40;
        if !(1..=STATE_VERSION).contains(&self.version) {
            return Err(format!(
                "version {} (this manners reads versions 1 to {STATE_VERSION})",
                self.version
            ));
        }
        for (name, v) in [
            ("step", self.step),
            ("loader.epoch", self.loader.epoch),
            ("loader.index", self.loader.index),
        ] {
            if v > MAX_STEPS {
                return Err(format!("{name} = {v} is beyond any run"));
            }
        }
        for (name, v) in [
            ("elapsed_secs", Some(self.elapsed_secs)),
            ("best_eval_loss", self.best_eval_loss),
            ("last_loss", self.last_loss),
            ("eval_loss", self.eval_loss),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("{name} = {v} (a loss or time is finite and >= 0)"));
            }
        }
        Ok(())
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
    let state: CheckpointState =
        serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
            path: p.clone(),
            message: e.to_string(),
        })?;
    state.check().map_err(|message| TrainError::Checkpoint {
        path: p.clone(),
        message,
    })?;
    Ok(state)
}

/// `loader`'s examples and batching with the data cursor of the checkpoint in `dir`; a cursor
/// that does not fit them (other data, other batch settings, a damaged state) is an error
/// naming the checkpoint's state.json.
pub fn restore_loader(dir: &Path, loader: &Loader, state: &CheckpointState) -> Result<Loader> {
    Loader::restore(
        loader.examples().clone(),
        loader.config().clone(),
        state.loader,
    )
    .map_err(|e| TrainError::Checkpoint {
        path: dir.join(STATE_FILE),
        message: format!("data cursor: {e}"),
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
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if read_state(dir)?.version >= 2 {
                return Err(err(
                    sums_path,
                    "missing (every checkpoint since state version 2 has one)".into(),
                ));
            }
            None
        }
        Err(e) => return Err(err(sums_path, e.to_string())),
    };
    let model = read(MODEL_FILE)?;
    let optim = read(OPTIM_FILE)?;
    if let Some(sums) = &sums {
        for name in [MODEL_FILE, OPTIM_FILE, TOKENIZER_FILE, STATE_FILE] {
            let Some(want) = sums.get(name) else {
                return Err(err(sums_path.clone(), format!("no checksum for {name}")));
            };
            if want.len() != 8 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(
                    sums_path.clone(),
                    format!("the checksum for {name}, {want:?}, is not a CRC-32"),
                ));
            }
            let got = match name {
                MODEL_FILE => crc32fast::hash(&model),
                OPTIM_FILE => crc32fast::hash(&optim),
                _ => file_crc(&dir.join(name)).map_err(|e| err(dir.join(name), e.to_string()))?,
            };
            if crc_hex(got) != *want {
                return Err(err(
                    dir.join(name),
                    format!(
                        "damaged: its CRC-32 is {} but {CHECKSUM_FILE} recorded {want} when it \
                         was written",
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
    /// The checkpoint's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

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

    use manners_data::{Loader, LoaderState};
    use manners_model::burn::module::{Module, ModuleVisitor, Param};
    use manners_model::burn::prelude::*;
    use manners_model::{BackendKind, load_model_dir, select_device};

    use super::*;
    use crate::config::TrainConfig;
    use crate::optim::build_optimizer;

    /// The flex autodiff device, the tiny GPT-2 fixture's folder and the model loaded from it.
    fn tiny_model() -> (Device, PathBuf, manners_model::ModelDir) {
        let dev = select_device(BackendKind::Flex).unwrap().device.autodiff();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manners-model/tests/fixtures/tiny-gpt2");
        let m = load_model_dir(&fixture, &dev).unwrap();
        (dev, fixture, m)
    }

    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let v = p.val().into_data().convert::<f32>();
            self.0.extend(v.try_to_vec::<f32>().unwrap());
        }
    }

    #[test]
    fn a_loaded_checkpoint_no_longer_needs_its_files() {
        let (dev, fixture, m) = tiny_model();
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
        let (_, _, m) = tiny_model();
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
        let (_, _, m) = tiny_model();
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
        // Without checksums.json a checkpoint is damaged...
        fs::remove_file(dir.join(CHECKSUM_FILE)).unwrap();
        let e = read_checked(&dir).err().unwrap().to_string();
        assert!(e.contains(CHECKSUM_FILE) && e.contains("missing"), "{e}");
        // ... unless it is from before checksums (state version 1): it loads, and says it was
        // not checked.
        let old = CheckpointState {
            version: 1,
            ..state.clone()
        };
        fs::write(dir.join(STATE_FILE), serde_json::to_vec(&old).unwrap()).unwrap();
        assert!(!read_checked(&dir).unwrap().verified);
    }

    /// Seeded fuzz over checkpoints: 400 with one file flipped, cut, removed, or given odd JSON
    /// values, half of them with `checksums.json` updated to match (a hand-edited or
    /// re-summed file gets past the checksum and must still be caught). Each loads, or is an
    /// error naming the checkpoint's file; never a panic.
    #[test]
    fn fuzzed_checkpoints_never_panic_and_every_error_names_its_file() {
        use std::sync::Arc;

        use manners_data::{BatchConfig, Encoded, SplitMix64};

        let (dev, fixture, m) = tiny_model();
        let cfg = TrainConfig::default();
        let examples: Vec<Encoded> = (0..10u32)
            .map(|i| Encoded {
                ids: vec![1 + i, 2, 3, 4, 5],
                loss_mask: vec![false, false, true, true, true],
                mixed: false,
            })
            .collect();
        let batching = BatchConfig {
            batch_size: 2,
            seq_len: 8,
            ..BatchConfig::default()
        };
        let loader = Loader::new(Arc::new(examples), batching).unwrap();
        let state = CheckpointState {
            step: 3,
            eval_loss: Some(2.5),
            best_eval_loss: Some(2.5),
            last_loss: Some(3.0),
            ..CheckpointState::new(loader.state())
        };
        let run = tempfile::tempdir().unwrap();
        let optim = build_optimizer(&cfg, &m.model);
        let dir = save(run.path(), &m.model, &optim, &m.tokenizer, &state, 1).unwrap();
        let names = [
            MODEL_FILE,
            OPTIM_FILE,
            TOKENIZER_FILE,
            STATE_FILE,
            CHECKSUM_FILE,
        ];
        let originals: Vec<Vec<u8>> = names
            .iter()
            .map(|n| fs::read(dir.join(n)).unwrap())
            .collect();
        let odd = [
            serde_json::json!(-1),
            serde_json::json!(u64::MAX),
            serde_json::json!(1u64 << 50),
            serde_json::json!(1e300),
            serde_json::json!(-2.5),
            serde_json::json!(null),
            serde_json::json!("x"),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!(0),
            serde_json::json!(7),
        ];
        let mut rng = SplitMix64::new(0xC0FFEE);
        let (mut refused, mut loaded) = (0, 0);
        let mut problems = Vec::new();
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        for case in 0..400 {
            for (n, b) in names.iter().zip(&originals) {
                fs::write(dir.join(n), b).unwrap();
            }
            let k = rng.below(names.len() as u64) as usize;
            let (name, path) = (names[k], dir.join(names[k]));
            let mut bytes = originals[k].clone();
            let what = match rng.below(4) {
                0 => {
                    // Early bytes hit the burnpack header; later ones tensor data.
                    let span = if rng.below(2) == 0 { 4096 } else { bytes.len() };
                    let at = rng.below(span.min(bytes.len()) as u64) as usize;
                    let n = 1 + rng.below(16) as usize;
                    for b in bytes.iter_mut().skip(at).take(n) {
                        *b = rng.next_u64() as u8;
                    }
                    format!("{n} random bytes at {at}")
                }
                1 => {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes.truncate(at);
                    format!("cut to {at} bytes")
                }
                2 => {
                    fs::remove_file(&path).unwrap();
                    "removed".to_string()
                }
                _ => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                    Ok(mut v) if v.is_object() => {
                        let mut keys: Vec<String> =
                            v.as_object().unwrap().keys().cloned().collect();
                        if name == STATE_FILE {
                            keys.extend(
                                ["epoch", "index", "rng", "n_examples", "fingerprint"]
                                    .map(|f| format!("loader.{f}")),
                            );
                        }
                        let key = keys[rng.below(keys.len() as u64) as usize].clone();
                        let val = odd[rng.below(odd.len() as u64) as usize].clone();
                        let what = format!("{key} = {val}");
                        match key.strip_prefix("loader.") {
                            Some(f) => v["loader"][f] = val,
                            None => v[&key] = val,
                        }
                        bytes = serde_json::to_vec(&v).unwrap();
                        what
                    }
                    _ => {
                        bytes.reverse();
                        "reversed".to_string()
                    }
                },
            };
            if what != "removed" {
                fs::write(&path, &bytes).unwrap();
            }
            // Half the time the checksum is brought up to date, as a hand edit might.
            let resummed = name != CHECKSUM_FILE && what != "removed" && rng.below(2) == 0;
            if resummed {
                let mut sums: BTreeMap<String, String> =
                    serde_json::from_slice(&originals[4]).unwrap();
                sums.insert(name.to_string(), crc_hex(crc32fast::hash(&bytes)));
                fs::write(dir.join(CHECKSUM_FILE), serde_json::to_vec(&sums).unwrap()).unwrap();
            }
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let files = read_checked(&dir)?;
                let fresh = load_model_dir(&fixture, &dev).unwrap().model;
                let (_m, _o, s) = files.apply(fresh, build_optimizer(&cfg, &m.model))?;
                restore_loader(&dir, &loader, &s)?;
                Ok::<_, TrainError>(())
            }));
            let label = format!("{case} {name} {what} (re-summed: {resummed})");
            match got {
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    problems.push(format!("{label}: PANIC {msg}"));
                }
                Ok(Err(e)) => {
                    refused += 1;
                    let e = e.to_string();
                    if case % 29 == 0 {
                        eprintln!("{label}: {e}");
                    }
                    let named = e.contains(&dir.display().to_string())
                        && (e.contains(name) || resummed && names.iter().any(|n| e.contains(n)));
                    if !named {
                        problems.push(format!("{label}: unlocated: {e}"));
                    }
                }
                Ok(Ok(())) => {
                    loaded += 1;
                    // Only a re-summed file can load, and only where nothing reads it (the
                    // tokenizer copy) or its change is harmless.
                    if !resummed && (what == "removed" || bytes != originals[k]) {
                        problems.push(format!("{label}: a damaged file loaded"));
                    }
                }
            }
        }
        std::panic::set_hook(quiet);
        eprintln!("400 fuzzed checkpoints: {refused} refused, {loaded} loaded");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(refused > 250, "refused {refused}, loaded {loaded}");
    }
}
