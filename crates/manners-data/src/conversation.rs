//! Conversations: the one shape every dataset format is read into.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::RejectReason;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering an assistant's tool call.
    Tool,
}

impl Role {
    /// The lower-case name used by OpenAI messages and chat templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = RejectReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "system" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            "tool" => Ok(Role::Tool),
            other => Err(RejectReason::UnknownRole(other.to_string())),
        }
    }
}

/// JSON text in compact form (`{"a":1}`), keys in the order they were written: tool-call
/// arguments and tool schemas, which templates render with Python's `json.dumps` (insertion
/// order), so a sorted map would render differently from transformers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonText(String);

impl JsonText {
    /// Parses JSON text (any whitespace) into its compact form; the error is serde_json's.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let v: minijinja::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Ok(Self::from_value(&v))
    }

    /// Parses a JSON list (of tool schemas, say) into its items, each in compact form.
    pub fn parse_list(text: &str) -> std::result::Result<Vec<Self>, String> {
        let v: minijinja::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if v.kind() != minijinja::value::ValueKind::Seq {
            return Err("expected a JSON list".into());
        }
        Ok(v.try_iter()
            .map(|it| it.map(|x| Self::from_value(&x)).collect())
            .unwrap_or_default())
    }

    /// From a serde_json value (keys come out sorted: serde_json keeps no order here).
    pub fn from_json(v: &serde_json::Value) -> Self {
        JsonText(v.to_string())
    }

    /// From an ordered value (a minijinja value parsed from JSON keeps its keys' order).
    pub(crate) fn from_value(v: &minijinja::Value) -> Self {
        JsonText(serde_json::to_string(v).unwrap_or_else(|_| "null".into()))
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// As an ordered template value (maps keep the written key order).
    pub fn to_value(&self) -> minijinja::Value {
        serde_json::from_str(&self.0).unwrap_or(minijinja::Value::UNDEFINED)
    }

    /// Whether this is a JSON object.
    pub fn is_object(&self) -> bool {
        self.0.starts_with('{')
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Self::from_value(&minijinja::Value::deserialize(d)?))
    }
}

/// A function call made by the assistant (OpenAI `tool_calls[i]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (`call_...`), which a tool message's `tool_call_id` refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The function's name.
    pub name: String,
    /// The arguments: a JSON object (given as an object or as a JSON string in the data).
    pub arguments: JsonText,
}

impl ToolCall {
    /// A string argument (`None` when absent or not a string).
    pub fn argument_str(&self, key: &str) -> Option<String> {
        self.arguments
            .to_value()
            .get_attr(key)
            .ok()?
            .as_str()
            .map(str::to_string)
    }
}

/// A tool call in OpenAI's shape, `{"id", "type": "function", "function": {"name",
/// "arguments"}}` (arguments an object), as datasets are written and templates read them.
#[derive(Serialize)]
pub(crate) struct OpenAiCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OpenAiFunction<'a>,
}

#[derive(Serialize)]
struct OpenAiFunction<'a> {
    name: &'a str,
    arguments: &'a JsonText,
}

impl<'a> From<&'a ToolCall> for OpenAiCall<'a> {
    fn from(c: &'a ToolCall) -> Self {
        OpenAiCall {
            id: c.id.as_deref(),
            kind: "function",
            function: OpenAiFunction {
                name: &c.name,
                arguments: &c.arguments,
            },
        }
    }
}

/// One message. `train` overrides the mask mode for this message: `Some(true)` supervises its
/// content and end-of-turn token, `Some(false)` never does; `None` follows the `MaskMode`.
///
/// An assistant message may carry `tool_calls` (then its content may be empty) and a
/// `reasoning` trace (OpenAI/Qwen `reasoning_content`); a tool message carries the result in
/// `content` and may name the call it answers (`tool_call_id`) and the function (`name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            train: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            reasoning: None,
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
    /// A tool result.
    pub fn tool(content: impl Into<String>) -> Self {
        Self::new(Role::Tool, content)
    }
    /// With a tool call appended (arguments must be JSON text; panics otherwise, for tests
    /// and literals: parse data with [`JsonText::parse`]).
    pub fn with_call(mut self, name: &str, arguments: &str) -> Self {
        self.tool_calls.push(ToolCall {
            id: None,
            name: name.to_string(),
            arguments: JsonText::parse(arguments).expect("tool-call arguments must be JSON"),
        });
        self
    }
    /// With a reasoning trace.
    pub fn with_reasoning(mut self, reasoning: impl Into<String>) -> Self {
        self.reasoning = Some(reasoning.into());
        self
    }
}

