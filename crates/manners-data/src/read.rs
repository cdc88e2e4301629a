//! Dataset readers: JSONL and JSON (and `.gz` of either) in the OpenAI `messages`, Alpaca,
//! ShareGPT, prompt/completion and plain `{"system","user","assistant"}` formats, plus raw text.
//!
//! Bad input never panics and never vanishes: every rejected record is named (file:line,
//! field, reason) and counted per reason in the [`ReadReport`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::conversation::{
    Conversation, JsonText, Message, Origin, Role, ToolCall, validate_messages,
};
use crate::error::{DataError, RejectReason, Result};

/// How many rejections a report keeps verbatim (all are counted).
pub const REPORT_EXAMPLES: usize = 20;

/// Dataset record format. `Auto` detects it per record from the fields present:
/// `messages` → Messages, `conversations` → ShareGPT, `instruction`+`output` → Alpaca,
/// `prompt`+`completion` → PromptCompletion, `user`+`assistant` → Plain, `text` → Text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    #[default]
    Auto,
    /// `{"messages": [{"role": "system|user|assistant", "content": "...", "train": bool?}]}`
    /// (OpenAI's `"weight": 0|1` on a message means `train: false|true`)
    Messages,
    /// `{"instruction", "input"?, "output", "system"?}`; the user turn is the instruction,
    /// followed by `"\n\n"` and the input when the input is not empty.
    Alpaca,
    /// `{"conversations": [{"from": "system|human|gpt", "value": "..."}], "system"?}`
    #[serde(rename = "sharegpt")]
    /// (`user`/`assistant` are accepted as `from` too).
    ShareGpt,
    /// `{"prompt", "completion"}`, each a string (user / assistant turn) or a message list.
    PromptCompletion,
    /// `{"system"?, "user", "assistant"}`
    Plain,
    /// Raw text: `{"text": "..."}` lines, or a `.txt` file (see [`read_texts`]).
    Text,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Messages => "messages",
            Format::Alpaca => "alpaca",
            Format::ShareGpt => "sharegpt",
            Format::PromptCompletion => "prompt-completion",
            Format::Plain => "plain",
            Format::Text => "text",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => Format::Auto,
            "messages" | "openai" | "chat" => Format::Messages,
            "alpaca" => Format::Alpaca,
            "sharegpt" => Format::ShareGpt,
            "prompt-completion" | "completion" => Format::PromptCompletion,
            "plain" => Format::Plain,
            "text" | "raw" => Format::Text,
            other => {
                return Err(DataError::Config(format!(
                    "unknown format {other:?} (auto, messages, alpaca, sharegpt, \
                     prompt-completion, plain, text)"
                )));
            }
        })
    }
}

/// What to do with a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRecordPolicy {
    /// Stop at the first bad record with an error naming it.
    #[default]
    Fail,
    /// Drop it, count it per reason and keep the first few in the report.
    Skip,
}

impl FromStr for BadRecordPolicy {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(BadRecordPolicy::Fail),
            "skip" => Ok(BadRecordPolicy::Skip),
            other => Err(DataError::Config(format!(
                "unknown bad-record policy {other:?} (fail, skip)"
            ))),
        }
    }
}

/// One rejected record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub origin: Origin,
    pub field: Option<String>,
    pub reason: RejectReason,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        write!(f, "{}", self.reason)
    }
}

/// What a reader saw: records read, accepted, rejected per reason, and the first rejections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    pub files: Vec<PathBuf>,
    /// Records seen (non-blank lines, array elements or text paragraphs).
    pub records: usize,
    pub accepted: usize,
    /// Rejections counted per reason (`RejectReason::kind`).
    pub rejected: BTreeMap<String, usize>,
    /// The first `REPORT_EXAMPLES` rejections, in file order.
    pub first_rejections: Vec<Rejection>,
    /// Accepted records per detected format.
    pub formats: BTreeMap<String, usize>,
}

impl ReadReport {
    /// Total rejected records.
    pub fn n_rejected(&self) -> usize {
        self.rejected.values().sum()
    }

    fn reject(&mut self, r: Rejection) {
        *self
            .rejected
            .entry(r.reason.kind().to_string())
            .or_default() += 1;
        if self.first_rejections.len() < REPORT_EXAMPLES {
            self.first_rejections.push(r);
        }
    }

    /// Adds another report (e.g. of a second file) into this one.
    pub fn merge(&mut self, other: ReadReport) {
        self.files.extend(other.files);
        self.records += other.records;
        self.accepted += other.accepted;
        for (k, v) in other.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
        for r in other.first_rejections {
            if self.first_rejections.len() < REPORT_EXAMPLES {
                self.first_rejections.push(r);
            }
        }
        for (k, v) in other.formats {
            *self.formats.entry(k).or_default() += v;
        }
    }
}

impl fmt::Display for ReadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        writeln!(
            f,
            "read {}: {} records, {} accepted, {} rejected",
            files.join(", "),
            self.records,
            self.accepted,
            self.n_rejected()
        )?;
        if !self.formats.is_empty() {
            let fm: Vec<String> = self
                .formats
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "  formats: {}", fm.join(", "))?;
        }
        for (reason, n) in &self.rejected {
            writeln!(f, "  rejected ({reason}): {n}")?;
        }
        for r in &self.first_rejections {
            writeln!(f, "  {r}")?;
        }
        if self.n_rejected() > self.first_rejections.len() {
            writeln!(
                f,
                "  ... and {} more",
                self.n_rejected() - self.first_rejections.len()
            )?;
        }
        Ok(())
    }
}

/// Reads conversations from a JSONL or JSON file (or `.gz` of either, detected from the gzip
/// magic bytes). A JSON file is an array of records or a single (pretty-printed) record;
/// anything else is read as JSONL, one record per non-blank line.
pub fn read_conversations(
    path: &Path,
    format: Format,
    policy: BadRecordPolicy,
) -> Result<(Vec<Conversation>, ReadReport)> {
    let mut out = Vec::new();
    let report = stream_conversations(path, format, policy, |c| {
        out.push(c);
        Ok(())
    })?;
    Ok((out, report))
}

