//! The tool-use slice of the default set: a `lookup` tool over the knowledge tables. The
//! assistant calls it with the entity and the field the question asks about, reads the
//! table's answer from the tool result, and answers in a sentence.
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

/// The call the assistant makes for `entity` and `field`.
pub fn lookup_call(entity: &str, field: &str) -> ToolCall {
    let args = serde_json::json!({ "entity": entity, "field": field }).to_string();
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

/// What the assistant says before its call: the entity and field restated ("Let me look up
/// the capital of Peru."), so the call's arguments copy what it just wrote (a small model
/// copies from its own last words far better than across the prompt).
pub fn lookup_preamble(entity: &str, field: &str) -> String {
    format!("Let me look up the {field} of {entity}.")
}

/// A whole tool-use conversation: prompt, preamble and call, result, answer.
pub fn lookup_conversation(
    question: &str,
    call: ToolCall,
    result: &str,
    answer: &str,
) -> Conversation {
    let mut m = lookup_prompt(question);
    let preamble = lookup_preamble(
        &call.argument_str("entity").unwrap_or_default(),
        &call.argument_str("field").unwrap_or_default(),
    );
    let mut a = Message::assistant(preamble);
    a.tool_calls.push(call);
    m.push(a);
    m.push(Message::tool(result));
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
            out.entry((f.entity.to_lowercase(), field.to_string()))
                .or_insert(f.reference.clone());
        }
    }
    out
}

/// Runs a call against the table: the value, or a short "not found" the model can read.
pub fn run_lookup(table: &HashMap<(String, String), String>, call: &ToolCall) -> String {
    let entity = call.argument_str("entity").unwrap_or_default();
    let field = call.argument_str("field").unwrap_or_default();
    if call.name != LOOKUP_TOOL {
        return format!("unknown tool {:?}", call.name);
    }
    table
        .get(&(entity.trim().to_lowercase(), field.trim().to_string()))
        .cloned()
        .unwrap_or_else(|| format!("no entry for {entity:?} {field:?}"))
}
