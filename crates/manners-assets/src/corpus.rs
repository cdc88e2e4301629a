//! The pretraining corpus: the shipped public-domain books cut into documents, with the
//! knowledge tables written out as prose ("The capital of Peru is Lima.", "Lima is the capital
//! city of Peru.", ...) mixed through them. Every fact appears many times, each time in freshly
//! drawn sentence forms, so a small model can learn the facts and not one phrasing of them.
//! A few book documents are held out: raw text the base model never saw, for measuring
//! forgetting after fine-tuning.

use std::path::Path;

use manners_data::{DataError, Result, SplitMix64};

use crate::knowledge::{Country, Element, Knowledge, UsState, Word};

/// How the corpus is put together.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusConfig {
    /// Paragraphs per country, element and US state (each with freshly drawn sentence forms).
    pub fact_repeats: usize,
    /// Paragraphs per WordNet word.
    pub word_repeats: usize,
    /// Target characters per book document (cut at paragraph boundaries).
    pub chunk_chars: usize,
    /// Fraction of book documents held out (never trained on).
    pub heldout_fraction: f64,
    pub seed: u64,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        CorpusConfig {
            fact_repeats: 16,
            word_repeats: 1,
            chunk_chars: 4000,
            heldout_fraction: 0.02,
            seed: 1234,
        }
    }
}

/// Documents for training and held-out raw text.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    pub train: Vec<String>,
    pub heldout: Vec<String>,
    pub book_docs: usize,
    pub knowledge_docs: usize,
    pub book_chars: usize,
    pub knowledge_chars: usize,
}

impl std::fmt::Display for Corpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = (self.book_chars + self.knowledge_chars).max(1);
        write!(
            f,
            "{} training documents ({} book chunks, {} knowledge paragraphs; knowledge is {:.1}% of {:.1} M characters), {} held-out book chunks",
            self.train.len(),
            self.book_docs,
            self.knowledge_docs,
            100.0 * self.knowledge_chars as f64 / total as f64,
            total as f64 / 1e6,
            self.heldout.len()
        )
    }
}

/// Reads every `*.txt` / `*.txt.gz` in `dir`, sorted by name: (name, text).
pub fn load_books(dir: &Path) -> Result<Vec<(String, String)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut paths: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.ends_with(".txt") || n.ends_with(".txt.gz")
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let bytes = manners_data::read_bytes(&p)?;
        let text = String::from_utf8(bytes).map_err(|e| DataError::Table {
            file: p.clone(),
            line: 0,
            field: "<file>".into(),
            message: format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        })?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, text));
    }
    if out.is_empty() {
        return Err(DataError::Config(format!(
            "no .txt or .txt.gz books in {}",
            dir.display()
        )));
    }
    Ok(out)
}

/// Cuts a book into documents of about `chunk_chars` characters at blank-line paragraph
/// boundaries; hard-wrapped lines inside a paragraph are joined with spaces.
pub fn book_chunks(text: &str, chunk_chars: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for para in text.split("\n\n") {
        let p = para.split_whitespace().collect::<Vec<_>>().join(" ");
        if p.is_empty() {
            continue;
        }
        if !cur.is_empty() {
            cur.push_str("\n\n");
        }
        cur.push_str(&p);
        if cur.len() >= chunk_chars {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn pick<'a>(rng: &mut SplitMix64, v: &[&'a str]) -> &'a str {
    v[rng.below(v.len() as u64) as usize]
}

fn fill(form: &str, pairs: &[(&str, &str)]) -> String {
    let mut s = form.to_string();
    for (k, v) in pairs {
        s = s.replace(k, v);
    }
    s
}

/// "a, b and c".
pub fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

const COUNTRY_CAPITAL: &[&str] = &[
    "The capital of {c} is {cap}.",
    "{cap} is the capital of {c}.",
    "{cap} is the capital city of {c}.",
    "The capital city of {c} is {cap}.",
    "{c}'s capital is {cap}.",
    "The government of {c} sits in {cap}, the capital.",
];
const COUNTRY_OTHER: &[&str] = &[
    "{c} is a country in {cont}.",
    "{c} lies in {cont}.",
    "People in {c} speak {langs}.",
    "The languages of {c} include {langs}.",
    "The currency code of {c} is {cur}.",
    "The two-letter code of {c} is {iso}.",
];