/// Where a record came from: file and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A conversation: an optional system message, then user/assistant turns alternating,
/// starting with a user turn and containing at least one assistant turn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub origin: Option<Origin>,
    /// The functions the assistant may call (OpenAI `tools`: JSON schemas, passed to
    /// templates as written).
    pub tools: Vec<JsonText>,
}

impl Conversation {
    pub fn new(messages: Vec<Message>) -> Self {
        Conversation {
            messages,
            origin: None,
            tools: Vec::new(),
        }
    }

    /// Checks the role order. On failure returns the index of the offending message and why.
    pub fn validate(&self) -> Result<(), (usize, RejectReason)> {
        validate_messages(&self.messages, true)
    }

    /// Index of the last assistant message, if any.
    pub fn last_assistant(&self) -> Option<usize> {
        self.messages
            .iter()
            .rposition(|m| m.role == Role::Assistant)
    }
}

/// A generated assistant reply split into what templates write apart: a `<think>` reasoning
/// trace, the text, and `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` calls (the
/// Hermes / Qwen markup `chatml-tools` trains). A call whose JSON does not parse stays in the
/// text, so nothing the model wrote is lost.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub reasoning: Option<String>,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

impl Reply {
    /// Parses a generated reply.
    pub fn parse(text: &str) -> Reply {
        let mut rest = text;
        let mut reasoning = None;
        let trimmed = rest.trim_start();
        if let Some(after) = trimmed.strip_prefix("<think>")
            && let Some(end) = after.find("</think>")
        {
            reasoning = Some(after[..end].trim().to_string());
            rest = &after[end + "</think>".len()..];
        }
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        while let Some(at) = rest.find("<tool_call>") {
            let body_start = at + "<tool_call>".len();
            let Some(len) = rest[body_start..].find("</tool_call>") else {
                break;
            };
            let body = rest[body_start..body_start + len].trim();
            match Self::call(body) {
                Some(c) => {
                    content.push_str(&rest[..at]);
                    tool_calls.push(c);
                }
                None => content.push_str(&rest[..body_start + len + "</tool_call>".len()]),
            }
            rest = &rest[body_start + len + "</tool_call>".len()..];
        }
        content.push_str(rest);
        Reply {
            reasoning,
            content: content.trim().to_string(),
            tool_calls,
        }
    }

    fn call(body: &str) -> Option<ToolCall> {
        let v: minijinja::Value = serde_json::from_str(body).ok()?;
        let name = v.get_attr("name").ok()?.as_str()?.to_string();
        let args = v.get_attr("arguments").ok()?;
        let arguments = match args.as_str() {
            Some(s) => JsonText::parse(s).ok()?,
            None => JsonText::from_value(&args),
        };
        (arguments.is_object() && !name.trim().is_empty()).then_some(ToolCall {
            id: None,
            name,
            arguments,
        })
    }

    /// How much of a reply being streamed can be shown as text: all of it up to a
    /// `<tool_call>` tag (calls are shown parsed, once complete), less a tail that may be the
    /// start of one.
    pub fn printable_len(text: &str) -> usize {
        const TAG: &str = "<tool_call>";
        if let Some(at) = text.find(TAG) {
            return at;
        }
        (1..TAG.len())
            .rev()
            .find(|&k| text.ends_with(&TAG[..k]))
            .map_or(text.len(), |k| text.len() - k)
    }

    /// As an assistant message (reasoning, content, calls).
    pub fn into_message(self) -> Message {
        let mut m = Message::assistant(self.content);
        m.reasoning = self.reasoning;
        m.tool_calls = self.tool_calls;
        m
    }
}

