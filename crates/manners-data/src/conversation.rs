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
}

impl Role {
    /// The lower-case name used by OpenAI messages and chat templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
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
            other => Err(RejectReason::UnknownRole(other.to_string())),
        }
    }
}

/// One message. `train` overrides the mask mode for this message: `Some(true)` supervises its
/// content and end-of-turn token, `Some(false)` never does; `None` follows the `MaskMode`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<bool>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            train: None,
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
}

impl Conversation {
    pub fn new(messages: Vec<Message>) -> Self {
        Conversation {
            messages,
            origin: None,
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

/// The content of the last user message (the question a prompt asks), if any.
pub fn last_user(messages: &[Message]) -> Option<&str> {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
}

/// Role order for a list of messages. With `complete`, the list must also end with an
/// assistant turn and every assistant turn must have content; without it (an inference
/// prompt), the list must end with a user turn.
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
    for (i, m) in messages.iter().enumerate().skip(start) {
        let expected = if (i - start) % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        if m.role != expected {
            let why = if m.role == Role::System {
                "a system message is only allowed first".to_string()
            } else {
                format!("expected {expected}, found {}", m.role)
            };
            return Err((i, RejectReason::RoleOrder(why)));
        }
        if complete && m.role == Role::Assistant && m.content.trim().is_empty() {
            return Err((i, RejectReason::EmptyAssistant));
        }
    }
    let last = messages.len() - 1;
    match (complete, messages[last].role) {
        (true, Role::User) if last == start => Err((last, RejectReason::NoAssistant)),
        (true, Role::User) => Err((
            last,
            RejectReason::RoleOrder("conversation ends with a user turn".into()),
        )),
        (false, Role::Assistant) => Err((
            last,
            RejectReason::RoleOrder("an inference prompt must end with a user turn".into()),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