/// [`read_conversations`] one conversation at a time: JSONL (the format for large datasets) is
/// read line by line, so memory is bounded by the longest line, not the file; a JSON array or
/// a single pretty-printed record is read whole. `f` may stop the read with an error.
pub fn stream_conversations(
    path: &Path,
    format: Format,
    policy: BadRecordPolicy,
    mut f: impl FnMut(Conversation) -> Result<()>,
) -> Result<ReadReport> {
    if format == Format::Text {
        return Err(DataError::Config(
            "format `text` holds raw text, not conversations: read it with read_texts".into(),
        ));
    }
    let mut report = ReadReport {
        files: vec![path.to_path_buf()],
        ..ReadReport::default()
    };
    stream_records(path, |line, rec| {
        report.records += 1;
        let origin = Origin {
            file: path.to_path_buf(),
            line,
        };
        let parsed = rec.and_then(|text| parse_record(text, format));
        match parsed {
            Ok((mut conv, fmt)) => {
                report.accepted += 1;
                *report.formats.entry(fmt.name().to_string()).or_default() += 1;
                conv.origin = Some(origin);
                f(conv)
            }
            Err((field, reason)) => reject(&mut report, policy, origin, field, reason),
        }
    })?;
    Ok(report)
}

/// Reads raw-text documents (for mixing into SFT data and for pretraining).
///
/// - `.txt` (or `.txt.gz`): documents are paragraph blocks separated by one or more blank
///   (whitespace-only) lines; the lines of a block are joined with `"\n"`, the document's
///   line is the block's first line. A file without blank lines is a single document.
/// - anything else: JSONL/JSON records `{"text": "..."}` (a bare JSON string is accepted too).
pub fn read_texts(path: &Path, policy: BadRecordPolicy) -> Result<(Vec<String>, ReadReport)> {
    let mut report = ReadReport {
        files: vec![path.to_path_buf()],
        ..ReadReport::default()
    };
    let mut out = Vec::new();
    let name = path.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".txt") {
        let bytes = read_bytes(path)?;
        for (line, para) in paragraphs(strip_bom(&bytes)) {
            report.records += 1;
            let origin = Origin {
                file: path.to_path_buf(),
                line,
            };
            let text = match std::str::from_utf8(&para) {
                Ok(t) => t,
                Err(e) => {
                    let reason = RejectReason::InvalidUtf8 {
                        byte: e.valid_up_to(),
                    };
                    reject(&mut report, policy, origin, None, reason)?;
                    continue;
                }
            };
            if let Some(c) = reserved_char(text) {
                reject(
                    &mut report,
                    policy,
                    origin,
                    None,
                    RejectReason::ReservedChar(c),
                )?;
                continue;
            }
            report.accepted += 1;
            out.push(text.to_string());
        }
        *report.formats.entry("text".into()).or_default() += report.accepted;
        return Ok((out, report));
    }
    stream_records(path, |line, rec| {
        report.records += 1;
        let origin = Origin {
            file: path.to_path_buf(),
            line,
        };
        let parsed = rec.and_then(|text| {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| (None, RejectReason::InvalidJson(e.to_string())))?;
            match &value {
                Value::String(s) => nonempty(s, "text"),
                Value::Object(o) => req_str(o, "text", "text"),
                _ => Err((None, RejectReason::WrongType { expected: "object" })),
            }
            .map(str::to_string)
        });
        match parsed {
            Ok(t) => {
                report.accepted += 1;
                *report.formats.entry("text".into()).or_default() += 1;
                out.push(t);
                Ok(())
            }
            Err((field, reason)) => reject(&mut report, policy, origin, field, reason),
        }
    })?;
    Ok((out, report))
}

/// Parses one JSON record's text into a conversation (validated, no origin), with the
/// format it was read as. Tool schemas and call arguments keep the key order they were
/// written in (the record is parsed a second time, in order, when it has any).
pub fn parse_record(
    text: &str,
    format: Format,
) -> std::result::Result<(Conversation, Format), (Option<String>, RejectReason)> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| (None, RejectReason::InvalidJson(e.to_string())))?;
    let ordered = needs_order(&value)
        .then(|| serde_json::from_str::<minijinja::Value>(text).ok())
        .flatten();
    parse_with(&value, ordered.as_ref(), format)
}

/// Parses one JSON record into a conversation (validated, no origin), with the format it was
/// read as. Public so callers (and the fuzz test) can check a single record. Object keys of
/// tool schemas and arguments come out sorted (a `serde_json::Value` keeps no order): read
/// text with [`parse_record`] to keep them as written.
pub fn parse_conversation(
    value: &Value,
    format: Format,
) -> std::result::Result<(Conversation, Format), (Option<String>, RejectReason)> {
    parse_with(value, None, format)
}

/// Whether a record holds JSON objects whose key order reaches the render: tool schemas or
/// object-valued call arguments.
fn needs_order(v: &Value) -> bool {
    let Value::Object(o) = v else { return false };
    if matches!(o.get("tools"), Some(Value::Array(_))) {
        return true;
    }
    ["messages", "prompt", "completion"].iter().any(|k| {
        matches!(o.get(*k), Some(Value::Array(ms)) if ms.iter().any(|m| m.get("tool_calls").is_some()))
    })
}

/// The ordered twin of the record at a path of keys and indices.
#[derive(Clone, Copy)]
struct Ordered<'a>(Option<&'a minijinja::Value>);

#[derive(Clone, Copy)]
enum Key<'k> {
    Name(&'k str),
    Index(usize),
}

impl Ordered<'_> {
    fn json_at(&self, path: &[Key<'_>]) -> Option<JsonText> {
        let mut v = self.0?.clone();
        for k in path {
            v = match k {
                Key::Name(n) => v.get_attr(n).ok()?,
                Key::Index(i) => v.get_item(&minijinja::Value::from(*i)).ok()?,
            };
            if v.is_undefined() {
                return None;
            }
        }
        Some(JsonText::from_value(&v))
    }
}

