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

use crate::conversation::{Conversation, Message};
use crate::corpus::join_and;
use crate::error::{DataError, Result};
use crate::knowledge::{Country, Element, Knowledge, UsState, Word};
use crate::rng::{SplitMix64, mix};

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
        }
    }
}

/// One held-out question and its short reference answer (a correct response contains it,
/// case-insensitively).
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
    /// Whether `response` gives the reference answer: it contains `answer` as a whole word
    /// (not inside a longer word or number: `2` is not found in `12`, `Niger` not in
    /// `Nigeria`), case-insensitively, except for element symbols, which must match case (`He`,
    /// not the `he` of any sentence). Plain substring search would count every response
    /// holding an `o` as naming oxygen's symbol.
    pub fn is_correct(&self, response: &str) -> bool {
        if self.kind == "element-symbol" {
            contains_word(response, &self.answer)
        } else {
            contains_word(&response.to_lowercase(), &self.answer.to_lowercase())
        }
    }

    /// Whether `response` is the answer and nothing else (case-insensitive, ignoring
    /// surrounding whitespace and final `.`/`!`).
    pub fn is_exact(&self, response: &str) -> bool {
        let clean = |s: &str| s.trim().trim_end_matches(['.', '!']).trim().to_lowercase();
        !self.answer.is_empty() && clean(response) == clean(&self.answer)
    }
}

/// `word` occurs in `text` with no letter or digit right before or after it.
fn contains_word(text: &str, word: &str) -> bool {
    !word.is_empty()
        && text.match_indices(word).any(|(i, m)| {
            !text[..i]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
                && !text[i + m.len()..]
                    .chars()
                    .next()
                    .is_some_and(char::is_alphanumeric)
        })
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

// ---------------------------------------------------------------------------------------------
// Fact kinds and their wordings
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    CountryCapital,
    CountryContinent,
    CountryLanguages,
    ElementSymbol,
    ElementNumber,
    ElementFromNumber,
    StateCapital,
    WordDefinition,
    /// Follow-up only: an example sentence for a word.
    WordExample,
    /// Follow-up only: the part of speech of a word.
    WordPos,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::CountryCapital => "country-capital",
            Kind::CountryContinent => "country-continent",
            Kind::CountryLanguages => "country-languages",
            Kind::ElementSymbol => "element-symbol",
            Kind::ElementNumber => "element-number",
            Kind::ElementFromNumber => "element-from-number",
            Kind::StateCapital => "state-capital",
            Kind::WordDefinition => "word-definition",
            Kind::WordExample => "word-example",
            Kind::WordPos => "word-pos",
        }
    }

    fn short_answer(self) -> bool {
        SHORT_ANSWER_KINDS.contains(&self.name())
    }
}

/// Every wording of one kind. Placeholders are filled from the fact's variables; a question
/// starting with `~` is lower-cased as a whole after filling ("what is the capital of peru").
struct Forms {
    /// The fact asked first.
    questions: &'static [&'static str],
    /// The fact asked as a follow-up about the same entity.
    follow_ups: &'static [&'static str],
    sentences: &'static [&'static str],
    bare: &'static str,
    tutor: &'static [&'static str],
    poet: &'static [&'static str],
}

// Country placeholders: {c} "Peru" / "the Bahamas", {C} sentence-initial, {cs}/{Cs} possessive,
// {cap}, {cont}, {langs}.
const COUNTRY_CAPITAL: Forms = Forms {
    questions: &[
        "What is the capital of {c}?",
        "What's the capital of {c}?",
        "Name the capital city of {c}.",
        "{Cs} capital?",
        "Which city is the capital of {c}?",
        "Tell me the capital of {c}.",
        "~what is the capital of {c}",
        "capital of {c}?",
        "Do you know the capital of {c}?",
        "Which city serves as the capital of {c}?",
        "I'd like to know the capital of {c}.",
        "What city is {cs} capital?",
    ],
    follow_ups: &[
        "And its capital?",
        "What is its capital city?",
        "And what is the capital of {c}?",
        "Which city is its capital?",
    ],
    sentences: &[
        "The capital of {c} is {cap}.",
        "{Cs} capital is {cap}.",
        "The capital city of {c} is {cap}.",
    ],
    bare: "{cap}.",
    tutor: &[
        "Good question! The capital of {c} is {cap}. Picturing {cap} on a map of {cont} can help you remember it.",
        "The capital of {c} is {cap}. A handy trick is to say the pair together: {c}, {cap}.",
    ],
    poet: &[
        "The capital of {c}, as you may know,\nis {cap}, where its people come and go.",
        "If you should travel to {c} one day,\n{cap} is its capital, come what may.",
    ],
};

const COUNTRY_CONTINENT: Forms = Forms {
    questions: &[
        "Which continent {is} {c} in?",
        "What continent {is} {c} on?",
        "On which continent {is} {c}?",
        "{C} {is} on which continent?",
        "Tell me which continent {c} {is} in.",
        "~which continent {is} {c} in",
        "continent of {c}?",
        "Where in the world {is} {c}? Which continent?",
        "Name the continent where {c} lies.",
        "In which continent would I find {c}?",
    ],
    follow_ups: &[
        "And which continent is it in?",
        "What continent is that in?",
        "Which continent {is} {c} on?",
        "And where is it, which continent?",
    ],
    sentences: &[
        "{C} {is} in {cont}.",
        "{C} {lies} in {cont}.",
        "{C} {is} located in {cont}.",
        "You will find {c} in {cont}.",
    ],
    bare: "{cont}.",
    tutor: &[
        "{C} {is} in {cont}. Picture a map of {cont} and you will find {c} there.",
        "Good question! {C} {is} in {cont}. Looking at a map of {cont} is a good way to see where it lies.",
    ],
    poet: &[
        "If {c} is the place you seek to find,\nlook in {cont} and keep that in mind.",
        "Across the map, if you should roam,\n{cont} is where {c} makes its home.",
    ],
};

