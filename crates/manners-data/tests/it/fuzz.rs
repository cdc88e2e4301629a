//! Fuzz-style: thousands of random and mutated lines; nothing panics and every rejection is
//! counted.

use std::io::Write;

use manners_data::{
    BadRecordPolicy, Format, SplitMix64, parse_conversation, read_conversations, read_texts,
};

const SEEDS: &[&str] = &[
    r#"{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "train": true}]}"#,
    r#"{"instruction": "Add", "input": "1 2", "output": "3", "system": "calc"}"#,
    r#"{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}"#,
    r#"{"prompt": "q", "completion": "a"}"#,
    r#"{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]}"#,
    r#"{"system": "s", "user": "u", "assistant": "a"}"#,
    r#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}, {"role": "assistant", "content": "b"}]}"#,
    r#"{"text": "raw"}"#,
];

const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "1e999",
    "-0",
    "\"role\"",
    "\"user\"",
    "\"assistant\"",
    "\"system\"",
    "\"content\"",
    "\"messages\"",
    "\"\"",
    "\\u0000",
    "\\ud800",
    "\u{FDD0}",
    "é",
    "🦀",
    " ",
    "\t",
    "\\",
];

fn mutate(line: &str, rng: &mut SplitMix64) -> Vec<u8> {
    let mut b = line.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(b.len() as u64 + 1) as usize;
        match rng.below(6) {
            0 => {
                if at < b.len() {
                    b[at] ^= 1 << rng.below(8);
                }
            }
            1 => b.truncate(at),
            2 => {
                let p = PIECES[rng.below(PIECES.len() as u64) as usize];
                b.splice(at..at, p.bytes());
            }
            3 => {
                let end = (at + rng.below(12) as usize).min(b.len());
                b.drain(at..end);
            }
            4 => b.insert(at.min(b.len()), rng.below(256) as u8),
            _ => {
                // swap a role for another word
                let s = String::from_utf8_lossy(&b)
                    .replace("assistant", "bot")
                    .replace("gpt", "user");
                b = s.into_bytes();
            }
        }
    }
    b.retain(|&c| c != b'\n');
    b
}

fn lines(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let base = SEEDS[rng.below(SEEDS.len() as u64) as usize];
            match rng.below(5) {
                0 => base.as_bytes().to_vec(),
                1 => (0..rng.below(80))
                    .map(|_| rng.below(256) as u8)
                    .filter(|&c| c != b'\n')
                    .collect(),
                _ => mutate(base, &mut rng),
            }
        })
        .collect()
}

#[test]
fn thousands_of_mutated_lines_never_panic_and_all_rejections_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ls = lines(5000, 1234);
    let path = dir.path().join("fuzz.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut non_blank = 0;
    for l in &ls {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
        if !l.iter().all(u8::is_ascii_whitespace) {
            non_blank += 1;
        }
    }
    drop(f);
    for format in [
        Format::Auto,
        Format::Messages,
        Format::Alpaca,
        Format::ShareGpt,
        Format::PromptCompletion,
        Format::Plain,
    ] {
        let (convs, r) = read_conversations(&path, format, BadRecordPolicy::Skip).unwrap();
        assert_eq!(r.records, non_blank);
        assert_eq!(r.records, r.accepted + r.n_rejected(), "{format}: {r}");
        assert_eq!(convs.len(), r.accepted);
        assert!(convs.iter().all(|c| c.validate().is_ok()));
        assert!(
            r.n_rejected() > 0 && (format != Format::Auto || r.accepted > 500),
            "{r}"
        );
        // `fail` stops at the first rejection with file:line.
        match read_conversations(&path, format, BadRecordPolicy::Fail) {
            Ok((c, _)) => assert_eq!(c.len(), r.records),
            Err(e) => {
                let first = &r.first_rejections[0];
                assert!(
                    e.to_string().starts_with(&format!(
                        "{}:{}:",
                        path.display(),
                        first.origin.line
                    )),
                    "{e}"
                );
            }
        }
    }
    let (_, tr) = read_texts(&path, BadRecordPolicy::Skip).unwrap();
    assert_eq!(tr.records, tr.accepted + tr.n_rejected());
}

