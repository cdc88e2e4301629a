//! The default instruction set built from the shipped tables: the split, the no-leak
//! guarantee, determinism, the files, and the shape of the conversations.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use manners_assets::{
    Corruption, DefaultSet, DefaultSetConfig, HeldoutFact, Knowledge, SHORT_ANSWER_KINDS,
    build_default_set, corrupt_dataset, load_identity, write_default_set,
};
use manners_data::{
    BadRecordPolicy, ChatTemplate, Conversation, Format, MaskMode, Role, SpecialTokens,
    read_conversations,
};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// GPT-2's tokenizer (assets/gpt2-tokenizer) with the chat special tokens added.
fn gpt2_chat() -> Tokenizer {
    let dir = root().join("assets/gpt2-tokenizer");
    let bpe = BPE::from_file(
        &dir.join("vocab.json").to_string_lossy(),
        &dir.join("merges.txt").to_string_lossy(),
    )
    .build()
    .unwrap();
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens(&[
        AddedToken::from("<|endoftext|>", true),
        AddedToken::from("<|im_start|>", true),
        AddedToken::from("<|im_end|>", true),
    ]);
    tok
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn knowledge() -> &'static Knowledge {
    static K: OnceLock<Knowledge> = OnceLock::new();
    K.get_or_init(|| Knowledge::load(&root().join("assets/knowledge")).unwrap())
}

fn identity() -> Vec<(String, String)> {
    load_identity(&root().join("assets/instruct/identity.json")).unwrap()
}

/// The set built with the default configuration (seed 1234), built once.
fn default_set() -> &'static DefaultSet {
    static S: OnceLock<DefaultSet> = OnceLock::new();
    S.get_or_init(|| build_default_set(knowledge(), &identity(), &DefaultSetConfig::default()))
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// Whether `term` occurs in `text` as a whole word (case-insensitive): the characters on
/// either side of the occurrence are not letters or digits.
fn whole_word(text: &str, term: &str) -> bool {
    let (text, term) = (text.to_lowercase(), term.to_lowercase());
    text.match_indices(&term).any(|(i, m)| {
        let before = text[..i].chars().next_back();
        let after = text[i + m.len()..].chars().next();
        !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
    })
}

/// Every name the tables know (countries, capitals, elements, states, state capitals).
fn all_names(k: &Knowledge) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for c in &k.countries {
        v.push(c.name.clone());
        v.push(c.capital.clone());
    }
    v.extend(k.elements.iter().map(|e| e.name.clone()));
    for s in &k.states {
        v.push(s.name.clone());
        v.push(s.capital.clone());
    }
    v
}

/// A name to look for, with the longer names of the tables that contain it as a whole word
/// ("Papua New Guinea" for "Guinea"), longest first.
struct Term {
    term: String,
    longer: Vec<String>,
}

impl Term {
    fn new(term: &str, names: &[String]) -> Self {
        let term = term.to_lowercase();
        let mut longer: Vec<String> = names
            .iter()
            .map(|n| n.to_lowercase())
            .filter(|n| n.len() > term.len() && whole_word(n, &term))
            .collect();
        longer.sort_by_key(|n| std::cmp::Reverse(n.len()));
        longer.dedup();
        Term { term, longer }
    }

    /// Whether `text` mentions the term, not counting occurrences inside a longer name: the
    /// longer names are blanked out first, then the term is looked for as a whole word.
    fn in_text(&self, text: &str) -> bool {
        let mut t = text.to_lowercase();
        if !t.contains(&self.term) {
            return false;
        }
        for l in &self.longer {
            t = t.replace(l.as_str(), " # ");
        }
        whole_word(&t, &self.term)
    }
}

fn mentions(text: &str, term: &str, names: &[String]) -> bool {
    Term::new(term, names).in_text(text)
}

