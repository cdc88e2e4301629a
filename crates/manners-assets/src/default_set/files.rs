//! The identity pairs file in, the set's files (JSONL and README) out.

use manners_data::{write_conversations, write_json_lines};

use super::*;

/// Reads an Alpaca-style identity file (a JSON array of `{instruction, input, output}`) and
/// keeps the English pairs (all-ASCII text), as (instruction, output) with a non-empty `input`
/// appended to the instruction after a blank line. Placeholders are left as they are.
pub fn load_identity(path: &Path) -> Result<Vec<(String, String)>> {
    let bytes = manners_data::read_bytes(path)?;
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

pub(super) fn fact_json(f: &HeldoutFact) -> serde_json::Value {
    serde_json::json!({ "kind": f.kind, "entity": f.entity, "question": f.question, "answer": f.answer })
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
    write_conversations(&train, &set.train)?;
    write_conversations(&heldout, &set.heldout)?;
    write_json_lines(&facts, set.heldout_facts.iter().map(fact_json))?;
    write_json_lines(&open, set.heldout_open.iter().map(fact_json))?;
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
            "Built by `manners_assets::build_default_set` from the knowledge tables in \
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
            "| `heldout_facts.jsonl` | the same {} facts as `{{kind, entity, question, answer}}` (line i = line i of `heldout.jsonl`); a response is correct when it contains `answer` as a whole word, case-insensitively except for element symbols (`HeldoutFact::reference`) |\n",
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