/// The content of the last user message (the question a prompt asks), if any.
pub fn last_user(messages: &[Message]) -> Option<&str> {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
}

/// Role order for a list of messages: an optional system message, then a user turn, then
/// assistant turns answering user turns; an assistant turn with tool calls is followed by
/// one tool message per call (in any order; a `tool_call_id`, when given, must name one of
/// the calls, a `name` one of the called functions), then by an assistant turn. With
/// `complete`, the list must end with an assistant turn and every assistant turn must have
/// content or tool calls; without it (an inference prompt), it must end with a user or tool
/// turn.
pub(crate) fn validate_messages(
    messages: &[Message],
    complete: bool,
) -> Result<(), (usize, RejectReason)> {
    let start = usize::from(matches!(messages.first(), Some(m) if m.role == Role::System));
    if messages.len() == start {
        return Err((
            start,
            if complete {
                RejectReason::NoAssistant
            } else {
                RejectReason::RoleOrder("no user turn".into())
            },
        ));
    }
    let order = |i: usize, why: String| Err((i, RejectReason::RoleOrder(why)));
    // Calls of the last assistant turn not answered yet: (id, name).
    let mut pending: Vec<(Option<&str>, &str)> = Vec::new();
    let mut prev: Option<Role> = None;
    // The assistant turn that made the pending calls (unanswered calls are reported there).
    let mut caller = 0;
    for (i, m) in messages.iter().enumerate().skip(start) {
        if m.role != Role::Assistant && !m.tool_calls.is_empty() {
            return Err((
                i,
                RejectReason::BadToolCall("only assistant turns make tool calls".into()),
            ));
        }
        if m.reasoning.is_some() && m.role != Role::Assistant {
            return Err((
                i,
                RejectReason::RoleOrder("only assistant turns carry reasoning".into()),
            ));
        }
        match m.role {
            Role::System => return order(i, "a system message is only allowed first".into()),
            Role::User => {
                if !pending.is_empty() {
                    return Err((caller, unanswered(&pending)));
                }
                if let Some(r @ (Role::User | Role::Tool | Role::System)) = prev {
                    return order(i, format!("expected assistant, found user after {r}"));
                }
            }
            Role::Assistant => {
                if !pending.is_empty() {
                    return Err((caller, unanswered(&pending)));
                }
                match prev {
                    Some(Role::User | Role::Tool) => {}
                    None => return order(i, "expected user, found assistant".into()),
                    Some(r) => {
                        return order(i, format!("expected user, found assistant after {r}"));
                    }
                }
                if complete && m.content.trim().is_empty() && m.tool_calls.is_empty() {
                    return Err((i, RejectReason::EmptyAssistant));
                }
                for (k, c) in m.tool_calls.iter().enumerate() {
                    if c.name.trim().is_empty() {
                        return Err((
                            i,
                            RejectReason::BadToolCall(format!(
                                "tool_calls[{k}] has an empty function name"
                            )),
                        ));
                    }
                    if !c.arguments.is_object() {
                        return Err((
                            i,
                            RejectReason::BadToolCall(format!(
                                "tool_calls[{k}].arguments must be a JSON object, found {}",
                                c.arguments
                            )),
                        ));
                    }
                }
                caller = i;
                pending = m
                    .tool_calls
                    .iter()
                    .map(|c| (c.id.as_deref(), c.name.as_str()))
                    .collect();
            }
            Role::Tool => {
                if !matches!(prev, Some(Role::Assistant | Role::Tool)) {
                    return Err((i, RejectReason::BadToolCall("a tool message that answers no call (no assistant tool call before it)".into())));
                }
                let at = match (&m.tool_call_id, &m.name) {
                    (Some(id), _) => pending
                        .iter()
                        .position(|p| p.0 == Some(id.as_str()))
                        .ok_or_else(|| format!("tool_call_id {id:?} answers no pending call")),
                    (None, Some(n)) => pending
                        .iter()
                        .position(|p| p.1 == n.as_str())
                        .ok_or_else(|| format!("a result of {n:?}, which no pending call names")),
                    (None, None) => {
                        if pending.is_empty() {
                            Err(
                                "a tool message that answers no call (more results than calls)"
                                    .to_string(),
                            )
                        } else {
                            Ok(0)
                        }
                    }
                };
                match at {
                    Ok(k) => {
                        pending.remove(k);
                    }
                    Err(why) => return Err((i, RejectReason::BadToolCall(why))),
                }
            }
        }
        prev = Some(m.role);
    }
    let last = messages.len() - 1;
    match (complete, messages[last].role) {
        (true, Role::User) if last == start => Err((last, RejectReason::NoAssistant)),
        (true, Role::User) => order(last, "conversation ends with a user turn".into()),
        (true, Role::Tool) => order(
            last,
            "conversation ends with a tool result, not an assistant turn".into(),
        ),
        (false, Role::Assistant) => order(
            last,
            "an inference prompt must end with a user or tool turn".into(),
        ),
        (false, Role::Tool) if !pending.is_empty() => Err((caller, unanswered(&pending))),
        _ => Ok(()),
    }
}