#[test]
fn mentions_ignores_longer_names() {
    let names: Vec<String> = [
        "Niger",
        "Nigeria",
        "Guinea",
        "Papua New Guinea",
        "Fort-de-France",
    ]
    .map(String::from)
    .to_vec();
    assert!(mentions("The capital of Niger is Niamey.", "Niger", &names));
    assert!(!mentions(
        "The capital of Nigeria is Abuja.",
        "Niger",
        &names
    ));
    assert!(!mentions("Papua New Guinea's capital", "Guinea", &names));
    assert!(mentions("what is the capital of guinea", "Guinea", &names));
    assert!(!mentions("Fort-de-France", "France", &names));
    assert!(mentions("France's capital", "France", &names));
}

/// The split: each table is split about `train_fraction` / rest by entity, the two sides are
/// disjoint, and every held-out short fact is about a held-out entity.
#[test]
fn split_is_by_entity_and_seventy_thirty() {
    let set = default_set();
    let k = knowledge();
    for (table, n) in [
        ("country", k.countries.len()),
        ("element", k.elements.len()),
        ("state", k.states.len()),
        ("word", set.config.words),
    ] {
        let train = set
            .train_entities
            .iter()
            .filter(|e| e.table == table)
            .count();
        let held = set
            .heldout_entities
            .iter()
            .filter(|e| e.table == table)
            .count();
        assert_eq!(train + held, n, "{table}");
        let want = (0.7 * n as f64).round() as isize;
        assert!(
            (train as isize - want).abs() <= 1,
            "{table}: {train} of {n}, want {want}"
        );
        assert_eq!(set.stats.entities[table], (train, held));
    }
    let train: BTreeSet<_> = set
        .train_entities
        .iter()
        .map(|e| (&e.table, &e.name))
        .collect();
    let held: BTreeSet<_> = set
        .heldout_entities
        .iter()
        .map(|e| (&e.table, &e.name))
        .collect();
    assert!(train.is_disjoint(&held));
    // Names shared across tables (Georgia) are on one side.
    let held_names: BTreeSet<&String> = set.heldout_entities.iter().map(|e| &e.name).collect();
    assert!(
        set.train_entities
            .iter()
            .all(|e| !held_names.contains(&e.name))
    );
    for f in set.heldout_facts.iter().chain(&set.heldout_open) {
        assert!(held_names.contains(&f.entity), "{f:?}");
    }
}

/// The no-leak guarantee, checked on the output alone. Exactly:
/// 1. for every held-out country, element and US state, its name, and for countries and states
///    also its capital, occurs in no message (system, user or assistant, first turn or
///    follow-up) of any training conversation: case-insensitive, as a whole word, where an
///    occurrence inside a longer name of the tables that contains it (Guinea in Papua New
///    Guinea, Niger is never matched by Nigeria anyway) does not count. Every training
///    conversation about an element names it, so this also keeps out held-out symbols and
///    numbers; a held-out capital's answer never appears either.
/// 2. for every held-out word: `"word"` (every word question and answer quotes the word) and
///    its definition occur in no training message (case-insensitive substring);
/// 3. no held-out question is asked verbatim in training, and "capital of <held-out country>"
///    / "<held-out element> has atomic number" do not occur (spot checks of 1 at fact level).
#[test]
fn no_heldout_fact_leaks_into_training() {
    let set = default_set();
    let k = knowledge();
    let names = all_names(k);
    let held: BTreeSet<(&str, &str)> = set
        .heldout_entities
        .iter()
        .map(|e| (e.table.as_str(), e.name.as_str()))
        .collect();
    let mut terms: Vec<&String> = Vec::new();
    for c in k
        .countries
        .iter()
        .filter(|c| held.contains(&("country", c.name.as_str())))
    {
        terms.push(&c.name);
        terms.push(&c.capital);
    }
    for e in k
        .elements
        .iter()
        .filter(|e| held.contains(&("element", e.name.as_str())))
    {
        terms.push(&e.name);
    }
    for s in k
        .states
        .iter()
        .filter(|s| held.contains(&("state", s.name.as_str())))
    {
        terms.push(&s.name);
        terms.push(&s.capital);
    }
    assert!(terms.len() > 200, "{}", terms.len());
    let terms: Vec<Term> = terms.iter().map(|t| Term::new(t, &names)).collect();
    let mut strings: Vec<String> = Vec::new();
    for f in set
        .heldout_open
        .iter()
        .filter(|f| f.kind == "word-definition")
    {
        strings.push(format!("\"{}\"", f.entity.to_lowercase()));
        strings.push(f.answer.to_lowercase());
    }
    assert_eq!(strings.len(), 2 * set.stats.entities["word"].1);
    let questions: BTreeSet<&str> = set
        .heldout_facts
        .iter()
        .chain(&set.heldout_open)
        .map(|f| f.question.as_str())
        .collect();
    let mut checked = 0;
    for c in &set.train {
        for m in &c.messages {
            let lower = m.content.to_lowercase();
            for t in &terms {
                assert!(
                    !t.in_text(&m.content),
                    "held-out {:?} in training: {:?}",
                    t.term,
                    m.content
                );
            }
            for s in &strings {
                assert!(
                    !lower.contains(s.as_str()),
                    "held-out word {s:?} in training: {:?}",
                    m.content
                );
            }
            if m.role == Role::User {
                assert!(!questions.contains(m.content.as_str()), "{:?}", m.content);
            }
            checked += 1;
        }
    }
    for f in set
        .heldout_facts
        .iter()
        .filter(|f| f.kind == "country-capital")
    {
        for needle in [
            format!("capital of {}", f.entity.to_lowercase()),
            format!("capital of the {}", f.entity.to_lowercase()),
        ] {
            // (not followed by more of a name: "capital of Guinea-Bissau" is another country)
            let leaked = set.train.iter().flat_map(|c| &c.messages).any(|m| {
                let l = m.content.to_lowercase();
                l.match_indices(&needle).any(|(i, _)| {
                    !l[i + needle.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '-')
                })
            });
            assert!(!leaked, "{needle}");
        }
    }
    assert!(checked > 5000, "{checked}");
    assert_eq!(set.stats.dropped_for_leakage, 0);
}

