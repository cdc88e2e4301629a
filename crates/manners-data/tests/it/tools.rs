//! inspect, lint, debug_render, quality filters, dedup and mixing on real files.

use std::path::{Path, PathBuf};

use manners_data::{
    BadRecordPolicy, ChatTemplate, Encoded, Format, Highlight, InspectOptions, LengthPolicy,
    LintOptions, MaskMode, QualityFilter, Role, Severity, SpecialTokens, debug_render, dedup,
    encode_dataset, encode_texts, filter_quality, inspect, lint, mix_texts, quality_scores,
    read_conversations,
};

use crate::common::{conv, gpt2_chat};

fn write(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

const GOOD: &[&str] = &[
    r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}"#,
    r#"{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "Spain?"}, {"role": "assistant", "content": "Madrid."}]}"#,
    r#"{"instruction": "Add 2 and 2", "output": "4"}"#,
];

#[test]
fn debug_render_brackets_supervised_tokens() {
    let tok = gpt2_chat();
    let t = ChatTemplate::builtin("chatml", &SpecialTokens::gpt2()).unwrap();
    let e = t
        .encode(
            &conv(&[(Role::User, "Hi"), (Role::Assistant, "Yo")]),
            &tok,
            MaskMode::Assistant,
        )
        .unwrap();
    assert_eq!(
        debug_render(&e, &tok, Highlight::Brackets).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n[[Yo<|im_end|>]]\n"
    );
    let ansi = debug_render(&e, &tok, Highlight::Ansi).unwrap();
    assert!(ansi.contains("\x1b[1;32mYo<|im_end|>\x1b[0m"));
}

#[test]
fn inspect_shows_examples_and_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = GOOD.to_vec();
    lines.push(r#"{"messages": [{"role": "bot", "content": "x"}]}"#);
    let p = write(dir.path(), "train.jsonl", &lines);
    let tok = gpt2_chat();
    let t = ChatTemplate::builtin("plain", &SpecialTokens::gpt2()).unwrap();
    let opts = InspectOptions {
        n: 2,
        max_len: Some(20),
        ..InspectOptions::default()
    };
    let r = inspect(&p, &t, &tok, &opts).unwrap();
    assert_eq!(r.rendered.len(), 2);
    assert_eq!(
        r.rendered[0].1,
        "User: Hi\nAssistant:[[ Yo<|endoftext|>]]\n"
    );
    assert_eq!(r.rendered[0].0.as_ref().unwrap().line, 1);
    assert_eq!(r.read.n_rejected(), 1);
    assert_eq!(r.encode.truncated, 1);
    let shown = r.to_string();
    for s in [
        "example 1 (",
        "train.jsonl:1",
        "examples:   3",
        "supervised:",
        "truncated:  1",
        "dropped:",
        "length histogram",
        "unknown role",
    ] {
        assert!(shown.contains(s), "missing {s:?} in\n{shown}");
    }
    // raw text
    let txt = dir.path().join("c.txt");
    std::fs::write(&txt, "One paragraph.\n\nAnother one.\n").unwrap();
    let r = inspect(&txt, &t, &tok, &InspectOptions::default()).unwrap();
    assert_eq!(r.rendered[0].1, "[[One paragraph.<|endoftext|>]]");
    assert_eq!(r.encode.kept, 2);
}