const COUNTRY_LANGUAGES: Forms = Forms {
    questions: &[
        "What languages are spoken in {c}?",
        "What language do people speak in {c}?",
        "Which languages are used in {c}?",
        "What do people speak in {c}?",
        "~what language is spoken in {c}",
        "languages of {c}?",
        "Tell me the languages of {c}.",
        "Which language would I hear in {c}?",
    ],
    follow_ups: &[
        "What languages do people speak there?",
        "And which languages are spoken there?",
        "What do people speak in {c}?",
    ],
    sentences: &[
        "People in {c} speak {langs}.",
        "In {c}, people speak {langs}.",
        "{Cs} {lang_is} {langs}.",
    ],
    bare: "{langs}.",
    tutor: &[
        "People in {c} speak {langs}. Knowing the languages of a place is a good start before you visit.",
        "Good question! In {c}, people speak {langs}. Languages often tell you something about a place's history.",
    ],
    poet: &[
        "In {c}, when people talk and write,\nthey use {langs}, day and night.",
        "Listen in {c} and you will hear\n{langs} spoken far and near.",
    ],
};

// Element placeholders: {e} "Oxygen", {el} "oxygen", {es} "Oxygen's", {sym}, {n}, {protons}.
const ELEMENT_SYMBOL: Forms = Forms {
    questions: &[
        "What is the chemical symbol for {e}?",
        "What's the symbol of {e}?",
        "Which symbol stands for {e}?",
        "symbol for {e}?",
        "How is {el} written as a chemical symbol?",
        "Give me the element symbol of {e}.",
        "~what is the symbol for {el}",
        "Tell me the chemical symbol of {e}.",
        "What symbol does {e} have on the periodic table?",
        "{e}: what is its symbol?",
    ],
    follow_ups: &[
        "And its symbol?",
        "What is its chemical symbol?",
        "Which symbol does it have?",
    ],
    sentences: &[
        "The symbol for {e} is {sym}.",
        "{e} has the symbol {sym}.",
        "The chemical symbol of {e} is {sym}.",
        "{e} is written {sym}.",
    ],
    bare: "{sym}.",
    tutor: &[
        "The symbol for {e} is {sym}. Chemists write each element with a short symbol like this, starting with a capital letter.",
        "Good question! {e} has the symbol {sym}, which you will see on every periodic table.",
    ],
    poet: &[
        "For {e}, the symbol, short and neat,\nis written {sym} on every sheet.",
        "In every lab and on every chart,\n{e} is {sym}, to play its part.",
    ],
};

const ELEMENT_NUMBER: Forms = Forms {
    questions: &[
        "What is the atomic number of {e}?",
        "What's {es} atomic number?",
        "Which atomic number does {e} have?",
        "atomic number of {e}?",
        "Tell me the atomic number of {e}.",
        "~what is the atomic number of {el}",
        "What number is {e} on the periodic table?",
        "Give me {es} atomic number.",
    ],
    follow_ups: &[
        "And its atomic number?",
        "What is its atomic number?",
        "Which number is it on the periodic table?",
    ],
    sentences: &[
        "{e} has atomic number {n}.",
        "The atomic number of {e} is {n}.",
        "{e} is element number {n}.",
    ],
    bare: "{n}.",
    tutor: &[
        "{e} has atomic number {n}, which means each {el} atom has {protons}.",
        "Good question! The atomic number of {e} is {n}: that is the number of protons in its nucleus.",
    ],
    poet: &[
        "{e} stands in the table's line\nat number {n}, in order fine.",
        "Count the protons, one by one:\n{e} has {n}, and then you're done.",
    ],
};

const ELEMENT_FROM_NUMBER: Forms = Forms {
    questions: &[
        "Which element has atomic number {n}?",
        "What is element number {n}?",
        "Name the element with atomic number {n}.",
        "element {n}?",
        "Which element is number {n} on the periodic table?",
        "What element has {protons}?",
        "~which element has the atomic number {n}",
        "Tell me which element is number {n}.",
        "Atomic number {n} belongs to which element?",
    ],
    follow_ups: &[],
    // The number first, then the element: the direction the answer is looked up in.
    sentences: &[
        "Element number {n} is {e}.",
        "The element with atomic number {n} is {e}.",
    ],
    bare: "{e}.",
    tutor: &[
        "Element number {n} is {e}, because each {el} atom has {protons}.",
        "Good question! The element with atomic number {n} is {e}; the atomic number counts the protons in the nucleus.",
    ],
    poet: &[
        "Number {n}, if you want to know,\nis {e}, as the tables show.",
        "Look at the table, row by row:\nnumber {n} is {e}, you know.",
    ],
};

// State placeholders: {s}, {ss} possessive, {cap}. The country is never named (it is an entity
// of the country table and may be held out).
const STATE_CAPITAL: Forms = Forms {
    questions: &[
        "What is the capital of the state of {s}?",
        "What's the state capital of {s}?",
        "Which city is the capital of {s} state?",
        "Name the capital of the state of {s}.",
        "{s} state capital?",
        "Tell me the state capital of {s}.",
        "~what is the state capital of {s}",
        "Which city is the state capital of {s}?",
        "I need the state capital of {s}.",
    ],
    follow_ups: &[],
    sentences: &[
        "The state capital of {s} is {cap}.",
        "The capital of {s} is {cap}.",
        "The capital of {s} state is {cap}.",
    ],
    bare: "{cap}.",
    tutor: &[
        "The state capital of {s} is {cap}. Every state has its own capital, where its legislature meets.",
        "Good question! {cap} is the capital of the state of {s}. A capital is often not the largest city in its state.",
    ],
    poet: &[
        "In {s}, I'm glad to tell,\n{cap} is where the lawmakers dwell.",
        "Of {ss} cities, one wears the crown:\n{cap} is the capital town.",
    ],
};

// Word placeholders: {w}, {def}, {Def}, {pos} "noun", {Pos}, {a_pos} "an adjective", {ex}.
const WORD_DEFINITION: Forms = Forms {
    questions: &[
        "What does \"{w}\" mean?",
        "Define \"{w}\".",
        "What is the meaning of the word \"{w}\"?",
        "~define \"{w}\"",
        "What's the definition of \"{w}\"?",
        "Explain the word \"{w}\".",
        "\"{w}\": what does it mean?",
        "What is meant by \"{w}\"?",
    ],
    follow_ups: &[],
    sentences: &[
        "\"{w}\" means {def}.",
        "The word \"{w}\" means {def}.",
        "As {a_pos}, \"{w}\" means {def}.",
    ],
    bare: "{Def}.",
    tutor: &[
        "\"{w}\" means {def}. Try it in a sentence of your own to remember it.",
        "Good question! \"{w}\" is {a_pos} that means {def}.",
    ],
    poet: &[
        "Ask what \"{w}\" means, I'll tell you true:\nit means {def}, and that's the clue.",
        "Here is \"{w}\", explained in rhyme:\nit means {def}, every time.",
    ],
};

