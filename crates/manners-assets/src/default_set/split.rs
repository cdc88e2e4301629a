//! The split by entity: finding names in text (whole words, ignoring names inside longer
//! names), linking entities that name each other, and the seeded train/held-out split.

use super::*;

/// Lower-case alphanumeric runs: "Peru's capital, Fort-de-France" -> [peru, s, capital, fort,
/// de, france].
pub(super) fn tokens(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Finds names in text as whole-word token sequences. An occurrence that lies inside an
/// occurrence of a longer known name does not count: "Guinea" is not mentioned by "Papua New
/// Guinea", "Niger" never by "Nigeria", "France" not by "Fort-de-France".
pub(super) struct Scanner {
    /// Every known name (targets and the longer names that mask them), as token sequences.
    pub(super) names: Vec<Vec<String>>,
    /// First token -> indices into `names`.
    pub(super) by_first: HashMap<String, Vec<usize>>,
}

impl Scanner {
    pub(super) fn new(names: impl IntoIterator<Item = String>) -> Self {
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

    pub(super) fn index(&self, name: &str) -> Option<usize> {
        let t = tokens(name);
        self.by_first
            .get(t.first()?)?
            .iter()
            .copied()
            .find(|&i| self.names[i] == t)
    }

    /// Indices of the names mentioned in `text` (sorted, unique), longer names masking the
    /// shorter ones they contain.
    pub(super) fn mentioned(&self, text: &str) -> Vec<usize> {
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
pub(super) enum Table {
    Country,
    Element,
    State,
}

impl Table {
    pub(super) fn name(self) -> &'static str {
        match self {
            Table::Country => "country",
            Table::Element => "element",
            Table::State => "state",
        }
    }
}

/// An entity of the country, element or state table and the names that identify it.
pub(super) struct Ent {
    pub(super) table: Table,
    pub(super) index: usize,
    pub(super) name: String,
    /// Its name, and its capital for countries and states.
    pub(super) names: Vec<String>,
}

pub(super) fn entities(k: &Knowledge) -> Vec<Ent> {
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

pub(super) fn find(parent: &mut [usize], mut i: usize) -> usize {
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
pub(super) fn split_entities(
    ents: &[Ent],
    scanner: &Scanner,
    frac: f64,
    rng: &mut SplitMix64,
) -> Vec<bool> {
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
pub(super) fn usable_words<'a>(k: &'a Knowledge, scanner: &Scanner) -> Vec<&'a Word> {
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