fn parse_with(
    value: &Value,
    ordered: Option<&minijinja::Value>,
    format: Format,
) -> std::result::Result<(Conversation, Format), (Option<String>, RejectReason)> {
    let ordered = Ordered(ordered);
    let Value::Object(obj) = value else {
        return Err((None, RejectReason::WrongType { expected: "object" }));
    };
    let format = match format {
        Format::Auto => detect(obj)?,
        f => f,
    };
    let messages = match format {
        Format::Messages => messages_list(obj, "messages", &mut Vec::new(), ordered)?,
        Format::ShareGpt => sharegpt(obj)?,
        Format::Alpaca => alpaca(obj)?,
        Format::PromptCompletion => prompt_completion(obj, ordered)?,
        Format::Plain => plain(obj)?,
        Format::Text | Format::Auto => {
            return Err((
                None,
                RejectReason::UnknownFormat(
                    "a raw-text record: read it with read_texts (or mix it in)".into(),
                ),
            ));
        }
    };
    let tools = tools(obj, ordered)?;
    for (i, m) in messages.iter().enumerate() {
        let texts = [Some(&m.content), m.reasoning.as_ref()];
        if let Some(c) = texts.iter().flatten().find_map(|t| reserved_char(t)) {
            return Err((
                Some(format!("messages[{i}].content")),
                RejectReason::ReservedChar(c),
            ));
        }
    }
    validate_messages(&messages, true).map_err(|(i, reason)| {
        let field = match &reason {
            RejectReason::EmptyAssistant => format!("messages[{i}].content"),
            RejectReason::BadToolCall(_) if messages[i].role == Role::Tool => {
                format!("messages[{i}].tool_call_id")
            }
            RejectReason::BadToolCall(_) => format!("messages[{i}].tool_calls"),
            _ => format!("messages[{i}].role"),
        };
        (Some(field), reason)
    })?;
    let mut conv = Conversation::new(messages);
    conv.tools = tools;
    Ok((conv, format))
}

/// The record's `tools`: a list of function schemas (objects), or that list as a JSON string
/// (ShareGPT files written by LLaMA-Factory and glaive).
fn tools(
    obj: &Map<String, Value>,
    ordered: Ordered<'_>,
) -> std::result::Result<Vec<JsonText>, Rej> {
    let list: Vec<JsonText> = match obj.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => {
            let t = JsonText::parse(s).map_err(|e| {
                (
                    Some("tools".into()),
                    RejectReason::InvalidJson(format!("the tools string is not JSON: {e}")),
                )
            })?;
            match t.to_value().try_iter() {
                Ok(items) if !t.is_object() => items.map(|v| JsonText::from_value(&v)).collect(),
                _ => {
                    return Err((
                        Some("tools".into()),
                        RejectReason::WrongType {
                            expected: "a list of function schemas",
                        },
                    ));
                }
            }
        }
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(j, t)| {
                ordered
                    .json_at(&[Key::Name("tools"), Key::Index(j)])
                    .unwrap_or_else(|| JsonText::from_json(t))
            })
            .collect(),
        Some(_) => {
            return Err((
                Some("tools".into()),
                RejectReason::WrongType { expected: "array" },
            ));
        }
    };
    for (j, t) in list.iter().enumerate() {
        if !t.is_object() {
            return Err((
                Some(format!("tools[{j}]")),
                RejectReason::WrongType {
                    expected: "object (a function schema)",
                },
            ));
        }
    }
    Ok(list)
}

/// An assistant message's `tool_calls`: OpenAI `{"id", "type": "function", "function":
/// {"name", "arguments"}}` (or the function fields at top level), arguments a JSON object or a
/// string holding one.
fn tool_calls(
    v: &Value,
    f: &str,
    path: &[Key<'_>],
    ordered: Ordered<'_>,
) -> std::result::Result<Vec<ToolCall>, Rej> {
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => {
            return Err((
                Some(f.to_string()),
                RejectReason::WrongType { expected: "array" },
            ));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (k, c) in list.iter().enumerate() {
        let cf = format!("{f}[{k}]");
        let Value::Object(c) = c else {
            return Err((Some(cf), RejectReason::WrongType { expected: "object" }));
        };
        let id = opt_str(c, "id", &format!("{cf}.id"))?.map(str::to_string);
        let (func, ff, nested) = match c.get("function") {
            Some(Value::Object(func)) => (func, format!("{cf}.function"), true),
            Some(_) => {
                return Err((
                    Some(format!("{cf}.function")),
                    RejectReason::WrongType { expected: "object" },
                ));
            }
            None => (c, cf.clone(), false),
        };
        let name = req_str(func, "name", &format!("{ff}.name"))?.to_string();
        let af = format!("{ff}.arguments");
        let arguments = match func.get("arguments") {
            None | Some(Value::Null) => {
                return Err((Some(af), RejectReason::MissingField));
            }
            Some(Value::String(s)) => JsonText::parse(s).map_err(|e| {
                (
                    Some(af.clone()),
                    RejectReason::BadToolCall(format!("arguments are not JSON: {e}")),
                )
            })?,
            Some(a @ Value::Object(_)) => {
                let mut p = path.to_vec();
                p.push(Key::Index(k));
                if nested {
                    p.push(Key::Name("function"));
                }
                p.push(Key::Name("arguments"));
                ordered
                    .json_at(&p)
                    .unwrap_or_else(|| JsonText::from_json(a))
            }
            Some(_) => {
                return Err((
                    Some(af),
                    RejectReason::WrongType {
                        expected: "a JSON object or a string holding one",
                    },
                ));
            }
        };
        if !arguments.is_object() {
            return Err((
                Some(af),
                RejectReason::BadToolCall(format!(
                    "arguments must be a JSON object, found {arguments}"
                )),
            ));
        }
        out.push(ToolCall {
            id,
            name,
            arguments,
        });
    }
    Ok(out)
}

type Rej = (Option<String>, RejectReason);

fn detect(obj: &Map<String, Value>) -> std::result::Result<Format, Rej> {
    let has = |k: &str| obj.contains_key(k);
    Ok(if has("messages") {
        Format::Messages
    } else if has("conversations") {
        Format::ShareGpt
    } else if has("instruction") && has("output") {
        Format::Alpaca
    } else if has("prompt") && has("completion") {
        Format::PromptCompletion
    } else if has("user") && has("assistant") {
        Format::Plain
    } else if has("text") {
        Format::Text
    } else {
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).take(8).collect();
        keys.sort_unstable();
        return Err((
            None,
            RejectReason::UnknownFormat(format!(
                "fields {keys:?} match no format (messages, conversations, \
                 instruction+output, prompt+completion, user+assistant, text)"
            )),
        ));
    })
}

/// Characters this crate reserves for its own markers (Unicode noncharacters U+FDD0..U+FDEF).
pub(crate) fn reserved_char(s: &str) -> Option<char> {
    s.chars().find(|c| ('\u{FDD0}'..='\u{FDEF}').contains(c))
}

fn nonempty<'a>(s: &'a str, field: &str) -> std::result::Result<&'a str, Rej> {
    if s.trim().is_empty() {
        Err((Some(field.to_string()), RejectReason::EmptyField))
    } else {
        Ok(s)
    }
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> std::result::Result<Option<&'a str>, Rej> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err((
            Some(field.to_string()),
            RejectReason::WrongType { expected: "string" },
        )),
    }
}

