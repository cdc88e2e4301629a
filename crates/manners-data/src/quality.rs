//! Data tools: quality scores with threshold filters, and exact de-duplication on normalised
//! text.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use tokenizers::normalizers::NFKC;
use tokenizers::{NormalizedString, Normalizer, Tokenizer};

use crate::conversation::{Conversation, Origin, Role};
use crate::error::Result;
use crate::template::TokEncoder;

/// Per-example quality scores (token counts use the given tokenizer, contents only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityScores {
    /// Tokens in the assistant turns.
    pub response_tokens: usize,
    /// Tokens in the system and user turns.
    pub prompt_tokens: usize,
    /// `prompt_tokens / response_tokens` (instruction/response length ratio).
    pub ratio: f64,
    /// Distinct token ids / tokens, over the assistant turns (low = repetitive).
    pub distinct_ratio: f64,
}

/// Computes the quality scores of one conversation.
pub fn quality_scores(conv: &Conversation, tok: &Tokenizer) -> Result<QualityScores> {
    scores_with(conv, &mut TokEncoder::new(tok))
}

fn scores_with(conv: &Conversation, enc: &mut TokEncoder<'_>) -> Result<QualityScores> {
    let mut response = Vec::new();
    let mut prompt = Vec::new();
    for m in &conv.messages {
        match m.role {
            Role::Assistant => enc.text(&m.content, &mut response)?,
            _ => enc.text(&m.content, &mut prompt)?,
        }
    }
    let mut distinct = response.clone();
    distinct.sort_unstable();
    distinct.dedup();
    Ok(QualityScores {
        response_tokens: response.len(),
        prompt_tokens: prompt.len(),
        ratio: prompt.len() as f64 / response.len().max(1) as f64,
        distinct_ratio: distinct.len() as f64 / response.len().max(1) as f64,
    })
}

/// Thresholds; an example is kept when it passes all of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityFilter {
    pub min_response_tokens: usize,
    pub max_response_tokens: usize,
    /// Largest allowed prompt/response length ratio.
    pub max_ratio: f64,
    pub min_distinct_ratio: f64,
}

impl Default for QualityFilter {
    /// Keeps everything with a response.
    fn default() -> Self {
        QualityFilter {
            min_response_tokens: 1,
            max_response_tokens: usize::MAX,
            max_ratio: f64::INFINITY,
            min_distinct_ratio: 0.0,
        }
    }
}

impl QualityFilter {
    /// Why `s` fails the filter (the first threshold it misses), or `None` when it passes.
    pub fn check(&self, s: &QualityScores) -> Option<&'static str> {
        if s.response_tokens < self.min_response_tokens {
            Some("response too short")
        } else if s.response_tokens > self.max_response_tokens {
            Some("response too long")
        } else if s.ratio > self.max_ratio {
            Some("instruction/response ratio too high")
        } else if s.distinct_ratio < self.min_distinct_ratio {
            Some("too repetitive")
        } else {
            None
        }
    }
}

/// What a filter or de-duplication removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterReport {
    pub examples: usize,
    pub kept: usize,
    pub removed: BTreeMap<String, usize>,
    /// The first removed examples, with the origin of the example they duplicate when the
    /// reason is a duplicate.
    pub first_removed: Vec<(Option<Origin>, String)>,
}

impl FilterReport {
    fn remove(&mut self, origin: &Option<Origin>, reason: &str, detail: String) {
        *self.removed.entry(reason.to_string()).or_default() += 1;
        if self.first_removed.len() < 10 {
            self.first_removed.push((origin.clone(), detail));
        }
    }
}

impl fmt::Display for FilterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kept {} of {} examples", self.kept, self.examples)?;
        for (k, v) in &self.removed {
            writeln!(f, "  removed ({k}): {v}")?;
        }
        for (o, d) in &self.first_removed {
            match o {
                Some(o) => writeln!(f, "  {o}: {d}")?,
                None => writeln!(f, "  {d}")?,
            }
        }
        Ok(())
    }
}

/// Keeps the conversations that pass `filter`.
pub fn filter_quality(
    convs: Vec<Conversation>,
    tok: &Tokenizer,
    filter: &QualityFilter,
) -> Result<(Vec<Conversation>, FilterReport)> {
    let mut gate = QualityGate::new(*filter, tok);
    let mut out = Vec::with_capacity(convs.len());
    for c in convs {
        if gate.keep(&c)? {
            out.push(c);
        }
    }
    Ok((out, gate.into_report()))
}

/// [`filter_quality`] one conversation at a time (for datasets read as a stream).
pub struct QualityGate<'t> {
    filter: QualityFilter,
    enc: TokEncoder<'t>,
    report: FilterReport,
}

impl<'t> QualityGate<'t> {
    pub fn new(filter: QualityFilter, tok: &'t Tokenizer) -> Self {
        QualityGate {
            filter,
            enc: TokEncoder::new(tok),
            report: FilterReport::default(),
        }
    }