const WORD_EXAMPLE: Forms = Forms {
    questions: &[],
    follow_ups: &[
        "Can you use it in a sentence?",
        "Give me an example.",
        "How is it used in a sentence?",
        "Can you show it in a sentence?",
    ],
    sentences: &[
        "For example: \"{ex}\".",
        "Here is an example: \"{ex}\".",
        "Sure: \"{ex}\".",
    ],
    bare: "\"{ex}\".",
    tutor: &[
        "Here is an example: \"{ex}\". Seeing a word in a sentence makes its meaning easier to remember.",
    ],
    poet: &["Here it is in use, for you to see:\n\"{ex}\", as plain as it can be."],
};

const WORD_POS: Forms = Forms {
    questions: &[],
    follow_ups: &[
        "What part of speech is it?",
        "Which part of speech is \"{w}\" here?",
        "Is it a noun, a verb, or something else?",
    ],
    sentences: &[
        "In this sense, \"{w}\" is {a_pos}.",
        "\"{w}\" is {a_pos} here.",
    ],
    bare: "{Pos}.",
    tutor: &[
        "In this sense, \"{w}\" is {a_pos}. The part of speech tells you how a word works in a sentence.",
    ],
    poet: &["In this sense, as the grammars show,\n\"{w}\" is {a_pos}, now you know."],
};

fn forms(kind: Kind) -> &'static Forms {
    match kind {
        Kind::CountryCapital => &COUNTRY_CAPITAL,
        Kind::CountryContinent => &COUNTRY_CONTINENT,
        Kind::CountryLanguages => &COUNTRY_LANGUAGES,
        Kind::ElementSymbol => &ELEMENT_SYMBOL,
        Kind::ElementNumber => &ELEMENT_NUMBER,
        Kind::ElementFromNumber => &ELEMENT_FROM_NUMBER,
        Kind::StateCapital => &STATE_CAPITAL,
        Kind::WordDefinition => &WORD_DEFINITION,
        Kind::WordExample => &WORD_EXAMPLE,
        Kind::WordPos => &WORD_POS,
    }
}

/// "Are you sure?" follow-ups (used for states, which have one fact): the answer repeats the
/// fact.
const CONFIRM_QUESTIONS: &[&str] = &[
    "Are you sure?",
    "Really?",
    "Is that right?",
    "Can you double-check that?",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persona {
    Concise,
    Tutor,
    Poet,
}

impl Persona {
    fn name(self) -> &'static str {
        match self {
            Persona::Concise => "concise",
            Persona::Tutor => "tutor",
            Persona::Poet => "poet",
        }
    }
}

/// (persona, system prompt, answers bare).
const SYSTEM_PROMPTS: &[(Persona, &str, bool)] = &[
    (
        Persona::Concise,
        "You are a concise assistant. Answer in one short sentence.",
        false,
    ),
    (
        Persona::Concise,
        "Be brief: answer with as few words as possible.",
        true,
    ),
    (
        Persona::Tutor,
        "You are a patient tutor. Answer the question, then add a short explanation.",
        false,
    ),
    (
        Persona::Tutor,
        "You are a friendly teacher helping a student learn facts.",
        false,
    ),
    (
        Persona::Poet,
        "You answer in a short rhyming couplet.",
        false,
    ),
    (
        Persona::Poet,
        "You are a poet. Reply with a rhyming couplet that contains the answer.",
        false,
    ),
];

/// How the assistant turns of one conversation are worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// No system prompt: a sentence, or bare with probability `bare_answer_fraction`.
    Plain,
    Sentence,
    Bare,
    Tutor,
    Poet,
}

// ---------------------------------------------------------------------------------------------
// Facts
// ---------------------------------------------------------------------------------------------

/// One fact about one entity, with the variables its wordings are filled from.
#[derive(Debug, Clone)]
struct Fact {
    kind: Kind,
    /// The entity as named in its table.
    entity: String,
    /// The short reference answer.
    reference: String,
    vars: Vec<(&'static str, String)>,
}

impl Fact {
    fn fill(&self, form: &str) -> String {
        let (lower, form) = match form.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, form),
        };
        let mut s = form.to_string();
        for (k, v) in &self.vars {
            s = s.replace(k, v);
        }
        // "Washington D.C." at the end of a sentence.
        while s.contains("..") {
            s = s.replace("..", ".");
        }
        if lower { s.to_lowercase() } else { s }
    }
}

/// Names that read better with "the" ("the Bahamas", "the United Kingdom").
fn takes_article(name: &str) -> bool {
    const THE: &[&str] = &[
        "Bahamas",
        "Gambia",
        "Netherlands",
        "Philippines",
        "Maldives",
        "Comoros",
    ];
    THE.contains(&name)
        || name.starts_with("United ")
        || name.starts_with("Republic ")
        || name.starts_with("Democratic Republic")
        || name.ends_with(" Republic")
        || name.ends_with(" Territory")
        || name.ends_with(" Territories")
        || (name.ends_with(" Islands") && !name.contains(" and "))
}

