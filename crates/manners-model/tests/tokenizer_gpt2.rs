//! The GPT-2 tokenizer built from the shipped vocab.json + merges.txt matches the 47 cases of
//! llama.cpp's independent GPT-2 tokenizer test (`ggml-vocab-gpt-2.gguf.inp/.out`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;

use manners_model::Tokenizer;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn gpt2() -> Tokenizer {
    Tokenizer::from_dir(&root().join("../../assets/gpt2-tokenizer")).expect("gpt2 tokenizer")
}

#[test]
fn matches_all_llama_cpp_cases() {
    let data = root().join("tests/data");
    let inp = std::fs::read_to_string(data.join("ggml-vocab-gpt-2.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(data.join("ggml-vocab-gpt-2.gguf.out")).unwrap();
    // Cases are separated by "\n__ggml_vocab_test__\n" (the file ends with one, so the last case
    // is the empty string); expected ids are one line per case.
    let cases: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let expected: Vec<Vec<u32>> = out
        .split('\n')
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(cases.len(), 47);
    assert_eq!(expected.len(), 47);
    let tok = gpt2();
    let mut failures = Vec::new();
    for (i, (text, want)) in cases.iter().zip(&expected).enumerate() {
        let got = tok.encode(text).unwrap();
        if &got != want {
            failures.push(format!("case {i} {text:?}: got {got:?}, want {want:?}"));
        }
        // Byte-level BPE is lossless.
        assert_eq!(
            tok.decode(&got, false),
            *text,
            "case {i} does not round-trip"
        );
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn endoftext_is_special() {
    let tok = gpt2();
    assert_eq!(
        tok.encode("Hello world<|endoftext|>").unwrap(),
        vec![15496, 995, 50256]
    );
    assert_eq!(tok.eos_id(), Some(50256));
    assert_eq!(tok.bos_id(), None, "GPT-2 inserts no BOS");
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.decode(&[15496, 995, 50256], true), "Hello world");
}

#[test]
fn adding_special_tokens_grows_the_vocab_once() {
    let mut tok = gpt2();
    let ids = tok.add_special_tokens(&["<|im_start|>", "<|im_end|>", "<|endoftext|>"]);
    assert_eq!(ids, vec![50257, 50258]);
    assert_eq!(tok.vocab_size(), 50259);
    assert!(tok.add_special_tokens(&["<|im_start|>"]).is_empty());
    // Markers are single tokens and never merge with neighbouring text.
    assert_eq!(
        tok.encode("<|im_start|>user\nHi<|im_end|>").unwrap(),
        vec![50257, 7220, 198, 17250, 50258]
    );
}

#[test]
fn trains_a_byte_level_bpe_with_reserved_specials() {
    let texts: Vec<String> = (0..200)
        .map(|i| {
            format!("The capital of Peru is Lima. Emma Woodhouse, handsome, clever, and rich {i}.")
        })
        .collect();
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let tok = Tokenizer::train_byte_level_bpe(&texts, 400, &specials, 2).unwrap();
    assert!(
        tok.vocab_size() <= 400 && tok.vocab_size() > 256 + 3,
        "{}",
        tok.vocab_size()
    );
    assert_eq!(tok.token_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.eos_id(), Some(0));
    // Frequent words became single tokens; any text (bytes outside the corpus too) round-trips.
    assert_eq!(tok.encode(" capital").unwrap().len(), 1);
    for text in [
        "The capital of Peru is Lima.",
        "Zürich — 東京 🙂",
        "<|im_start|>user\nhi<|im_end|>",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids, false), text);
    }
    assert_eq!(tok.encode("<|im_start|>").unwrap(), vec![1]);
    // Saved and loaded back, it is the same tokenizer.
    let dir = tempfile::tempdir().unwrap();
    tok.save_dir(dir.path(), 256).unwrap();
    let back = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(
        back.encode("The capital of Peru is Lima.").unwrap(),
        tok.encode("The capital of Peru is Lima.").unwrap()
    );
    assert_eq!(back.eos_token(), Some("<|endoftext|>"));
}
