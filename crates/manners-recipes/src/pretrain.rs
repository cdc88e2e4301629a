//! The shipped base model from the shipped data, in two stages. Builds the corpus (books +
//! knowledge tables as prose), trains a byte-level BPE on it with the chat special tokens
//! reserved, then pretrains a GPT-2 from scratch with the same trainer as SFT (every token
//! supervised, stream-packed rows).
//!
//! 1. Language: the whole corpus.
//! 2. Knowledge focus ("mid-training"): the same model continued at a lower learning rate on a
//!    mix richer in the knowledge prose (fresh sentence forms) plus Q:/A: prose about the
//!    training-split entities of the instruction set, with book text kept in, so the facts
//!    settle without losing the language.
//!
//! A completed stage is reused, so an interrupted curriculum picks up where it stopped.

use std::path::{Path, PathBuf};

use manners::BackendKind;
use manners::data::{BadRecordPolicy, Format, Role, SplitMix64, read_conversations, write_texts};
use manners::events::RunKind;
use manners::train::{InitConfig, TrainConfig, TrainOutcome};
use manners_assets::{CorpusConfig, Knowledge, build_corpus, corpus, load_books};

use crate::error::{RecipeError, Result};

/// The tokens reserved in the trained tokenizer: end of text and ChatML's markers.
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Everything the curriculum needs (`manners pretrain`'s flags).
#[derive(Clone, Debug)]
pub struct PretrainPlan {
    /// Parent folder of the two run folders.
    pub out: PathBuf,
    /// Stage 1's run folder name (stage 2 is `<name>-focus`).
    pub name: String,
    pub vocab_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub epochs: f64,
    pub max_steps: Option<u64>,
    /// Paragraphs per country/element/state in the corpus.
    pub fact_repeats: usize,
    /// Steps of the knowledge-focus stage (0: none).
    pub focus_steps: u64,
    pub focus_lr: f64,
    /// Copies of the instruction set's training questions and answers as "Q:/A:" prose.
    pub focus_qa_repeats: usize,
    /// Share of book text (by characters) in the knowledge-focus mix.
    pub focus_book_fraction: f64,
    pub seed: u64,
    pub backend: BackendKind,
}

impl Default for PretrainPlan {
    fn default() -> Self {
        PretrainPlan {
            out: "runs".into(),
            name: "pretrain".into(),
            vocab_size: 8192,
            n_layer: 4,
            n_head: 4,
            n_embd: 256,
            n_positions: 256,
            batch_size: 16,
            lr: 1e-3,
            epochs: 2.0,
            max_steps: None,
            fact_repeats: 32,
            focus_steps: 700,
            focus_lr: 1e-3,
            focus_qa_repeats: 4,
            focus_book_fraction: 0.2,
            seed: 1234,
            backend: BackendKind::Auto,
        }
    }
}

fn done(run_dir: &Path) -> bool {
    run_dir.join("final/model.safetensors").is_file()
}

/// Runs (or reuses) both stages with `run` and returns the base model folder, with the
/// held-out book text copied beside it (the forgetting measure travels with the model).
pub fn pretrain(
    plan: &PretrainPlan,
    assets: &Path,
    run: &mut dyn FnMut(TrainConfig) -> Result<TrainOutcome>,
) -> Result<PathBuf> {
    let stage1 = plan.out.join(&plan.name);
    let books = load_books(&assets.join("corpus"))?;
    let knowledge = Knowledge::load(&assets.join("knowledge"))?;
    if done(&stage1) {
        eprintln!("stage 1: reusing {}", stage1.display());
    } else {
        refuse_unfinished(&stage1)?;
        stage_one(plan, &stage1, &books, &knowledge, run)?;
    }
    let base = if plan.focus_steps == 0 {
        stage1.join("final")
    } else {
        let stage2 = plan.out.join(format!("{}-focus", plan.name));
        if done(&stage2) {
            eprintln!("stage 2: reusing {}", stage2.display());
        } else {
            refuse_unfinished(&stage2)?;
            stage_two(plan, assets, &stage1, &stage2, &books, &knowledge, run)?;
        }
        stage2.join("final")
    };
    let from = stage1.join("data/corpus-heldout.jsonl");
    let to = base.join("heldout_text.jsonl");
    std::fs::copy(&from, &to).map_err(|e| RecipeError::io(&from, e))?;
    Ok(base)
}

fn refuse_unfinished(run_dir: &Path) -> Result<()> {
    if run_dir.join("run.toml").exists() {
        return Err(RecipeError::Invalid(format!(
            "{} holds an unfinished run; continue it with --resume {}",
            run_dir.display(),
            run_dir.display()
        )));
    }
    Ok(())
}

/// What both stages share.
fn common(plan: &PretrainPlan, name: String) -> TrainConfig {
    TrainConfig {
        kind: RunKind::Pretrain,
        max_eval_examples: 64,
        max_len: plan.n_positions + 1,
        batch_size: plan.batch_size,
        min_lr_ratio: 0.1,
        warmup_ratio: 0.02,
        weight_decay: 0.1,
        beta2: 0.95,
        dropout: 0.0,
        keep_checkpoints: 2,
        seed: plan.seed,
        sample_prompts: vec![
            "The capital of France is".into(),
            "It is a truth universally acknowledged".into(),
            "Helium is element number".into(),
        ],
        sample_max_new_tokens: 24,
        backend: plan.backend,
        out_dir: plan.out.clone(),
        name: Some(name),
        ..TrainConfig::default()
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| RecipeError::io(dir, e))
}

fn stage_one(
    plan: &PretrainPlan,
    run_dir: &Path,
    books: &[(String, String)],
    knowledge: &Knowledge,
    run: &mut dyn FnMut(TrainConfig) -> Result<TrainOutcome>,
) -> Result<()> {
    let data_dir = run_dir.join("data");
    let tok_dir = run_dir.join("tokenizer");
    create_dir(&data_dir)?;
    create_dir(&tok_dir)?;

    // The corpus.
    let ccfg = CorpusConfig {
        fact_repeats: plan.fact_repeats,
        seed: plan.seed,
        ..CorpusConfig::default()
    };
    let c = build_corpus(books, knowledge, &ccfg);
    eprintln!("corpus: {c}");
    let train_path = data_dir.join("corpus-train.jsonl");
    let heldout_path = data_dir.join("corpus-heldout.jsonl");
    write_texts(&train_path, &c.train)?;
    write_texts(&heldout_path, &c.heldout)?;

    // The tokenizer.
    let t0 = std::time::Instant::now();
    let tok = manners::Tokenizer::train_byte_level_bpe(&c.train, plan.vocab_size, &SPECIALS, 2)?;
    tok.save_dir(&tok_dir, plan.n_positions)?;
    eprintln!(
        "tokenizer: {} tokens, trained in {:.1}s -> {}",
        tok.vocab_size(),
        t0.elapsed().as_secs_f64(),
        tok_dir.display()
    );

    // The model, from scratch.
    let cfg = TrainConfig {
        init: Some(InitConfig {
            n_layer: plan.n_layer,
            n_head: plan.n_head,
            n_embd: plan.n_embd,
            n_positions: plan.n_positions,
        }),
        tokenizer: Some(tok_dir),
        data: vec![train_path],
        eval_data: vec![heldout_path],
        lr: plan.lr,
        epochs: plan.epochs,
        max_steps: plan.max_steps,
        ..common(plan, plan.name.clone())
    };
    run_stage(1, cfg, run)
}

/// The instruction set's conversations without a system prompt, each as "Q: ...\nA: ..." lines.
fn qa_paragraphs(path: &Path) -> Result<Vec<String>> {
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
    run: &mut dyn FnMut(TrainConfig) -> Result<TrainOutcome>,
) -> Result<()> {
    cfg.validate()?;
    let out = run(cfg)?;
    if out.final_dir.is_none() {
        return Err(RecipeError::Invalid(format!(
            "stage {stage} stopped; continue with: manners pretrain --resume {}",
            out.run_dir.display()
        )));
    }
    Ok(())
}

fn stage_two(
    plan: &PretrainPlan,
    assets: &Path,
    stage1: &Path,
    run_dir: &Path,
    books: &[(String, String)],
    knowledge: &Knowledge,
    run: &mut dyn FnMut(TrainConfig) -> Result<TrainOutcome>,
) -> Result<()> {
    let data_dir = run_dir.join("data");
    create_dir(&data_dir)?;
    // Fresh sentence forms (another seed) for every fact, four times as many paragraphs as in
    // stage 1, with book text drawn from stage 1's training documents (never the held-out
    // ones) making up `focus_book_fraction` of the characters.
    if !(0.0..1.0).contains(&plan.focus_book_fraction) {
        return Err(RecipeError::Invalid(
            "the focus book fraction must be in [0, 1)".into(),
        ));
    }
    let kcfg = CorpusConfig {
        fact_repeats: plan.fact_repeats * 4,
        word_repeats: 0,
        seed: plan.seed + 1,
        ..CorpusConfig::default()
    };
    let mut paragraphs = corpus::knowledge_paragraphs(knowledge, &kcfg);
    // Questions and answers about the TRAINING-split entities of the instruction set, as plain
    // "Q:/A:" prose (no chat tokens): learning facts together with questions about some of them
    // is what lets a model answer questions about the others later ("mixed training", Allen-Zhu
    // & Li, Physics of Language Models 3.1). Held-out entities never appear in this form.
    let qa = qa_paragraphs(&assets.join("sft/train.jsonl"))?;
    for _ in 0..plan.focus_qa_repeats {
        paragraphs.extend(qa.iter().cloned());
    }
    SplitMix64::new(plan.seed + 3).shuffle(&mut paragraphs);
    let mut docs = corpus::group_paragraphs(paragraphs, 1500);
    let knowledge_chars: usize = docs.iter().map(String::len).sum();
    let stage1_docs = build_corpus(
        books,
        knowledge,
        &CorpusConfig {
            fact_repeats: 0,
            word_repeats: 1,
            seed: plan.seed,
            ..CorpusConfig::default()
        },
    );
    let book_target = (knowledge_chars as f64 * plan.focus_book_fraction
        / (1.0 - plan.focus_book_fraction)) as usize;
    let mut book_chars = 0;
    for d in stage1_docs.train {
        if book_chars >= book_target {
            break;
        }
        book_chars += d.len();
        docs.push(d);
    }
    SplitMix64::new(plan.seed + 2).shuffle(&mut docs);
    let train_path = data_dir.join("focus-train.jsonl");
    write_texts(&train_path, &docs)?;
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
        lr: plan.focus_lr,
        max_steps: Some(plan.focus_steps),
        warmup_ratio: 0.05,
        ..common(plan, format!("{}-focus", plan.name))
    };
    run_stage(2, cfg, run)
}
