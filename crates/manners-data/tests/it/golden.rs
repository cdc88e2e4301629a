//! Golden ids + masks computed by `tests/golden/make_golden.py` with Hugging Face `tokenizers`
//! (Python), independently of the code under test.

use manners_data::{ChatTemplate, Conversation, MaskMode, Message, SpecialTokens};
use serde::Deserialize;

use crate::common::gpt2_chat;

#[derive(Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    template: String,
    specials: SpecialTokens,
    mode: MaskMode,
    messages: Vec<Message>,
    ids: Vec<u32>,
    mask: Vec<bool>,
    prompt: Vec<u32>,
    text: String,
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/golden.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<Golden>(&text).unwrap().cases
}

#[test]
fn builtin_templates_match_golden_ids_and_masks() {
    let tok = gpt2_chat();
    let cases = cases();
    assert_eq!(cases.len(), 26);
    let mut seen = std::collections::BTreeSet::new();
    for (k, c) in cases.iter().enumerate() {
        let t = ChatTemplate::builtin(&c.template, &c.specials).unwrap();
        let conv = Conversation::new(c.messages.clone());
        let e = t.encode(&conv, &tok, c.mode).unwrap();
        let ctx = format!("case {k}: {} {:?} {:?}", c.template, c.mode, c.text);
        assert_eq!(e.ids, c.ids, "ids, {ctx}");
        assert_eq!(e.loss_mask, c.mask, "mask, {ctx}");
        assert_eq!(t.render(&c.messages, false).unwrap(), c.text, "text, {ctx}");
        let n = c.messages.len();
        let prompt = t.encode_prompt(&c.messages[..n - 1], &tok).unwrap();
        assert_eq!(prompt, c.prompt, "prompt, {ctx}");
        let system = c.messages[0].role == manners_data::Role::System;
        let turns = c
            .messages
            .iter()
            .filter(|m| m.role == manners_data::Role::User)
            .count();
        seen.insert((c.template.clone(), system, turns));
    }
    // 1-, 2- and 3-turn conversations, with and without a system prompt, in every template.
    for t in ["chatml", "plain", "llama2"] {
        for system in [false, true] {
            for turns in 1..=3 {
                assert!(
                    seen.contains(&(t.to_string(), system, turns)),
                    "{t} {system} {turns}"
                );
            }
        }
    }
}

#[test]
fn golden_spot_check_by_hand() {
    // chatml, 1 turn, read off the GPT-2 vocab: <|im_start|> user \n What is the capital of
    // France ? <|im_end|> \n <|im_start|> ass istant \n [Paris . <|im_end|>] \n
    let c = &cases()[0];
    assert_eq!(c.template, "chatml");
    assert_eq!(
        c.ids,
        vec![
            50257, 7220, 198, 2061, 318, 262, 3139, 286, 4881, 30, 50258, 198, 50257, 562, 10167,
            198, 40313, 13, 50258, 198
        ]
    );
    let supervised: Vec<u32> = c
        .ids
        .iter()
        .zip(&c.mask)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    assert_eq!(supervised, vec![40313, 13, 50258]);
}