/// One paragraph about a country: always its capital, plus two or three other facts.
pub fn country_paragraph(c: &Country, rng: &mut SplitMix64) -> String {
    let langs = join_and(&c.languages);
    let pairs = [
        ("{cap}", c.capital.as_str()),
        ("{cont}", c.continent.as_str()),
        ("{langs}", langs.as_str()),
        ("{cur}", c.currency.as_str()),
        ("{iso}", c.iso2.as_str()),
        ("{c}", c.name.as_str()),
    ];
    let mut sentences = vec![fill(pick(rng, COUNTRY_CAPITAL), &pairs)];
    let mut others: Vec<&str> = COUNTRY_OTHER
        .iter()
        .copied()
        .filter(|f| {
            let needs_langs = f.contains("{langs}");
            let needs_cur = f.contains("{cur}");
            (!needs_langs || !c.languages.is_empty()) && (!needs_cur || !c.currency.is_empty())
        })
        .collect();
    rng.shuffle(&mut others);
    let n = 2 + rng.below(2) as usize;
    for f in others.into_iter().take(n) {
        sentences.push(fill(f, &pairs));
    }
    rng.shuffle(&mut sentences[1..]);
    if rng.below(2) == 0 {
        sentences.swap(0, 1);
    }
    sentences.join(" ")
}

const ELEMENT_NUMBER: &[&str] = &[
    "{name} is element number {n}.",
    "The atomic number of {name} is {n}.",
    "Element {n} is {name}.",
    "{name} has atomic number {n}.",
];
const ELEMENT_SYMBOL: &[&str] = &[
    "The chemical symbol of {name} is {sym}.",
    "{name} has the symbol {sym}.",
    "{sym} is the symbol for {name}.",
    "The symbol for {name} is {sym}.",
];

/// One paragraph about an element: its number and symbol, plus one or two other facts.
pub fn element_paragraph(e: &Element, rng: &mut SplitMix64) -> String {
    let n = e.number.to_string();
    let pairs = [
        ("{name}", e.name.as_str()),
        ("{n}", n.as_str()),
        ("{sym}", e.symbol.as_str()),
    ];
    let mut sentences = vec![
        fill(pick(rng, ELEMENT_NUMBER), &pairs),
        fill(pick(rng, ELEMENT_SYMBOL), &pairs),
    ];
    let mut others = Vec::new();
    if !e.state.is_empty() {
        others.push(format!("{} is a {} at room temperature.", e.name, e.state));
    }
    if !e.group.is_empty() {
        let g = e.group.trim_end_matches('s');
        let article = if g.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        others.push(format!("{} is {article} {g}.", e.name));
    }
    if e.year.eq_ignore_ascii_case("ancient") {
        others.push(format!("{} has been known since ancient times.", e.name));
    } else if !e.year.is_empty() {
        others.push(format!("{} was discovered in {}.", e.name, e.year));
    }
    rng.shuffle(&mut others);
    let k = 1 + rng.below(2) as usize;
    sentences.extend(others.into_iter().take(k));
    rng.shuffle(&mut sentences);
    sentences.join(" ")
}

const STATE_CAPITAL: &[&str] = &[
    "The capital of {s} is {cap}.",
    "{cap} is the capital of {s}.",
    "{cap} is the state capital of {s}.",
    "The capital city of {s} is {cap}.",
];

