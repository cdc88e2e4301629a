//! `manners export`: a run's model as a folder Hugging Face transformers loads (`--merge`, the
//! default for full fine-tuning), or a LoRA run's adapters in PEFT layout.
//! `manners logits`: ids and logits of a prompt as JSON, to check parity with other tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use manners::burn::prelude::*;
use manners::data::{Message, Role};

use crate::args::{ExportArgs, LogitsArgs};

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    manners::write_dir_atomic(to, |tmp| {
        for e in std::fs::read_dir(from).map_err(|e| manners::ModelError::Io {
            path: from.to_path_buf(),
            source: e,
        })? {
            let e = e.map_err(|e| manners::ModelError::Io {
                path: from.to_path_buf(),
                source: e,
            })?;
            if e.path().is_file() {
                std::fs::copy(e.path(), tmp.join(e.file_name())).map_err(|x| {
                    manners::ModelError::Io {
                        path: e.path(),
                        source: x,
                    }
                })?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    // A run folder, or a model folder directly.
    let (final_dir, adapter_dir) =
        if a.run.join("final").is_dir() || a.run.join("run.toml").is_file() {
            (a.run.join("final"), a.run.join("adapter"))
        } else {
            (a.run.clone(), PathBuf::new())
        };
    let has_weights = [manners::WEIGHTS_FILE, manners::WEIGHTS_INDEX_FILE]
        .iter()
        .any(|f| final_dir.join(f).is_file());
    if !has_weights {
        // `--out` is the parent of run folders: pointing at it is an easy slip.
        let runs = runs_in(&a.run);
        if !runs.is_empty() {
            bail!(
                "{} holds runs, not a model: {}; pass one of them to --run",
                a.run.display(),
                runs.join(", ")
            );
        }
        bail!(
            "{} has no final model (was the run stopped early?); finish it with `manners train --resume {}`",
            a.run.display(),
            a.run.display()
        );
    }
    if a.format == "gguf" {
        return gguf(&a, &final_dir);
    }
    let lora = adapter_dir
        .join(manners::train::lora::ADAPTER_CONFIG)
        .is_file();
    if lora && !a.merge {
        copy_dir(&adapter_dir, &a.out)?;
        eprintln!(
            "exported the LoRA adapters (PEFT layout) to {}",
            a.out.display()
        );
        eprintln!(
            "  load with: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(<base>), {:?})",
            a.out
        );
        eprintln!("  or pass --merge for a plain model folder with the adapters folded in");
        return Ok(ExitCode::SUCCESS);
    }
    copy_dir(&final_dir, &a.out)?;
    // Check the export loads and runs.
    let dev = manners::select_device(manners::BackendKind::Flex)?;
    let m = manners::load_model_dir(&a.out, &dev.device)
        .with_context(|| format!("re-loading {}", a.out.display()))?;
    eprintln!(
        "exported {} ({}) to {}{}",
        a.run.display(),
        m.config.describe(),
        a.out.display(),
        if lora {
            " with the LoRA adapters merged"
        } else {
            ""
        }
    );
    eprintln!(
        "  transformers: AutoModelForCausalLM.from_pretrained({:?}); tokenizer.apply_chat_template(...)",
        a.out
    );
    Ok(ExitCode::SUCCESS)
}

/// A model folder (a run's `final/`, LoRA merged) as one GGUF file, with the template it was
/// trained with; `--ollama` adds a `Modelfile`.
fn gguf(a: &ExportArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let dev = manners::select_device(manners::BackendKind::Flex)?;
    let m = manners::load_model_dir(dir, &dev.device)
        .with_context(|| format!("loading {}", dir.display()))?;
    let template = manners::chat_template(&m.tokenizer, Some(dir), None)?;
    let chat = manners::gguf::GgufChat {
        template: Some(template.to_inference_jinja()),
        end_of_turn: template.end_of_turn(),
    };
    let file = manners::gguf::to_gguf(&m.model, &m.config, &m.tokenizer, &chat, a.dtype)?;
    file.write(&a.out)?;
    let size = std::fs::metadata(&a.out).map(|x| x.len()).unwrap_or(0);
    eprintln!(
        "exported {} ({}, {:?}, template {}) to {} ({:.1} MB)",
        dir.display(),
        m.config.describe(),
        a.dtype,
        template.name(),
        a.out.display(),
        size as f64 / 1e6
    );
    eprintln!(
        "  llama.cpp: llama-cli -m {} -cnv   (the chat template and stop token are in the file)",
        a.out.display()
    );
    if a.ollama {
        let name = a
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut mf = format!("FROM ./{name}\n");
        match template.to_ollama() {
            Some(t) => mf.push_str(&format!("TEMPLATE \"\"\"{t}\"\"\"\n")),
            None => eprintln!(
                "  note: a Jinja template has no Ollama form here; Ollama uses the GGUF's own"
            ),
        }
        let stops: Vec<String> = template
            .end_of_turn()
            .into_iter()
            .chain(template.stop_strings())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for s in stops.into_iter().filter(|s| seen.insert(s.clone())) {
            mf.push_str(&format!("PARAMETER stop {}\n", serde_json::to_string(&s)?));
        }
        let path = a.out.with_file_name("Modelfile");
        std::fs::write(&path, mf).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "  Ollama: cd {} && ollama create my-model -f Modelfile && ollama run my-model",
            path.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logits(a: LogitsArgs) -> anyhow::Result<ExitCode> {
    let dev = super::device(a.backend.backend, true)?;
    let m = manners::load_model_dir(&a.model, &dev.device)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let ids: Vec<u32> = match (&a.messages, &a.prompt) {
        (Some(p), _) => {
            let msgs = read_messages(p)?;
            let t = manners::chat_template(&m.tokenizer, Some(&a.model), a.template.as_deref())?;
            if a.generation_prompt {
                t.encode_prompt(&msgs, m.tokenizer.hf())?
            } else {
                t.encode(
                    &manners::data::Conversation::new(msgs),
                    m.tokenizer.hf(),
                    manners::data::MaskMode::Assistant,
                )?
                .ids
            }
        }
        (None, Some(text)) => m.tokenizer.encode(text)?,
        (None, None) => bail!("give --prompt TEXT or --messages FILE"),
    };
    let t = ids.len();
    if t == 0 || t > m.model.n_positions() {
        bail!(
            "the prompt is {t} tokens; the model takes 1 to {}",
            m.model.n_positions()
        );
    }
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(
            ids.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(),
            [1, t],
        ),
        &dev.device,
    );
    let logits = m
        .model
        .forward(input)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let v = m.model.vocab_size();
    let last: Vec<Vec<f32>> = (t.saturating_sub(a.positions)..t)
        .map(|i| logits[i * v..(i + 1) * v].to_vec())
        .collect();
    let out = serde_json::json!({ "ids": ids, "vocab": v, "first_position": t.saturating_sub(a.positions), "logits": last });
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The first line's `messages` (a prompt may end with a user turn, so no dataset validation).
fn read_messages(p: &Path) -> anyhow::Result<Vec<Message>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .context("empty file")?;
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("{}:1: invalid JSON", p.display()))?;
    let list = v["messages"]
        .as_array()
        .with_context(|| format!("{}:1: field `messages`: expected a list", p.display()))?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m["role"].as_str() {
                Some("system") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                other => bail!(
                    "{}:1: messages[{i}].role: unknown role {other:?}",
                    p.display()
                ),
            };
            let content = m["content"].as_str().with_context(|| {
                format!(
                    "{}:1: messages[{i}].content: expected a string",
                    p.display()
                )
            })?;
            Ok(Message::new(role, content))
        })
        .collect()
}

/// Names of the run folders (those with a `run.toml`) directly inside `dir`, sorted.
fn runs_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("run.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