/// Jinja templates with the features of real training templates that manners used to refuse
/// (two `{% generation %}` blocks per turn, reasoning dropped from earlier turns, a
/// `tools is iterable` guard), and TRL's Phi-3 and DeepSeek-V3 training templates: the render
/// equals transformers' and the supervised tokens are those overlapping its `{% generation %}`
/// spans, transformers' rule (`tests/golden/make_jinja_golden.py`, `render_jinja_template`
/// with `return_assistant_tokens_mask`).
#[test]
fn jinja_templates_match_transformers_generation_spans() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/jinja_golden.json"
    );
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("jinja_golden.json");
    let tok = gpt2_chat();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let template =
            ChatTemplate::from_jinja(case["source"].as_str().unwrap(), &SpecialTokens::gpt2())
                .unwrap();
        let conv = Conversation::new(
            case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    Message::new(
                        m["role"].as_str().unwrap().parse().unwrap(),
                        m["content"].as_str().unwrap(),
                    )
                })
                .collect(),
        );
        let e = template
            .encode(&conv, &tok, MaskMode::Assistant)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        // Byte by byte (a character may span tokens: DeepSeek's fullwidth bars); each token's
        // characters, then transformers' rule: a token is supervised when it overlaps a
        // marked span.
        let unbyte = byte_level_inverse();
        let mut bytes = Vec::new();
        let mut token_bytes = Vec::new();
        for &id in &e.ids {
            let piece = tok.id_to_token(id).unwrap();
            let start = bytes.len();
            bytes.extend(piece.chars().map(|c| unbyte[&c]));
            token_bytes.push((start, bytes.len()));
        }
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "{name}: render");
        // Character index of each byte.
        let mut char_of = vec![0usize; text.len() + 1];
        for (ci, (bi, c)) in text.char_indices().enumerate() {
            char_of[bi..bi + c.len_utf8()].fill(ci);
        }
        char_of[text.len()] = text.chars().count();
        let spans: Vec<(usize, usize)> = case["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s[0].as_u64().unwrap() as usize,
                    s[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        let want: Vec<bool> = token_bytes
            .iter()
            .map(|&(a, b)| {
                let (ca, cb) = (char_of[a], char_of[b - 1] + 1);
                spans.iter().any(|&(s, e)| s < cb && ca < e)
            })
            .collect();
        assert_eq!(e.loss_mask, want, "{name}: supervised tokens of {text:?}");
    }
}

/// Conversations with tool calls (one, and two in a turn), tool results and reasoning traces,
/// read by manners' own reader from the records as written: ids, masks, render and inference
/// prompt equal transformers' `apply_chat_template(..., tools=..., return_assistant_tokens_mask
/// =True)` (`tests/golden/make_tool_golden.py`), for the built-in `chatml-tools` (written there
/// by hand as Jinja) and for the Qwen3, Qwen2.5 and gpt-oss training templates (TRL's)
/// rendered by manners' Jinja engine.
#[test]
fn tool_calls_and_reasoning_match_transformers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/tool_golden.json");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("tool_golden.json");
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for (k, case) in cases.iter().enumerate() {
        let name = case["template"].as_str().unwrap();
        let t = match name {
            "chatml-tools" => ChatTemplate::builtin(name, &SpecialTokens::gpt2()).unwrap(),
            _ => ChatTemplate::from_jinja(case["source"].as_str().unwrap(), &SpecialTokens::gpt2())
                .unwrap(),
        };
        // The template's special tokens added, as training does.
        let mut tok = gpt2_chat();
        let needed = t.required_special_tokens();
        let missing: Vec<&str> = needed
            .iter()
            .map(String::as_str)
            .filter(|s| tok.token_to_id(s).is_none())
            .collect();
        tok.add_special_tokens(
            &missing
                .iter()
                .map(|s| tokenizers::AddedToken::from(*s, true))
                .collect::<Vec<_>>(),
        );
        let (conv, _) = manners_data::parse_record(
            case["record"].as_str().unwrap(),
            manners_data::Format::Auto,
        )
        .unwrap_or_else(|e| panic!("case {k}: {e:?}"));
        let ctx = format!("case {k} ({name})");
        let text = t
            .render_with_tools(&conv.messages, &conv.tools, false)
            .unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "{ctx}: render");
        let e = t
            .encode(&conv, &tok, MaskMode::Assistant)
            .unwrap_or_else(|err| panic!("{ctx}: {err}"));
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let mask: Vec<bool> = serde_json::from_value(case["mask"].clone()).unwrap();
        assert_eq!(e.ids, ids, "{ctx}: ids");
        assert_eq!(e.loss_mask, mask, "{ctx}: mask");
        let last = conv.last_assistant().unwrap();
        let prompt = t
            .encode_prompt_with_tools(&conv.messages[..last], &conv.tools, &tok)
            .unwrap();
        let want: Vec<u32> = serde_json::from_value(case["prompt"].clone()).unwrap();
        assert_eq!(prompt, want, "{ctx}: prompt");
    }
}

/// GPT-2's byte-level alphabet backwards: the character a byte is written as → the byte.
fn byte_level_inverse() -> std::collections::HashMap<char, u8> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.iter()
        .zip(&cs)
        .map(|(&b, &c)| (char::from_u32(c).unwrap(), b as u8))
        .collect()
}