fn possessive(s: &str) -> String {
    if s.ends_with('s') {
        format!("{s}'")
    } else {
        format!("{s}'s")
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn country_facts(c: &Country) -> Vec<Fact> {
    let the = if takes_article(&c.name) {
        format!("the {}", c.name)
    } else {
        c.name.clone()
    };
    let langs = join_and(&c.languages);
    // "the Bahamas are", "the United States is".
    let plural = the.starts_with("the ") && the.ends_with('s') && c.name != "United States";
    let vars = vec![
        ("{cap}", c.capital.clone()),
        ("{cont}", c.continent.clone()),
        ("{langs}", langs.clone()),
        ("{cs}", possessive(&the)),
        ("{Cs}", capitalize(&possessive(&the))),
        ("{c}", the.clone()),
        ("{C}", capitalize(&the)),
        ("{is}", if plural { "are" } else { "is" }.into()),
        ("{lies}", if plural { "lie" } else { "lies" }.into()),
        (
            "{lang_is}",
            if c.languages.len() > 1 {
                "languages are"
            } else {
                "language is"
            }
            .into(),
        ),
    ];
    let fact = |kind, reference: &str| Fact {
        kind,
        entity: c.name.clone(),
        reference: reference.to_string(),
        vars: vars.clone(),
    };
    let mut out = vec![fact(Kind::CountryCapital, &c.capital)];
    if !c.continent.is_empty() {
        out.push(fact(Kind::CountryContinent, &c.continent));
    }
    if !c.languages.is_empty() {
        out.push(fact(Kind::CountryLanguages, &langs));
    }
    out
}

fn element_facts(e: &Element) -> Vec<Fact> {
    let n = e.number.to_string();
    let protons = if e.number == 1 {
        "1 proton".to_string()
    } else {
        format!("{n} protons")
    };
    let vars = vec![
        ("{el}", e.name.to_lowercase()),
        ("{es}", possessive(&e.name)),
        ("{e}", e.name.clone()),
        ("{sym}", e.symbol.clone()),
        ("{n}", n.clone()),
        ("{protons}", protons),
    ];
    let fact = |kind, reference: &str| Fact {
        kind,
        entity: e.name.clone(),
        reference: reference.to_string(),
        vars: vars.clone(),
    };
    vec![
        fact(Kind::ElementSymbol, &e.symbol),
        fact(Kind::ElementNumber, &n),
        fact(Kind::ElementFromNumber, &e.name),
    ]
}

fn state_facts(s: &UsState) -> Vec<Fact> {
    let vars = vec![
        ("{cap}", s.capital.clone()),
        ("{ss}", possessive(&s.name)),
        ("{s}", s.name.clone()),
    ];
    vec![Fact {
        kind: Kind::StateCapital,
        entity: s.name.clone(),
        reference: s.capital.clone(),
        vars,
    }]
}

fn pos_name(pos: &str) -> &'static str {
    match pos {
        "n" => "noun",
        "v" => "verb",
        "a" | "s" => "adjective",
        "r" => "adverb",
        _ => "word",
    }
}

/// The definition fact and the follow-up-only facts (example sentence or part of speech).
fn word_facts(w: &Word) -> (Fact, Fact) {
    let def = w
        .definition
        .trim()
        .trim_end_matches(['.', ';', ' '])
        .to_string();
    let pos = pos_name(&w.pos);
    let a_pos = if pos.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {pos}")
    } else {
        format!("a {pos}")
    };
    let example = usable_example(w);
    let vars = vec![
        ("{w}", w.word.clone()),
        ("{def}", def.clone()),
        ("{Def}", capitalize(&def)),
        ("{pos}", pos.to_string()),
        ("{Pos}", capitalize(pos)),
        ("{a_pos}", a_pos),
        ("{ex}", example.clone().unwrap_or_default()),
    ];
    let fact = |kind, reference: &str| Fact {
        kind,
        entity: w.word.clone(),
        reference: reference.to_string(),
        vars: vars.clone(),
    };
    let follow = match &example {
        Some(ex) => fact(Kind::WordExample, ex),
        None => fact(Kind::WordPos, pos),
    };
    (fact(Kind::WordDefinition, &def), follow)
}

/// A WordNet example is the synset's, and often uses a synonym; keep it only when it contains
/// the word itself (or an inflection of it) and is short.
fn usable_example(w: &Word) -> Option<String> {
    let ex = w.example.as_ref()?.trim();
    (ex.len() <= 80 && ex.to_lowercase().contains(&w.word) && !ex.contains('"'))
        .then(|| ex.to_string())
}

/// Which kinds may follow which, as a question about the same entity.
fn follow_up_kinds(first: Kind) -> &'static [Kind] {
    match first {
        Kind::CountryCapital => &[Kind::CountryContinent, Kind::CountryLanguages],
        Kind::CountryContinent => &[Kind::CountryCapital, Kind::CountryLanguages],
        Kind::CountryLanguages => &[Kind::CountryCapital, Kind::CountryContinent],
        Kind::ElementSymbol => &[Kind::ElementNumber],
        Kind::ElementNumber | Kind::ElementFromNumber => &[Kind::ElementSymbol],
        Kind::WordDefinition => &[Kind::WordExample, Kind::WordPos],
        // States have one fact: their follow-up is "Are you sure?".
        Kind::StateCapital | Kind::WordExample | Kind::WordPos => &[],
    }
}

// ---------------------------------------------------------------------------------------------
// Name scanning (whole words, case-insensitive, ignoring occurrences inside longer names)
// ---------------------------------------------------------------------------------------------

/// Lower-case alphanumeric runs: "Peru's capital, Fort-de-France" -> [peru, s, capital, fort,
/// de, france].
fn tokens(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Finds names in text as whole-word token sequences. An occurrence that lies inside an
/// occurrence of a longer known name does not count: "Guinea" is not mentioned by "Papua New
/// Guinea", "Niger" never by "Nigeria", "France" not by "Fort-de-France".
struct Scanner {
    /// Every known name (targets and the longer names that mask them), as token sequences.
    names: Vec<Vec<String>>,
    /// First token -> indices into `names`.
    by_first: HashMap<String, Vec<usize>>,
}

impl Scanner {
    fn new(names: impl IntoIterator<Item = String>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let mut list = Vec::new();
        for n in names {
            let t = tokens(&n);
            if !t.is_empty() && seen.insert(t.clone()) {
                list.push(t);
            }
        }
        let mut by_first: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in list.iter().enumerate() {
            by_first.entry(t[0].clone()).or_default().push(i);
        }
        Scanner {
            names: list,
            by_first,
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        let t = tokens(name);
        self.by_first
            .get(t.first()?)?
            .iter()
            .copied()
            .find(|&i| self.names[i] == t)
    }

    /// Indices of the names mentioned in `text` (sorted, unique), longer names masking the
    /// shorter ones they contain.
    fn mentioned(&self, text: &str) -> Vec<usize> {
        let toks = tokens(text);
        // (start, end, name) of every occurrence.
        let mut occ = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            for &n in self.by_first.get(t).map(Vec::as_slice).unwrap_or(&[]) {
                let name = &self.names[n];
                if toks.len() - i >= name.len() && toks[i..i + name.len()] == name[..] {
                    occ.push((i, i + name.len(), n));
                }
            }
        }
        let mut out: Vec<usize> = occ
            .iter()
            .filter(|&&(a, b, _)| {
                !occ.iter()
                    .any(|&(c, d, _)| c <= a && b <= d && d - c > b - a)
            })
            .map(|&(_, _, n)| n)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The split
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Country,
    Element,
    State,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Country => "country",
            Table::Element => "element",
            Table::State => "state",
        }
    }
}

/// An entity of the country, element or state table and the names that identify it.
struct Ent {
    table: Table,
    index: usize,
    name: String,
    /// Its name, and its capital for countries and states.
    names: Vec<String>,
}

