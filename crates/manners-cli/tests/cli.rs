//! The `manners` binary end to end on the tiny fixture model: info, generate, train, a
//! `kill -9` in the middle of training followed by `--resume`, and clean errors.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_manners"));
    c.env("MANNERS_BACKEND", "flex").env_remove("RUST_LOG");
    c
}

/// Runs `cmd`, asserts it succeeded (its stderr in the message) and returns its output.
fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manners-model/tests/fixtures/tiny-gpt2")
}

fn write_chats(dir: &Path) -> PathBuf {
    let p = dir.join("chats.jsonl");
    let mut lines = Vec::new();
    for i in 0..40 {
        lines.push(
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("Count to {}.", i % 7)},
                {"role": "assistant", "content": format!("{}.", (1..=(i % 7) + 1).map(|x| x.to_string()).collect::<Vec<_>>().join(", "))}
            ]})
            .to_string(),
        );
    }
    // One bad record: skipped and reported, not fatal.
    lines.push("{not json".into());
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

#[test]
fn info_and_generate() {
    let out = run_ok(bin().args(["info", "--model"]).arg(fixture()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2L/32d/4h") && text.contains("<|endoftext|>"),
        "{text}"
    );

    let out = run_ok(
        bin()
            .args([
                "generate",
                "--prompt",
                "Emma Woodhouse",
                "--max-new-tokens",
                "5",
                "--model",
            ])
            .arg(fixture()),
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Emma Woodhouse"));
}

#[test]
fn errors_are_messages_not_panics() {
    let out = bin()
        .args(["info", "--model", "/no/such/folder"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error:") && err.contains("/no/such/folder") && !err.contains("panicked"),
        "{err}"
    );
    let out = bin()
        .args(["generate", "--backend", "tpu", "--prompt", "x", "--model"])
        .arg(fixture())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tpu"));
    let out = bin().args(["train", "--data", "x.jsonl"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));

    let tmp = tempfile::tempdir().unwrap();
    // A directory as data: the OS reason once (it used to be printed twice).
    let out = train_cmd(tmp.path(), tmp.path(), &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("directory").count(), 1, "{err}");
    // Every record rejected: the error itself shows the first rejections with file:line
    // (it used to point at a report that plain mode never printed).
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"messages\": 3}\nnot json\n").unwrap();
    let out = train_cmd(tmp.path(), &bad, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.jsonl:1:") && err.contains("bad.jsonl:2:") && err.contains("messages"),
        "{err}"
    );
    // An empty dataset fails lint and training.
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let out = bin()
        .args(["data", "lint"])
        .arg(&empty)
        .arg("--tokenizer")
        .arg(fixture())
        .args(["--template", "chatml"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("FAILED") && text.contains("empty"),
        "{text}"
    );
    let out = train_cmd(tmp.path(), &empty, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no usable training examples"),
        "{err}"
    );
}

fn train_cmd(dir: &Path, data: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.args([
        "train",
        "--no-tui",
        "--template",
        "chatml",
        "--max-len",
        "48",
        "--batch-size",
        "4",
    ])
    .arg("--model")
    .arg(fixture())
    .arg("--data")
    .arg(data)
    .arg("--out")
    .arg(dir)
    .args(extra);
    c
}

/// Ctrl-C checkpoints and stops with its own exit status (3), not the 0 of a finished run.
#[test]
fn ctrl_c_stops_with_a_checkpoint_and_exit_status_3() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chats(tmp.path());
    let run = tmp.path().join("int");
    let child = train_cmd(
        tmp.path(),
        &data,
        &["--name", "int", "--max-steps", "100000"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(run.join("metrics.jsonl"))
        .is_ok_and(|t| t.contains("\"step\":2"))
        && t0.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(!manners::train::list_checkpoints(&run).is_empty());
}

#[test]
fn kill_9_during_training_then_resume_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chats(tmp.path());
    let run = tmp.path().join("killed");
    let mut child = train_cmd(
        tmp.path(),
        &data,
        &[
            "--name",
            "killed",
            "--max-steps",
            "400",
            "--save-every",
            "10",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Kill it hard once at least two checkpoints exist (so one may be mid-write).
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_dir(run.join("checkpoints"))
            .map(|d| d.count())
            .unwrap_or(0);
        if n >= 2 || t0.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !run.join("final").exists(),
        "the run finished before it could be killed"
    );

    let out = bin()
        .args(["train", "--no-tui", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.join("final/model.safetensors").is_file());
    // Every checkpoint left is complete and loadable.
    for entry in std::fs::read_dir(run.join("checkpoints")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("step-"),
            "leftover temporary folder {name}"
        );
        assert!(
            dir.join("state.json").is_file() && dir.join("model.bpk").is_file(),
            "{name} incomplete"
        );
    }
    // The log is one run: steps 1..=400 once each, in order.
    let steps: Vec<u64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=400).collect::<Vec<_>>());
    // The bad record was counted in the report.
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("rejected"), "{report}");
}

#[test]
fn chat_uses_the_saved_template() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chats(tmp.path());
    // Trained with `plain`, which neither the tokenizer (no chat_template) nor the default
    // (chatml) would give: chat must take it from the model folder.
    let mut train = bin();
    train
        .args([
            "train",
            "--no-tui",
            "--template",
            "plain",
            "--max-len",
            "48",
        ])
        .args([
            "--batch-size",
            "4",
            "--name",
            "c",
            "--max-steps",
            "5",
            "--model",
        ])
        .arg(fixture())
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(tmp.path());
    run_ok(&mut train);
    let final_dir = tmp.path().join("c/final");
    assert!(final_dir.join("manners_template.json").is_file());
    let tc = std::fs::read_to_string(final_dir.join("tokenizer_config.json")).unwrap();
    assert!(
        tc.contains("chat_template") && tc.contains("Assistant:") && !tc.contains("im_start"),
        "{tc}"
    );
    let mut child = bin()
        .args(["chat", "--max-new-tokens", "4", "--model"])
        .arg(&final_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Count to 3.\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.lines().any(|l| l == "template: plain"), "{err}");
}