#[test]
fn lint_passes_clean_data_and_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let tok = gpt2_chat();
    let clean = write(dir.path(), "clean.jsonl", GOOD);
    for (name, sp) in [
        ("chatml", SpecialTokens::gpt2()),
        ("plain", SpecialTokens::gpt2()),
        (
            "llama2",
            SpecialTokens {
                bos: Some("<s>".into()),
                eos: Some("</s>".into()),
                ..SpecialTokens::default()
            },
        ),
    ] {
        let t = ChatTemplate::builtin(name, &sp).unwrap();
        let r = lint(
            std::slice::from_ref(&clean),
            &t,
            &tok,
            &LintOptions::default(),
        )
        .unwrap();
        assert!(r.passed(), "{name}:\n{r}");
        assert_eq!(r.conversations, 3);
        assert!(r.to_string().contains("PASSED"));
    }
    let mut bad = GOOD.to_vec();
    bad.push(
        r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Yo"}]}"#,
    ); // line 4
    bad.push(r#"{"messages": [{"role": "user", "content": " hi"}, {"role": "assistant", "content": "YO"}]}"#); // 5: dup of 1
    bad.push(
        r#"{"prompt": "long", "completion": "word word word word word word word word word word"}"#,
    ); // 6
    let train = write(dir.path(), "train.jsonl", &bad);
    let held = write(
        dir.path(),
        "held.jsonl",
        &[r#"{"instruction": "add 2 and 2", "output": "4"}"#],
    );
    let t = ChatTemplate::builtin("chatml", &SpecialTokens::gpt2()).unwrap();
    let opts = LintOptions {
        heldout: vec![held.clone()],
        max_len: Some(20),
        ..LintOptions::default()
    };
    let r = lint(std::slice::from_ref(&train), &t, &tok, &opts).unwrap();
    assert!(!r.passed());
    let shown = r.to_string();
    let has = |check: &str, line: usize, file: &Path| {
        r.findings.iter().any(|f| {
            f.check == check
                && f.origin
                    .as_ref()
                    .is_some_and(|o| o.line == line && o.file == file)
        })
    };
    assert!(has("records", 4, &train), "{shown}");
    assert!(has("duplicates", 5, &train), "{shown}");
    assert!(has("heldout overlap", 1, &held), "{shown}");
    assert!(has("length", 2, &train), "{shown}");
    assert!(shown.contains("FAILED"), "{shown}");
    assert!(
        shown.contains("train.jsonl:4: error [records]: field `messages[1].role`"),
        "{shown}"
    );
    assert!(r.findings.iter().any(|f| f.severity == Severity::Warning));
    // a tokenizer without the template's specials fails "special tokens"
    let r = lint(
        &[clean],
        &t,
        &crate::common::gpt2(),
        &LintOptions::default(),
    )
    .unwrap();
    assert!(!r.passed());
    assert_eq!(r.counts.get("special tokens"), Some(&(2, 0)));
}

#[test]
fn lint_catches_a_template_that_drops_the_end_of_turn() {
    // A Jinja template whose generation block leaves <|im_end|> out: lint must fail the
    // "end of turn" check.
    let src = "{%- for m in messages -%}{{- '<|im_start|>' + m.role + '\\n' -}}{%- if m.role == 'assistant' -%}{% generation %}{{ m.content }}{% endgeneration %}{{ '<|im_end|>\\n' }}{%- else -%}{{- m.content + '<|im_end|>\\n' -}}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "d.jsonl", GOOD);
    let t = ChatTemplate::from_jinja(src, &SpecialTokens::gpt2()).unwrap();
    let r = lint(&[p], &t, &gpt2_chat(), &LintOptions::default()).unwrap();
    assert!(!r.passed());
    assert_eq!(r.counts.get("end of turn").map(|c| c.0), Some(3), "{r}");
}

#[test]
fn lint_warns_when_a_marked_template_rewrites_earlier_turns() {
    // Reasoning dropped from earlier assistant turns (DeepSeek-R1 style) with
    // {% generation %} markers: training follows the marked spans, lint says that the
    // inference prompt differs from the training render (a warning, not a failure).
    let src = "{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m.role == 'assistant' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}{% set c = m.content %}{% if m.role == 'assistant' and loop.index0 != ns.last and '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{% generation %}{{ c }}<|im_end|>{% endgeneration %}\n{% else %}{{ c }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "r.jsonl",
        &[
            r#"{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>sum</think>4"}, {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "<think>sum</think>6"}]}"#,
        ],
    );
    let t = ChatTemplate::from_jinja(src, &SpecialTokens::gpt2()).unwrap();
    assert!(t.marks_generation());
    let r = lint(&[p], &t, &gpt2_chat(), &LintOptions::default()).unwrap();
    assert!(r.passed(), "{r}");
    assert_eq!(r.counts.get("prompt prefix"), Some(&(0, 1)), "{r}");
}

#[test]
fn quality_dedup_noise_and_mixing() {
    let dir = tempfile::tempdir().unwrap();
    let tok = gpt2_chat();
    let p = write(
        dir.path(),
        "d.jsonl",
        &[
            GOOD[0],
            GOOD[1],
            GOOD[2],
            GOOD[0],
            r#"{"user": "Say it", "assistant": "yes yes yes yes yes yes yes yes"}"#,
        ],
    );
    let (convs, _) = read_conversations(&p, Format::Auto, BadRecordPolicy::Fail).unwrap();
    let s = quality_scores(&convs[4], &tok).unwrap();
    assert_eq!(s.response_tokens, 8);
    assert!(s.distinct_ratio < 0.3);
    let (convs, d) = dedup(convs);
    assert_eq!(d.removed.get("duplicate"), Some(&1));
    assert!(d.to_string().contains("d.jsonl:4: duplicate of"));
    let f = QualityFilter {
        min_distinct_ratio: 0.5,
        ..QualityFilter::default()
    };
    let (kept, r) = filter_quality(convs.clone(), &tok, &f).unwrap();
    assert_eq!((kept.len(), r.removed.get("too repetitive")), (3, Some(&1)));
    // mixing raw text: every token of a text piece supervised
    let t = ChatTemplate::builtin("chatml", &SpecialTokens::gpt2()).unwrap();
    let (sft, _) = encode_dataset(
        &convs,
        &t,
        &tok,
        MaskMode::Assistant,
        64,
        LengthPolicy::Drop,
    )
    .unwrap();
    let texts = encode_texts(
        &["A long document. ".repeat(40), "Short one.".into()],
        &tok,
        Some(50256),
    )
    .unwrap();
    let (mixed, mr) = mix_texts(sft.clone(), &texts, 0.5, 0, 64);
    assert_eq!(mr.text_added, sft.len().min(mr.text_available));
    assert!(
        mixed[sft.len()..]
            .iter()
            .all(|e: &Encoded| e.loss_mask.iter().all(|&m| m) && e.len() <= 64)
    );
}

