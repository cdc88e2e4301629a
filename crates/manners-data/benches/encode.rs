//! Encode throughput on a realistic instruction set (harness = false):
//!
//!     CARGO_TARGET_DIR=/work/target-data cargo bench -p manners-data --bench encode
//!
//! Prints examples/s and tokens/s per template (median of several runs) and the loader's
//! batching rate. The bar: encoding must be at least 100x the training token rate
//! (~4k tok/s on the 2-core CI machine, so >= 400k tok/s).

#[allow(dead_code)]
#[path = "../tests/it/common.rs"]
mod common;

use std::time::Instant;

use manners_data::{
    BatchConfig, ChatTemplate, Conversation, LengthPolicy, Loader, MaskMode, Message,
    SpecialTokens, SplitMix64, encode_dataset,
};

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "capital",
    "country",
    "river",
    "element",
    "number",
    "atomic",
    "population",
    "language",
    "currency",
    "history",
    "explain",
    "describe",
    "because",
    "however",
    "therefore",
    "example",
    "important",
    "first",
    "second",
    "answer",
    "question",
    "Paris",
    "France",
    "Madrid",
    "Spain",
    "oxygen",
    "hydrogen",
    "1492",
    "42",
    "3.14",
    "e.g.",
    "(see",
    "below)",
    "well-known",
    "don't",
    "it's",
    "—",
    "café",
];

/// Rare words: every alphabetic, space-prefixed GPT-2 token (~30k), so the BPE word cache
/// misses about as often as on real text.
fn rare_words() -> Vec<String> {
    let path = common::assets().join("vocab.json");
    let text = std::fs::read_to_string(path).expect("vocab.json");
    let vocab: std::collections::HashMap<String, u32> = serde_json::from_str(&text).expect("vocab");
    let mut words: Vec<String> = vocab
        .keys()
        .filter_map(|k| k.strip_prefix('\u{120}'))
        .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_alphabetic()))
        .map(str::to_string)
        .collect();
    words.sort_unstable();
    words
}

fn sentence(rng: &mut SplitMix64, rare: &[String], words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        // Zipf-like: 70% common words, 30% drawn from the long tail.
        let w = if rng.below(10) < 7 {
            WORDS[rng.below(WORDS.len() as u64) as usize]
        } else {
            rare[rng.below(rare.len() as u64) as usize].as_str()
        };
        if i == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                s.extend(f.to_uppercase());
                s.push_str(c.as_str());
            }
        } else {
            s.push_str(w);
        }
        if rng.below(12) == 0 {
            s.push(if rng.below(3) == 0 { '\n' } else { ',' });
        }
    }
    s.push('.');
    s
}

/// 2000 conversations: 30% with a system prompt, 1-3 turns, user 8-60 words, assistant
/// 20-250 words (a typical instruction set; ~450 GPT-2 tokens per example).
fn dataset() -> Vec<Conversation> {
    let rare = rare_words();
    let mut rng = SplitMix64::new(2024);
    (0..2000)
        .map(|_| {
            let mut m = Vec::new();
            if rng.below(10) < 3 {
                m.push(Message::system(sentence(&mut rng, &rare, 12)));
            }
            for _ in 0..1 + rng.below(3) {
                let u = 8 + rng.below(53) as usize;
                let a = 20 + rng.below(231) as usize;
                m.push(Message::user(sentence(&mut rng, &rare, u)));
                m.push(Message::assistant(sentence(&mut rng, &rare, a)));
            }
            Conversation::new(m)
        })
        .collect()
}

fn median(v: Vec<f64>) -> f64 {
    manners_events::stats::median(v).unwrap_or(f64::NAN)
}

fn main() {
    let tok = common::gpt2_chat();
    let data = dataset();
    let gpt2 = SpecialTokens::gpt2();
    let llama = SpecialTokens {
        bos: Some("<s>".into()),
        eos: Some("</s>".into()),
        ..SpecialTokens::default()
    };
    let chatml = ChatTemplate::builtin("chatml", &gpt2).expect("chatml");
    let templates = vec![
        ("chatml", chatml.clone()),
        (
            "plain",
            ChatTemplate::builtin("plain", &gpt2).expect("plain"),
        ),
        (
            "llama2",
            ChatTemplate::builtin("llama2", &llama).expect("llama2"),
        ),
        (
            "jinja (exported chatml)",
            ChatTemplate::from_jinja(&chatml.to_jinja(), &gpt2).expect("jinja"),
        ),
    ];
    let runs = 5;
    // The first run warms the BPE word cache, as the first steps of training would; the
    // median is of the runs after it.
    println!(
        "encode throughput: {} conversations, {} threads, median of {runs} runs",
        data.len(),
        rayon::current_num_threads()
    );
    println!(
        "{:<26} {:>12} {:>14} {:>12} {:>10}",
        "template", "examples/s", "tokens/s", "tokens", "x 4k tok/s"
    );
    let mut kept = Vec::new();
    for (name, t) in &templates {
        let mut rates = Vec::new();
        let mut tokens = 0;
        for run in 0..=runs {
            let start = Instant::now();
            let (enc, rep) = encode_dataset(
                &data,
                t,
                &tok,
                MaskMode::Assistant,
                4096,
                LengthPolicy::Drop,
            )
            .expect("encode");
            let dt = start.elapsed().as_secs_f64();
            tokens = rep.tokens;
            if run == 0 {
                println!(
                    "{:<26} {:>12.0} {:>14.0} {:>12} (first run, cold cache)",
                    name,
                    data.len() as f64 / dt,
                    tokens as f64 / dt,
                    tokens
                );
                continue;
            }
            rates.push(dt);
            if *name == "chatml" {
                kept = enc;
            }
        }
        let dt = median(rates);
        let tps = tokens as f64 / dt;
        println!(
            "{:<26} {:>12.0} {:>14.0} {:>12} {:>10.0}",
            name,
            data.len() as f64 / dt,
            tps,
            tokens,
            tps / 4000.0
        );
    }
    // Batching on the host (packing + assembling HostBatch).
    let total: usize = kept.iter().map(|e| e.n_positions()).sum();
    let cfg = BatchConfig {
        batch_size: 8,
        seq_len: 4095,
        ..BatchConfig::default()
    };
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let mut l = Loader::new(kept.clone(), cfg.clone()).expect("loader");
        let mut n = 0;
        for _ in 0..l.steps_per_epoch() {
            n += l.next_batch().expect("batch").n_tokens;
        }
        assert_eq!(n, total);
        times.push(start.elapsed().as_secs_f64());
    }
    println!(
        "{:<26} {:>12} {:>14.0} {:>12} (pack + batch, one epoch)",
        "loader",
        "",
        total as f64 / median(times),
        total
    );
}