/// `chat` against hostile input: a bad UTF-8 byte, a conversation longer than the context,
/// impossible sampling settings and a template that drops the messages.
#[test]
fn chat_survives_bad_input_and_refuses_bad_settings() {
    use std::io::Write;
    let chat = |args: &[&str], input: &[u8]| {
        let mut child = bin()
            .arg("chat")
            .arg("--model")
            .arg(fixture())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The child may exit before reading (a refused setting): a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let plain = ["--template", "plain", "--max-new-tokens", "4"];
    // One invalid byte is replaced, and the session goes on to the next message.
    let (ok, out, err) = chat(&plain, b"caf\xe9\nsecond\n/exit\n");
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "two answers: {out:?}");
    assert!(err.contains("not valid UTF-8"), "{err}");
    // The tiny model's context is 64 tokens: old turns go whole, and a message that cannot fit
    // is refused without ending the session.
    let long = "word ".repeat(12);
    let input = format!("{long}\n{long}\n{long}\n{}\nshort\n", "word ".repeat(80));
    let (ok, _, err) = chat(&plain, input.as_bytes());
    assert!(ok, "{err}");
    assert!(err.contains("oldest turns were dropped"), "{err}");
    assert!(err.contains("does not fit"), "{err}");
    // Settings that cannot work are refused before the first message.
    for (args, want) in [
        (vec!["--max-new-tokens", "64"], "leaves no room"),
        (vec!["--temperature", "NaN"], "temperature"),
        (vec!["--temperature", "inf"], "temperature"),
        (vec!["--temperature", "0.7", "--top-p", "0"], "top_p"),
    ] {
        let mut a = vec!["--template", "plain"];
        a.extend(args);
        let (ok, _, err) = chat(&a, b"hi\n");
        assert!(!ok && err.contains(want), "{a:?}: {err}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.jinja");
    std::fs::write(
        &broken,
        "{% for m in messages %}{{ m.contnet }}{% endfor %}",
    )
    .unwrap();
    let (ok, _, err) = chat(&["--template", broken.to_str().unwrap()], b"hi\n");
    assert!(!ok && err.contains("does not write the messages"), "{err}");
}

#[test]
fn export_round_trip_is_exact_and_keeps_the_template() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chats(tmp.path());
    run_ok(&mut train_cmd(
        tmp.path(),
        &data,
        &["--name", "x", "--max-steps", "5", "--lora-rank", "4"],
    ));
    let run = tmp.path().join("x");
    assert!(run.join("adapter/adapter_config.json").is_file());
    // Merged export: every weight the adapters target is base + (alpha / r) (B A)^T (GPT-2's
    // Conv1D stores [in, out]), computed here from the fixture and the PEFT adapter file the run
    // wrote; every other weight of the blocks is the base's (frozen). The export used to be
    // compared only with the run's own final/ (a copy of it).
    let merged = tmp.path().join("merged");
    run_ok(
        bin()
            .args(["export", "--merge", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&merged),
    );
    let base = read_f32_tensors(&fixture().join("model.safetensors"));
    let out = read_f32_tensors(&merged.join("model.safetensors"));
    let ad = read_f32_tensors(&run.join("adapter/adapter_model.safetensors"));
    let acfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    let (r, alpha) = (4usize, acfg["lora_alpha"].as_f64().unwrap() as f32);
    assert_eq!(acfg["r"], 4);
    let (mut targets, mut moved) = (0, 0f32);
    for (key, (shape, w)) in &base {
        let name = key.trim_start_matches("transformer.");
        if !name.starts_with("h.") {
            continue; // the embedding grew by the chat tokens, whose new rows train
        }
        let (_, got) = &out[name];
        let prefix = format!(
            "base_model.model.transformer.{}",
            name.trim_end_matches(".weight")
        );
        let want: Vec<f32> = match ad.get(&format!("{prefix}.lora_A.weight")) {
            Some((ashape, a)) if name.ends_with(".weight") => {
                let (bshape, b) = &ad[&format!("{prefix}.lora_B.weight")];
                let (n_in, n_out) = (shape[0], shape[1]);
                assert_eq!(
                    (ashape.as_slice(), bshape.as_slice()),
                    (&[r, n_in][..], &[n_out, r][..])
                );
                targets += 1;
                (0..n_in * n_out)
                    .map(|ij| {
                        let (i, j) = (ij / n_out, ij % n_out);
                        let ba: f32 = (0..r).map(|k| b[j * r + k] * a[k * n_in + i]).sum();
                        moved = moved.max(ba.abs());
                        w[ij] + alpha / r as f32 * ba
                    })
                    .collect()
            }
            _ => w.clone(),
        };
        let worst = want
            .iter()
            .zip(got)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-6,
            "{name}: merged differs from base + BA by {worst}"
        );
    }
    assert_eq!(
        targets, 8,
        "c_attn, attn.c_proj, c_fc, mlp.c_proj in 2 layers"
    );
    assert!(
        moved > 1e-4,
        "the adapters did not train ({moved}): the check would be empty"
    );
    // And it loads and runs like the run's own final model.
    let logits = |dir: &Path| -> serde_json::Value {
        let out = run_ok(
            bin()
                .args(["logits", "--prompt", "Count to 3.", "--model"])
                .arg(dir),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (a, b) = (logits(&run.join("final")), logits(&merged));
    assert_eq!(a, b);
    // The template travels with it: chat renders with chatml.
    let tc = std::fs::read_to_string(merged.join("tokenizer_config.json")).unwrap();
    assert!(tc.contains("im_start"));
    assert!(merged.join("manners_template.json").is_file());
    // The parent of run folders (what --out names) is not a run: say which runs it holds.
    let out = bin()
        .args(["export", "--run"])
        .arg(tmp.path())
        .arg("--out")
        .arg(tmp.path().join("nope"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("holds runs") && err.contains(": x;"),
        "{err}"
    );
    // Without --merge a LoRA run exports its adapters (PEFT layout).
    let peft = tmp.path().join("peft");
    let out = bin()
        .args(["export", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&peft)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        peft.join("adapter_model.safetensors").is_file()
            && peft.join("adapter_config.json").is_file()
    );
}

#[test]
fn the_committed_default_set_is_what_build_default_writes() {
    // "Deterministic from a seed; committed": rebuilding from the shipped tables reproduces the
    // files in assets/sft byte for byte.
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        bin()
            .args(["data", "build-default", "--out"])
            .arg(dir.path()),
    );
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/sft");
    for f in manners_assets::DEFAULT_SET_FILES {
        let a = std::fs::read(shipped.join(f)).unwrap();
        let b = std::fs::read(dir.path().join(f)).unwrap();
        assert!(
            a == b,
            "assets/sft/{f} differs from a fresh `manners data build-default`"
        );
    }
}

#[test]
fn a_llama_folder_trains_with_its_own_template_then_chats_and_exports() {
    // No --template: the folder's chat_template.jinja (a Llama-3-style template) is used for
    // training and saved with the model; LoRA on every projection; the export is a Llama
    // folder that reloads with the same logits.
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chats(tmp.path());
    let llama = fixture().with_file_name("tiny-llama");
    run_ok(
        bin()
            .args(["train", "--no-tui", "--max-len", "48", "--batch-size", "4"])
            .args(["--max-steps", "6", "--lora-rank", "4", "--name", "l"])
            .arg("--model")
            .arg(&llama)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(tmp.path()),
    );
    let run = tmp.path().join("l");
    let final_dir = run.join("final");
    let cfg = std::fs::read_to_string(final_dir.join("config.json")).unwrap();
    assert!(cfg.contains("\"model_type\": \"llama\""), "{cfg}");
    let template = std::fs::read_to_string(final_dir.join("chat_template.jinja")).unwrap();
    assert!(template.contains("<|start_header_id|>"), "{template}");
    let adapter = std::fs::read_to_string(run.join("adapter/adapter_config.json")).unwrap();
    assert!(adapter.contains("down_proj") && adapter.contains("\"fan_in_fan_out\": false"));
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("llama 2L/32d/4h (2 kv)"), "{report}");

    let mut child = bin()
        .args(["chat", "--max-new-tokens", "4", "--model"])
        .arg(&final_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Count to 3.\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let merged = tmp.path().join("merged");
    run_ok(
        bin()
            .args(["export", "--merge", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&merged),
    );
    let logits = |dir: &Path| -> serde_json::Value {
        let out = run_ok(
            bin()
                .args(["logits", "--prompt", "Count to 3.", "--model"])
                .arg(dir),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(logits(&final_dir), logits(&merged));
}

#[test]
fn gguf_export_writes_the_file_and_an_ollama_modelfile() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chats(tmp.path());
    run_ok(&mut train_cmd(
        tmp.path(),
        &data,
        &["--name", "g", "--max-steps", "3"],
    ));
    let out = tmp.path().join("model.gguf");
    run_ok(
        bin()
            .args([
                "export", "--format", "gguf", "--dtype", "q8_0", "--ollama", "--run",
            ])
            .arg(tmp.path().join("g"))
            .arg("--out")
            .arg(&out),
    );
    let f = manners::gguf::GgufFile::read(&out).unwrap();
    assert_eq!(
        f.get("general.architecture").and_then(|v| v.as_str()),
        Some("gpt2")
    );
    // The template the run trained with, without training markers, and its end-of-turn token.
    let t = f
        .get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .unwrap();
    assert!(
        t.contains("<|im_start|>") && !t.contains("{% generation") && !t.contains("endgeneration"),
        "{t}"
    );
    assert!(f.get("tokenizer.ggml.eot_token_id").is_some());
    let mf = std::fs::read_to_string(tmp.path().join("Modelfile")).unwrap();
    assert!(
        mf.starts_with("FROM ./model.gguf") && mf.contains("PARAMETER stop \"<|im_end|>\""),
        "{mf}"
    );
    let bad = bin()
        .args(["export", "--format", "gguf", "--dtype", "q4_0", "--run"])
        .arg(tmp.path().join("g"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("f32, f16 or q8_0"));
}

/// The f32 tensors of a safetensors file by name: (shape, values), read with nothing but the
/// format's definition (8-byte header length, JSON header, little-endian data).
fn read_f32_tensors(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, t)| {
            assert_eq!(t["dtype"], "F32", "{k}");
            let shape = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let (a, z) = (
                t["data_offsets"][0].as_u64().unwrap() as usize,
                t["data_offsets"][1].as_u64().unwrap() as usize,
            );
            let v = data[a..z]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k.clone(), (shape, v))
        })
        .collect()
}

/// Settings only a TOML file could set before reach the run from flags (and the run's
/// run.toml records them).
#[test]
fn config_only_settings_have_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chats(tmp.path());
    // The data holds one broken line (41): `--bad-records fail` stops there, naming it.
    let out = train_cmd(tmp.path(), &data, &["--name", "f", "--bad-records", "fail"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("chats.jsonl:41"),
        "{err}"
    );
    let flags = [
        "--name",
        "g",
        "--max-steps",
        "3",
        "--save-every",
        "1",
        "--keep-checkpoints",
        "1",
        "--truncation",
        "drop",
        "--eval-fraction",
        "0.2",
        "--beta1",
        "0.8",
        "--beta2",
        "0.99",
        "--min-lr-ratio",
        "0",
        "--attention-keep-mib",
        "0",
    ];
    run_ok(&mut train_cmd(tmp.path(), &data, &flags));
    let toml = std::fs::read_to_string(tmp.path().join("g/run.toml")).unwrap();
    for line in [
        "keep_checkpoints = 1",
        "truncation = \"drop\"",
        "eval_fraction = 0.2",
        "beta1 = 0.8",
        "beta2 = 0.99",
        "min_lr_ratio = 0.0",
        "attention_keep_mib = 0",
    ] {
        assert!(toml.lines().any(|l| l == line), "{line} missing:\n{toml}");
    }
    let kept = std::fs::read_dir(tmp.path().join("g/checkpoints"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("step-")
        })
        .count();
    // The newest, plus the best held-out one when it is another.
    assert!((1..=2).contains(&kept), "{kept} checkpoints kept");
}

/// `train --dry-run` prepares what the run would and writes nothing; the steps it announces are
/// the steps the run then takes.
#[test]
fn dry_run_reports_the_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chats(tmp.path());
    let flags = ["--name", "d", "--epochs", "1"];
    let out = run_ok(train_cmd(tmp.path(), &data, &flags).arg("--dry-run"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !tmp.path().join("d").exists(),
        "a dry run made the run folder"
    );
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line in:\n{text}"))
            .to_string()
    };
    // 40 good records and one broken line (reported); 5% held out.
    assert!(line("data").contains("38 training examples"), "{text}");
    assert!(text.contains("1 records rejected"), "{text}");
    assert!(line("memory").contains("at peak"), "{text}");
    assert!(text.lines().any(|l| l == "max_len = 48"), "{text}");
    let planned: u64 = line("steps")
        .split(" in all")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    run_ok(&mut train_cmd(tmp.path(), &data, &flags));
    let metrics = std::fs::read_to_string(tmp.path().join("d/metrics.jsonl")).unwrap();
    let steps = metrics
        .lines()
        .filter(|l| l.contains("\"event\":\"step\""))
        .count() as u64;
    assert_eq!(planned, steps, "{text}");
}

/// `data inspect --json`: per example the ids, the token strings and the supervision mask, for
/// other tools; the supervised tokens are the assistant's answer and its end-of-turn token.
#[test]
fn inspect_json_gives_ids_tokens_and_mask() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chats(tmp.path());
    let out = run_ok(
        bin()
            .args([
                "data",
                "inspect",
                "--json",
                "--n",
                "2",
                "--template",
                "plain",
            ])
            .arg("--tokenizer")
            .arg(fixture())
            .arg(&data),
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, v) in lines.iter().enumerate() {
        let n = v["ids"].as_array().unwrap().len();
        assert_eq!(v["tokens"].as_array().unwrap().len(), n);
        let sup = v["supervised"].as_array().unwrap();
        assert_eq!(sup.len(), n);
        assert_eq!(v["line"], i + 1);
        // Count to 0. -> "1." ; Count to 1. -> "1, 2."
        let want = [" 1.<|endoftext|>", " 1, 2.<|endoftext|>"][i];
        let ids: Vec<u32> = v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(sup)
            .filter(|(_, s)| s.as_bool().unwrap())
            .map(|(id, _)| id.as_u64().unwrap() as u32)
            .collect();
        let tok = manners::Tokenizer::from_dir(&fixture()).unwrap();
        assert_eq!(tok.hf().decode(&ids, false).unwrap(), want, "{v}");
        assert!(v["text"].as_str().unwrap().starts_with("User: Count to"));
    }
}