fn entities(k: &Knowledge) -> Vec<Ent> {
    let mut out = Vec::new();
    for (i, c) in k.countries.iter().enumerate() {
        out.push(Ent {
            table: Table::Country,
            index: i,
            name: c.name.clone(),
            names: vec![c.name.clone(), c.capital.clone()],
        });
    }
    for (i, e) in k.elements.iter().enumerate() {
        out.push(Ent {
            table: Table::Element,
            index: i,
            name: e.name.clone(),
            names: vec![e.name.clone()],
        });
    }
    for (i, s) in k.states.iter().enumerate() {
        out.push(Ent {
            table: Table::State,
            index: i,
            name: s.name.clone(),
            names: vec![s.name.clone(), s.capital.clone()],
        });
    }
    out
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// For each entity, whether it goes to training. Entities that mention each other's names
/// (after masking by longer names) are linked and share a side; each table gets
/// `round(train_fraction * n)` training entities (one more when a linked group straddles the
/// boundary).
fn split_entities(ents: &[Ent], scanner: &Scanner, frac: f64, rng: &mut SplitMix64) -> Vec<bool> {
    let n = ents.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let ids: Vec<Vec<usize>> = ents
        .iter()
        .map(|e| e.names.iter().filter_map(|s| scanner.index(s)).collect())
        .collect();
    // name index -> entities it identifies
    let mut owners: HashMap<usize, Vec<usize>> = HashMap::new();
    for (e, list) in ids.iter().enumerate() {
        for &i in list {
            owners.entry(i).or_default().push(e);
        }
    }
    for (e, ent) in ents.iter().enumerate() {
        for s in &ent.names {
            for m in scanner.mentioned(s) {
                for &o in owners.get(&m).map(Vec::as_slice).unwrap_or(&[]) {
                    let (a, b) = (find(&mut parent, e), find(&mut parent, o));
                    parent[a] = b;
                }
            }
        }
    }
    let group: Vec<usize> = (0..n).map(|e| find(&mut parent, e)).collect();
    let mut decided: HashMap<usize, bool> = HashMap::new();
    for table in [Table::Country, Table::Element, Table::State] {
        let members: Vec<usize> = (0..n).filter(|&e| ents[e].table == table).collect();
        let target = (frac * members.len() as f64).round() as usize;
        let mut train = members
            .iter()
            .filter(|&&e| decided.get(&group[e]) == Some(&true))
            .count();
        let mut open: Vec<usize> = Vec::new();
        for &e in &members {
            if !decided.contains_key(&group[e]) && !open.contains(&group[e]) {
                open.push(group[e]);
            }
        }
        rng.shuffle(&mut open);
        for g in open {
            let size = members.iter().filter(|&&e| group[e] == g).count();
            let to_train = train < target;
            if to_train {
                train += size;
            }
            decided.insert(g, to_train);
        }
    }
    (0..n)
        .map(|e| decided.get(&group[e]).copied().unwrap_or(false))
        .collect()
}

/// Words fit for questions: single lower-case words with a short, plain first-sense
/// definition that names no country, element, state or capital; one per definition.
fn usable_words<'a>(k: &'a Knowledge, scanner: &Scanner) -> Vec<&'a Word> {
    const BLOCK: &[&str] = &[
        "slur",
        "offensive",
        "obscene",
        "vulgar",
        "derogatory",
        "disparaging",
        "sexual",
        "genital",
        "taboo",
        "racial",
    ];
    let mut seen_word = std::collections::HashSet::new();
    let mut seen_def = std::collections::HashSet::new();
    let mut out = Vec::new();
    for w in &k.words {
        if !seen_word.insert(w.word.as_str()) {
            continue; // first sense only
        }
        let d = w.definition.trim();
        let ok = w.word.len() >= 3
            && w.word.chars().all(|c| c.is_ascii_lowercase())
            && (15..=90).contains(&d.len())
            && !d.contains(['"', '`', '\'', '(', ')', ';'])
            && !BLOCK.iter().any(|b| d.to_lowercase().contains(b))
            && scanner.mentioned(&w.word).is_empty()
            && scanner.mentioned(d).is_empty()
            && w.example
                .as_deref()
                .is_none_or(|e| scanner.mentioned(e).is_empty());
        if ok && seen_def.insert(d.to_lowercase()) {
            out.push(w);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------------

fn pick<'a>(rng: &mut SplitMix64, v: &[&'a str]) -> &'a str {
    debug_assert!(!v.is_empty());
    v[rng.below(v.len() as u64) as usize]
}

fn answer(fact: &Fact, style: Style, bare_fraction: f64, rng: &mut SplitMix64) -> String {
    let f = forms(fact.kind);
    let form = match style {
        Style::Plain if rng.unit() < bare_fraction => f.bare,
        Style::Plain | Style::Sentence => pick(rng, f.sentences),
        Style::Bare => f.bare,
        Style::Tutor => pick(rng, f.tutor),
        Style::Poet => pick(rng, f.poet),
    };
    fact.fill(form)
}

/// What a generated training conversation is, for the counts.
struct Meta {
    kind: &'static str,
    follow: Option<&'static str>,
    persona: Option<Persona>,
}

/// Most characters (all message contents) of a training conversation: about 100 tokens with
/// the chat frame. A follow-up or system prompt that would go over is left out.
pub const MAX_CONVERSATION_CHARS: usize = 230;

fn chars(messages: &[Message]) -> usize {
    messages.iter().map(|m| m.content.chars().count()).sum()
}