fn unanswered(pending: &[(Option<&str>, &str)]) -> RejectReason {
    let names: Vec<String> = pending
        .iter()
        .map(|(id, n)| match id {
            Some(id) => format!("{n} ({id})"),
            None => n.to_string(),
        })
        .collect();
    RejectReason::BadToolCall(format!("tool call(s) not answered: {}", names.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_reasoning_text_and_calls() {
        let r = Reply::parse(
            "<think>\nLook it up.\n</think>\n\nChecking.\n<tool_call>\n{\"name\": \"lookup\", \"arguments\": {\"z\": 1, \"a\": \"Peru\"}}\n</tool_call>",
        );
        assert_eq!(r.reasoning.as_deref(), Some("Look it up."));
        assert_eq!(r.content, "Checking.");
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].name, "lookup");
        assert_eq!(r.tool_calls[0].arguments.as_str(), r#"{"z":1,"a":"Peru"}"#);
        // Broken JSON stays text; string arguments are parsed.
        let r = Reply::parse(
            "<tool_call>{oops}</tool_call> and <tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>",
        );
        assert_eq!(r.content, "<tool_call>{oops}</tool_call> and");
        assert_eq!(r.tool_calls[0].arguments.as_str(), "{}");
        assert_eq!(Reply::parse("plain").content, "plain");
        assert_eq!(Reply::printable_len("Sure.\n<tool_c"), 6);
        assert_eq!(Reply::printable_len("a <tool_call>{"), 2);
        assert_eq!(Reply::printable_len("a < b"), 5);
    }

    #[test]
    fn role_order() {
        let ok = Conversation::new(vec![
            Message::system("s"),
            Message::user("u"),
            Message::assistant("a"),
        ]);
        assert!(ok.validate().is_ok());
        let no_asst = Conversation::new(vec![Message::user("u")]);
        assert_eq!(no_asst.validate().unwrap_err().1, RejectReason::NoAssistant);
        let twice = Conversation::new(vec![
            Message::user("u"),
            Message::user("u"),
            Message::assistant("a"),
        ]);
        assert_eq!(twice.validate().unwrap_err().0, 1);
        let late_sys = Conversation::new(vec![
            Message::user("u"),
            Message::system("s"),
            Message::assistant("a"),
        ]);
        assert!(matches!(
            late_sys.validate().unwrap_err().1,
            RejectReason::RoleOrder(_)
        ));
        let empty = Conversation::new(vec![Message::user("u"), Message::assistant("  ")]);
        assert_eq!(
            empty.validate().unwrap_err().1,
            RejectReason::EmptyAssistant
        );
        let ends_user = Conversation::new(vec![
            Message::user("u"),
            Message::assistant("a"),
            Message::user("u"),
        ]);
        assert!(ends_user.validate().is_err());
        assert!(validate_messages(&ends_user.messages, false).is_ok());
    }
}