/// `eval` and `compare` report what the library measures on the same data (the library's
/// losses are checked against a hand computation in manners-train's tests), and `--config`
/// reproduces a run from its run.toml.
#[test]
fn eval_compare_and_config_report_what_the_library_measures() {
    use manners::data::{BadRecordPolicy, Format, read_conversations, read_texts};
    use manners::train::eval::{response_loss, text_loss};
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chats(tmp.path());
    let books = tmp.path().join("books.jsonl");
    let lines: Vec<String> = (0..30)
        .map(|i| {
            serde_json::json!({"text": format!("Chapter {i}. It was a quiet morning in the valley.")})
                .to_string()
        })
        .collect();
    std::fs::write(&books, lines.join("\n")).unwrap();
    run_ok(&mut train_cmd(
        tmp.path(),
        &data,
        &["--name", "e", "--max-steps", "20", "--lr", "1e-3"],
    ));
    let tuned = tmp.path().join("e/final");

    // What the library says.
    let dev = manners::select_device(manners::BackendKind::Flex).unwrap();
    let (convs, _) = read_conversations(&data, Format::Auto, BadRecordPolicy::Skip).unwrap();
    let convs = &convs[..6];
    let (docs, _) = read_texts(&books, BadRecordPolicy::Skip).unwrap();
    let t = manners::load_model_dir(&tuned, &dev.device).unwrap();
    let template = manners::chat_template(&t.tokenizer, Some(&tuned), None).unwrap();
    let t_resp = response_loss(&t.model, &t.tokenizer, &template, convs).unwrap();
    let t_text = text_loss(&t.model, &t.tokenizer, &docs).unwrap();
    let b = manners::load_model_dir(&fixture(), &dev.device).unwrap();
    let b_text = text_loss(&b.model, &b.tokenizer, &docs).unwrap();

    let common = |c: &mut Command| {
        c.arg("--data").arg(&data).arg("--text").arg(&books).args([
            "--limit",
            "6",
            "--max-new-tokens",
            "8",
            "--backend",
            "flex",
        ]);
    };
    let mut eval = bin();
    eval.args(["eval", "--json", "--model"]).arg(&tuned);
    common(&mut eval);
    let out = run_ok(&mut eval);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["answers"]["n"], 6);
    assert_eq!(v["response_loss"].as_f64().unwrap(), t_resp);
    assert_eq!(v["text_loss"].as_f64().unwrap(), t_text);

    let mut compare = bin();
    compare
        .args(["compare", "--base"])
        .arg(fixture())
        .arg("--tuned")
        .arg(&tuned);
    common(&mut compare);
    let out = run_ok(&mut compare);
    let table = String::from_utf8_lossy(&out.stdout);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {name}")))
            .unwrap_or_else(|| panic!("no {name} row:\n{table}"))
            .to_string()
    };
    assert!(
        row("held-out response loss").ends_with(&format!("| - | {t_resp:.3} |")),
        "{table}"
    );
    assert!(
        row("raw-text loss").ends_with(&format!("| {b_text:.3} | {t_text:.3} |")),
        "{table}"
    );

    // --config: the run's run.toml trains the same run again under another name.
    let mut again = bin();
    again
        .args(["train", "--no-tui", "--name", "e2", "--config"])
        .arg(tmp.path().join("e/run.toml"));
    run_ok(&mut again);
    let strip = |p: &Path| -> String {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("name ="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&tmp.path().join("e/run.toml")),
        strip(&tmp.path().join("e2/run.toml"))
    );
    let weights =
        |run: &str| std::fs::read(tmp.path().join(run).join("final/model.safetensors")).unwrap();
    assert!(
        weights("e") == weights("e2"),
        "the same config trained other weights"
    );
}

