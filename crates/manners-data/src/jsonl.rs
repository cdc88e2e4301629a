//! Writing datasets back out: conversations as OpenAI `messages` JSON lines, raw text as
//! `{"text": ...}` lines. What the readers in [`crate::read_conversations`] and
//! [`crate::read_texts`] read back unchanged.

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

use crate::conversation::{Conversation, JsonText, OpenAiCall};
use crate::error::{DataError, Result};

/// One conversation as an OpenAI `messages` JSON line: `role`, `content`, and where set
/// `train`, `tool_calls` (`{"id", "type": "function", "function": {"name", "arguments"}}`,
/// arguments as an object), `tool_call_id`, `name` (tool messages), `reasoning_content`, and
/// the record's `tools`. Schemas and arguments keep their key order.
pub fn conversation_json(c: &Conversation) -> String {
    let messages: Vec<OutMsg<'_>> = c
        .messages
        .iter()
        .map(|m| OutMsg {
            role: m.role.as_str(),
            content: &m.content,
            train: m.train,
            tool_calls: m.tool_calls.iter().map(OpenAiCall::from).collect(),
            tool_call_id: m.tool_call_id.as_deref(),
            name: m.name.as_deref(),
            reasoning_content: m.reasoning.as_deref(),
        })
        .collect();
    let rec = OutRecord {
        messages,
        tools: &c.tools,
    };
    serde_json::to_string(&rec).expect("a conversation always serialises")
}

#[derive(Serialize)]
struct OutRecord<'a> {
    messages: Vec<OutMsg<'a>>,
    #[serde(skip_serializing_if = "<[JsonText]>::is_empty")]
    tools: &'a [JsonText],
}

#[derive(Serialize)]
struct OutMsg<'a> {
    role: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    train: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OpenAiCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
}

/// Writes lines of text (each already one JSON value).
fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) -> Result<()> {
    let mut s = String::new();
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| DataError::io(path, e))
}

/// Writes one JSON value per line.
pub fn write_json_lines(path: &Path, values: impl IntoIterator<Item = Value>) -> Result<()> {
    let mut s = String::new();
    for v in values {
        s.push_str(&v.to_string());
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| DataError::io(path, e))
}

/// Writes conversations as OpenAI `messages` JSON lines.
pub fn write_conversations(path: &Path, convs: &[Conversation]) -> Result<()> {
    write_lines(path, convs.iter().map(conversation_json))
}

/// Writes documents as `{"text": ...}` JSON lines.
pub fn write_texts(path: &Path, docs: &[String]) -> Result<()> {
    write_json_lines(path, docs.iter().map(|d| json!({ "text": d })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BadRecordPolicy, Format, Message, read_conversations, read_texts};

    #[test]
    fn written_files_read_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Conversation::new(vec![
            Message::system("Be brief."),
            Message::user("Capital of Peru?"),
            Message::assistant("Lima."),
        ]);
        c.messages[2].train = Some(false);
        let mut t = Conversation::new(vec![
            Message::user("Weather in Lima?"),
            Message::assistant("").with_call("get_weather", r#"{"z": 1, "city": "Lima"}"#),
            Message::tool("18 C"),
            Message::assistant("18 C.").with_reasoning("The tool said 18."),
        ]);
        t.messages[1].tool_calls[0].id = Some("call_1".into());
        t.messages[2].tool_call_id = Some("call_1".into());
        t.tools = vec![
            crate::JsonText::parse(r#"{"type": "function", "function": {"name": "get_weather"}}"#)
                .unwrap(),
        ];
        let p = dir.path().join("c.jsonl");
        write_conversations(&p, &[c.clone(), t.clone()]).unwrap();
        let written = std::fs::read_to_string(&p).unwrap();
        assert!(
            written.contains(r#""arguments":{"z":1,"city":"Lima"}"#),
            "{written}"
        );
        let (back, _) = read_conversations(&p, Format::Auto, BadRecordPolicy::Fail).unwrap();
        assert_eq!(back[0].messages, c.messages);
        assert_eq!(back[1].messages, t.messages);
        assert_eq!(back[1].tools, t.tools);
        let t = dir.path().join("t.jsonl");
        let docs = vec!["one\nline \"two\"".to_string(), "3".to_string()];
        write_texts(&t, &docs).unwrap();
        assert_eq!(read_texts(&t, BadRecordPolicy::Fail).unwrap().0, docs);
    }
}
