//! The project's default instruction set, built from the shipped knowledge tables (see
//! [`crate::knowledge`]) and the English identity pairs of `assets/instruct/identity.json`.
//!
//! ```text
//! Knowledge ──split by entity (seeded, 70/30)──▶ train entities ──questions × phrasings──▶ train
//!                                             └▶ held-out entities ──1 question per fact──▶ heldout
//! ```
//!
//! - **Split by entity.** Countries, elements, US states and WordNet words are split
//!   separately: a seeded `train_fraction` of each table's entities goes to training, the rest
//!   is held out. Entities that name each other (Georgia the country and Georgia the state;
//!   Guyana and Ascension Island, both with capital Georgetown) are linked and always land on
//!   the same side; a name inside a longer name (Guinea in Papua New Guinea, Victoria in City of
//!   Victoria) does not count as naming. No held-out entity is named anywhere in the training set:
//!   words whose word, definition or example names a country, element, state or capital are
//!   never used, the state questions never name the country they belong to, and a final scan
//!   drops any training conversation that still mentions a held-out name or capital (counted in
//!   [`DefaultSetStats::dropped_for_leakage`]; 0 with the shipped tables).
//! - **Questions** are phrased differently from the pretraining prose of [`crate::corpus`] and in
//!   several ways per fact (some lower-case without a question mark); answers are one short
//!   sentence that restates the subject and ends with the answer ("The capital of Peru is
//!   Lima."), so the reference answer always appears verbatim, right where the pretraining
//!   prose put it; the concise
//!   system prompt gets the bare answer ("Lima."). Restating matters for a small model decoding
//!   greedily: a bare first token is a guess among a handful of frequent answers ("Africa."),
//!   while a restated subject is copied from the question and the fact then follows it.
//! - **Multi-turn**: a fraction of conversations get a follow-up about the same entity ("And
//!   which continent is it in?"); both assistant turns are supervised by the default mask.
//! - **System prompts**: a fraction of conversations get a concise answerer, a tutor (the answer
//!   plus a short, true explanation) or a poet (a rhyming couplet holding the fact).
//! - **Tool use**: a share of the training facts ([`DefaultSetConfig::tool_fraction`]) also
//!   comes as a `lookup` conversation: the assistant calls the tool with a query ("capital of
//!   Peru"),
//!   reads the table's value from the tool result and answers with it ([`lookup_conversation`]);
//!   held-out questions asked with the same system prompt measure whether the tuned model calls
//!   the tool for entities it never saw and answers from the result.
//! - **Held-out facts** for accuracy are only the short-answer kinds ([`SHORT_ANSWER_KINDS`]:
//!   capitals, continents, symbols, atomic numbers, elements from numbers, state capitals);
//!   held-out word definitions and country languages are open-ended and listed apart
//!   ([`DefaultSet::heldout_open`]).
//!
//! Everything is deterministic from [`DefaultSetConfig::seed`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use manners_data::{Conversation, DataError, Message, Reference, Result, SplitMix64, mix};

use crate::corpus::join_and;
use crate::knowledge::{Country, Element, Knowledge, UsState, Word};

/// How the default set is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefaultSetConfig {
    /// Seeds the split, the word choice and every phrasing draw.
    pub seed: u64,
    /// Share of each table's entities that goes to training (the rest is held out).
    pub train_fraction: f64,
    /// Training conversations per country, element and state fact, each with a different
    /// question phrasing.
    pub phrasings_per_fact: usize,
    /// Training conversations per word definition.
    pub word_phrasings: usize,
    /// Share of training conversations with a follow-up question about the same entity.
    pub multi_turn_fraction: f64,
    /// Share of training conversations with a system prompt (concise, tutor or poet).
    pub system_prompt_fraction: f64,
    /// Share of answers (without a system prompt) given bare ("Lima.") instead of as a sentence.
    pub bare_answer_fraction: f64,
    /// WordNet words to use (drawn from the usable ones; 0 for none).
    pub words: usize,
    /// Versions of each English identity pair (the original, lower-case, ...; at most 3).
    pub identity_variants: usize,
    /// Fills `{{name}}` in the identity pairs.
    pub name: String,
    /// Fills `{{author}}` in the identity pairs.
    pub author: String,
    /// Share of the training facts the tool-use slice covers (capitals, continents, symbols,
    /// atomic numbers): each gets one more conversation where the assistant calls `lookup`,
    /// reads the result and answers (see [`lookup_conversation`]).
    #[serde(default)]
    pub tool_fraction: f64,
}

impl Default for DefaultSetConfig {
    fn default() -> Self {
        DefaultSetConfig {
            seed: 1234,
            train_fraction: 0.7,
            phrasings_per_fact: 3,
            word_phrasings: 1,
            multi_turn_fraction: 0.25,
            system_prompt_fraction: 0.15,
            bare_answer_fraction: 0.0,
            words: 1500,
            identity_variants: 3,
            name: "Manners".into(),
            author: "the manners project".into(),
            tool_fraction: 1.0,
        }
    }
}