/// A training conversation: `first` asked with question form `q`, maybe a system prompt, maybe
/// a follow-up from `follow` (facts of the same entity, or "Are you sure?" when empty).
fn train_conversation(
    first: &Fact,
    q: &str,
    follow: &[&Fact],
    cfg: &DefaultSetConfig,
    rng: &mut SplitMix64,
) -> (Conversation, Meta) {
    let question = Message::user(first.fill(q));
    let mut messages = Vec::new();
    let mut persona = None;
    let mut style = Style::Plain;
    if rng.unit() < cfg.system_prompt_fraction {
        let (p, prompt, bare) = SYSTEM_PROMPTS[rng.below(SYSTEM_PROMPTS.len() as u64) as usize];
        let s = match p {
            Persona::Concise if bare => Style::Bare,
            Persona::Concise => Style::Sentence,
            Persona::Tutor => Style::Tutor,
            Persona::Poet => Style::Poet,
        };
        let a = answer(first, s, cfg.bare_answer_fraction, rng);
        let candidate = [
            Message::system(prompt),
            question.clone(),
            Message::assistant(a),
        ];
        if chars(&candidate) <= MAX_CONVERSATION_CHARS {
            persona = Some(p);
            style = s;
            messages.extend(candidate);
        }
    }
    if messages.is_empty() {
        let a = answer(first, Style::Plain, cfg.bare_answer_fraction, rng);
        messages.extend([question, Message::assistant(a)]);
    }
    let mut follow_name = None;
    if rng.unit() < cfg.multi_turn_fraction {
        let (fq, fa, name) = if follow.is_empty() {
            let sure = match style {
                Style::Bare => format!("Yes. {}", answer(first, Style::Bare, 0.0, rng)),
                Style::Tutor => {
                    format!(
                        "Yes, I'm sure. {}",
                        answer(first, Style::Sentence, 0.0, rng)
                    )
                }
                Style::Poet => format!("Yes, I'm sure!\n{}", answer(first, Style::Poet, 0.0, rng)),
                _ => format!("Yes. {}", answer(first, Style::Sentence, 0.0, rng)),
            };
            (pick(rng, CONFIRM_QUESTIONS).to_string(), sure, "confirm")
        } else {
            let next = follow[rng.below(follow.len() as u64) as usize];
            let fq = next.fill(pick(rng, forms(next.kind).follow_ups));
            (
                fq,
                answer(next, style, cfg.bare_answer_fraction, rng),
                next.kind.name(),
            )
        };
        if chars(&messages) + fq.chars().count() + fa.chars().count() <= MAX_CONVERSATION_CHARS {
            messages.extend([Message::user(fq), Message::assistant(fa)]);
            follow_name = Some(name);
        }
    }
    let meta = Meta {
        kind: first.kind.name(),
        follow: follow_name,
        persona,
    };
    (Conversation::new(messages), meta)
}

/// `count` distinct question forms of a kind (all of them when `count` is larger).
fn question_forms(kind: Kind, count: usize, rng: &mut SplitMix64) -> Vec<&'static str> {
    let mut qs: Vec<&'static str> = forms(kind).questions.to_vec();
    rng.shuffle(&mut qs);
    qs.truncate(count);
    qs
}

/// The identity pairs with placeholders filled, in up to three versions of the question (as
/// written, lower-case without end punctuation, capitalised with end punctuation).
fn identity_conversations(
    identity: &[(String, String)],
    cfg: &DefaultSetConfig,
) -> Vec<Conversation> {
    let fill = |s: &str| {
        s.replace("{{name}}", &cfg.name)
            .replace("{{author}}", &cfg.author)
    };
    let mut out = Vec::new();
    for (q, a) in identity {
        let q = fill(q.trim());
        let bare = q.trim_end_matches(['?', '.', '!']).to_string();
        let end = if q.ends_with(['?', '.', '!']) {
            String::new()
        } else if bare.split_whitespace().count() > 1 {
            "?".to_string()
        } else {
            "!".to_string()
        };
        let mut versions = vec![
            q.clone(),
            bare.to_lowercase(),
            format!("{}{end}", capitalize(&q)),
        ];
        let mut seen = std::collections::HashSet::new();
        versions.retain(|v| seen.insert(v.clone()));
        for v in versions.into_iter().take(cfg.identity_variants) {
            out.push(Conversation::new(vec![
                Message::user(v),
                Message::assistant(fill(a.trim())),
            ]));
        }
    }
    out
}