fn req_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> std::result::Result<&'a str, Rej> {
    match opt_str(obj, key, field)? {
        None => Err((Some(field.to_string()), RejectReason::MissingField)),
        Some(s) => nonempty(s, field),
    }
}

/// Message content: a string, or OpenAI content parts `[{"type": "text", "text": ...}]`.
fn content(v: Option<&Value>, field: &str, role: Role) -> std::result::Result<String, Rej> {
    let empty = || {
        if role == Role::Assistant {
            (Some(field.to_string()), RejectReason::EmptyAssistant)
        } else {
            (Some(field.to_string()), RejectReason::EmptyField)
        }
    };
    let text = match v {
        None => return Err((Some(field.to_string()), RejectReason::MissingField)),
        Some(Value::Null) => return Err(empty()),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                let pf = format!("{field}[{j}]");
                let Value::Object(p) = p else {
                    return Err((Some(pf), RejectReason::WrongType { expected: "object" }));
                };
                match opt_str(p, "type", &format!("{pf}.type"))? {
                    Some("text") | None => {}
                    Some(other) => {
                        return Err((
                            Some(format!("{pf}.type")),
                            RejectReason::UnknownFormat(format!(
                                "content part of type {other:?} (only text is supported)"
                            )),
                        ));
                    }
                }
                match opt_str(p, "text", &format!("{pf}.text"))? {
                    Some(t) => out.push_str(t),
                    None => {
                        return Err((Some(format!("{pf}.text")), RejectReason::MissingField));
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err((
                Some(field.to_string()),
                RejectReason::WrongType { expected: "string" },
            ));
        }
    };
    if text.trim().is_empty() {
        return Err(empty());
    }
    Ok(text)
}

fn messages_list(
    obj: &Map<String, Value>,
    key: &str,
    out: &mut Vec<Message>,
    ordered: Ordered<'_>,
) -> std::result::Result<Vec<Message>, Rej> {
    let list = match obj.get(key) {
        None => return Err((Some(key.to_string()), RejectReason::MissingField)),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err((
                Some(key.to_string()),
                RejectReason::WrongType { expected: "array" },
            ));
        }
    };
    if list.is_empty() {
        return Err((Some(key.to_string()), RejectReason::EmptyField));
    }
    for (i, m) in list.iter().enumerate() {
        let f = format!("{key}[{i}]");
        let Value::Object(m) = m else {
            return Err((Some(f), RejectReason::WrongType { expected: "object" }));
        };
        let role_s = match opt_str(m, "role", &format!("{f}.role"))? {
            Some(r) => r,
            None => return Err((Some(format!("{f}.role")), RejectReason::MissingField)),
        };
        let role: Role = role_s.parse().map_err(|r| (Some(format!("{f}.role")), r))?;
        let calls = match m.get("tool_calls") {
            None => Vec::new(),
            Some(v) => tool_calls(
                v,
                &format!("{f}.tool_calls"),
                &[Key::Name(key), Key::Index(i), Key::Name("tool_calls")],
                ordered,
            )?,
        };
        let content = match (role, m.get("content")) {
            // A turn that only calls tools has no content (null, "" or absent).
            (Role::Assistant, None | Some(Value::Null)) if !calls.is_empty() => String::new(),
            (Role::Assistant, Some(Value::String(s))) if !calls.is_empty() => s.clone(),
            // A tool result written as JSON rather than as a string.
            (Role::Tool, Some(v @ (Value::Object(_) | Value::Array(_)))) => ordered
                .json_at(&[Key::Name(key), Key::Index(i), Key::Name("content")])
                .unwrap_or_else(|| JsonText::from_json(v))
                .to_string(),
            (_, v) => content(v, &format!("{f}.content"), role)?,
        };
        let train = match m.get("train") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err((
                    Some(format!("{f}.train")),
                    RejectReason::WrongType { expected: "bool" },
                ));
            }
        };
        // OpenAI's fine-tuning format: `"weight": 0` marks an assistant turn not to learn
        // (1 to learn); `train` wins when both are given.
        let weight = match m.get("weight") {
            None | Some(Value::Null) => None,
            Some(Value::Number(w)) if w.as_f64() == Some(0.0) => Some(false),
            Some(Value::Number(w)) if w.as_f64() == Some(1.0) => Some(true),
            Some(_) => {
                return Err((
                    Some(format!("{f}.weight")),
                    RejectReason::WrongType { expected: "0 or 1" },
                ));
            }
        };
        let train = train.or(weight);
        // The reasoning trace: `reasoning_content` (OpenAI-compatible servers, Qwen3,
        // DeepSeek-R1), `reasoning`, or `thinking` (gpt-oss).
        let mut reasoning = None;
        for k in ["reasoning_content", "reasoning", "thinking"] {
            if let Some(r) = opt_str(m, k, &format!("{f}.{k}"))?
                && !r.trim().is_empty()
            {
                if role != Role::Assistant {
                    return Err((
                        Some(format!("{f}.{k}")),
                        RejectReason::RoleOrder(format!("a {role} message carries reasoning")),
                    ));
                }
                reasoning.get_or_insert_with(|| r.to_string());
            }
        }
        let tool_call_id =
            opt_str(m, "tool_call_id", &format!("{f}.tool_call_id"))?.map(str::to_string);
        let name = match role {
            Role::Tool => opt_str(m, "name", &format!("{f}.name"))?.map(str::to_string),
            _ => None,
        };
        out.push(Message {
            role,
            content,
            train,
            tool_calls: calls,
            tool_call_id,
            name,
            reasoning,
        });
    }
    Ok(std::mem::take(out))
}