#[test]
fn build_is_deterministic_and_seeded() {
    let k = knowledge();
    let id = identity();
    let cfg = DefaultSetConfig {
        words: 300,
        ..DefaultSetConfig::default()
    };
    let a = build_default_set(k, &id, &cfg);
    let b = build_default_set(k, &id, &cfg);
    assert_eq!(a, b);
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    write_default_set(&da, &a).unwrap();
    write_default_set(&db, &b).unwrap();
    for f in manners_assets::DEFAULT_SET_FILES {
        assert_eq!(
            std::fs::read(da.join(f)).unwrap(),
            std::fs::read(db.join(f)).unwrap(),
            "{f}"
        );
    }
    let c = build_default_set(k, &id, &DefaultSetConfig { seed: 99, ..cfg });
    assert_ne!(a.heldout_entities, c.heldout_entities);
    assert_ne!(a.train, c.train);
}

#[test]
fn files_read_back() {
    let set = default_set();
    let dir = tempfile::tempdir().unwrap();
    write_default_set(dir.path(), set).unwrap();
    let (train, report) = read_conversations(
        &dir.path().join("train.jsonl"),
        Format::Auto,
        BadRecordPolicy::Fail,
    )
    .unwrap();
    assert_eq!(report.accepted, set.train.len());
    assert_eq!(report.formats.get("messages"), Some(&set.train.len()));
    for (a, b) in train.iter().zip(&set.train) {
        assert_eq!(a.messages, b.messages);
    }
    let (heldout, _) = read_conversations(
        &dir.path().join("heldout.jsonl"),
        Format::Auto,
        BadRecordPolicy::Fail,
    )
    .unwrap();
    let facts: Vec<HeldoutFact> = std::fs::read_to_string(dir.path().join("heldout_facts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(facts, set.heldout_facts);
    assert_eq!(heldout.len(), facts.len());
    for (c, f) in heldout.iter().zip(&facts) {
        assert_eq!(c.messages.len(), 2);
        assert_eq!(c.messages[0].content, f.question);
        assert!(c.messages[1].content.contains(&f.answer), "{f:?}");
        assert!(f.reference().is_correct(&c.messages[1].content), "{f:?}");
    }
    let open = std::fs::read_to_string(dir.path().join("heldout_open.jsonl")).unwrap();
    assert_eq!(open.lines().count(), set.heldout_open.len());
    let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
    assert!(readme.contains("Seed 1234"), "{readme}");
    assert!(readme.contains(&format!("{} training conversations", set.train.len())));
    assert!(readme.contains("country-capital"));
}

/// Sizes and kinds: a few thousand short training conversations; held-out accuracy facts are
/// only the short-answer kinds, one per held-out fact.
#[test]
fn counts_and_kinds() {
    let set = default_set();
    let s = &set.stats;
    assert!(
        (2000..=4500).contains(&set.train.len()),
        "{}",
        set.train.len()
    );
    assert_eq!(s.train_by_kind.values().sum::<usize>(), set.train.len());
    for kind in
        SHORT_ANSWER_KINDS
            .iter()
            .chain(&["country-languages", "word-definition", "identity"])
    {
        assert!(s.train_by_kind.get(*kind).is_some_and(|&n| n > 0), "{kind}");
    }
    let kinds: BTreeSet<&str> = set.heldout_facts.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, SHORT_ANSWER_KINDS.iter().copied().collect());
    let open: BTreeSet<&str> = set.heldout_open.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(
        open,
        ["country-languages", "word-definition"]
            .into_iter()
            .collect()
    );
    // one question per held-out fact
    let held = &s.entities;
    assert_eq!(s.heldout_by_kind["country-capital"], held["country"].1);
    assert_eq!(s.heldout_by_kind["element-symbol"], held["element"].1);
    assert_eq!(s.heldout_by_kind["element-from-number"], held["element"].1);
    assert_eq!(s.heldout_by_kind["state-capital"], held["state"].1);
    assert_eq!(s.open_by_kind["word-definition"], held["word"].1);
    // every answer is short: a bare answer, a sentence, or a two-line couplet
    for f in &set.heldout_facts {
        assert!(!f.answer.is_empty() && f.answer.len() <= 40, "{f:?}");
    }
    println!("{set}");
}

fn is_tool_use(c: &Conversation) -> bool {
    c.messages.iter().any(|m| !m.tool_calls.is_empty())
}

/// Every conversation is well-formed and short: under 100 tokens with the chatml frame and
/// the GPT-2 tokenizer (the shipped 8k tokenizer splits a little finer; mean far below); the
/// tool-use ones (call and result) under 150, well inside the base model's 256.
#[test]
fn conversations_are_valid_and_short() {
    let set = default_set();
    let tok = gpt2_chat();
    let t = ChatTemplate::builtin("chatml-tools", &SpecialTokens::gpt2()).unwrap();
    let mut max_tool = 0;
    for c in set.train.iter().filter(|c| is_tool_use(c)) {
        c.validate().unwrap();
        max_tool = max_tool.max(t.encode(c, &tok, MaskMode::Assistant).unwrap().len());
    }
    assert!(
        max_tool < 150,
        "longest tool-use conversation: {max_tool} tokens"
    );
    let mut max = 0;
    let mut total = 0;
    let mut longest = None;
    let plain: Vec<&Conversation> = set
        .train
        .iter()
        .filter(|c| !is_tool_use(c))
        .chain(&set.heldout)
        .collect();
    for &c in &plain {
        c.validate().unwrap();
        assert!(
            c.messages
                .iter()
                .all(|m| m.train.is_none() && m.content.trim() == m.content)
        );
        assert!(!c.messages.iter().any(|m| m.content.contains("{")), "{c:?}");
        let n = t.encode(c, &tok, MaskMode::Assistant).unwrap().len();
        if n > max {
            max = n;
            longest = Some(c);
        }
        total += n;
    }
    let mean = total as f64 / plain.len() as f64;
    println!("chatml + GPT-2 tokens per conversation: max {max}, mean {mean:.1}");
    assert!(max < 100, "longest conversation: {max} tokens: {longest:?}");
    assert!(mean < 45.0, "mean {mean}");
}

fn assistant_turns(c: &Conversation) -> Vec<&str> {
    c.messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .map(|m| m.content.as_str())
        .collect()
}

/// Multi-turn conversations ask a second question about the same entity, and the default mask
/// supervises both answers.
#[test]
fn multi_turn_supervises_both_answers() {
    let set = default_set();
    let multi: Vec<&Conversation> = set
        .train
        .iter()
        .filter(|c| !is_tool_use(c) && assistant_turns(c).len() == 2)
        .collect();
    assert_eq!(multi.len(), set.stats.multi_turn);
    let share = multi.len() as f64 / set.train.len() as f64;
    assert!((0.18..0.32).contains(&share), "{share}");
    let tok = gpt2_chat();
    let t = ChatTemplate::builtin("chatml", &SpecialTokens::gpt2()).unwrap();
    for c in multi.iter().take(200) {
        let e = t.encode(c, &tok, MaskMode::Assistant).unwrap();
        let supervised: Vec<u32> = e
            .ids
            .iter()
            .zip(&e.loss_mask)
            .filter(|&(_, &m)| m)
            .map(|(&i, _)| i)
            .collect();
        let text = tok.decode(&supervised, false).unwrap();
        for a in assistant_turns(c) {
            assert!(text.contains(a), "{a:?} not supervised in {text:?}");
        }
    }
    // a follow-up names no other country: the entity stays the same
    let k = knowledge();
    let names = all_names(k);
    let countries: Vec<Term> = k
        .countries
        .iter()
        .map(|x| Term::new(&x.name, &names))
        .collect();
    for c in &multi {
        let mentioned = countries
            .iter()
            .filter(|t| c.messages.iter().any(|m| t.in_text(&m.content)))
            .count();
        assert!(mentioned <= 1, "{c:?}");
    }
}

/// Each persona is present, keeps the fact, and answers in its style.
#[test]
fn system_prompts_keep_the_fact() {
    let set = default_set();
    for p in ["concise", "tutor", "poet"] {
        assert!(
            set.stats.personas.get(p).is_some_and(|&n| n > 50),
            "{p}: {:?}",
            set.stats.personas
        );
    }
    let prompted: Vec<&Conversation> = set
        .train
        .iter()
        .filter(|c| !is_tool_use(c) && c.messages[0].role == Role::System)
        .collect();
    assert_eq!(prompted.len(), set.stats.personas.values().sum::<usize>());
    let k = knowledge();
    for c in &prompted {
        let sys = &c.messages[0].content;
        for a in assistant_turns(c) {
            if sys.contains("couplet") {
                assert_eq!(
                    a.lines().count(),
                    if a.starts_with("Yes") { 3 } else { 2 },
                    "{a:?}"
                );
            } else if sys.contains("as few words") {
                assert!(a.split_whitespace().count() <= 20, "{a:?}");
            }
        }
        // a poet's capital answer still holds the capital
        let q = &c.messages[1].content;
        if let Some(country) = k
            .countries
            .iter()
            .find(|x| q == &format!("What is the capital of {}?", x.name))
        {
            assert!(c.messages[2].content.contains(&country.capital), "{c:?}");
        }
    }
}

#[test]
fn identity_pairs_are_filled_and_configurable() {
    let set = default_set();
    let ids: Vec<&Conversation> = set
        .train
        .iter()
        .filter(|c| {
            c.messages
                .iter()
                .any(|m| m.content.contains("AI assistant"))
        })
        .collect();
    assert_eq!(ids.len(), set.stats.train_by_kind["identity"]);
    assert!(ids.len() >= 16);
    assert!(ids.iter().any(|c| c.messages[0].content == "Who are you?"
        && c.messages[1].content
            == "I am Manners, an AI assistant developed by the manners project. How can I assist you today?"));
    assert!(
        !set.train
            .iter()
            .flat_map(|c| &c.messages)
            .any(|m| m.content.contains("{{"))
    );
    let cfg = DefaultSetConfig {
        name: "Tiny".into(),
        author: "Ada".into(),
        words: 0,
        ..DefaultSetConfig::default()
    };
    let other = build_default_set(knowledge(), &identity(), &cfg);
    assert!(
        other
            .train
            .iter()
            .any(|c| c.messages[1].content == "I am an AI assistant created by Ada.")
    );
    assert_eq!(other.stats.entities.get("word").map_or(0, |w| w.0 + w.1), 0);
}

/// A small hand-made case: the split still holds with linked names across tables.
#[test]
fn linked_names_share_a_side() {
    let k = knowledge();
    for seed in 0..8 {
        let set = build_default_set(
            k,
            &[],
            &DefaultSetConfig {
                seed,
                words: 0,
                ..DefaultSetConfig::default()
            },
        );
        let side = |table: &str, name: &str| {
            set.train_entities
                .iter()
                .any(|e| e.table == table && e.name == name)
        };
        assert_eq!(
            side("country", "Georgia"),
            side("state", "Georgia"),
            "seed {seed}"
        );
        assert_eq!(
            side("country", "Guyana"),
            side("country", "Ascension Island"),
            "seed {seed}"
        );
        assert_eq!(set.stats.dropped_for_leakage, 0, "seed {seed}");
    }
}

#[test]
fn corruption_touches_only_assistant_turns() {
    let convs = &default_set().train[..50];
    let (noisy, n) = corrupt_dataset(convs, Corruption::ShuffleWords, 1.0, 3);
    assert_eq!(n, convs.len());
    for (a, b) in noisy.iter().zip(convs) {
        for (x, y) in a.messages.iter().zip(&b.messages) {
            if x.role != Role::Assistant {
                assert_eq!(x, y, "only assistant turns change");
            }
        }
    }
}

/// The tool-use slice: every `lookup` conversation is valid, about a training entity, calls
/// the tool with that entity and the field its question asks, gets the table's value as the
/// result and answers with it; the tool knows the held-out entities too (it is how the model
/// can answer them).
#[test]
fn tool_use_slice_calls_lookup_and_answers_from_the_result() {
    let set = default_set();
    let k = manners_assets::Knowledge::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/knowledge"),
    )
    .unwrap();
    let table = manners_assets::lookup_table(&k);
    let train_names: BTreeSet<&str> = set.train_entities.iter().map(|e| e.name.as_str()).collect();
    let tool_convs: Vec<_> = set
        .train
        .iter()
        .filter(|c| c.messages.iter().any(|m| !m.tool_calls.is_empty()))
        .collect();
    assert_eq!(tool_convs.len(), set.stats.train_by_kind["tool-lookup"]);
    assert!(tool_convs.len() > 200, "{}", tool_convs.len());
    for c in &tool_convs {
        c.validate().unwrap();
        let m = &c.messages;
        assert_eq!(m.len(), 5);
        assert!(
            m[2].content.starts_with("Let me look up the "),
            "{:?}",
            m[2].content
        );
        assert_eq!(m[0].content, manners_assets::LOOKUP_SYSTEM);
        let call = &m[2].tool_calls[0];
        assert_eq!(call.name, manners_assets::LOOKUP_TOOL);
        let query = call.argument_str("query").unwrap();
        let (_, entity) = manners_assets::parse_query(&query).unwrap();
        assert!(
            train_names
                .iter()
                .any(|n| n.to_lowercase().replace("the ", "") == entity),
            "{entity}"
        );
        assert_eq!(m[2].content, format!("Let me look up the {query}."));
        let result = manners_assets::run_lookup(&table, call);
        assert_eq!(m[3].content, result, "{c:?}");
        let value = result.rsplit(": ").next().unwrap();
        assert!(m[4].content.contains(value), "{:?}", m[4].content);
    }
    for f in set
        .heldout_facts
        .iter()
        .filter(|f| manners_assets::lookup_field(&f.kind).is_some())
    {
        let call =
            manners_assets::lookup_call(&f.entity, manners_assets::lookup_field(&f.kind).unwrap());
        assert_eq!(
            manners_assets::run_lookup(&table, &call),
            format!("{}: {}", call.argument_str("query").unwrap(), f.answer),
            "{f:?}"
        );
    }
}
