//! Building the set: training conversations (questions, follow-ups, system prompts, identity
//! pairs), held-out questions, and the leakage scan.

use super::*;

pub(super) fn pick<'a>(rng: &mut SplitMix64, v: &[&'a str]) -> &'a str {
    debug_assert!(!v.is_empty());
    v[rng.below(v.len() as u64) as usize]
}

pub(super) fn answer(
    fact: &Fact,
    style: Style,
    bare_fraction: f64,
    rng: &mut SplitMix64,
) -> String {
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
pub(super) struct Meta {
    pub(super) kind: &'static str,
    pub(super) follow: Option<&'static str>,
    pub(super) persona: Option<Persona>,
}

/// Most characters (all message contents) of a question-answer training conversation: about
/// 100 tokens with the chat frame. A follow-up or system prompt that would go over is left out.
/// (The tool-use conversations, with their call and result, run to about 280.)
pub const MAX_CONVERSATION_CHARS: usize = 230;

pub(super) fn chars(messages: &[Message]) -> usize {
    messages.iter().map(|m| m.content.chars().count()).sum()
}

/// A training conversation: `first` asked with question form `q`, maybe a system prompt, maybe
/// a follow-up from `follow` (facts of the same entity, or "Are you sure?" when empty).
pub(super) fn train_conversation(
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
pub(super) fn question_forms(kind: Kind, count: usize, rng: &mut SplitMix64) -> Vec<&'static str> {
    let mut qs: Vec<&'static str> = forms(kind).questions.to_vec();
    rng.shuffle(&mut qs);
    qs.truncate(count);
    qs
}

/// The identity pairs with placeholders filled, in up to three versions of the question (as
/// written, lower-case without end punctuation, capitalised with end punctuation).
pub(super) fn identity_conversations(
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
    // Its own stream, so the tool slice leaves the other conversations as they were.
    let mut tool_rng = SplitMix64::new(mix(cfg.seed ^ 0x544F_4F4C_5321));
    cfg.tool_fraction = cfg.tool_fraction.clamp(0.0, 1.0);

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
                if let Some(field) = super::tools::kind_field(fact.kind)
                    && tool_rng.unit() < cfg.tool_fraction
                {
                    let q = question_forms(fact.kind, 1, &mut tool_rng)[0];
                    let a = answer(fact, Style::Sentence, 0.0, &mut tool_rng);
                    let call = super::tools::lookup_call(&fact.entity, field);
                    train.push((
                        super::tools::lookup_conversation(&fact.fill(q), call, &fact.reference, &a),
                        Meta {
                            kind: "tool-lookup",
                            follow: None,
                            persona: None,
                        },
                    ));
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