    /// Whether `c` passes; a failure is counted (and the first few named) in the report.
    pub fn keep(&mut self, c: &Conversation) -> Result<bool> {
        self.report.examples += 1;
        let s = scores_with(c, &mut self.enc)?;
        match self.filter.check(&s) {
            Some(why) => {
                self.report.remove(&c.origin, why, format!("{why} ({s:?})"));
                Ok(false)
            }
            None => {
                self.report.kept += 1;
                Ok(true)
            }
        }
    }

    pub fn into_report(self) -> FilterReport {
        self.report
    }
}

/// Normalised text for exact de-duplication: Unicode NFKC, lower case, whitespace runs
/// collapsed to one space, trimmed.
pub fn normalize_text(s: &str) -> String {
    let mut n = NormalizedString::from(s);
    let nfkc = if NFKC.normalize(&mut n).is_ok() {
        n.get().to_string()
    } else {
        s.to_string()
    };
    let lower = nfkc.to_lowercase();
    lower.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The de-duplication key of a conversation: roles and normalised contents.
pub fn dedup_key(conv: &Conversation) -> String {
    let mut key = String::new();
    for m in &conv.messages {
        key.push_str(m.role.as_str());
        key.push('\u{1F}');
        key.push_str(&normalize_text(&m.content));
        key.push('\u{1E}');
    }
    key
}

/// Removes exact duplicates (same [`dedup_key`]), keeping the first occurrence.
pub fn dedup(convs: Vec<Conversation>) -> (Vec<Conversation>, FilterReport) {
    let mut d = Deduper::default();
    let out: Vec<Conversation> = convs.into_iter().filter(|c| d.keep(c)).collect();
    (out, d.into_report())
}

/// [`dedup`] one conversation at a time. It remembers a 128-bit hash of each key and where the
/// key was first seen (24 bytes and a map slot per distinct conversation), never the text, so a
/// million conversations cost tens of megabytes.
#[derive(Debug, Default)]
pub struct Deduper {
    /// Key hash -> (file number + 1, or 0 for no origin; line).
    seen: HashMap<u128, (u32, u32)>,
    files: Vec<std::path::PathBuf>,
    report: FilterReport,
}

impl Deduper {
    /// Whether `c` is the first with its key; a duplicate is counted (and the first few named,
    /// with the example they repeat) in the report.
    pub fn keep(&mut self, c: &Conversation) -> bool {
        use std::hash::{Hash, Hasher};
        self.report.examples += 1;
        let key = dedup_key(c);
        let half = |salt: u8| {
            let mut h = std::hash::DefaultHasher::new();
            salt.hash(&mut h);
            key.hash(&mut h);
            h.finish()
        };
        let hash = u128::from(half(0x51)) << 64 | u128::from(half(0xA7));
        if let Some(&(file, line)) = self.seen.get(&hash) {
            let of = match file.checked_sub(1) {
                Some(f) => Origin {
                    file: self.files[f as usize].clone(),
                    line: line as usize,
                }
                .to_string(),
                None => "an earlier example".to_string(),
            };
            self.report
                .remove(&c.origin, "duplicate", format!("duplicate of {of}"));
            return false;
        }
        let at = match &c.origin {
            Some(o) => {
                let f = match self.files.iter().position(|p| *p == o.file) {
                    Some(f) => f,
                    None => {
                        self.files.push(o.file.clone());
                        self.files.len() - 1
                    }
                };
                (f as u32 + 1, o.line.min(u32::MAX as usize) as u32)
            }
            None => (0, 0),
        };
        self.seen.insert(hash, at);
        self.report.kept += 1;
        true
    }

    pub fn into_report(self) -> FilterReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::Message;

    #[test]
    fn normalisation() {
        assert_eq!(normalize_text("  Hello\n\tWORLD  "), "hello world");
        // NFKC folds the ligature and full-width letters.
        assert_eq!(normalize_text("ﬁne Ｆｏｏ"), "fine foo");
    }

    #[test]
    fn dedup_keeps_first() {
        let a = Conversation::new(vec![Message::user("Hi"), Message::assistant("Yo")]);
        let b = Conversation::new(vec![Message::user("hi "), Message::assistant("yo")]);
        let c = Conversation::new(vec![Message::user("hi"), Message::assistant("no")]);
        let (kept, r) = dedup(vec![a.clone(), b, c.clone()]);
        assert_eq!(kept, vec![a, c]);
        assert_eq!(r.removed.get("duplicate"), Some(&1));
    }

    #[test]
    fn filter_thresholds() {
        let f = QualityFilter {
            min_response_tokens: 2,
            min_distinct_ratio: 0.5,
            ..QualityFilter::default()
        };
        let s = |r, d| QualityScores {
            response_tokens: r,
            prompt_tokens: 3,
            ratio: 3.0 / r as f64,
            distinct_ratio: d,
        };
        assert_eq!(f.check(&s(1, 1.0)), Some("response too short"));
        assert_eq!(f.check(&s(10, 0.2)), Some("too repetitive"));
        assert_eq!(f.check(&s(10, 0.9)), None);
    }
}