pub fn state_paragraph(s: &UsState, rng: &mut SplitMix64) -> String {
    let pairs = [("{cap}", s.capital.as_str()), ("{s}", s.name.as_str())];
    let mut sentences = vec![
        fill(pick(rng, STATE_CAPITAL), &pairs),
        format!("{} is a state of the United States.", s.name),
    ];
    rng.shuffle(&mut sentences);
    sentences.join(" ")
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

pub fn word_paragraph(w: &Word, rng: &mut SplitMix64) -> String {
    let pos = pos_name(&w.pos);
    let def = w.definition.trim_end_matches('.');
    let mut s = match rng.below(3) {
        0 => format!("{} ({pos}): {def}.", w.word),
        1 => format!("The {pos} \"{}\" means {def}.", w.word),
        _ => format!("Definition of {}: {def}.", w.word),
    };
    if let Some(ex) = &w.example {
        s.push_str(&format!(" For example: \"{ex}\"."));
    }
    s
}

/// Every knowledge paragraph, `fact_repeats` per country/element/state and `word_repeats` per word.
pub fn knowledge_paragraphs(k: &Knowledge, cfg: &CorpusConfig) -> Vec<String> {
    let mut rng = SplitMix64::new(cfg.seed ^ 0x6B6E_6F77);
    let mut out = Vec::new();
    for _ in 0..cfg.fact_repeats {
        out.extend(k.countries.iter().map(|c| country_paragraph(c, &mut rng)));
        out.extend(k.elements.iter().map(|e| element_paragraph(e, &mut rng)));
        out.extend(k.states.iter().map(|s| state_paragraph(s, &mut rng)));
    }
    for _ in 0..cfg.word_repeats {
        out.extend(k.words.iter().map(|w| word_paragraph(w, &mut rng)));
    }
    out
}

/// Knowledge paragraphs are grouped into documents of about this many characters.
const KNOWLEDGE_DOC_CHARS: usize = 1500;

/// Joins paragraphs (in order, blank line between) into documents of about `chars` characters.
pub fn group_paragraphs(paragraphs: Vec<String>, chars: usize) -> Vec<String> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for p in paragraphs {
        if !cur.is_empty() {
            cur.push_str("\n\n");
        }
        cur.push_str(&p);
        if cur.len() >= chars {
            docs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        docs.push(cur);
    }
    docs
}

/// Books cut into documents, a held-out share of them set aside, and knowledge paragraphs
/// grouped into documents and shuffled in among the rest (seeded).
pub fn build_corpus(books: &[(String, String)], k: &Knowledge, cfg: &CorpusConfig) -> Corpus {
    let mut rng = SplitMix64::new(cfg.seed);
    let mut book_docs: Vec<String> = books
        .iter()
        .flat_map(|(_, t)| book_chunks(t, cfg.chunk_chars))
        .collect();
    rng.shuffle(&mut book_docs);
    let n_held =
        ((cfg.heldout_fraction * book_docs.len() as f64).round() as usize).min(book_docs.len());
    let heldout: Vec<String> = book_docs.drain(..n_held).collect();
    let mut paragraphs = knowledge_paragraphs(k, cfg);
    rng.shuffle(&mut paragraphs);
    let knowledge_docs = group_paragraphs(paragraphs, KNOWLEDGE_DOC_CHARS);
    let book_chars = book_docs.iter().map(String::len).sum();
    let knowledge_chars = knowledge_docs.iter().map(String::len).sum();
    let (nb, nk) = (book_docs.len(), knowledge_docs.len());
    let mut train = book_docs;
    train.extend(knowledge_docs);
    rng.shuffle(&mut train);
    Corpus {
        train,
        heldout,
        book_docs: nb,
        knowledge_docs: nk,
        book_chars,
        knowledge_chars,
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
    fn chunks_respect_paragraphs_and_join_wrapped_lines() {
        let text = "one two\nthree\n\nfour\n\n\n\nfive six";
        assert_eq!(
            book_chunks(text, 1),
            vec!["one two three", "four", "five six"]
        );
        assert_eq!(
            book_chunks(text, 1000),
            vec!["one two three\n\nfour\n\nfive six"]
        );
    }

    #[test]
    fn every_country_paragraph_states_its_capital() {
        let k = k();
        let mut rng = SplitMix64::new(5);
        for c in &k.countries {
            for _ in 0..5 {
                let p = country_paragraph(c, &mut rng);
                assert!(p.contains(&c.capital) && p.contains(&c.name), "{p}");
                assert!(!p.contains('{'), "unfilled placeholder: {p}");
            }
        }
        for e in &k.elements {
            let p = element_paragraph(e, &mut rng);
            assert!(
                p.contains(&e.symbol) && p.contains(&e.number.to_string()) && !p.contains('{'),
                "{p}"
            );
        }
    }

    #[test]
    fn corpus_is_deterministic_and_holds_out_books_only() {
        let k = k();
        let books = vec![(
            "a.txt".to_string(),
            "Call me Ishmael.\n\nSome years ago.\n\n".repeat(200),
        )];
        let cfg = CorpusConfig {
            fact_repeats: 2,
            word_repeats: 0,
            chunk_chars: 200,
            heldout_fraction: 0.1,
            seed: 9,
        };
        let a = build_corpus(&books, &k, &cfg);
        let b = build_corpus(&books, &k, &cfg);
        assert_eq!(a.train, b.train);
        assert_eq!(a.heldout, b.heldout);
        assert!(!a.heldout.is_empty());
        assert!(
            a.heldout
                .iter()
                .all(|d| d.contains("Ishmael") || d.contains("years ago"))
        );
        // Every country's capital sentence is in the training text fact_repeats times.
        let all = a.train.join("\n");
        let lima = all.matches("Lima").count();
        assert!(lima >= 2, "{lima}");
        assert_eq!(a.knowledge_docs + a.book_docs, a.train.len());
    }

    #[test]
    fn join_and_lists() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(join_and(&v(&["Spanish"])), "Spanish");
        assert_eq!(join_and(&v(&["a", "b", "c"])), "a, b and c");
    }
}
