//! `manners pretrain`: the shipped base model from the shipped data. Builds the corpus (books +
//! knowledge tables as prose), trains a byte-level BPE on it with the chat special tokens
//! reserved, then pretrains a GPT from scratch with the same trainer as SFT (every token
//! supervised, stream-packed rows), with the dashboard, checkpoints and resume.
//!
//! Two stages: (1) the whole corpus; (2) a short knowledge-focus stage ("mid-training"): the
//! same model continued at a lower learning rate on a mix richer in the knowledge prose (fresh
//! sentence forms) with book text kept in, so the facts settle without losing the language.
//! A completed stage is reused, so an interrupted `manners pretrain` picks up where it stopped.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use manners::data::{CorpusConfig, Knowledge, SplitMix64, build_corpus, corpus, load_books};
use manners::events::RunKind;
use manners::train::{InitConfig, TrainConfig};

use crate::args::PretrainArgs;

pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

fn done(run_dir: &Path) -> bool {
    run_dir.join("final/model.safetensors").is_file()
}

pub fn run(a: PretrainArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &a.resume {
        let cfg = TrainConfig::from_toml_file(&dir.join("run.toml"))?;
        let device = manners::select_device(cfg.backend.parse()?)?;
        let out = super::train::run_with_ui(cfg, device, Some(dir.clone()), a.no_tui)?;
        eprintln!(
            "finished {}; run `manners pretrain` again to go on to the next stage",
            out.run_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let assets = super::assets_dir()?;
    let stage1 = a.out.join(&a.name);
    let books = load_books(&assets.join("corpus"))?;
    let knowledge = Knowledge::load(&assets.join("knowledge"))?;
    let device = manners::select_device(a.backend.into())?;
    if done(&stage1) {
        eprintln!("stage 1: reusing {}", stage1.display());
    } else {
        if stage1.join("run.toml").exists() {
            bail!(
                "{} holds an unfinished run; continue it with --resume {}",
                stage1.display(),
                stage1.display()
            );
        }
        stage_one(&a, &stage1, &books, &knowledge, device.clone())?;
    }
    let base = if a.focus_steps == 0 {
        stage1.join("final")
    } else {
        let stage2 = a.out.join(format!("{}-focus", a.name));
        if done(&stage2) {
            eprintln!("stage 2: reusing {}", stage2.display());
        } else {
            if stage2.join("run.toml").exists() {
                bail!(
                    "{} holds an unfinished run; continue it with --resume {}",
                    stage2.display(),
                    stage2.display()
                );
            }
            stage_two(&a, &assets, &stage1, &stage2, &books, &knowledge, device)?;
        }
        stage2.join("final")
    };
    // The held-out book text travels with the base model: the forgetting measure.
    std::fs::copy(
        stage1.join("data/corpus-heldout.jsonl"),
        base.join("heldout_text.jsonl"),
    )
    .context("copying the held-out raw text beside the base model")?;
    eprintln!(
        "base model: {} (ship it: rm -rf assets/base && cp -r {} assets/base)",
        base.display(),
        base.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn common(a: &PretrainArgs, name: String) -> TrainConfig {
    TrainConfig {
        kind: RunKind::Pretrain,
        max_eval_examples: 64,
        max_len: a.n_positions + 1,
        batch_size: a.batch_size,
        min_lr_ratio: 0.1,
        warmup_ratio: 0.02,
        weight_decay: 0.1,
        beta2: 0.95,
        dropout: 0.0,
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
        name: Some(name),
        ..TrainConfig::default()
    }
}

fn stage_one(
    a: &PretrainArgs,
    run_dir: &Path,
    books: &[(String, String)],
    knowledge: &Knowledge,
    device: manners::DeviceChoice,
) -> anyhow::Result<()> {
    let data_dir = run_dir.join("data");
    let tok_dir = run_dir.join("tokenizer");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::create_dir_all(&tok_dir)?;

    // The corpus.
    let ccfg = CorpusConfig {
        fact_repeats: a.fact_repeats,
        seed: a.seed,
        ..CorpusConfig::default()
    };
    let c = build_corpus(books, knowledge, &ccfg);
    eprintln!("corpus: {c}");
    let train_path = data_dir.join("corpus-train.jsonl");
    let heldout_path = data_dir.join("corpus-heldout.jsonl");
    corpus::write_jsonl(&train_path, &c.train)?;
    corpus::write_jsonl(&heldout_path, &c.heldout)?;

    // The tokenizer.
    let t0 = std::time::Instant::now();
    let tok = manners::Tokenizer::train_byte_level_bpe(&c.train, a.vocab_size, &SPECIALS, 2)?;
    tok.save_dir(&tok_dir, a.n_positions)?;
    eprintln!(
        "tokenizer: {} tokens, trained in {:.1}s -> {}",
        tok.vocab_size(),
        t0.elapsed().as_secs_f64(),
        tok_dir.display()
    );

    // The model, from scratch.
    let cfg = TrainConfig {
        init: Some(InitConfig {
            n_layer: a.n_layer,
            n_head: a.n_head,
            n_embd: a.n_embd,
            n_positions: a.n_positions,
        }),
        tokenizer: Some(tok_dir),
        data: vec![train_path],
        eval_data: vec![heldout_path],
        lr: a.lr,
        epochs: a.epochs,
        max_steps: a.max_steps,
        ..common(a, a.name.clone())
    };
    run_stage(1, cfg, device, a.no_tui)
}

/// The instruction set's conversations without a system prompt, each as "Q: ...\nA: ..." lines.
fn qa_paragraphs(path: &Path) -> anyhow::Result<Vec<String>> {
    use manners::data::{BadRecordPolicy, Format, Role, read_conversations};
    let (convs, _) = read_conversations(path, Format::Auto, BadRecordPolicy::Fail)?;
    Ok(convs
        .iter()
        .filter(|c| c.messages.iter().all(|m| m.role != Role::System))
        .map(|c| {
            c.messages
                .iter()
                .map(|m| match m.role {
                    Role::User => format!("Q: {}", m.content.trim()),
                    _ => format!("A: {}", m.content.trim()),
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect())
}

/// Trains one stage; an interrupted stage is an error that says how to continue it.
fn run_stage(
    stage: u8,
    cfg: TrainConfig,
    device: manners::DeviceChoice,
    no_tui: bool,
) -> anyhow::Result<()> {
    cfg.validate()?;
    let out = super::train::run_with_ui(cfg, device, None, no_tui)?;
    if out.final_dir.is_none() {
        bail!(
            "stage {stage} stopped; continue with: manners pretrain --resume {}",
            out.run_dir.display()
        );
    }
    Ok(())
}

fn stage_two(
    a: &PretrainArgs,
    assets: &Path,
    stage1: &Path,
    run_dir: &Path,
    books: &[(String, String)],
    knowledge: &Knowledge,
    device: manners::DeviceChoice,
) -> anyhow::Result<()> {
    let data_dir = run_dir.join("data");
    std::fs::create_dir_all(&data_dir)?;
    // Fresh sentence forms (another seed) for every fact, four times as many paragraphs as in
    // stage 1, with book text drawn from stage 1's training documents (never the held-out
    // ones) making up `focus_book_fraction` of the characters.
    if !(0.0..1.0).contains(&a.focus_book_fraction) {
        bail!("--focus-book-fraction must be in [0, 1)");
    }
    let kcfg = CorpusConfig {
        fact_repeats: a.fact_repeats * 4,
        word_repeats: 0,
        seed: a.seed + 1,
        ..CorpusConfig::default()
    };
    let mut paragraphs = corpus::knowledge_paragraphs(knowledge, &kcfg);
    // Questions and answers about the TRAINING-split entities of the instruction set, as plain
    // "Q:/A:" prose (no chat tokens): learning facts together with questions about some of them
    // is what lets a model answer questions about the others later ("mixed training", Allen-Zhu
    // & Li, Physics of Language Models 3.1). Held-out entities never appear in this form.
    let qa = qa_paragraphs(&assets.join("sft/train.jsonl"))?;
    for _ in 0..a.focus_qa_repeats {
        paragraphs.extend(qa.iter().cloned());
    }
    SplitMix64::new(a.seed + 3).shuffle(&mut paragraphs);
    let mut docs = corpus::group_paragraphs(paragraphs, 1500);
    let knowledge_chars: usize = docs.iter().map(String::len).sum();
    let stage1_docs = build_corpus(
        books,
        knowledge,
        &CorpusConfig {
            fact_repeats: 0,
            word_repeats: 1,
            seed: a.seed,
            ..CorpusConfig::default()
        },
    );
    let book_target =
        (knowledge_chars as f64 * a.focus_book_fraction / (1.0 - a.focus_book_fraction)) as usize;
    let mut book_chars = 0;
    for d in stage1_docs.train {
        if book_chars >= book_target {
            break;
        }
        book_chars += d.len();
        docs.push(d);
    }
    SplitMix64::new(a.seed + 2).shuffle(&mut docs);
    let train_path = data_dir.join("focus-train.jsonl");
    corpus::write_jsonl(&train_path, &docs)?;
    eprintln!(
        "stage 2: {} documents ({:.1} M characters of knowledge prose, {:.1} M of book text)",
        docs.len(),
        knowledge_chars as f64 / 1e6,
        book_chars as f64 / 1e6
    );
    let cfg = TrainConfig {
        model: Some(stage1.join("final")),
        data: vec![train_path],
        eval_data: vec![stage1.join("data/corpus-heldout.jsonl")],
        lr: a.focus_lr,
        max_steps: Some(a.focus_steps),
        warmup_ratio: 0.05,
        ..common(a, format!("{}-focus", a.name))
    };
    run_stage(2, cfg, device, a.no_tui)
}
