//! `manners pretrain`: the shipped base model from the shipped data. Builds the corpus (books +
//! knowledge tables as prose), trains a byte-level BPE on it with the chat special tokens
//! reserved, then pretrains a GPT from scratch with the same trainer as SFT (every token
//! supervised, stream-packed rows), with the dashboard, checkpoints and resume.

use std::process::ExitCode;

use anyhow::{Context, bail};
use manners::data::{CorpusConfig, Knowledge, build_corpus, corpus, load_books};
use manners::events::RunKind;
use manners::train::{InitConfig, TrainConfig};

use crate::args::PretrainArgs;

pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

pub fn run(a: PretrainArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &a.resume {
        let cfg = TrainConfig::from_toml_file(&dir.join("run.toml"))?;
        let device = manners::select_device(cfg.backend.parse()?)?;
        let out = super::train::run_with_ui(cfg, device, Some(dir.clone()), a.no_tui)?;
        eprintln!("base model: {}", out.run_dir.join("final").display());
        return Ok(ExitCode::SUCCESS);
    }
    let assets = super::assets_dir()?;
    let run_dir = a.out.join(&a.name);
    if run_dir.join("run.toml").exists() {
        bail!(
            "{} already holds a run; continue it with --resume {}",
            run_dir.display(),
            run_dir.display()
        );
    }
    let data_dir = run_dir.join("data");
    let tok_dir = run_dir.join("tokenizer");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::create_dir_all(&tok_dir)?;

    // 1. The corpus.
    let books = load_books(&assets.join("corpus"))?;
    let knowledge = Knowledge::load(&assets.join("knowledge"))?;
    let ccfg = CorpusConfig {
        fact_repeats: a.fact_repeats,
        seed: a.seed,
        ..CorpusConfig::default()
    };
    let c = build_corpus(&books, &knowledge, &ccfg);
    eprintln!("corpus: {c}");
    let train_path = data_dir.join("corpus-train.jsonl");
    let heldout_path = data_dir.join("corpus-heldout.jsonl");
    corpus::write_jsonl(&train_path, &c.train)?;
    corpus::write_jsonl(&heldout_path, &c.heldout)?;

    // 2. The tokenizer.
    let t0 = std::time::Instant::now();
    let tok = manners::Tokenizer::train_byte_level_bpe(&c.train, a.vocab_size, &SPECIALS, 2)?;
    tok.save_dir(&tok_dir, a.n_positions)?;
    eprintln!(
        "tokenizer: {} tokens, trained in {:.1}s -> {}",
        tok.vocab_size(),
        t0.elapsed().as_secs_f64(),
        tok_dir.display()
    );

    // 3. The model.
    let cfg = TrainConfig {
        kind: RunKind::Pretrain,
        init: Some(InitConfig {
            n_layer: a.n_layer,
            n_head: a.n_head,
            n_embd: a.n_embd,
            n_positions: a.n_positions,
        }),
        tokenizer: Some(tok_dir),
        data: vec![train_path],
        eval_data: vec![heldout_path],
        max_eval_examples: 64,
        max_len: a.n_positions + 1,
        batch_size: a.batch_size,
        lr: a.lr,
        min_lr_ratio: 0.1,
        warmup_ratio: 0.02,
        epochs: a.epochs,
        max_steps: a.max_steps,
        weight_decay: 0.1,
        beta2: 0.95,
        dropout: 0.0,
        eval_every: 0,
        sample_every: 0,
        save_every: 0,
        keep_checkpoints: 2,
        seed: a.seed,
        sample_prompts: vec![
            "The capital of France is".into(),
            "It is a truth universally acknowledged".into(),
            "Helium is element number".into(),
        ],
        sample_max_new_tokens: 24,
        backend: manners::BackendKind::from(a.backend).name().to_string(),
        out_dir: a.out.clone(),
        name: Some(a.name.clone()),
        ..TrainConfig::default()
    };
    cfg.validate()?;
    let device = manners::select_device(a.backend.into())?;
    let out = super::train::run_with_ui(cfg, device, None, a.no_tui)?;
    match &out.final_dir {
        Some(d) => eprintln!(
            "base model: {} (ship it: cp -r {} assets/base)",
            d.display(),
            d.display()
        ),
        None => eprintln!(
            "stopped; continue with: manners pretrain --resume {}",
            out.run_dir.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
