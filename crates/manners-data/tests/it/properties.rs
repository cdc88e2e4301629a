//! Property tests over random contents (leading/trailing spaces, newlines, unicode,
//! marker-like text) for every template, Jinja ones included.

use manners_data::{ChatTemplate, Conversation, Encoded, MaskMode, Message, Role, SpecialTokens};
use std::sync::LazyLock;

use proptest::prelude::*;
use tokenizers::Tokenizer;

use crate::common::gpt2_chat;

/// The Hugging Face ChatML template (as in OpenHermes / Qwen without the default system).
pub const HF_CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ,.!?']{1,12}",
        "\\PC{1,6}",
        Just(" ".to_string()),
        Just("  ".to_string()),
        Just("\n".to_string()),
        Just("\n\n".to_string()),
        Just("\t".to_string()),
        Just("<|im_end|>".to_string()),
        Just("<|im_start|>assistant\n".to_string()),
        Just("<|endoftext|>".to_string()),
        Just("<s>".to_string()),
        Just("</s>".to_string()),
        Just("[INST]".to_string()),
        Just(" [/INST]".to_string()),
        Just("\nUser:".to_string()),
        Just("Assistant:".to_string()),
        Just("{{ x }}{% if %}".to_string()),
        Just("é日本🦀".to_string()),
    ]
}

fn content() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 1..6)
        .prop_map(|v| v.concat())
        .prop_filter("assistant content must not be blank", |s| {
            !s.trim().is_empty()
        })
}

fn conversation() -> impl Strategy<Value = Vec<Message>> {
    (
        prop::option::of(content()),
        prop::collection::vec((content(), content()), 1..4),
    )
        .prop_map(|(system, turns)| {
            let mut m = Vec::new();
            if let Some(s) = system {
                m.push(Message::system(s));
            }
            for (u, a) in turns {
                m.push(Message::user(u));
                m.push(Message::assistant(a));
            }
            m
        })
}

static TOK: LazyLock<Tokenizer> = LazyLock::new(gpt2_chat);
static TEMPLATES: LazyLock<Vec<Case>> = LazyLock::new(templates);