fn sharegpt(obj: &Map<String, Value>) -> std::result::Result<Vec<Message>, Rej> {
    let list = match obj.get("conversations") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err((Some("conversations".into()), RejectReason::EmptyField));
        }
        Some(_) => {
            return Err((
                Some("conversations".into()),
                RejectReason::WrongType { expected: "array" },
            ));
        }
        None => return Err((Some("conversations".into()), RejectReason::MissingField)),
    };
    let mut out = Vec::new();
    if let Some(s) = opt_str(obj, "system", "system")?
        && !s.trim().is_empty()
    {
        out.push(Message::system(s));
    }
    for (i, m) in list.iter().enumerate() {
        let f = format!("conversations[{i}]");
        let Value::Object(m) = m else {
            return Err((Some(f), RejectReason::WrongType { expected: "object" }));
        };
        let from = match opt_str(m, "from", &format!("{f}.from"))? {
            Some(r) => r,
            None => return Err((Some(format!("{f}.from")), RejectReason::MissingField)),
        };
        let role = match from {
            "system" => Role::System,
            "human" | "user" => Role::User,
            "gpt" | "assistant" => Role::Assistant,
            "observation" | "tool" | "function_response" => Role::Tool,
            "function_call" => {
                // LLaMA-Factory / glaive: the value is `{"name", "arguments"}` (or a list of
                // them) as JSON text; it continues the assistant turn before it, if any.
                let vf = format!("{f}.value");
                let text = req_str(m, "value", &vf)?;
                let calls = sharegpt_calls(text, &vf)?;
                match out.last_mut() {
                    Some(last) if last.role == Role::Assistant && last.tool_calls.is_empty() => {
                        last.tool_calls = calls;
                    }
                    _ => {
                        let mut msg = Message::assistant("");
                        msg.tool_calls = calls;
                        out.push(msg);
                    }
                }
                continue;
            }
            other => {
                return Err((
                    Some(format!("{f}.from")),
                    RejectReason::UnknownRole(other.to_string()),
                ));
            }
        };
        let content = content(m.get("value"), &format!("{f}.value"), role)?;
        out.push(Message::new(role, content));
    }
    Ok(out)
}

/// A ShareGPT `function_call` value: one call `{"name", "arguments"}` or a list of them.
fn sharegpt_calls(text: &str, f: &str) -> std::result::Result<Vec<ToolCall>, Rej> {
    let bad = |why: String| (Some(f.to_string()), RejectReason::BadToolCall(why));
    let v = JsonText::parse(text).map_err(|e| bad(format!("the call is not JSON: {e}")))?;
    let v = v.to_value();
    let items: Vec<minijinja::Value> = if v.kind() == minijinja::value::ValueKind::Seq {
        v.try_iter().map(Iterator::collect).unwrap_or_default()
    } else {
        vec![v]
    };
    let mut out = Vec::with_capacity(items.len());
    for c in items {
        if c.kind() != minijinja::value::ValueKind::Map {
            return Err(bad(format!(
                "expected {{\"name\": ..., \"arguments\": {{...}}}}, found {}",
                JsonText::from_value(&c)
            )));
        }
        let name = c
            .get_attr("name")
            .ok()
            .and_then(|n| n.as_str().map(str::to_string))
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| bad("the call has no \"name\" string".into()))?;
        let args = c.get_attr("arguments").unwrap_or_default();
        let arguments = match args.as_str() {
            Some(s) => {
                JsonText::parse(s).map_err(|e| bad(format!("arguments are not JSON: {e}")))?
            }
            None if args.is_undefined() || args.is_none() => {
                return Err(bad("the call has no \"arguments\"".into()));
            }
            None => JsonText::from_value(&args),
        };
        if !arguments.is_object() {
            return Err(bad(format!(
                "arguments must be a JSON object, found {arguments}"
            )));
        }
        out.push(ToolCall {
            id: None,
            name,
            arguments,
        });
    }
    Ok(out)
}

fn alpaca(obj: &Map<String, Value>) -> std::result::Result<Vec<Message>, Rej> {
    let instruction = req_str(obj, "instruction", "instruction")?;
    let input = opt_str(obj, "input", "input")?.unwrap_or("");
    let output = match opt_str(obj, "output", "output")? {
        None => return Err((Some("output".into()), RejectReason::MissingField)),
        Some(s) if s.trim().is_empty() => {
            return Err((Some("output".into()), RejectReason::EmptyAssistant));
        }
        Some(s) => s,
    };
    let mut out = Vec::new();
    if let Some(s) = opt_str(obj, "system", "system")?
        && !s.trim().is_empty()
    {
        out.push(Message::system(s));
    }
    let user = if input.trim().is_empty() {
        instruction.to_string()
    } else {
        format!("{instruction}\n\n{input}")
    };
    out.push(Message::user(user));
    out.push(Message::assistant(output));
    Ok(out)
}

fn prompt_completion(
    obj: &Map<String, Value>,
    ordered: Ordered<'_>,
) -> std::result::Result<Vec<Message>, Rej> {
    let mut out = Vec::new();
    match obj.get("prompt") {
        Some(Value::String(s)) => out.push(Message::user(nonempty(s, "prompt")?)),
        Some(Value::Array(_)) => out = messages_list(obj, "prompt", &mut out, ordered)?,
        Some(_) => {
            return Err((
                Some("prompt".into()),
                RejectReason::WrongType {
                    expected: "string or message list",
                },
            ));
        }
        None => return Err((Some("prompt".into()), RejectReason::MissingField)),
    }
    match obj.get("completion") {
        Some(Value::String(s)) => {
            if s.trim().is_empty() {
                return Err((Some("completion".into()), RejectReason::EmptyAssistant));
            }
            out.push(Message::assistant(s.as_str()));
        }
        Some(Value::Array(_)) => {
            let mut prefix = out;
            out = messages_list(obj, "completion", &mut prefix, ordered)?;
        }
        Some(_) => {
            return Err((
                Some("completion".into()),
                RejectReason::WrongType {
                    expected: "string or message list",
                },
            ));
        }
        None => return Err((Some("completion".into()), RejectReason::MissingField)),
    }
    Ok(out)
}

fn plain(obj: &Map<String, Value>) -> std::result::Result<Vec<Message>, Rej> {
    let mut out = Vec::new();
    if let Some(s) = opt_str(obj, "system", "system")?
        && !s.trim().is_empty()
    {
        out.push(Message::system(s));
    }
    out.push(Message::user(req_str(obj, "user", "user")?));
    match opt_str(obj, "assistant", "assistant")? {
        None => return Err((Some("assistant".into()), RejectReason::MissingField)),
        Some(s) if s.trim().is_empty() => {
            return Err((Some("assistant".into()), RejectReason::EmptyAssistant));
        }
        Some(s) => out.push(Message::assistant(s)),
    }
    Ok(out)
}

fn reject(
    report: &mut ReadReport,
    policy: BadRecordPolicy,
    origin: Origin,
    field: Option<String>,
    reason: RejectReason,
) -> Result<()> {
    match policy {
        BadRecordPolicy::Fail => Err(DataError::Record {
            file: origin.file,
            line: origin.line,
            field,
            reason,
        }),
        BadRecordPolicy::Skip => {
            report.reject(Rejection {
                origin,
                field,
                reason,
            });
            Ok(())
        }
    }
}