/// `pretrain` at a tiny size: a BPE tokenizer of the asked size trained on the shipped corpus,
/// a model of the asked shape, and a first loss of ln(vocab) (a fresh model with small weights
/// predicts nearly uniformly), then a folder the other commands load.
#[test]
fn pretrain_builds_a_tokenizer_and_model_of_the_asked_size() {
    let tmp = tempfile::tempdir().unwrap();
    run_ok(
        bin()
            .args([
                "pretrain",
                "--vocab-size",
                "300",
                "--n-layer",
                "1",
                "--n-head",
                "2",
            ])
            .args(["--n-embd", "16", "--n-positions", "32", "--max-steps", "2"])
            .args([
                "--focus-steps",
                "0",
                "--fact-repeats",
                "1",
                "--focus-qa-repeats",
                "0",
            ])
            .args([
                "--batch-size",
                "2",
                "--no-tui",
                "--backend",
                "flex",
                "--name",
                "p",
            ])
            .arg("--out")
            .arg(tmp.path()),
    );
    let fin = tmp.path().join("p/final");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fin.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (
            &cfg["vocab_size"],
            &cfg["n_layer"],
            &cfg["n_embd"],
            &cfg["n_positions"]
        ),
        (&300.into(), &1.into(), &16.into(), &32.into())
    );
    let metrics = std::fs::read_to_string(tmp.path().join("p/metrics.jsonl")).unwrap();
    let first: serde_json::Value = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "step")
        .unwrap();
    let loss = first["loss"].as_f64().unwrap();
    assert!(
        (loss - 300f64.ln()).abs() < 0.05,
        "first loss {loss}, ln 300 = {}",
        300f64.ln()
    );
    let out = run_ok(bin().args(["info", "--model"]).arg(&fin));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1L/16d/2h"));
}

