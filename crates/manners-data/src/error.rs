//! One error type for the crate. Every variant that comes from a record names the file, the
//! line and, where one is at fault, the field.

use std::fmt;
use std::path::PathBuf;

use crate::conversation::Origin;

/// Why a record was rejected. `kind()` is the stable key used to count rejections per reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The line (or array element) is not valid JSON.
    InvalidJson(String),
    /// The line is not valid UTF-8 (byte offset of the first bad byte within the line).
    InvalidUtf8 { byte: usize },
    /// A required field is absent.
    MissingField,
    /// A required string field is empty (or only whitespace).
    EmptyField,
    /// A field has the wrong JSON type.
    WrongType { expected: &'static str },
    /// A role (or ShareGPT `from`) that is not system/user/assistant.
    UnknownRole(String),
    /// Roles are out of order (system first, then user/assistant alternating, user first).
    RoleOrder(String),
    /// An assistant turn with no content.
    EmptyAssistant,
    /// A conversation without any assistant turn.
    NoAssistant,
    /// The fields match no known format (or the forced one).
    UnknownFormat(String),
    /// The text contains a character this crate reserves for its own markers.
    ReservedChar(char),
    /// More bytes than any record has without a newline.
    LineTooLong { max: usize },
    /// A malformed tool call or tool result (arguments that are not a JSON object, a result
    /// that answers no call, a call never answered).
    BadToolCall(String),
}

impl RejectReason {
    /// Stable short key for per-reason counts.
    pub fn kind(&self) -> &'static str {
        match self {
            RejectReason::InvalidJson(_) => "invalid json",
            RejectReason::InvalidUtf8 { .. } => "invalid utf-8",
            RejectReason::MissingField => "missing field",
            RejectReason::EmptyField => "empty field",
            RejectReason::WrongType { .. } => "wrong type",
            RejectReason::UnknownRole(_) => "unknown role",
            RejectReason::RoleOrder(_) => "roles out of order",
            RejectReason::EmptyAssistant => "empty assistant turn",
            RejectReason::NoAssistant => "no assistant turn",
            RejectReason::UnknownFormat(_) => "unknown format",
            RejectReason::ReservedChar(_) => "reserved character",
            RejectReason::LineTooLong { .. } => "line too long",
            RejectReason::BadToolCall(_) => "bad tool call",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::InvalidJson(m) => write!(f, "invalid JSON: {m}"),
            RejectReason::InvalidUtf8 { byte } => write!(f, "invalid UTF-8 at byte {byte}"),
            RejectReason::MissingField => write!(f, "missing field"),
            RejectReason::EmptyField => write!(f, "empty field"),
            RejectReason::WrongType { expected } => write!(f, "wrong type, expected {expected}"),
            RejectReason::UnknownRole(r) => write!(f, "unknown role {r:?}"),
            RejectReason::RoleOrder(m) => write!(f, "roles out of order: {m}"),
            RejectReason::EmptyAssistant => write!(f, "assistant turn with no content"),
            RejectReason::NoAssistant => write!(f, "conversation has no assistant turn"),
            RejectReason::UnknownFormat(m) => write!(f, "unknown format: {m}"),
            RejectReason::ReservedChar(c) => {
                write!(f, "contains reserved character U+{:04X}", *c as u32)
            }
            RejectReason::BadToolCall(m) => write!(f, "{m}"),
            RejectReason::LineTooLong { max } => write!(
                f,
                "more than {} MB without a newline: not a JSONL or text dataset",
                max >> 20
            ),
        }
    }
}

/// Formats an optional origin as `file:line: ` (or nothing).
pub(crate) struct At<'a>(pub &'a Option<Origin>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(o) => write!(f, "{o}: "),
            None => Ok(()),
        }
    }
}

/// Formats an optional field as "field `x`: " (or nothing).
pub(crate) struct Field<'a>(pub &'a Option<String>);

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, "field `{name}`: "),
            None => Ok(()),
        }
    }
}

/// Errors of the data pipeline.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path that cannot be a dataset (a directory, a device) or is too large to read.
    #[error("{}: {what}", path.display())]
    NotAFile { path: PathBuf, what: String },
    /// A bad record (policy `fail`), or a file-level problem at a line.
    #[error("{file}:{line}: {}{reason}", Field(field), file = file.display())]
    Record {
        file: PathBuf,
        line: usize,
        field: Option<String>,
        reason: RejectReason,
    },
    /// A conversation that a template cannot render (e.g. roles out of order).
    #[error("{}{}{message}", At(origin), Field(field))]
    Conversation {
        origin: Option<Origin>,
        field: Option<String>,
        message: String,
    },
    /// An encoded example longer than `max_len` under `LengthPolicy::Fail`.
    #[error("{}example has {len} tokens, more than max_len {max_len}", At(origin))]
    TooLong {
        origin: Option<Origin>,
        len: usize,
        max_len: usize,
    },
    /// A bad row in a knowledge table (TSV).
    #[error("{}:{line}: field `{field}`: {message}", file.display())]
    Table {
        file: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    /// A chat template problem (unknown name, bad Jinja, spans not found, ...).
    #[error("template `{template}`: {message}")]
    Template { template: String, message: String },
    /// The tokenizer lacks a token the template needs.
    #[error(
        "template `{template}`: the tokenizer has no token {token:?}; add it as a special token \
         (and resize the embeddings) before encoding"
    )]
    MissingSpecialToken { template: String, token: String },
    /// The tokenizer failed.
    #[error("{}tokenizer: {message}", At(origin))]
    Tokenizer {
        origin: Option<Origin>,
        message: String,
    },
    /// A configuration value that cannot work (batch size 0, example longer than a row, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A loader cursor that does not belong to these examples or this configuration.
    #[error("cannot restore loader: {0}")]
    State(String),
    /// A JSON file (tokenizer_config.json, ...) that cannot be parsed.
    #[error("{}: {message}", path.display())]
    Json { path: PathBuf, message: String },
}

/// Result alias of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// An I/O error on `path` (a missing file gets its own message).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn template(template: &str, message: impl Into<String>) -> Self {
        DataError::Template {
            template: template.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn tokenizer(e: impl fmt::Display) -> Self {
        DataError::Tokenizer {
            origin: None,
            message: e.to_string(),
        }
    }

    /// Attaches an origin to errors that can carry one and have none yet.
    pub(crate) fn with_origin(mut self, at: &Option<Origin>) -> Self {
        if let Some(o) = at {
            match &mut self {
                DataError::Conversation { origin, .. }
                | DataError::TooLong { origin, .. }
                | DataError::Tokenizer { origin, .. }
                    if origin.is_none() =>
                {
                    *origin = Some(o.clone());
                }
                _ => {}
            }
        }
        self
    }
}