/// The longest line a data file may have: more bytes without a newline is not a JSONL or
/// text dataset (`/dev/zero`, a binary file), and reading on would only fill memory.
pub const MAX_LINE_BYTES: usize = 256 << 20;

/// Reads a whole file, decompressing gzip (detected by its magic bytes). Devices are refused
/// (`/dev/zero` and `/dev/urandom` never end), as are lines longer than `MAX_LINE_BYTES` and
/// contents larger than half the available memory: each a clear error naming the file.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    read_bounded(open_data(path)?, path, memory_limit(), 1, Vec::new())
}

/// Half the available memory: the most a data file read whole may take.
fn memory_limit() -> u64 {
    manners_events::host::available_memory().map_or(u64::MAX, |m| m / 2)
}

/// Opens a data file for buffered reading, decompressing gzip (detected by its magic bytes).
/// Directories, devices and sockets are refused with an error naming the file.
fn open_data(path: &Path) -> Result<Box<dyn BufRead>> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_dir() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
            what: "is a directory, not a data file".into(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() || t.is_block_device() || t.is_socket() {
            return Err(DataError::NotAFile {
                path: path.to_path_buf(),
                what: "is a device or socket, not a data file".into(),
            });
        }
    }
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let gz = reader
        .fill_buf()
        .map_err(|e| DataError::io(path, e))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            flate2::bufread::MultiGzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    })
}

/// Reads one line (with its `\n`) into `buf`, refusing lines longer than [`MAX_LINE_BYTES`].
/// Returns the bytes read, 0 at the end of the file.
fn read_line_bounded(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    path: &Path,
    line: usize,
) -> Result<usize> {
    read_line_at_most(r, buf, path, line, MAX_LINE_BYTES)
}

fn read_line_at_most(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    path: &Path,
    line: usize,
    max: usize,
) -> Result<usize> {
    let n = r
        .take(max as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|e| DataError::io(path, e))?;
    if n > max && buf.last() != Some(&b'\n') {
        return Err(DataError::Record {
            file: path.to_path_buf(),
            line,
            field: None,
            reason: RejectReason::LineTooLong { max },
        });
    }
    Ok(n)
}

/// [`for_each_record`] without reading a JSONL file whole: records are read line by line. A
/// file whose first non-blank line opens a JSON array, or a single object spread over several
/// lines, is read whole (up to half the available memory) and handed to `for_each_record`.
fn stream_records(
    path: &Path,
    mut f: impl FnMut(usize, std::result::Result<&str, Rej>) -> Result<()>,
) -> Result<()> {
    let mut r = open_data(path)?;
    let mut head = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        if read_line_bounded(&mut r, &mut buf, path, line + 1)? == 0 {
            return for_each_record(path, &head, f);
        }
        line += 1;
        head.extend_from_slice(&buf);
        let content = if line == 1 { strip_bom(&buf) } else { &buf[..] };
        let Some(start) = content.iter().position(|b| !b.is_ascii_whitespace()) else {
            continue;
        };
        let whole = match content[start] {
            b'[' => true,
            b'{' => serde_json::from_slice::<serde::de::IgnoredAny>(&content[start..]).is_err(),
            _ => false,
        };
        if whole {
            let bytes = read_bounded(r, path, memory_limit(), line + 1, head)?;
            return for_each_record(path, &bytes, f);
        }
        break;
    }
    // `buf` holds the first non-blank line (number `line`); the rest follows one at a time.
    loop {
        let raw = if line == 1 { strip_bom(&buf) } else { &buf[..] };
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if !raw.iter().all(u8::is_ascii_whitespace) {
            let rec = std::str::from_utf8(raw).map_err(|e| {
                (
                    None,
                    RejectReason::InvalidUtf8 {
                        byte: e.valid_up_to(),
                    },
                )
            });
            f(line, rec)?;
        }
        buf.clear();
        if read_line_bounded(&mut r, &mut buf, path, line + 1)? == 0 {
            return Ok(());
        }
        line += 1;
    }
}

/// Reads the rest of `r` after `out` (the lines before `line`), refusing a line longer than
/// [`MAX_LINE_BYTES`] or more than `limit` bytes in all.
fn read_bounded(
    mut r: impl Read,
    path: &Path,
    limit: u64,
    line: usize,
    mut out: Vec<u8>,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 20];
    let (mut line, mut since_newline) = (line, 0usize);
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DataError::io(path, e)),
        };
        let chunk = &buf[..n];
        match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                line += chunk.iter().filter(|&&b| b == b'\n').count();
                since_newline = n - 1 - i;
            }
            None => since_newline += n,
        }
        if since_newline > MAX_LINE_BYTES {
            return Err(DataError::Record {
                file: path.to_path_buf(),
                line,
                field: None,
                reason: RejectReason::LineTooLong {
                    max: MAX_LINE_BYTES,
                },
            });
        }
        out.extend_from_slice(chunk);
        if out.len() as u64 > limit {
            return Err(DataError::NotAFile {
                path: path.to_path_buf(),
                what: format!(
                    "is larger than half the available memory ({:.1} GB); split it",
                    limit as f64 / 1e9
                ),
            });
        }
    }
}

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

/// Calls `f(line, record_text_or_rejection)` for each record of a JSONL or JSON file.
fn for_each_record(
    path: &Path,
    bytes: &[u8],
    mut f: impl FnMut(usize, std::result::Result<&str, Rej>) -> Result<()>,
) -> Result<()> {
    let bytes = strip_bom(bytes);
    let first = bytes.iter().position(|b| !b.is_ascii_whitespace());
    if let Some(start) = first
        && bytes[start] == b'['
    {
        // A JSON array: the file must be valid UTF-8 and valid JSON as a whole.
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let at = e.valid_up_to();
            DataError::Record {
                file: path.to_path_buf(),
                line: 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count(),
                field: None,
                reason: RejectReason::InvalidUtf8 { byte: at },
            }
        })?;
        let items: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(text).map_err(|e| DataError::Record {
                file: path.to_path_buf(),
                line: e.line(),
                field: None,
                reason: RejectReason::InvalidJson(e.to_string()),
            })?;
        let base = text.as_ptr() as usize;
        let mut line = 1;
        let mut pos = 0;
        for item in items {
            let s = item.get();
            let off = (s.as_ptr() as usize).saturating_sub(base).min(text.len());
            line += text.as_bytes()[pos..off]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            pos = off;
            f(line, Ok(s))?;
        }
        return Ok(());
    }
    if let Some(start) = first
        && bytes[start] == b'{'
    {
        // A single JSON object spread over several lines (pretty-printed): one record.
        let first_line = bytes[start..]
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        if serde_json::from_slice::<serde::de::IgnoredAny>(first_line).is_err()
            && let Ok(text) = std::str::from_utf8(bytes)
            && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
        {
            let line = 1 + bytes[..start].iter().filter(|&&b| b == b'\n').count();
            return f(line, Ok(text.trim()));
        }
    }
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let rec = std::str::from_utf8(raw).map_err(|e| {
            (
                None,
                RejectReason::InvalidUtf8 {
                    byte: e.valid_up_to(),
                },
            )
        });
        f(i + 1, rec)?;
    }
    Ok(())
}