/// Builds the default set: see the module docs. Fractions are clamped to `[0, 1]`.
pub fn build_default_set(
    k: &Knowledge,
    identity: &[(String, String)],
    cfg: &DefaultSetConfig,
) -> DefaultSet {
    let frac = cfg.train_fraction.clamp(0.0, 1.0);
    let mut cfg = cfg.clone();
    cfg.multi_turn_fraction = cfg.multi_turn_fraction.clamp(0.0, 1.0);
    cfg.system_prompt_fraction = cfg.system_prompt_fraction.clamp(0.0, 1.0);
    let mut split_rng = SplitMix64::new(mix(cfg.seed ^ 0x5350_4C49_5421));
    let mut word_rng = SplitMix64::new(mix(cfg.seed ^ 0x574F_5244_5321));
    let mut rng = SplitMix64::new(mix(cfg.seed ^ 0x4255_494C_4421));

    let ents = entities(k);
    let scanner = Scanner::new(ents.iter().flat_map(|e| e.names.clone()));
    let in_train = split_entities(&ents, &scanner, frac, &mut split_rng);

    let mut words = usable_words(k, &scanner);
    let usable = words.len();
    word_rng.shuffle(&mut words);
    words.truncate(cfg.words);
    let n_word_train = (frac * words.len() as f64).round() as usize;

    // Subjects: (entity ref, facts, follow-up-only facts, in training).
    let mut subjects: Vec<(EntityRef, Vec<Fact>, Vec<Fact>, bool)> = Vec::new();
    for (e, &t) in ents.iter().zip(&in_train) {
        let facts = match e.table {
            Table::Country => country_facts(&k.countries[e.index]),
            Table::Element => element_facts(&k.elements[e.index]),
            Table::State => state_facts(&k.states[e.index]),
        };
        subjects.push((
            EntityRef {
                table: e.table.name().into(),
                name: e.name.clone(),
            },
            facts,
            vec![],
            t,
        ));
    }
    for (i, w) in words.iter().enumerate() {
        let (def, follow) = word_facts(w);
        subjects.push((
            EntityRef {
                table: "word".into(),
                name: w.word.clone(),
            },
            vec![def],
            vec![follow],
            i < n_word_train,
        ));
    }

    let mut train = Vec::new();
    let mut heldout = Vec::new();
    let mut heldout_facts = Vec::new();
    let mut heldout_open = Vec::new();
    let mut train_entities = Vec::new();
    let mut heldout_entities = Vec::new();
    let mut stats = DefaultSetStats {
        usable_words: usable,
        ..DefaultSetStats::default()
    };
    // Leak terms: held-out names and capitals (scanned), word quotes and definitions (substrings).
    let mut leak_names = std::collections::BTreeSet::new();
    let mut leak_strings = Vec::new();
    for (entity, facts, extra, is_train) in &subjects {
        let sides = stats.entities.entry(entity.table.clone()).or_default();
        if *is_train {
            sides.0 += 1;
            train_entities.push(entity.clone());
            let n_forms = if entity.table == "word" {
                cfg.word_phrasings
            } else {
                cfg.phrasings_per_fact
            };
            for (fi, fact) in facts.iter().enumerate() {
                let follow: Vec<&Fact> = facts
                    .iter()
                    .chain(extra)
                    .enumerate()
                    .filter(|&(j, f)| j != fi && follow_up_kinds(fact.kind).contains(&f.kind))
                    .map(|(_, f)| f)
                    .collect();
                for q in question_forms(fact.kind, n_forms, &mut rng) {
                    train.push(train_conversation(fact, q, &follow, &cfg, &mut rng));
                }
            }
        } else {
            sides.1 += 1;
            heldout_entities.push(entity.clone());
            if entity.table == "word" {
                leak_strings.push(format!("\"{}\"", entity.name.to_lowercase()));
            } else if let Some(i) = scanner.index(&entity.name) {
                leak_names.insert(i);
            }
            for fact in facts {
                if let Some(i) = (fact.kind == Kind::CountryCapital
                    || fact.kind == Kind::StateCapital)
                    .then(|| scanner.index(&fact.reference))
                    .flatten()
                {
                    leak_names.insert(i);
                }
                if fact.kind == Kind::WordDefinition {
                    leak_strings.push(fact.reference.to_lowercase());
                }
                let q = fact.fill(
                    question_forms(fact.kind, 1, &mut rng)
                        .first()
                        .copied()
                        .unwrap_or(""),
                );
                let h = HeldoutFact {
                    kind: fact.kind.name().into(),
                    entity: fact.entity.clone(),
                    question: q.clone(),
                    answer: fact.reference.clone(),
                };
                if fact.kind.short_answer() {
                    let a = answer(fact, Style::Sentence, 0.0, &mut rng);
                    heldout.push(Conversation::new(vec![
                        Message::user(q),
                        Message::assistant(a),
                    ]));
                    *stats.heldout_by_kind.entry(h.kind.clone()).or_default() += 1;
                    heldout_facts.push(h);
                } else {
                    *stats.open_by_kind.entry(h.kind.clone()).or_default() += 1;
                    heldout_open.push(h);
                }
            }
        }
    }
    for c in identity_conversations(identity, &cfg) {
        train.push((
            c,
            Meta {
                kind: "identity",
                follow: None,
                persona: None,
            },
        ));
    }

    // Final guard: drop any training conversation that names a held-out entity.
    let leaks = |c: &Conversation| {
        c.messages.iter().any(|m| {
            let lower = m.content.to_lowercase();
            leak_strings.iter().any(|s| lower.contains(s.as_str()))
                || scanner
                    .mentioned(&m.content)
                    .iter()
                    .any(|i| leak_names.contains(i))
        })
    };
    let before = train.len();
    train.retain(|(c, _)| !leaks(c));
    stats.dropped_for_leakage = before - train.len();
    rng.shuffle(&mut train);

    let mut total_chars = 0usize;
    for (c, meta) in &train {
        *stats.train_by_kind.entry(meta.kind.into()).or_default() += 1;
        if let Some(f) = meta.follow {
            *stats.follow_ups.entry(f.into()).or_default() += 1;
            stats.multi_turn += 1;
        }
        if let Some(p) = meta.persona {
            *stats.personas.entry(p.name().into()).or_default() += 1;
        }
        let chars: usize = c.messages.iter().map(|m| m.content.chars().count()).sum();
        total_chars += chars;
        stats.max_chars = stats.max_chars.max(chars);
    }
    stats.mean_chars = total_chars as f64 / train.len().max(1) as f64;
    DefaultSet {
        config: cfg,
        train: train.into_iter().map(|(c, _)| c).collect(),
        heldout,
        heldout_facts,
        heldout_open,
        train_entities,
        heldout_entities,
        stats,
    }
}

// ---------------------------------------------------------------------------------------------
// Identity pairs and files
// ---------------------------------------------------------------------------------------------

/// Reads an Alpaca-style identity file (a JSON array of `{instruction, input, output}`) and
/// keeps the English pairs (all-ASCII text), as (instruction, output) with a non-empty `input`
/// appended to the instruction after a blank line. Placeholders are left as they are.
pub fn load_identity(path: &Path) -> Result<Vec<(String, String)>> {
    let bytes = crate::read::read_bytes(path)?;
    let json_err = |message: String| DataError::Json {
        path: path.to_path_buf(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| json_err(e.to_string()))?;
    let items = value
        .as_array()
        .ok_or_else(|| json_err("expected a JSON array of records".into()))?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let (instruction, input, output) = (field("instruction"), field("input"), field("output"));
        if instruction.is_empty() || output.is_empty() {
            return Err(json_err(format!(
                "record {i}: needs non-empty `instruction` and `output` strings"
            )));
        }
        let english = [&instruction, &input, &output].iter().all(|s| s.is_ascii());
        if english {
            let q = if input.is_empty() {
                instruction
            } else {
                format!("{instruction}\n\n{input}")
            };
            out.push((q, output));
        }
    }
    Ok(out)
}

fn messages_line(c: &Conversation) -> String {
    let messages: Vec<serde_json::Value> = c
        .messages
        .iter()
        .map(|m| serde_json::json!({ "role": m.role.as_str(), "content": m.content }))
        .collect();
    serde_json::json!({ "messages": messages }).to_string()
}

fn fact_line(f: &HeldoutFact) -> String {
    serde_json::json!({ "kind": f.kind, "entity": f.entity, "question": f.question, "answer": f.answer })
        .to_string()
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> Result<()> {
    let mut s = String::new();
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| DataError::io(path, e))
}

/// The files [`write_default_set`] writes, in that order.
pub const DEFAULT_SET_FILES: [&str; 5] = [
    "train.jsonl",
    "heldout.jsonl",
    "heldout_facts.jsonl",
    "heldout_open.jsonl",
    "README.md",
];

/// Writes `train.jsonl` and `heldout.jsonl` (OpenAI `messages` JSONL), `heldout_facts.jsonl`
/// (kind, entity, question, answer; line `i` is about line `i` of `heldout.jsonl`),
/// `heldout_open.jsonl` (the same fields, open-ended kinds) and `README.md` into `dir`.
pub fn write_default_set(dir: &Path, set: &DefaultSet) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let [train, heldout, facts, open, readme] = DEFAULT_SET_FILES.map(|f| dir.join(f));
    write_lines(&train, set.train.iter().map(messages_line))?;
    write_lines(&heldout, set.heldout.iter().map(messages_line))?;
    write_lines(&facts, set.heldout_facts.iter().map(fact_line))?;
    write_lines(&open, set.heldout_open.iter().map(fact_line))?;
    std::fs::write(&readme, set.readme()).map_err(|e| DataError::io(&readme, e))
}