const TOOL_USE: &str = r#"{"tools": [{"type": "function", "function": {"name": "lookup"}}], "messages": [{"role": "user", "content": "Capital of Peru?"}, {"role": "assistant", "content": "", "reasoning_content": "Look it up.", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"entity\": \"Peru\"}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "Lima"}, {"role": "assistant", "content": "Lima."}]}"#;

/// `data inspect` shows tool turns and reasoning with the supervised parts highlighted: the
/// reasoning, the call and the answer, never the tool result (with `--mask-reasoning`, not
/// the reasoning either).
#[test]
fn inspect_highlights_tool_calls_not_tool_results() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "tools.jsonl", &[TOOL_USE]);
    let tok = gpt2_chat();
    let t = ChatTemplate::builtin("chatml-tools", &SpecialTokens::gpt2()).unwrap();
    let r = inspect(&p, &t, &tok, &InspectOptions::default()).unwrap();
    let shown = &r.rendered[0].1;
    assert!(
        shown.contains(
            "<|im_start|>assistant\n[[<think>\nLook it up.\n</think>\n\n<tool_call>\n{\"name\": \"lookup\", \"arguments\": {\"entity\": \"Peru\"}}\n</tool_call><|im_end|>]]\n"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("<|im_start|>tool\n<tool_response>\nLima\n</tool_response><|im_end|>\n<|im_start|>assistant\n[[Lima.<|im_end|>]]"),
        "{shown}"
    );
    let masked = t.clone().with_mask_reasoning(true);
    let r = inspect(&p, &masked, &tok, &InspectOptions::default()).unwrap();
    assert!(
        r.rendered[0]
            .1
            .contains("assistant\n<think>\nLook it up.\n</think>[[\n\n<tool_call>"),
        "{}",
        r.rendered[0].1
    );
}

/// `data lint` flags a supervised tool result and a call whose arguments are not JSON (file
/// and line named), and refuses tools under a template that cannot render them.
#[test]
fn lint_flags_supervised_tool_results_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let supervised = TOOL_USE.replace(
        r#""content": "Lima"}"#,
        r#""content": "Lima", "train": true}"#,
    );
    let bad_args = TOOL_USE.replace(r#"\"Peru\"}"#, r#"\"Peru\""#);
    let p = write(dir.path(), "t.jsonl", &[TOOL_USE, &supervised, &bad_args]);
    let tok = gpt2_chat();
    let t = ChatTemplate::builtin("chatml-tools", &SpecialTokens::gpt2()).unwrap();
    let r = lint(std::slice::from_ref(&p), &t, &tok, &LintOptions::default()).unwrap();
    let shown = r.to_string();
    assert!(!r.passed(), "{shown}");
    assert_eq!(r.counts.get("tools"), Some(&(2, 0)), "{shown}");
    assert!(
        shown.contains("t.jsonl:2: error [tools]: messages[2] (a tool result) is supervised"),
        "{shown}"
    );
    assert!(
        shown.contains("t.jsonl:3: error [tools]: field `messages[1].tool_calls[0].function.arguments`: arguments are not JSON"),
        "{shown}"
    );
    // The first record alone is clean.
    let clean = write(dir.path(), "c.jsonl", &[TOOL_USE]);
    let r = lint(
        std::slice::from_ref(&clean),
        &t,
        &tok,
        &LintOptions::default(),
    )
    .unwrap();
    assert!(r.passed(), "{r}");
    // chatml cannot render tools: a clear error, not a silent drop.
    let chatml = ChatTemplate::builtin("chatml", &SpecialTokens::gpt2()).unwrap();
    let r = lint(&[clean], &chatml, &tok, &LintOptions::default()).unwrap();
    assert!(
        r.to_string().contains(
            "template `chatml` cannot render a tools list: use `--template chatml-tools`"
        ),
        "{r}"
    );
}
