//! Facts: one fact about one entity of a knowledge table, with the variables its wordings are
//! filled from.

use super::*;

/// One fact about one entity, with the variables its wordings are filled from.
#[derive(Debug, Clone)]
pub(super) struct Fact {
    pub(super) kind: Kind,
    /// The entity as named in its table.
    pub(super) entity: String,
    /// The short reference answer.
    pub(super) reference: String,
    pub(super) vars: Vec<(&'static str, String)>,
}

impl Fact {
    pub(super) fn fill(&self, form: &str) -> String {
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
pub(super) fn takes_article(name: &str) -> bool {
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

pub(super) fn possessive(s: &str) -> String {
    if s.ends_with('s') {
        format!("{s}'")
    } else {
        format!("{s}'s")
    }
}

pub(super) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

pub(super) fn country_facts(c: &Country) -> Vec<Fact> {
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

pub(super) fn element_facts(e: &Element) -> Vec<Fact> {
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

pub(super) fn state_facts(s: &UsState) -> Vec<Fact> {
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

pub(super) fn pos_name(pos: &str) -> &'static str {
    match pos {
        "n" => "noun",
        "v" => "verb",
        "a" | "s" => "adjective",
        "r" => "adverb",
        _ => "word",
    }
}

/// The definition fact and the follow-up-only facts (example sentence or part of speech).
pub(super) fn word_facts(w: &Word) -> (Fact, Fact) {
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
pub(super) fn usable_example(w: &Word) -> Option<String> {
    let ex = w.example.as_ref()?.trim();
    (ex.len() <= 80 && ex.to_lowercase().contains(&w.word) && !ex.contains('"'))
        .then(|| ex.to_string())
}

/// Which kinds may follow which, as a question about the same entity.
pub(super) fn follow_up_kinds(first: Kind) -> &'static [Kind] {
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
