//! Readers: every format, JSON arrays with line numbers, gzip, raw text, reports.

use std::io::Write;
use std::path::{Path, PathBuf};

use manners_data::{
    BadRecordPolicy, DataError, Format, RejectReason, Role, read_conversations, read_texts,
};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn jsonl_with_every_format_and_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "mixed.jsonl",
        concat!(
            r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}"#,
            "\n",
            "\n",
            r#"{"instruction": "Add", "output": "3"}"#,
            "\n",
            r#"{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}"#,
            "\n",
            r#"{"prompt": "q", "completion": "a"}"#,
            "\n",
            r#"{"user": "u", "assistant": "a"}"#,
            "\n",
            r#"{"messages": [{"role": "user", "content": "Hi"}, "#,
            "\n",
            r#"{"messages": [{"role": "robot", "content": "Hi"}]}"#,
            "\n",
            r#"{"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "x"}]}"#,
            "\n",
            r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}"#,
            "\n",
            r#"{"messages": [{"role": "user", "content": "Hi"}]}"#,
            "\n",
            r#"{"instruction": "", "output": "x"}"#,
            "\n",
        ),
    );
    let (convs, r) = read_conversations(&p, Format::Auto, BadRecordPolicy::Skip).unwrap();
    assert_eq!(convs.len(), 5);
    assert_eq!((r.records, r.accepted, r.n_rejected()), (11, 5, 6));
    let o = convs[1].origin.as_ref().unwrap();
    assert_eq!(o.line, 3);
    for (reason, n) in [
        ("invalid json", 1),
        ("unknown role", 1),
        ("roles out of order", 1),
        ("empty assistant turn", 1),
        ("no assistant turn", 1),
        ("empty field", 1),
    ] {
        assert_eq!(r.rejected.get(reason), Some(&n), "{reason}: {r}");
    }
    let shown = r.to_string();
    assert!(
        shown.contains("mixed.jsonl:8: field `messages[0].role`: unknown role \"robot\""),
        "{shown}"
    );
    assert!(
        shown.contains(
            "mixed.jsonl:10: field `messages[1].content`: assistant turn with no content"
        ),
        "{shown}"
    );
    assert!(shown.contains("5 accepted, 6 rejected"), "{shown}");

    let err = read_conversations(&p, Format::Auto, BadRecordPolicy::Fail).unwrap_err();
    match &err {
        DataError::Record {
            line,
            reason: RejectReason::InvalidJson(_),
            ..
        } => assert_eq!(*line, 7),
        other => panic!("{other}"),
    }
    // A forced format rejects the others.
    let (c, r) = read_conversations(&p, Format::Alpaca, BadRecordPolicy::Skip).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].messages[1].role, Role::Assistant);
    assert!(r.rejected.contains_key("missing field"));
}

#[test]
fn json_array_records_have_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "data.json",
        "[\n  {\"prompt\": \"a\", \"completion\": \"b\"},\n\n  {\"prompt\": \"c\",\n   \"completion\": \"\"}\n]\n",
    );
    let (c, r) = read_conversations(&p, Format::Auto, BadRecordPolicy::Skip).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].origin.as_ref().unwrap().line, 2);
    assert_eq!(r.first_rejections[0].origin.line, 4);
    assert_eq!(r.first_rejections[0].field.as_deref(), Some("completion"));
}

#[test]
fn gzip_and_invalid_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&p).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(
        b"{\"user\": \"u\", \"assistant\": \"a\"}\n{\"user\": \"\xff\", \"assistant\": \"a\"}\n",
    )
    .unwrap();
    enc.finish().unwrap();
    let (c, r) = read_conversations(&p, Format::Auto, BadRecordPolicy::Skip).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(r.rejected.get("invalid utf-8"), Some(&1));
    assert_eq!(r.first_rejections[0].origin.line, 2);
}

#[test]
fn raw_text_files() {
    let dir = tempfile::tempdir().unwrap();
    let t = write(
        dir.path(),
        "c.txt",
        "Chapter 1\nIn the beginning.\n\n\nChapter 2\r\nThe end.\n",
    );
    let (docs, r) = read_texts(&t, BadRecordPolicy::Skip).unwrap();
    assert_eq!(
        docs,
        vec!["Chapter 1\nIn the beginning.", "Chapter 2\nThe end."]
    );
    assert_eq!(r.accepted, 2);
    let j = write(
        dir.path(),
        "t.jsonl",
        "{\"text\": \"one\"}\n{\"text\": 3}\n\"two\"\n",
    );
    let (docs, r) = read_texts(&j, BadRecordPolicy::Skip).unwrap();
    assert_eq!(docs, vec!["one", "two"]);
    assert_eq!(r.rejected.get("wrong type"), Some(&1));
    // The shipped corpus reads (gzip, paragraphs).
    let kjv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/corpus/moby_dick.txt.gz");
    if kjv.exists() {
        let (docs, r) = read_texts(&kjv, BadRecordPolicy::Fail).unwrap();
        assert!(docs.len() > 100 && r.n_rejected() == 0);
    }
    assert!(read_conversations(&j, Format::Text, BadRecordPolicy::Skip).is_err());
}

#[test]
fn format_names_parse() {
    for (s, f) in [
        ("auto", Format::Auto),
        ("messages", Format::Messages),
        ("alpaca", Format::Alpaca),
        ("sharegpt", Format::ShareGpt),
        ("prompt-completion", Format::PromptCompletion),
        ("plain", Format::Plain),
        ("text", Format::Text),
    ] {
        assert_eq!(s.parse::<Format>().unwrap(), f);
        assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
    }
    assert!("nope".parse::<Format>().is_err());
    assert_eq!(
        "skip".parse::<BadRecordPolicy>().unwrap(),
        BadRecordPolicy::Skip
    );
}

#[test]
fn a_single_pretty_printed_json_object_is_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "one.json",
        "\n{\n  \"user\": \"u\",\n  \"assistant\": \"a\"\n}\n",
    );
    let (c, r) = read_conversations(&p, Format::Auto, BadRecordPolicy::Fail).unwrap();
    assert_eq!((c.len(), r.records), (1, 1));
    assert_eq!(c[0].origin.as_ref().unwrap().line, 2);
    let f: Format = serde_json::from_str("\"prompt-completion\"").unwrap();
    assert_eq!(f, Format::PromptCompletion);
    assert_eq!(
        serde_json::to_string(&Format::ShareGpt).unwrap(),
        "\"sharegpt\""
    );
}