impl DefaultSet {
    /// The README written next to the files: what they hold, the configuration and the counts.
    pub fn readme(&self) -> String {
        let c = &self.config;
        let s = &self.stats;
        let mut r = String::new();
        r.push_str("# The default instruction set\n\n");
        r.push_str(
            "Built by `manners_data::build_default_set` from the knowledge tables in \
             `assets/knowledge/` and the English pairs of `assets/instruct/identity.json`. \
             Do not edit by hand: rebuild it (same seed, same tables, same output).\n\n",
        );
        r.push_str("| file | contents |\n|---|---|\n");
        r.push_str(&format!(
            "| `train.jsonl` | {} training conversations (OpenAI `messages` JSONL), shuffled |\n",
            self.train.len()
        ));
        r.push_str(&format!(
            "| `heldout.jsonl` | {} held-out questions, one per held-out short-answer fact, each with a one-sentence answer |\n",
            self.heldout.len()
        ));
        r.push_str(&format!(
            "| `heldout_facts.jsonl` | the same {} facts as `{{kind, entity, question, answer}}` (line i = line i of `heldout.jsonl`); a response is correct when it contains `answer` as a whole word, case-insensitively except for element symbols (`HeldoutFact::is_correct`) |\n",
            self.heldout_facts.len()
        ));
        r.push_str(&format!(
            "| `heldout_open.jsonl` | {} held-out open-ended facts (word definitions, country languages): not used for accuracy |\n\n",
            self.heldout_open.len()
        ));
        r.push_str("## How it is made\n\n");
        r.push_str(&format!(
            "- Seed {}; {:.0}% of the entities of each table (countries, elements, US states, words) go to training, \
             the rest is held out. Entities sharing a name or capital (Georgia the country and the state) share a side.\n",
            c.seed,
            100.0 * c.train_fraction
        ));
        r.push_str(
            "- No held-out entity is named anywhere in `train.jsonl` (question, answer, follow-up or system-prompted \
             variant): held-out names and capitals are scanned for as whole words (occurrences inside longer names, \
             such as Guinea in Papua New Guinea, do not count), and held-out words as `\"word\"` and by definition.\n",
        );
        r.push_str(&format!(
            "- {} question phrasings per country/element/state fact, {} per word; {:.0}% of conversations have a \
             follow-up about the same entity, {:.0}% a system prompt (concise, tutor, poet); {}\n",
            c.phrasings_per_fact,
            c.word_phrasings,
            100.0 * c.multi_turn_fraction,
            100.0 * c.system_prompt_fraction,
            if c.bare_answer_fraction > 0.0 {
                format!(
                    "{:.0}% of plain answers are bare (\"Lima.\"), the rest one short sentence.",
                    100.0 * c.bare_answer_fraction
                )
            } else {
                "plain answers are one short sentence restating the subject (\"The capital of Peru is \
                 Lima.\"); the concise system prompt gets the bare answer (\"Lima.\")."
                    .to_string()
            }
        ));
        r.push_str(&format!(
            "- {} WordNet words (of {} usable: single lower-case words with a short definition naming no country, \
             element, state or capital); identity pairs filled with name \"{}\" and author \"{}\", {} versions each.\n\n",
            c.words.min(s.usable_words),
            s.usable_words,
            c.name,
            c.author,
            c.identity_variants
        ));
        r.push_str("## Counts\n\n```text\n");
        r.push_str(&self.stats.to_string());
        r.push_str("```\n");
        r
    }
}

impl fmt::Display for DefaultSetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: usize = self.train_by_kind.values().sum();
        writeln!(f, "entities (train / held out):")?;
        for (t, (a, b)) in &self.entities {
            writeln!(f, "  {t:<30} {a:>5} / {b}")?;
        }
        writeln!(f, "training conversations: {total} (by first question)")?;
        for (k, n) in &self.train_by_kind {
            writeln!(f, "  {k:<30} {n:>5}")?;
        }
        writeln!(f, "multi-turn: {}", self.multi_turn)?;
        for (k, n) in &self.follow_ups {
            writeln!(f, "  {:<30} {n:>5}", format!("follow-up {k}"))?;
        }
        let prompted: usize = self.personas.values().sum();
        writeln!(f, "with a system prompt: {prompted}")?;
        for (k, n) in &self.personas {
            writeln!(f, "  {k:<30} {n:>5}")?;
        }
        writeln!(
            f,
            "characters per conversation: max {}, mean {:.0}",
            self.max_chars, self.mean_chars
        )?;
        writeln!(
            f,
            "dropped for naming a held-out entity: {}",
            self.dropped_for_leakage
        )?;
        let held: usize = self.heldout_by_kind.values().sum();
        writeln!(f, "held-out short-answer facts: {held}")?;
        for (k, n) in &self.heldout_by_kind {
            writeln!(f, "  {k:<30} {n:>5}")?;
        }
        let open: usize = self.open_by_kind.values().sum();
        writeln!(f, "held-out open-ended facts: {open}")?;
        for (k, n) in &self.open_by_kind {
            writeln!(f, "  {k:<30} {n:>5}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DefaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "default set (seed {}): {} training conversations, {} held-out questions, {} open held-out facts",
            self.config.seed,
            self.train.len(),
            self.heldout.len(),
            self.heldout_open.len()
        )?;
        write!(f, "{}", self.stats)
    }
}

#[cfg(test)]
mod tests {
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
        assert!(he.is_correct("The symbol for Helium is He."));
        assert!(!he.is_correct("the symbol is Hf, hence the answer"));
        let two = fact("element-number", "2");
        assert!(two.is_correct("Helium has atomic number 2.") && !two.is_correct("It is 12."));
        let lima = fact("country-capital", "Lima");
        assert!(lima.is_correct("the capital of peru is lima") && !lima.is_correct("Limassol."));
        assert!(lima.is_exact(" Lima. ") && !lima.is_exact("Lima is the capital."));
        let dc = fact("country-capital", "Washington D.C.");
        assert!(dc.is_correct("It is Washington D.C.") && dc.is_exact("Washington D.C."));
        let niger = fact("country-capital", "Niamey");
        assert!(!fact("x", "Niger").is_correct("Nigeria") && niger.is_correct("Niamey!"));
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