/// `experiment lr` (two steps per run): three runs at rates a decade apart, and a write-up
/// whose table is read from those runs (each final train loss is the run's own), with its plot.
#[test]
fn experiment_writes_its_table_from_its_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    run_ok(
        bin()
            .args([
                "experiment",
                "lr",
                "--epochs",
                "0.02",
                "--no-tui",
                "--backend",
                "flex",
            ])
            .arg("--out")
            .arg(&runs)
            .arg("--docs")
            .arg(&docs),
    );
    let md = std::fs::read_to_string(docs.join("experiments/lr.md")).unwrap();
    assert!(docs.join("experiments/lr.png").is_file());
    // The raw text it mixes in is written under --out, not under the working directory.
    assert!(runs.join("data/default-mix-text.jsonl").is_file());
    let rows: Vec<Vec<String>> = md
        .lines()
        .filter(|l| l.starts_with("| lr "))
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(names, ["lr 3e-5", "lr 3e-4", "lr 3e-3"], "{md}");
    let folders: Vec<PathBuf> = md
        .lines()
        .find(|l| l.starts_with("Run folders"))
        .unwrap()
        .split('`')
        .skip(1)
        .step_by(2)
        .map(PathBuf::from)
        .collect();
    assert_eq!(folders.len(), 3, "{md}");
    for (row, dir) in rows.iter().zip(&folders) {
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let fin: serde_json::Value = metrics
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| e["event"] == "finished")
            .unwrap();
        let want = format!("{:.3}", fin["final_loss"].as_f64().unwrap());
        assert_eq!(row[row.len() - 2], want, "{}: {row:?}", dir.display());
    }
}