#[test]
fn random_json_values_never_panic() {
    let mut rng = SplitMix64::new(99);
    fn value(rng: &mut SplitMix64, depth: u32) -> serde_json::Value {
        use serde_json::Value;
        let keys = [
            "messages",
            "role",
            "content",
            "train",
            "instruction",
            "input",
            "output",
            "conversations",
            "from",
            "value",
            "prompt",
            "completion",
            "system",
            "user",
            "assistant",
            "text",
            "type",
        ];
        let strs = [
            "user",
            "assistant",
            "system",
            "human",
            "gpt",
            "",
            " ",
            "x",
            "text",
        ];
        match if depth > 3 {
            rng.below(4)
        } else {
            rng.below(7)
        } {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 0),
            2 => Value::from(rng.below(10)),
            3 => Value::from(strs[rng.below(strs.len() as u64) as usize]),
            4 | 5 => {
                let mut m = serde_json::Map::new();
                for _ in 0..rng.below(5) {
                    m.insert(
                        keys[rng.below(keys.len() as u64) as usize].into(),
                        value(rng, depth + 1),
                    );
                }
                Value::Object(m)
            }
            _ => Value::Array((0..rng.below(4)).map(|_| value(rng, depth + 1)).collect()),
        }
    }
    for _ in 0..20_000 {
        let v = value(&mut rng, 0);
        for f in [
            Format::Auto,
            Format::Messages,
            Format::ShareGpt,
            Format::PromptCompletion,
        ] {
            if let Ok((c, _)) = parse_conversation(&v, f) {
                assert!(c.validate().is_ok());
            }
        }
    }
}

#[test]
fn gzip_and_json_arrays_of_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let ls = lines(2000, 7);
    let gz = dir.path().join("fuzz.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    for l in &ls {
        enc.write_all(l).unwrap();
        enc.write_all(b"\n").unwrap();
    }
    enc.finish().unwrap();
    let (_, r) = read_conversations(&gz, Format::Auto, BadRecordPolicy::Skip).unwrap();
    assert_eq!(r.records, r.accepted + r.n_rejected());
    // A broken JSON array is a file-level error naming the line, never a panic.
    let arr = dir.path().join("broken.json");
    std::fs::write(
        &arr,
        "[\n{\"prompt\": \"q\", \"completion\": \"a\"},\n{\"prompt\": }\n]",
    )
    .unwrap();
    let e = read_conversations(&arr, Format::Auto, BadRecordPolicy::Skip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.json:3:"), "{e}");
}

/// Every rejection is located: 1,000 bad lines, each between two good ones, are each refused
/// (policy `fail`) with `file:2:` and a reason, or accepted; never a panic.
#[test]
fn every_rejected_line_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = SEEDS[0];
    let (mut refused, mut accepted) = (0, 0);
    for (i, bad) in lines(1000, 4242).into_iter().enumerate() {
        if bad.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let path = dir.path().join(format!("case-{i}.jsonl"));
        let mut body = format!("{good}\n").into_bytes();
        body.extend(&bad);
        body.extend(format!("\n{good}\n").bytes());
        std::fs::write(&path, body).unwrap();
        match read_conversations(&path, Format::Messages, BadRecordPolicy::Fail) {
            Ok((convs, r)) => {
                assert_eq!((convs.len(), r.n_rejected()), (3, 0), "case {i}");
                accepted += 1;
            }
            Err(e) => {
                let e = e.to_string();
                let at = format!("{}:2: ", path.display());
                assert!(
                    e.starts_with(&at) && e.len() > at.len() + 3,
                    "case {i}: {e}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        refused > 700 && accepted > 50,
        "{refused} refused, {accepted} accepted"
    );
}