/// (template, what a supervised span decodes to for content `c`, end-of-turn token)
type Case = (ChatTemplate, fn(&str) -> String, &'static str);

fn templates() -> Vec<Case> {
    let gpt2 = SpecialTokens::gpt2();
    let llama = SpecialTokens {
        bos: Some("<s>".into()),
        eos: Some("</s>".into()),
        ..SpecialTokens::default()
    };
    let with_bos = SpecialTokens {
        bos: Some("<s>".into()),
        ..gpt2.clone()
    };
    let chatml = ChatTemplate::builtin("chatml", &gpt2).unwrap();
    let plain = ChatTemplate::builtin("plain", &gpt2).unwrap();
    let llama2 = ChatTemplate::builtin("llama2", &llama).unwrap();
    let chatml_jinja = ChatTemplate::from_jinja(&chatml.to_jinja(), &gpt2).unwrap();
    let plain_jinja = ChatTemplate::from_jinja(&plain.to_jinja(), &gpt2).unwrap();
    let llama2_jinja = ChatTemplate::from_jinja(&llama2.to_jinja(), &llama).unwrap();
    let hf = ChatTemplate::from_jinja(HF_CHATML, &gpt2).unwrap();
    fn im(c: &str) -> String {
        format!("{c}<|im_end|>")
    }
    fn pl(c: &str) -> String {
        format!(" {c}<|endoftext|>")
    }
    fn ll(c: &str) -> String {
        format!(" {c} </s>")
    }
    vec![
        (chatml, im, "<|im_end|>"),
        (
            ChatTemplate::builtin("chatml", &with_bos).unwrap(),
            im,
            "<|im_end|>",
        ),
        (plain, pl, "<|endoftext|>"),
        (llama2, ll, "</s>"),
        (chatml_jinja, im, "<|im_end|>"),
        (plain_jinja, pl, "<|endoftext|>"),
        (llama2_jinja, ll, "</s>"),
        (hf, im, "<|im_end|>"),
    ]
}

/// Maximal runs of supervised tokens.
fn supervised_runs(e: &Encoded) -> Vec<Vec<u32>> {
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for (&id, &m) in e.ids.iter().zip(&e.loss_mask) {
        if m {
            cur.push(id);
        } else if !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

fn check(tok: &Tokenizer, case: &Case, msgs: &[Message]) -> Result<(), TestCaseError> {
    let (t, expect, eot) = case;
    let name = t.name();
    let conv = Conversation::new(msgs.to_vec());
    let e = t.encode(&conv, tok, MaskMode::Assistant).unwrap();
    prop_assert_eq!(e.ids.len(), e.loss_mask.len());
    let assistants: Vec<&Message> = msgs.iter().filter(|m| m.role == Role::Assistant).collect();

    // Decoding each supervised span gives exactly the assistant content + end of turn.
    let runs = supervised_runs(&e);
    prop_assert_eq!(runs.len(), assistants.len(), "{}", name);
    for (run, m) in runs.iter().zip(&assistants) {
        let text = tok.decode(run, false).unwrap();
        prop_assert_eq!(text, expect(&m.content), "{}", name);
    }
    // The end-of-turn id appears exactly once per assistant turn among supervised tokens:
    // marker-like text inside contents never became the special token.
    let eot_id = tok.token_to_id(eot).unwrap();
    let n_eot = e
        .ids
        .iter()
        .zip(&e.loss_mask)
        .filter(|p| *p.1 && *p.0 == eot_id)
        .count();
    prop_assert_eq!(n_eot, assistants.len(), "{}", name);
    prop_assert!(runs.iter().all(|r| r.last() == Some(&eot_id)));

    // The whole render round-trips.
    prop_assert_eq!(
        tok.decode(&e.ids, false).unwrap(),
        t.render(msgs, false).unwrap()
    );

    // The inference prompt is a token prefix of the training render, ending where the
    // supervised reply starts.
    for (i, m) in msgs.iter().enumerate() {
        if m.role != Role::Assistant {
            continue;
        }
        let p = t.encode_prompt(&msgs[..i], tok).unwrap();
        prop_assert!(
            e.ids.starts_with(&p),
            "{}: prompt before {} is not a prefix",
            name,
            i
        );
        prop_assert!(
            e.loss_mask[p.len()],
            "{}: reply does not start at the prompt end",
            name
        );
        prop_assert!(!e.loss_mask[p.len() - 1]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn supervised_spans_and_prompt_prefix(msgs in conversation()) {
        let tok = &*TOK;
        for case in TEMPLATES.iter() {
            check(tok, case, &msgs)?;
        }
    }

    #[test]
    fn exported_jinja_encodes_like_the_builtin(msgs in conversation(), mode in 0..3usize) {
        let tok = &*TOK;
        let mode = [MaskMode::Assistant, MaskMode::Last, MaskMode::All][mode];
        let ts = &*TEMPLATES;
        let conv = Conversation::new(msgs.clone());
        // builtins (0..4) against their exported Jinja (4..7) and HF ChatML (7).
        for (b, j) in [(0, 4), (2, 5), (3, 6), (0, 7)] {
            let eb = ts[b].0.encode(&conv, tok, mode).unwrap();
            let ej = ts[j].0.encode(&conv, tok, mode).unwrap();
            prop_assert_eq!(&eb, &ej, "{} vs jinja {}", ts[b].0.name(), j);
        }
    }

    #[test]
    fn last_mode_supervises_only_the_last_turn(msgs in conversation()) {
        let tok = &*TOK;
        for (t, expect, _) in TEMPLATES.iter() {
            let e = t.encode(&Conversation::new(msgs.clone()), tok, MaskMode::Last).unwrap();
            let runs = supervised_runs(&e);
            prop_assert_eq!(runs.len(), 1);
            let last = msgs.iter().rev().find(|m| m.role == Role::Assistant).unwrap();
            prop_assert_eq!(tok.decode(&runs[0], false).unwrap(), expect(&last.content));
        }
    }
}

/// A tool-use conversation: per exchange a user turn, then zero to two rounds of assistant
/// tool calls (each answered by tool results), then the answer; reasoning on some turns.
fn tool_conversation() -> impl Strategy<Value = Vec<Message>> {
    let call = (
        prop::sample::select(vec!["lookup", "get_weather", "calc"]),
        content(),
        content(),
    );
    let round = (
        prop::option::of(content()),
        prop::collection::vec((call, content()), 1..3),
        any::<bool>(),
    );
    let exchange = (
        content(),
        prop::collection::vec(round, 0..3),
        content(),
        prop::option::of(content()),
    );
    (
        prop::option::of(content()),
        prop::collection::vec(exchange, 1..3),
    )
        .prop_map(|(system, exchanges)| {
            let mut m = Vec::new();
            if let Some(s) = system {
                m.push(Message::system(s));
            }
            for (user, rounds, answer, reasoning) in exchanges {
                m.push(Message::user(user));
                for (text, calls, think) in rounds {
                    let mut a = Message::assistant(text.unwrap_or_default());
                    if think {
                        a.reasoning = Some("Which tool?".into());
                    }
                    let mut results = Vec::new();
                    for ((name, k, v), result) in calls {
                        let args = serde_json::json!({ "entity": k, "field": v }).to_string();
                        a = a.with_call(name, &args);
                        results.push(Message::tool(result));
                    }
                    m.push(a);
                    m.extend(results);
                }
                let mut a = Message::assistant(answer);
                a.reasoning = reasoning;
                m.push(a);
            }
            m
        })
}

/// What `chatml-tools` supervises of an assistant turn, from its documented frame.
fn chatml_tools_turn(m: &Message, mask_reasoning: bool) -> String {
    let mut s = String::new();
    if let Some(r) = &m.reasoning
        && !mask_reasoning
    {
        s.push_str(&format!("<think>\n{r}\n</think>"));
    }
    if m.reasoning.is_some() {
        s.push_str("\n\n");
    }
    s.push_str(&m.content);
    for (k, c) in m.tool_calls.iter().enumerate() {
        if k > 0 || !m.content.is_empty() {
            s.push('\n');
        }
        s.push_str("<tool_call>\n");
        s.push_str(&manners_data::tool_call_json(&c.name, &c.arguments));
        s.push_str("\n</tool_call>");
    }
    s.push_str("<|im_end|>");
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// Decoding the supervised spans gives back exactly each assistant turn's reasoning,
    /// content, tool calls and end-of-turn token, one span per assistant turn, never a tool
    /// result, the system turn or the schemas; `--mask-reasoning` drops the reasoning block
    /// from the spans only. The inference prompt before every assistant turn (tool results
    /// included) is a token prefix of the training render.
    #[test]
    fn tool_calls_are_supervised_and_tool_results_never(msgs in tool_conversation()) {
        let tok = &*TOK;
        let mut conv = Conversation::new(msgs.clone());
        conv.tools = vec![manners_data::JsonText::parse(
            r#"{"type": "function", "function": {"name": "lookup"}}"#,
        )
        .unwrap()];
        for mask_reasoning in [false, true] {
            let t = ChatTemplate::builtin("chatml-tools", &SpecialTokens::gpt2())
                .unwrap()
                .with_mask_reasoning(mask_reasoning);
            let e = t.encode(&conv, tok, MaskMode::Assistant).unwrap();
            let runs = supervised_runs(&e);
            let assistants: Vec<&Message> =
                msgs.iter().filter(|m| m.role == Role::Assistant).collect();
            prop_assert_eq!(runs.len(), assistants.len());
            for (run, m) in runs.iter().zip(&assistants) {
                prop_assert_eq!(tok.decode(run, false).unwrap(), chatml_tools_turn(m, mask_reasoning));
            }
            prop_assert_eq!(
                tok.decode(&e.ids, false).unwrap(),
                t.render_with_tools(&msgs, &conv.tools, false).unwrap()
            );
            for (i, m) in msgs.iter().enumerate() {
                if m.role != Role::Assistant {
                    continue;
                }
                let p = t.encode_prompt_with_tools(&msgs[..i], &conv.tools, tok).unwrap();
                prop_assert!(e.ids.starts_with(&p));
                prop_assert!(!e.loss_mask[p.len() - 1]);
            }
        }
    }
}