/// One held-out question and its short reference answer (a correct response contains it; see
/// [`HeldoutFact::reference`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldoutFact {
    /// `country-capital`, `element-symbol`, ... (see [`SHORT_ANSWER_KINDS`]).
    pub kind: String,
    /// The entity as named in its table (`Peru`, `Oxygen`, `Texas`, `abandon`).
    pub entity: String,
    pub question: String,
    /// `Lima`, `O`, `8`, `Oxygen`, ...
    pub answer: String,
}

impl HeldoutFact {
    /// The reference a response is scored against: `answer` as a whole word,
    /// case-insensitively except for element symbols, which must match case (`He`, not the
    /// `he` of any sentence).
    pub fn reference(&self) -> Reference {
        Reference {
            kind: self.kind.clone(),
            answer: self.answer.clone(),
            case_sensitive: self.kind == "element-symbol",
        }
    }
}

/// An entity of a knowledge table and the side of the split it is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRef {
    /// `country`, `element`, `state` or `word`.
    pub table: String,
    pub name: String,
}

/// Counts of a built set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DefaultSetStats {
    /// Per table: (entities in training, entities held out).
    pub entities: BTreeMap<String, (usize, usize)>,
    /// Training conversations by the kind of their first question (`identity` included).
    pub train_by_kind: BTreeMap<String, usize>,
    /// Follow-up questions by kind (`confirm` is "Are you sure?").
    pub follow_ups: BTreeMap<String, usize>,
    /// Training conversations by system prompt persona (`concise`, `tutor`, `poet`).
    pub personas: BTreeMap<String, usize>,
    pub multi_turn: usize,
    /// Held-out short-answer facts by kind (`heldout.jsonl`, `heldout_facts.jsonl`).
    pub heldout_by_kind: BTreeMap<String, usize>,
    /// Held-out open-ended facts by kind (`heldout_open.jsonl`).
    pub open_by_kind: BTreeMap<String, usize>,
    /// Training conversations dropped because they named a held-out entity.
    pub dropped_for_leakage: usize,
    /// Words that passed the filters (the pool `words` are drawn from).
    pub usable_words: usize,
    /// Characters of all message contents of a training conversation: largest and mean.
    pub max_chars: usize,
    pub mean_chars: f64,
}

/// The built set.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultSet {
    pub config: DefaultSetConfig,
    /// Shuffled training conversations.
    pub train: Vec<Conversation>,
    /// One single-turn conversation per held-out short-answer fact: the question and a
    /// one-sentence answer holding the reference; line `i` matches `heldout_facts[i]`.
    pub heldout: Vec<Conversation>,
    /// The held-out short-answer facts, for answer accuracy.
    pub heldout_facts: Vec<HeldoutFact>,
    /// Held-out open-ended facts (`word-definition`, `country-languages`): not for accuracy.
    pub heldout_open: Vec<HeldoutFact>,
    pub train_entities: Vec<EntityRef>,
    pub heldout_entities: Vec<EntityRef>,
    pub stats: DefaultSetStats,
}

/// The fact kinds whose reference answer is one short string, used for held-out accuracy.
pub const SHORT_ANSWER_KINDS: &[&str] = &[
    "country-capital",
    "country-continent",
    "element-symbol",
    "element-number",
    "element-from-number",
    "state-capital",
];

mod build;
mod facts;
mod files;
mod split;
mod tools;
mod wordings;

use facts::*;
use split::*;
use wordings::*;

