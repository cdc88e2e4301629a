//! Encoding whole datasets: templates applied to every conversation (in parallel), then the
//! length policy. Raw text for mixing and pretraining.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use tokenizers::Tokenizer;

use crate::conversation::{Conversation, Origin};
use crate::error::{DataError, Result};
use crate::template::{ChatTemplate, Encoded, MaskMode, TokEncoder};

/// What to do with an example longer than `max_len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthPolicy {
    /// Drop it (counted).
    #[default]
    Drop,
    /// Keep the first `max_len` tokens; dropped anyway if no supervised target is left.
    Truncate,
    /// Stop with an error naming the example.
    Fail,
}

impl FromStr for LengthPolicy {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "drop" => Ok(LengthPolicy::Drop),
            "truncate" => Ok(LengthPolicy::Truncate),
            "fail" => Ok(LengthPolicy::Fail),
            o => Err(DataError::Config(format!(
                "unknown length policy {o:?} (drop, truncate, fail)"
            ))),
        }
    }
}

/// How many dropped examples a report names.
pub const REPORT_DROPS: usize = 10;

/// What `encode_dataset` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodeReport {
    pub examples: usize,
    pub kept: usize,
    pub max_len: usize,
    /// Examples cut to `max_len` and kept.
    pub truncated: usize,
    /// Tokens removed from kept, truncated examples.
    pub tokens_lost: usize,
    /// Examples longer than `max_len` dropped (policy drop, or truncation left no target).
    pub dropped_too_long: usize,
    /// Examples without any supervised target (e.g. every turn has `train: false`).
    pub dropped_no_supervised: usize,
    /// Tokens and supervised targets of the kept examples.
    pub tokens: usize,
    pub supervised: usize,
    /// Longest example before the length policy.
    pub longest: usize,
    /// The first dropped examples: where from, and why.
    pub first_drops: Vec<(Option<Origin>, String)>,
}

impl EncodeReport {
    pub fn dropped(&self) -> usize {
        self.dropped_too_long + self.dropped_no_supervised
    }

    /// Adds the report of another part of the same dataset (encoded with the same `max_len`).
    pub fn merge(&mut self, other: EncodeReport) {
        self.examples += other.examples;
        self.kept += other.kept;
        self.max_len = self.max_len.max(other.max_len);
        self.truncated += other.truncated;
        self.tokens_lost += other.tokens_lost;
        self.dropped_too_long += other.dropped_too_long;
        self.dropped_no_supervised += other.dropped_no_supervised;
        self.tokens += other.tokens;
        self.supervised += other.supervised;
        self.longest = self.longest.max(other.longest);
        for d in other.first_drops {
            if self.first_drops.len() < REPORT_DROPS {
                self.first_drops.push(d);
            }
        }
    }

    fn drop(&mut self, origin: &Option<Origin>, why: String) {
        if self.first_drops.len() < REPORT_DROPS {
            self.first_drops.push((origin.clone(), why));
        }
    }
}

impl fmt::Display for EncodeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frac = if self.tokens > 0 {
            self.supervised as f64 / self.tokens as f64
        } else {
            0.0
        };
        writeln!(
            f,
            "encoded {} of {} examples: {} tokens, {} supervised ({:.1}%), longest {}",
            self.kept,
            self.examples,
            self.tokens,
            self.supervised,
            100.0 * frac,
            self.longest
        )?;
        writeln!(
            f,
            "  max_len {}: truncated {} ({} tokens lost), dropped {} too long, {} with no \
             supervised token",
            self.max_len,
            self.truncated,
            self.tokens_lost,
            self.dropped_too_long,
            self.dropped_no_supervised
        )?;
        for (o, why) in &self.first_drops {
            match o {
                Some(o) => writeln!(f, "  dropped {o}: {why}")?,
                None => writeln!(f, "  dropped: {why}")?,
            }
        }
        Ok(())
    }
}

/// Encodes every conversation with `template` (in parallel, order kept), then applies the
/// length policy. `max_len` is the most tokens an example may have (for batches of `seq_len`
/// positions use `max_len = seq_len + 1`). Examples without a supervised target are dropped.
pub fn encode_dataset(
    convs: &[Conversation],
    template: &ChatTemplate,
    tok: &Tokenizer,
    mask: MaskMode,
    max_len: usize,
    policy: LengthPolicy,
) -> Result<(Vec<Encoded>, EncodeReport)> {
    if max_len < 2 {
        return Err(DataError::Config(format!(
            "max_len must be at least 2 tokens, got {max_len}"
        )));
    }
    let encoded: Vec<Result<Encoded>> = convs
        .par_iter()
        .with_min_len(16)
        .map_init(
            || TokEncoder::new(tok),
            |enc, c| template.encode_with(enc, c, mask),
        )
        .collect();
    let mut report = EncodeReport {
        examples: convs.len(),
        max_len,
        ..EncodeReport::default()
    };
    let mut out = Vec::with_capacity(convs.len());
    for (conv, e) in convs.iter().zip(encoded) {
        let mut e = e?;
        report.longest = report.longest.max(e.len());
        if e.n_supervised() == 0 {
            report.dropped_no_supervised += 1;
            report.drop(&conv.origin, "no supervised token".into());
            continue;
        }
        if e.len() > max_len {
            match policy {
                LengthPolicy::Fail => {
                    return Err(DataError::TooLong {
                        origin: conv.origin.clone(),
                        len: e.len(),
                        max_len,
                    });
                }
                LengthPolicy::Drop => {
                    report.dropped_too_long += 1;
                    report.drop(&conv.origin, format!("{} tokens > max_len", e.len()));
                    continue;
                }
                LengthPolicy::Truncate => {
                    let lost = e.len() - max_len;
                    e.ids.truncate(max_len);
                    e.loss_mask.truncate(max_len);
                    if e.n_supervised() == 0 {
                        report.dropped_too_long += 1;
                        report.drop(
                            &conv.origin,
                            format!("no supervised token in the first {max_len} tokens"),
                        );
                        continue;
                    }
                    report.truncated += 1;
                    report.tokens_lost += lost;
                }
            }
        }
        report.kept += 1;
        report.tokens += e.len();
        report.supervised += e.n_supervised();
        out.push(e);
    }
    Ok((out, report))
}

/// Raw text, every token supervised, with `eos` appended when given. Special-token text
/// inside `text` stays text.
pub fn encode_text(text: &str, tok: &Tokenizer, eos: Option<u32>) -> Result<Encoded> {
    let mut enc = TokEncoder::new(tok);
    let mut ids = Vec::new();
    enc.text(text, &mut ids)?;
    ids.extend(eos);
    let loss_mask = vec![true; ids.len()];
    Ok(Encoded {
        ids,
        loss_mask,
        mixed: false,
    })
}

/// Encodes many raw-text documents in parallel (order kept).
pub fn encode_texts(texts: &[String], tok: &Tokenizer, eos: Option<u32>) -> Result<Vec<Encoded>> {
    texts.par_iter().map(|t| encode_text(t, tok, eos)).collect()
}

/// Splits an example into pieces of at most `max_len` tokens that overlap by one token, so
/// every target of the original is a target of exactly one piece.
pub fn split_long(e: &Encoded, max_len: usize) -> Vec<Encoded> {
    if e.len() <= max_len || max_len < 2 {
        return vec![e.clone()];
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < e.len() {
        let end = (start + max_len).min(e.len());
        out.push(Encoded {
            ids: e.ids[start..end].to_vec(),
            loss_mask: e.loss_mask[start..end].to_vec(),
            mixed: e.mixed,
        });
        start = end - 1;
    }
    out
}
