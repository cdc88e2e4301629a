//! Fact kinds and every wording of them: questions, follow-ups, answer sentences, bare
//! answers, tutor explanations, poet couplets; system prompts and answer styles.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
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
    pub(super) fn name(self) -> &'static str {
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

    pub(super) fn short_answer(self) -> bool {
        SHORT_ANSWER_KINDS.contains(&self.name())
    }
}

/// Every wording of one kind. Placeholders are filled from the fact's variables; a question
/// starting with `~` is lower-cased as a whole after filling ("what is the capital of peru").
pub(super) struct Forms {
    /// The fact asked first.
    pub(super) questions: &'static [&'static str],
    /// The fact asked as a follow-up about the same entity.
    pub(super) follow_ups: &'static [&'static str],
    pub(super) sentences: &'static [&'static str],
    pub(super) bare: &'static str,
    pub(super) tutor: &'static [&'static str],
    pub(super) poet: &'static [&'static str],
}

// Country placeholders: {c} "Peru" / "the Bahamas", {C} sentence-initial, {cs}/{Cs} possessive,
// {cap}, {cont}, {langs}.
pub(super) const COUNTRY_CAPITAL: Forms = Forms {
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

pub(super) const COUNTRY_CONTINENT: Forms = Forms {
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

pub(super) const COUNTRY_LANGUAGES: Forms = Forms {
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
pub(super) const ELEMENT_SYMBOL: Forms = Forms {
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

pub(super) const ELEMENT_NUMBER: Forms = Forms {
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

pub(super) const ELEMENT_FROM_NUMBER: Forms = Forms {
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
pub(super) const STATE_CAPITAL: Forms = Forms {
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
pub(super) const WORD_DEFINITION: Forms = Forms {
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

pub(super) const WORD_EXAMPLE: Forms = Forms {
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

pub(super) const WORD_POS: Forms = Forms {
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

pub(super) fn forms(kind: Kind) -> &'static Forms {
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
pub(super) const CONFIRM_QUESTIONS: &[&str] = &[
    "Are you sure?",
    "Really?",
    "Is that right?",
    "Can you double-check that?",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Persona {
    Concise,
    Tutor,
    Poet,
}

impl Persona {
    pub(super) fn name(self) -> &'static str {
        match self {
            Persona::Concise => "concise",
            Persona::Tutor => "tutor",
            Persona::Poet => "poet",
        }
    }
}

/// (persona, system prompt, answers bare).
pub(super) const SYSTEM_PROMPTS: &[(Persona, &str, bool)] = &[
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
pub(super) enum Style {
    /// No system prompt: a sentence, or bare with probability `bare_answer_fraction`.
    Plain,
    Sentence,
    Bare,
    Tutor,
    Poet,
}
