//! What the evaluations run on: held-out questions with reference answers, held-out raw text,
//! the capital cloze; by default the shipped ones.

use std::path::{Path, PathBuf};

use manners::data::{
    BadRecordPolicy, Conversation, Format, Message, Reference, read_conversations, read_texts,
};
use manners::train::eval::{ClozeItem, EvalData, ToolEval, ToolQuestion};
use manners_assets::{HeldoutFact, Knowledge};

use crate::error::{RecipeError, Result};

/// Where the evaluation data comes from. Empty fields take the shipped data from `assets`.
#[derive(Clone, Debug, Default)]
pub struct EvalDataSpec {
    /// Held-out conversations (default: `assets/sft/heldout.jsonl`, scored against the facts
    /// beside it).
    pub data: Option<PathBuf>,
    /// Reference facts aligned with `data` (`heldout_facts.jsonl`).
    pub facts: Option<PathBuf>,
    /// Held-out raw text for the forgetting measure (default: `assets/base/heldout_text.jsonl`).
    pub text: Option<PathBuf>,
    /// The "The capital of X is" cloze over every country of the knowledge tables.
    pub cloze: bool,
    /// Only the first N conversations.
    pub limit: Option<usize>,
    /// The tool-use measure: held-out facts the `lookup` tool covers, asked with its system
    /// prompt; the model's calls run against the knowledge tables (needs the assets folder and
    /// the reference facts).
    pub tools: bool,
}

/// Most questions of the tool-use measure (evenly spread over the held-out facts).
pub const MAX_TOOL_QUESTIONS: usize = 240;

/// Reads `heldout_facts.jsonl` (one [`HeldoutFact`] per line); errors name file and line.
pub fn read_facts(path: &Path) -> Result<Vec<HeldoutFact>> {
    let text = std::fs::read_to_string(path).map_err(|e| RecipeError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                RecipeError::Invalid(format!(
                    "{}:{}: not a held-out fact: {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

/// "The capital of X is" for every country of the knowledge tables.
pub fn capital_cloze_items(k: &Knowledge) -> Vec<ClozeItem> {
    k.countries
        .iter()
        .map(|c| ClozeItem {
            prompt: format!("The capital of {} is", c.name),
            answer: c.capital.clone(),
        })
        .collect()
}

/// The tool-use measure over held-out facts: each question the `lookup` tool covers, with
/// its system prompt, the call that answers it and the reference; calls run against the
/// tables. At most [`MAX_TOOL_QUESTIONS`], evenly spread.
pub fn tool_eval(facts: &[HeldoutFact], k: &Knowledge) -> ToolEval {
    let usable: Vec<&HeldoutFact> = facts
        .iter()
        .filter(|f| manners_assets::lookup_field(&f.kind).is_some())
        .collect();
    let step = usable.len().div_ceil(MAX_TOOL_QUESTIONS).max(1);
    let questions = usable
        .iter()
        .step_by(step)
        .map(|f| ToolQuestion {
            messages: manners_assets::lookup_prompt(&f.question),
            tool: manners_assets::LOOKUP_TOOL.into(),
            args: vec![(
                "query".into(),
                manners_assets::lookup_query(
                    &f.entity,
                    manners_assets::lookup_field(&f.kind).unwrap_or_default(),
                ),
            )],
            reference: f.reference(),
        })
        .collect();
    let table = manners_assets::lookup_table(k);
    ToolEval {
        questions,
        run: std::sync::Arc::new(move |call| manners_assets::run_lookup(&table, call)),
    }
}

/// The evaluation data of `spec`; `assets` supplies the defaults (and the knowledge tables for
/// the cloze) when given.
pub fn load_eval_data(spec: &EvalDataSpec, assets: Option<&Path>) -> Result<EvalData> {
    let data = spec.data.clone().or_else(|| {
        assets
            .map(|d| d.join("sft/heldout.jsonl"))
            .filter(|p| p.is_file())
    });
    let mut out = EvalData::default();
    if let Some(p) = &data {
        let (mut convs, report) = read_conversations(p, Format::Auto, BadRecordPolicy::Skip)?;
        if report.n_rejected() > 0 {
            eprintln!("{report}");
        }
        let facts_path = spec.facts.clone().or_else(|| {
            let f = p.with_file_name("heldout_facts.jsonl");
            (f.is_file() && p.file_name().is_some_and(|n| n == "heldout.jsonl")).then_some(f)
        });
        let facts = match &facts_path {
            Some(f) => Some(read_facts(f)?),
            None => None,
        };
        if spec.tools
            && let (Some(facts), Some(dir)) = (&facts, assets)
        {
            out.tools = Some(tool_eval(facts, &Knowledge::load(&dir.join("knowledge"))?));
        }
        let mut refs: Option<Vec<Reference>> = facts
            .as_ref()
            .map(|f| f.iter().map(HeldoutFact::reference).collect());
        if let Some(f) = &refs
            && f.len() != convs.len()
        {
            return Err(RecipeError::Invalid(format!(
                "{} has {} facts but {} has {} conversations",
                facts_path.unwrap_or_default().display(),
                f.len(),
                p.display(),
                convs.len()
            )));
        }
        if let Some(n) = spec.limit {
            convs.truncate(n);
            if let Some(f) = refs.as_mut() {
                f.truncate(n);
            }
        }
        out.conversations = convs;
        out.references = refs;
    }
    let text = spec.text.clone().or_else(|| {
        assets
            .map(|d| d.join("base/heldout_text.jsonl"))
            .filter(|p| p.is_file())
    });
    if let Some(t) = &text {
        out.raw_text = read_texts(t, BadRecordPolicy::Skip)?.0;
    }
    if spec.cloze {
        let dir = assets.ok_or_else(|| {
            RecipeError::Invalid("the cloze needs the assets folder (knowledge tables)".into())
        })?;
        out.cloze = capital_cloze_items(&Knowledge::load(&dir.join("knowledge"))?);
    }
    Ok(out)
}

/// Questions to put to models: a JSONL/JSON dataset, or a text file with one question per line
/// (no reference answers).
pub fn read_prompts(path: &Path) -> Result<Vec<Conversation>> {
    if path.extension().is_some_and(|e| e == "txt") {
        let text = std::fs::read_to_string(path).map_err(|e| RecipeError::io(path, e))?;
        return Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Conversation::new(vec![Message::user(l.trim()), Message::assistant("")]))
            .collect());
    }
    Ok(read_conversations(path, Format::Auto, BadRecordPolicy::Skip)?.0)
}