pub use build::{MAX_CONVERSATION_CHARS, build_default_set};
pub use files::{DEFAULT_SET_FILES, load_identity, write_default_set};
pub use tools::{
    LOOKUP_SYSTEM, LOOKUP_TOOL, lookup_call, lookup_conversation, lookup_field, lookup_prompt,
    lookup_query, lookup_table, parse_query, run_lookup,
};

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn k() -> Knowledge {
        Knowledge::load(
            &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/knowledge"),
        )
        .unwrap()
    }

    #[test]
    fn scanner_ignores_names_inside_longer_names() {
        let s = Scanner::new(
            [
                "Niger",
                "Nigeria",
                "Guinea",
                "Papua New Guinea",
                "France",
                "Fort-de-France",
                "Peru",
            ]
            .map(String::from),
        );
        let names = |t: &str| {
            s.mentioned(t)
                .into_iter()
                .map(|i| s.names[i].join(" "))
                .collect::<Vec<_>>()
        };
        assert_eq!(names("The capital of Nigeria is Abuja."), ["nigeria"]);
        assert_eq!(
            names("Papua New Guinea's capital is Port Moresby."),
            ["papua new guinea"]
        );
        assert_eq!(
            names("Guinea and Papua New Guinea"),
            ["guinea", "papua new guinea"]
        );
        assert_eq!(
            names("Fort-de-France is in Martinique."),
            ["fort de france"]
        );
        assert_eq!(names("what is the capital of PERU"), ["peru"]);
        assert!(names("Perugia, Nigerian, guineas").is_empty());
    }

    #[test]
    fn heldout_answers_are_scored_as_whole_words() {
        let fact = |kind: &str, answer: &str| HeldoutFact {
            kind: kind.into(),
            entity: String::new(),
            question: String::new(),
            answer: answer.into(),
        };
        let he = fact("element-symbol", "He");
        assert!(he.reference().is_correct("The symbol for Helium is He."));
        assert!(
            !he.reference()
                .is_correct("the symbol is Hf, hence the answer")
        );
        let two = fact("element-number", "2");
        assert!(
            two.reference().is_correct("Helium has atomic number 2.")
                && !two.reference().is_correct("It is 12.")
        );
        let lima = fact("country-capital", "Lima");
        assert!(
            lima.reference().is_correct("the capital of peru is lima")
                && !lima.reference().is_correct("Limassol.")
        );
        assert!(
            lima.reference().is_exact(" Lima. ")
                && !lima.reference().is_exact("Lima is the capital.")
        );
        let dc = fact("country-capital", "Washington D.C.");
        assert!(
            dc.reference().is_correct("It is Washington D.C.")
                && dc.reference().is_exact("Washington D.C.")
        );
        let niger = fact("country-capital", "Niamey");
        assert!(
            !fact("x", "Niger").reference().is_correct("Nigeria")
                && niger.reference().is_correct("Niamey!")
        );
    }

    #[test]
    fn articles_and_possessives() {
        assert!(
            takes_article("Bahamas")
                && takes_article("United Kingdom")
                && takes_article("Cayman Islands")
        );
        assert!(
            takes_article("Central African Republic") && takes_article("Republic of the Congo")
        );
        assert!(
            !takes_article("Peru")
                && !takes_article("Turks and Caicos Islands")
                && !takes_article("Niger")
        );
        assert_eq!(possessive("the Bahamas"), "the Bahamas'");
        assert_eq!(capitalize(&possessive("the Bahamas")), "The Bahamas'");
        assert_eq!(possessive("Peru"), "Peru's");
    }

    /// Every wording of every fact fills all its placeholders, and every answer wording
    /// contains the reference answer.
    #[test]
    fn every_wording_fills_and_holds_the_reference() {
        let k = k();
        let mut facts: Vec<Fact> = Vec::new();
        for c in &k.countries {
            facts.extend(country_facts(c));
        }
        for e in &k.elements {
            facts.extend(element_facts(e));
        }
        for s in &k.states {
            facts.extend(state_facts(s));
        }
        for w in k.words.iter().take(300) {
            let (d, f) = word_facts(w);
            facts.push(d);
            facts.push(f);
        }
        for fact in &facts {
            let f = forms(fact.kind);
            for q in f.questions.iter().chain(f.follow_ups) {
                let s = fact.fill(q);
                assert!(!s.contains('{') && !s.contains('}'), "{s}");
            }
            let answers = f
                .sentences
                .iter()
                .chain(f.tutor)
                .chain(f.poet)
                .chain(std::iter::once(&f.bare));
            for a in answers {
                let s = fact.fill(a);
                assert!(!s.contains('{') && !s.contains('}'), "{s}");
                assert!(
                    s.to_lowercase()
                        .contains(&fact.reference.trim_end_matches('.').to_lowercase()),
                    "{:?}: {s:?} lacks {:?}",
                    fact.kind,
                    fact.reference
                );
            }
        }
        let peru = country_facts(k.countries.iter().find(|c| c.name == "Peru").unwrap());
        assert_eq!(
            peru[0].fill("~what is the capital of {c}"),
            "what is the capital of peru"
        );
        let us = country_facts(
            k.countries
                .iter()
                .find(|c| c.name == "United States")
                .unwrap(),
        );
        assert_eq!(us[0].fill("{cap}."), "Washington D.C.");
        assert_eq!(us[0].fill("{Cs} capital?"), "The United States' capital?");
    }

    #[test]
    fn identity_keeps_english_pairs_unfilled() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/instruct/identity.json");
        let pairs = load_identity(&path).unwrap();
        assert_eq!(pairs.len(), 16);
        assert_eq!(pairs[2].0, "Who are you?");
        assert!(pairs[2].1.contains("{{name}}") && pairs[2].1.contains("{{author}}"));
        let cfg = DefaultSetConfig::default();
        let convs = identity_conversations(&pairs[..3], &cfg);
        let users: Vec<&str> = convs
            .iter()
            .map(|c| c.messages[0].content.as_str())
            .collect();
        assert_eq!(
            users,
            [
                "hi",
                "Hi!",
                "hello",
                "Hello!",
                "Who are you?",
                "who are you"
            ]
        );
        assert!(
            convs[4].messages[1]
                .content
                .starts_with("I am Manners, an AI assistant developed by the manners project")
        );
    }

    #[test]
    fn load_identity_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.json");
        std::fs::write(&p, r#"{"instruction": "hi"}"#).unwrap();
        assert!(load_identity(&p).unwrap_err().to_string().contains("array"));
        std::fs::write(&p, r#"[{"instruction": "hi", "output": ""}]"#).unwrap();
        assert!(
            load_identity(&p)
                .unwrap_err()
                .to_string()
                .contains("record 0")
        );
    }
}
