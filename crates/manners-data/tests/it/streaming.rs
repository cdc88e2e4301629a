//! Datasets read as a stream into a token store give the examples the in-memory path gives.

use std::io::Write;

use manners_data::{
    BadRecordPolicy, ChatTemplate, Conversation, Examples, Format, LengthPolicy, MaskMode,
    QualityFilter, SpecialTokens, StreamOptions, dedup_key, encode_dataset, encode_files,
    read_conversations, split_heldout_at_most,
};

use crate::common::gpt2_chat;

/// `n` conversations over `kinds` distinct questions (so some repeat), with a bad record every
/// 997 lines and some answers too long for `max_len`.
fn write_dataset(path: &std::path::Path, n: usize, kinds: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        if i % 997 == 500 {
            writeln!(f, "{{\"messages\": [{{\"role\": \"user\"}}]}}").unwrap();
            continue;
        }
        let k = i % kinds;
        let answer = if k.is_multiple_of(13) {
            "a very long answer that goes on and on ".repeat(6)
        } else {
            format!("answer {k}")
        };
        writeln!(
            f,
            "{}",
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("question {k}?")},
                {"role": "assistant", "content": answer},
            ]})
        )
        .unwrap();
    }
}

#[test]
fn streamed_examples_equal_the_in_memory_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Two files, and more conversations than one encoding chunk (4,096).
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl.gz");
    write_dataset(&a, 5000, 5000);
    {
        let tmp = dir.path().join("b.jsonl");
        write_dataset(&tmp, 700, 700);
        let raw = std::fs::read(&tmp).unwrap();
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&b).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(&raw).unwrap();
        gz.finish().unwrap();
    }
    let tok = gpt2_chat();
    let template = ChatTemplate::builtin("chatml", &SpecialTokens::gpt2()).unwrap();
    let files = vec![a.clone(), b.clone()];
    let opts = StreamOptions {
        format: Format::Auto,
        policy: BadRecordPolicy::Skip,
        heldout_fraction: 0.05,
        max_heldout: 100,
        seed: 42,
        dedup: false,
        quality: None,
        template: &template,
        tokenizer: &tok,
        mask: MaskMode::Assistant,
        max_len: 40,
        truncation: LengthPolicy::Drop,
        store_dir: dir.path(),
    };
    let got = encode_files(&files, &opts).unwrap();

    // The same through memory.
    let mut all: Vec<Conversation> = Vec::new();
    let mut rejected = 0;
    for f in &files {
        let (c, r) = read_conversations(f, Format::Auto, BadRecordPolicy::Skip).unwrap();
        rejected += r.n_rejected();
        all.extend(c);
    }
    assert_eq!(rejected, 5 + 1);
    let (train, held) = split_heldout_at_most(&all, 0.05, 42, 100);
    assert_eq!(held.len(), 100);
    let (want, want_report) = encode_dataset(
        &train,
        &template,
        &tok,
        MaskMode::Assistant,
        40,
        LengthPolicy::Drop,
    )
    .unwrap();
    assert!(want_report.dropped_too_long > 300, "{want_report}");

    let read_rejected: usize = got.read.iter().map(|(_, r)| r.n_rejected()).sum();
    assert_eq!(read_rejected, rejected);
    assert_eq!(got.heldout, held);
    assert_eq!(got.encode, want_report);
    let store = got.train.finish().unwrap();
    assert_eq!(store.len(), want.len());
    for (i, e) in want.iter().enumerate() {
        assert_eq!(&store.get(i).unwrap(), e, "example {i}");
    }
    assert_eq!(
        store.fingerprint(),
        Examples::from(want.clone()).fingerprint()
    );
}

#[test]
fn streamed_dedup_and_quality_filter() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    // 3,000 records over 1,000 distinct conversations: each appears three times.
    write_dataset(&a, 3000, 1000);
    let tok = gpt2_chat();
    let template = ChatTemplate::builtin("chatml", &SpecialTokens::gpt2()).unwrap();
    let quality = QualityFilter {
        max_response_tokens: 20,
        ..QualityFilter::default()
    };
    let opts = StreamOptions {
        format: Format::Auto,
        policy: BadRecordPolicy::Skip,
        heldout_fraction: 0.1,
        max_heldout: 50,
        seed: 7,
        dedup: true,
        quality: Some(quality),
        template: &template,
        tokenizer: &tok,
        mask: MaskMode::Assistant,
        max_len: 1000,
        truncation: LengthPolicy::Drop,
        store_dir: dir.path(),
    };
    let got = encode_files(std::slice::from_ref(&a), &opts).unwrap();
    let (all, _) = read_conversations(&a, Format::Auto, BadRecordPolicy::Skip).unwrap();
    let distinct: std::collections::HashSet<String> = all.iter().map(dedup_key).collect();
    let dd = got.dedup.as_ref().unwrap();
    assert_eq!(dd.examples, all.len());
    assert_eq!(dd.kept, distinct.len());
    // Every long answer (k % 13 == 0) fails the quality filter; nothing else does.
    let q = got.quality.as_ref().unwrap();
    let long = distinct
        .iter()
        .filter(|k| k.contains("a very long answer"))
        .count();
    assert_eq!(q.examples, distinct.len());
    assert_eq!(q.kept, distinct.len() - long);
    // Kept conversations are either held out or trained on, never both, and each once.
    let store = got.train.finish().unwrap();
    assert_eq!(store.len() + got.heldout.len(), q.kept);
    assert!(!got.heldout.is_empty() && got.heldout.len() <= 50);
    let held: std::collections::HashSet<String> = got.heldout.iter().map(dedup_key).collect();
    assert_eq!(held.len(), got.heldout.len());
    let mut trained = std::collections::HashSet::new();
    for i in 0..store.len() {
        let text = tok.decode(&store.get(i).unwrap().ids, false).unwrap();
        assert!(trained.insert(text.clone()), "trained twice: {text}");
    }
    for h in &got.heldout {
        let text = tok
            .decode(
                &template.encode(h, &tok, MaskMode::Assistant).unwrap().ids,
                false,
            )
            .unwrap();
        assert!(!trained.contains(&text), "held out and trained: {text}");
    }
}
