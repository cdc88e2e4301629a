//! Writing datasets back out: conversations as OpenAI `messages` JSON lines, raw text as
//! `{"text": ...}` lines. What the readers in [`crate::read_conversations`] and
//! [`crate::read_texts`] read back unchanged.

use std::path::Path;

use serde_json::{Value, json};

use crate::conversation::Conversation;
use crate::error::{DataError, Result};

/// One conversation as an OpenAI `messages` object (`role`, `content`, and `train` when set).
pub fn conversation_json(c: &Conversation) -> Value {
    let messages: Vec<Value> = c
        .messages
        .iter()
        .map(|m| match m.train {
            None => json!({ "role": m.role.as_str(), "content": m.content }),
            Some(t) => json!({ "role": m.role.as_str(), "content": m.content, "train": t }),
        })
        .collect();
    json!({ "messages": messages })
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
    write_json_lines(path, convs.iter().map(conversation_json))
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
        let p = dir.path().join("c.jsonl");
        write_conversations(&p, std::slice::from_ref(&c)).unwrap();
        let (back, _) = read_conversations(&p, Format::Auto, BadRecordPolicy::Fail).unwrap();
        assert_eq!(back[0].messages, c.messages);
        let t = dir.path().join("t.jsonl");
        let docs = vec!["one\nline \"two\"".to_string(), "3".to_string()];
        write_texts(&t, &docs).unwrap();
        assert_eq!(read_texts(&t, BadRecordPolicy::Fail).unwrap().0, docs);
    }
}