/// Paragraph blocks of a text file: (first line number, bytes joined with '\n').
fn paragraphs(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, Vec<u8>)> = None;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            if let Some(p) = cur.take() {
                out.push(p);
            }
            continue;
        }
        match &mut cur {
            Some((_, buf)) => {
                buf.push(b'\n');
                buf.extend_from_slice(raw);
            }
            None => cur = Some((i + 1, raw.to_vec())),
        }
    }
    out.extend(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> std::result::Result<Vec<Message>, Rej> {
        parse_conversation(&v, Format::Auto).map(|(c, _)| c.messages)
    }

    /// OpenAI's `weight` on assistant messages (it used to be ignored and the turn trained).
    #[test]
    fn openai_weight_zero_is_not_trained() {
        let m = parse(json!({"messages": [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": "bad", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "good", "weight": 1}]}))
        .unwrap();
        assert_eq!((m[1].train, m[3].train), (Some(false), Some(true)));
        let both = parse(json!({"messages": [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": "x", "weight": 0, "train": true}]}))
        .unwrap();
        assert_eq!(both[1].train, Some(true), "train wins");
        let (field, _) = parse(json!({"messages": [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": "x", "weight": 0.5}]}))
        .unwrap_err();
        assert_eq!(field.as_deref(), Some("messages[1].weight"));
    }

    /// Devices never end and a line of hundreds of MB is no dataset: both were read until
    /// memory ran out.
    #[test]
    fn devices_and_endless_lines_are_refused() {
        #[cfg(unix)]
        for dev in ["/dev/zero", "/dev/urandom", "/dev/null"] {
            let e = read_bytes(Path::new(dev)).unwrap_err().to_string();
            assert!(e.contains(dev) && e.contains("device"), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let e = read_bytes(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        // Ten short lines, then one without an end: the error names the line.
        let mut text = "{}\n".repeat(10).into_bytes();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES / 64));
        let e = read_bounded(&text[..], Path::new("big.jsonl"), u64::MAX, 1, Vec::new()).unwrap();
        assert_eq!(e.len(), text.len());
        let long =
            std::io::Read::chain(&text[..], std::io::repeat(b'x').take(MAX_LINE_BYTES as u64));
        let e = read_bounded(long, Path::new("big.jsonl"), u64::MAX, 1, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("big.jsonl:11:") && e.contains("without a newline"),
            "{e}"
        );
        // Contents beyond the memory limit.
        let e = read_bounded(&text[..], Path::new("x.jsonl"), 100, 1, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.jsonl") && e.contains("available memory"),
            "{e}"
        );
        // The streaming reader's line bound: a line of exactly `max` bytes (plus its newline)
        // passes, one more byte without a newline is refused, naming the line.
        let mut r: &[u8] = b"12345\n123456";
        let mut buf = Vec::new();
        let p = Path::new("s.jsonl");
        assert_eq!(read_line_at_most(&mut r, &mut buf, p, 1, 5).unwrap(), 6);
        buf.clear();
        let e = read_line_at_most(&mut r, &mut buf, p, 2, 5)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("s.jsonl:2:"), "{e}");
    }

    #[test]
    fn formats_are_detected() {
        let m = parse(json!({"messages": [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo", "train": false}]}))
        .unwrap();
        assert_eq!(m[1].train, Some(false));
        let a = parse(json!({"instruction": "Add", "input": "1 2", "output": "3"})).unwrap();
        assert_eq!(a[0].content, "Add\n\n1 2");
        let s = parse(json!({"conversations": [{"from": "system", "value": "s"},
            {"from": "human", "value": "h"}, {"from": "gpt", "value": "g"}]}))
        .unwrap();
        assert_eq!(s.len(), 3);
        let p = parse(json!({"prompt": "q", "completion": "a"})).unwrap();
        assert_eq!(p[1], Message::assistant("a"));
        let pl = parse(json!({"prompt": [{"role": "user", "content": "q"}],
            "completion": [{"role": "assistant", "content": "a"}]}))
        .unwrap();
        assert_eq!(pl.len(), 2);
        let plain = parse(json!({"system": "s", "user": "u", "assistant": "a"})).unwrap();
        assert_eq!(plain[0].role, Role::System);
        let parts = parse(json!({"messages": [{"role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"}]}))
        .unwrap();
        assert_eq!(parts[0].content, "ab");
    }

    #[test]
    fn rejections_name_the_field() {
        let e = parse(json!({"messages": [{"role": "bot", "content": "x"}]})).unwrap_err();
        assert_eq!(e.0.as_deref(), Some("messages[0].role"));
        assert_eq!(e.1, RejectReason::UnknownRole("bot".into()));
        let e = parse(json!({"messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "content": null}]}))
        .unwrap_err();
        assert_eq!(e.1, RejectReason::EmptyAssistant);
        let e = parse(json!({"messages": [{"role": "user", "content": "x"}]})).unwrap_err();
        assert_eq!(e.1, RejectReason::NoAssistant);
        let e = parse(json!({"instruction": "", "output": "x"})).unwrap_err();
        assert_eq!(
            (e.0.as_deref(), e.1),
            (Some("instruction"), RejectReason::EmptyField)
        );
        let e = parse(json!({"foo": 1})).unwrap_err();
        assert!(matches!(e.1, RejectReason::UnknownFormat(_)));
        let e = parse(json!({"text": "raw"})).unwrap_err();
        assert!(matches!(e.1, RejectReason::UnknownFormat(_)));
        let e = parse(json!({"user": "u\u{FDD0}", "assistant": "a"})).unwrap_err();
        assert!(matches!(e.1, RejectReason::ReservedChar(_)));
    }

    /// OpenAI tool calls (arguments as a string or an object, key order kept), tool results
    /// answering them by id, reasoning under its three names, and the record's tools.
    #[test]
    fn tool_calls_results_and_reasoning_are_read() {
        let text = r#"{"tools": [{"type": "function", "function": {"name": "f", "parameters": {"z": 1, "a": 2}}}],
            "messages": [{"role": "user", "content": "q"},
            {"role": "assistant", "content": null, "reasoning_content": "think",
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"b\": 1, \"a\": [2]}"}},
                            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": {"y": "x", "b": null}}}]},
            {"role": "tool", "tool_call_id": "c2", "content": {"ok": true}},
            {"role": "tool", "tool_call_id": "c1", "name": "f", "content": "1"},
            {"role": "assistant", "content": "done", "thinking": "t2"}]}"#;
        let (c, f) = parse_record(text, Format::Auto).unwrap();
        assert_eq!(f, Format::Messages);
        let m = &c.messages;
        assert_eq!(m[1].content, "");
        assert_eq!(m[1].reasoning.as_deref(), Some("think"));
        assert_eq!(m[1].tool_calls[0].arguments.as_str(), r#"{"b":1,"a":[2]}"#);
        assert_eq!(
            m[1].tool_calls[1].arguments.as_str(),
            r#"{"y":"x","b":null}"#
        );
        assert_eq!(m[1].tool_calls[1].id.as_deref(), Some("c2"));
        assert_eq!(
            (m[2].role, m[2].content.as_str()),
            (Role::Tool, r#"{"ok":true}"#)
        );
        assert_eq!(m[3].name.as_deref(), Some("f"));
        assert_eq!(m[4].reasoning.as_deref(), Some("t2"));
        assert_eq!(
            c.tools[0].as_str(),
            r#"{"type":"function","function":{"name":"f","parameters":{"z":1,"a":2}}}"#
        );
    }

    /// LLaMA-Factory / glaive ShareGPT: `function_call` and `observation` turns, tools as a
    /// JSON string.
    #[test]
    fn sharegpt_function_calls_are_read() {
        let (c, _) = parse_record(
            r#"{"tools": "[{\"name\": \"lookup\", \"parameters\": {}}]", "conversations": [
            {"from": "human", "value": "Capital of Peru?"},
            {"from": "function_call", "value": "{\"name\": \"lookup\", \"arguments\": {\"q\": \"Peru\"}}"},
            {"from": "observation", "value": "Lima"},
            {"from": "gpt", "value": "Lima."}]}"#,
            Format::Auto,
        )
        .unwrap();
        let roles: Vec<Role> = c.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::User, Role::Assistant, Role::Tool, Role::Assistant]
        );
        assert_eq!(c.messages[1].tool_calls[0].name, "lookup");
        assert_eq!(
            c.messages[1].tool_calls[0].arguments.as_str(),
            r#"{"q":"Peru"}"#
        );
        assert_eq!(c.tools[0].as_str(), r#"{"name":"lookup","parameters":{}}"#);
    }

    /// Malformed calls are refused naming the field: arguments that are not JSON or not an
    /// object, a tool message that answers no call or names an unknown id, an unanswered call.
    #[test]
    fn malformed_tool_calls_name_the_field() {
        let rec = |calls: &str, after: &str| {
            format!(
                r#"{{"messages": [{{"role": "user", "content": "q"}},
                {{"role": "assistant", "content": "", "tool_calls": {calls}}}{after}]}}"#
            )
        };
        let call = |args: &str| {
            format!(
                r#"[{{"id": "c1", "type": "function", "function": {{"name": "f", "arguments": {args}}}}}]"#
            )
        };
        let answer = r#", {"role": "tool", "tool_call_id": "c1", "content": "r"}, {"role": "assistant", "content": "a"}"#;
        let err = |text: String| parse_record(&text, Format::Auto).unwrap_err();
        let (f, r) = err(rec(&call(r#""{not json""#), answer));
        assert_eq!(
            f.as_deref(),
            Some("messages[1].tool_calls[0].function.arguments")
        );
        assert!(
            matches!(r, RejectReason::BadToolCall(ref m) if m.contains("not JSON")),
            "{r}"
        );
        let (f, r) = err(rec(&call("[1, 2]"), answer));
        assert_eq!(
            f.as_deref(),
            Some("messages[1].tool_calls[0].function.arguments")
        );
        assert!(matches!(r, RejectReason::WrongType { .. }), "{r}");
        let (_, r) = err(rec(&call(r#""[1]""#), answer));
        assert!(r.to_string().contains("must be a JSON object"), "{r}");
        let wrong_id = r#", {"role": "tool", "tool_call_id": "c9", "content": "r"}, {"role": "assistant", "content": "a"}"#;
        let (f, r) = err(rec(&call("{}"), wrong_id));
        assert_eq!(f.as_deref(), Some("messages[2].tool_call_id"));
        assert!(
            r.to_string().contains("\"c9\" answers no pending call"),
            "{r}"
        );
        let two = r#", {"role": "tool", "content": "r"}, {"role": "tool", "content": "r2"}, {"role": "assistant", "content": "a"}"#;
        let (f, r) = err(rec(&call("{}"), two));
        assert_eq!(f.as_deref(), Some("messages[3].tool_call_id"));
        assert!(r.to_string().contains("answers no call"), "{r}");
        let unanswered =
            r#", {"role": "user", "content": "r"}, {"role": "assistant", "content": "a"}"#;
        let (f, r) = err(rec(&call("{}"), unanswered));
        assert_eq!(f.as_deref(), Some("messages[1].tool_calls"));
        assert!(r.to_string().contains("not answered: f (c1)"), "{r}");
        let stray = r#"{"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]}"#;
        let (f, r) = err(stray.to_string());
        assert_eq!(f.as_deref(), Some("messages[1].tool_call_id"));
        assert!(r.to_string().contains("answers no call"), "{r}");
        // Ending on a call is a complete example (the model learns to call).
        assert!(parse_record(&rec(&call("{}"), ""), Format::Auto).is_ok());
    }

    #[test]
    fn paragraphs_split_on_blank_lines() {
        let p = paragraphs(b"a\nb\n\n \n\nc\r\n");
        assert_eq!(p, vec![(1, b"a\nb".to_vec()), (6, b"c".to_vec())]);
    }
}
