//! The tool-use slice of the default set: a `lookup` tool over the knowledge tables. The
//! assistant calls it with a query naming the field and the entity the question asks about
//! (`{"query": "capital of Peru"}`), reads the table's answer from the tool result, and
//! answers in a sentence.
//!
//! A query rather than `{"entity": "Peru", "field": "capital"}`: in a query the entity follows
//! " of", so its tokens are the question's (` Peru` with its space), and a small model copies
//! them; after `"entity": "` the same name is another token (`Peru` without the space), which
//! the shipped model never learned to map from the question (0% right calls on held-out
//! entities, measured).
//!
//! The records carry no `tools` schema list: the shipped base model has a 256-token context
//! and `chatml-tools` writes schemas inside a ~200-token system block, so the slice names the
//! tool in a one-line system prompt ([`LOOKUP_SYSTEM`]) instead.

use std::collections::HashMap;

use manners_data::{Conversation, JsonText, Message, ToolCall};

use super::facts::{Fact, country_facts, element_facts, state_facts};
use super::wordings::Kind;
use crate::knowledge::Knowledge;

/// The tool's name.
pub const LOOKUP_TOOL: &str = "lookup";

/// The system prompt of every tool-use conversation (training and held-out).
pub const LOOKUP_SYSTEM: &str = "You can look facts up with the lookup tool.";

/// The `field` argument the tool takes for a kind of fact (`country-capital` → `capital`,
/// `state-capital` → `state capital`), for the kinds the slice covers.
pub fn lookup_field(kind: &str) -> Option<&'static str> {
    match kind {
        "country-capital" => Some("capital"),
        // Apart from a country's: Georgia is both.
        "state-capital" => Some("state capital"),
        "country-continent" => Some("continent"),
        "element-symbol" => Some("symbol"),
        "element-number" => Some("atomic number"),
        _ => None,
    }
}

pub(super) fn kind_field(kind: Kind) -> Option<&'static str> {
    lookup_field(kind.name())
}

/// The query for `field` of `entity` (`capital of Peru`).
pub fn lookup_query(entity: &str, field: &str) -> String {
    format!("{field} of {entity}")
}

/// The call the assistant makes for `entity` and `field`.
pub fn lookup_call(entity: &str, field: &str) -> ToolCall {
    let args = serde_json::json!({ "query": lookup_query(entity, field) }).to_string();
    ToolCall {
        id: None,
        name: LOOKUP_TOOL.into(),
        arguments: JsonText::parse(&args).expect("a JSON object"),
    }
}

/// The prompt of a tool-use question: the system prompt and the question.
pub fn lookup_prompt(question: &str) -> Vec<Message> {
    vec![Message::system(LOOKUP_SYSTEM), Message::user(question)]
}

/// A whole tool-use conversation: the prompt; "Let me look up the capital of Peru." and the
/// call (the query restated first, so the call copies what the assistant just wrote); the
/// tool's result for `value` ("capital of Peru: Lima"); the answer.
pub fn lookup_conversation(
    question: &str,
    call: ToolCall,
    value: &str,
    answer: &str,
) -> Conversation {
    let mut m = lookup_prompt(question);
    let query = call.argument_str("query").unwrap_or_default();
    let mut a = Message::assistant(format!("Let me look up the {query}."));
    a.tool_calls.push(call);
    m.push(a);
    // What `run_lookup` returns for this call.
    m.push(Message::tool(format!("{query}: {value}")));
    m.push(Message::assistant(answer));
    Conversation::new(m)
}

/// What the tool answers: `(entity in lower case, field) → value` for every country, element
/// and state of the tables (held-out ones included: the tool knows what the model does not).
pub fn lookup_table(k: &Knowledge) -> HashMap<(String, String), String> {
    let mut out = HashMap::new();
    let facts: Vec<Fact> = k
        .countries
        .iter()
        .flat_map(country_facts)
        .chain(k.elements.iter().flat_map(element_facts))
        .chain(k.states.iter().flat_map(state_facts))
        .collect();
    for f in facts {
        if let Some(field) = kind_field(f.kind) {
            out.entry((normalize(&f.entity), field.to_string()))
                .or_insert(f.reference.clone());
        }
    }
    out
}

/// A query's `(field, entity)`, lower-case, without articles: `"The capital of the
/// Bahamas?"` → `("capital", "bahamas")`. `None` without " of ".
pub fn parse_query(query: &str) -> Option<(String, String)> {
    let q = normalize(query.trim().trim_end_matches(['?', '.', '!']));
    let (field, entity) = q.split_once(" of ")?;
    Some((field.to_string(), entity.to_string()))
}

/// Lower case, single spaces, no "the".
fn normalize(s: &str) -> String {
    s.to_lowercase()
        .split_whitespace()
        .filter(|w| *w != "the")
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a call against the table: `"capital of Peru: Lima"` (the query, then the value after
/// a space, so the value is the same token the answer writes: a small model copies ` Lima`, not
/// `Lima` at the start of a turn), or a short "nothing found" the model can read.
pub fn run_lookup(table: &HashMap<(String, String), String>, call: &ToolCall) -> String {
    if call.name != LOOKUP_TOOL {
        return format!("unknown tool {:?}", call.name);
    }
    let query = call.argument_str("query").unwrap_or_default();
    parse_query(&query)
        .and_then(|(field, entity)| table.get(&(entity, field)))
        .map(|v| format!("{}: {v}", query.trim()))
        .unwrap_or_else(|| format!("nothing found for {query:?}"))
}
