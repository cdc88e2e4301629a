//! `manners data inspect` and `manners data lint` as library functions returning reports that
//! implement `Display`, plus `debug_render`, the picture of what a model is trained on.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::batch::{BatchConfig, Loader};
use crate::conversation::{Conversation, Origin, Role};
use crate::encode::{EncodeReport, LengthPolicy, encode_dataset, encode_text};
use crate::error::{DataError, Result};
use crate::quality::dedup_key;
use crate::read::{BadRecordPolicy, Format, ReadReport, read_conversations, read_texts};
use crate::template::{ChatTemplate, Encoded, MaskMode, TokEncoder};

/// How supervised tokens are marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Highlight {
    /// `[[supervised]]`
    Brackets,
    /// ANSI colours: supervised bold green, the rest dim.
    Ansi,
}

/// Decodes `e` with supervised runs highlighted (in the style of nanochat's
/// `visualize_tokenization`). Runs are decoded as wholes, so multi-byte characters split
/// across a mask boundary show as U+FFFD.
pub fn debug_render(e: &Encoded, tok: &Tokenizer, hl: Highlight) -> Result<String> {
    let mut out = String::new();
    let mut i = 0;
    while i < e.ids.len() {
        let m = e.loss_mask[i];
        let j = (i..e.ids.len())
            .find(|&j| e.loss_mask[j] != m)
            .unwrap_or(e.ids.len());
        let text = tok
            .decode(&e.ids[i..j], false)
            .map_err(DataError::tokenizer)?;
        match (m, hl) {
            (true, Highlight::Brackets) => {
                out.push_str("[[");
                out.push_str(&text);
                out.push_str("]]");
            }
            (true, Highlight::Ansi) => {
                out.push_str("\x1b[1;32m");
                out.push_str(&text);
                out.push_str("\x1b[0m");
            }
            (false, Highlight::Brackets) => out.push_str(&text),
            (false, Highlight::Ansi) => {
                out.push_str("\x1b[2m");
                out.push_str(&text);
                out.push_str("\x1b[0m");
            }
        }
        i = j;
    }
    Ok(out)
}

/// Options of [`inspect`].
#[derive(Debug, Clone)]
pub struct InspectOptions {
    pub format: Format,
    /// Examples to render.
    pub n: usize,
    pub mask: MaskMode,
    /// When set, lengths are checked against it (policy `length_policy`).
    pub max_len: Option<usize>,
    pub length_policy: LengthPolicy,
    /// ANSI colours instead of `[[...]]` brackets.
    pub color: bool,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            format: Format::Auto,
            n: 3,
            mask: MaskMode::Assistant,
            max_len: None,
            length_policy: LengthPolicy::Truncate,
            color: false,
        }
    }
}

/// A length histogram: `(low, high, count)` per bin, `low..=high` tokens.
pub fn length_histogram(lengths: &[usize], bins: usize) -> Vec<(usize, usize, usize)> {
    let Some(&max) = lengths.iter().max() else {
        return Vec::new();
    };
    let bins = bins.max(1);
    let width = max.div_ceil(bins).max(1);
    let mut counts = vec![0usize; max / width + 1];
    for &l in lengths {
        counts[l / width] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(b, c)| (b * width, (b + 1) * width - 1, c))
        .collect()
}

/// What `inspect` shows.
#[derive(Debug, Clone)]
pub struct InspectReport {
    pub file: PathBuf,
    pub template: String,
    pub read: ReadReport,
    pub encode: EncodeReport,
    /// The first `n` examples, rendered with supervised tokens highlighted.
    pub rendered: Vec<(Option<Origin>, String)>,
    /// The same examples as encoded: ids and supervision mask.
    pub examples: Vec<(Option<Origin>, Encoded)>,
    pub histogram: Vec<(usize, usize, usize)>,
}

impl InspectReport {
    /// The shown examples for other tools, one JSON object each: `file`, `line`, `ids`,
    /// `tokens` (the vocabulary's string per id), `supervised` (per token: is it a target of
    /// the loss) and `text` (everything decoded).
    pub fn examples_json(&self, tok: &Tokenizer) -> Result<Vec<serde_json::Value>> {
        self.examples
            .iter()
            .map(|(o, e)| {
                let tokens: Vec<String> = e
                    .ids
                    .iter()
                    .map(|&id| tok.id_to_token(id).unwrap_or_default())
                    .collect();
                let text = tok.decode(&e.ids, false).map_err(DataError::tokenizer)?;
                Ok(serde_json::json!({
                    "file": o.as_ref().map_or(self.file.clone(), |o| o.file.clone()),
                    "line": o.as_ref().map(|o| o.line),
                    "ids": e.ids,
                    "tokens": tokens,
                    "supervised": e.loss_mask,
                    "text": text,
                }))
            })
            .collect()
    }
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (o, text)) in self.rendered.iter().enumerate() {
            match o {
                Some(o) => writeln!(f, "── example {} ({o}) ──", i + 1)?,
                None => writeln!(f, "── example {} ──", i + 1)?,
            }
            writeln!(f, "{text}")?;
        }
        writeln!(
            f,
            "── statistics ({}, template {}) ──",
            self.file.display(),
            self.template
        )?;
        write!(f, "{}", self.read)?;
        let e = &self.encode;
        let frac = e.supervised as f64 / e.tokens.max(1) as f64;
        writeln!(f, "examples:   {}", e.kept)?;
        writeln!(
            f,
            "tokens:     {} (mean {:.1}, longest {})",
            e.tokens,
            e.tokens as f64 / e.kept.max(1) as f64,
            e.longest
        )?;
        writeln!(
            f,
            "supervised: {} ({:.1}% of tokens)",
            e.supervised,
            100.0 * frac
        )?;
        writeln!(
            f,
            "truncated:  {} ({} tokens lost)",
            e.truncated, e.tokens_lost
        )?;
        writeln!(
            f,
            "dropped:    {} ({} too long, {} with no supervised token)",
            e.dropped(),
            e.dropped_too_long,
            e.dropped_no_supervised
        )?;
        let most = self.histogram.iter().map(|b| b.2).max().unwrap_or(0).max(1);
        writeln!(f, "length histogram (tokens):")?;
        for &(lo, hi, c) in &self.histogram {
            let bar = "#".repeat((c * 40).div_ceil(most));
            writeln!(f, "  {lo:>6}-{hi:<6} {c:>7} {bar}")?;
        }
        Ok(())
    }
}

/// `manners data inspect FILE`: renders the first `opts.n` examples with supervised tokens
/// highlighted and computes statistics over the whole file. Raw-text files (`--format text`
/// or a `.txt`/`.txt.gz` file) are shown as trained: every token supervised, EOS appended.
/// Bad records are skipped and reported.
pub fn inspect(
    path: &Path,
    template: &ChatTemplate,
    tok: &Tokenizer,
    opts: &InspectOptions,
) -> Result<InspectReport> {
    let hl = if opts.color {
        Highlight::Ansi
    } else {
        Highlight::Brackets
    };
    let max_len = opts.max_len.unwrap_or(usize::MAX);
    let lower = path.to_string_lossy().to_ascii_lowercase();
    let is_text =
        opts.format == Format::Text || lower.ends_with(".txt") || lower.ends_with(".txt.gz");
    let (encoded, read, encode, origins): (Vec<Encoded>, _, _, Vec<Option<Origin>>) = if is_text {
        let (texts, read) = read_texts(path, BadRecordPolicy::Skip)?;
        let eos = template
            .specials()
            .eos
            .as_deref()
            .and_then(|t| tok.token_to_id(t));
        let mut enc = Vec::new();
        let mut rep = EncodeReport {
            examples: texts.len(),
            max_len,
            ..EncodeReport::default()
        };
        for t in &texts {
            let mut e = encode_text(t, tok, eos)?;
            rep.longest = rep.longest.max(e.len());
            if e.len() > max_len {
                rep.truncated += 1;
                rep.tokens_lost += e.len() - max_len;
                e.ids.truncate(max_len);
                e.loss_mask.truncate(max_len);
            }
            rep.kept += 1;
            rep.tokens += e.len();
            rep.supervised += e.n_supervised();
            enc.push(e);
        }
        let n = enc.len();
        (enc, read, rep, vec![None; n])
    } else {
        let (convs, read) = read_conversations(path, opts.format, BadRecordPolicy::Skip)?;
        let (enc, rep) = encode_dataset(
            &convs,
            template,
            tok,
            opts.mask,
            max_len.max(2),
            opts.length_policy,
        )?;
        // Render the first n conversations one by one, to keep their origins.
        let mut shown = Vec::new();
        let mut origins = Vec::new();
        for c in convs.iter().take(opts.n) {
            let mut e = template.encode(c, tok, opts.mask)?;
            e.ids.truncate(max_len);
            e.loss_mask.truncate(max_len);
            shown.push(e);
            origins.push(c.origin.clone());
        }
        let lengths: Vec<usize> = enc.iter().map(Encoded::len).collect();
        let rendered = shown
            .iter()
            .zip(origins.iter().cloned())
            .map(|(e, o)| Ok((o, debug_render(e, tok, hl)?)))
            .collect::<Result<Vec<_>>>()?;
        return Ok(InspectReport {
            file: path.to_path_buf(),
            template: template.name().to_string(),
            read,
            encode: rep,
            rendered,
            examples: origins.into_iter().zip(shown).collect(),
            histogram: length_histogram(&lengths, 10),
        });
    };
    let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
    let rendered = encoded
        .iter()
        .zip(origins.iter().cloned())
        .take(opts.n)
        .map(|(e, o)| Ok((o, debug_render(e, tok, hl)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(InspectReport {
        file: path.to_path_buf(),
        template: "text".into(),
        read,
        encode,
        rendered,
        examples: origins.into_iter().zip(encoded).take(opts.n).collect(),
        histogram: length_histogram(&lengths, 10),
    })
}

/// How bad a finding is: errors fail the lint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One lint finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub check: &'static str,
    pub origin: Option<Origin>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.origin {
            Some(o) => write!(f, "{o}: {sev} [{}]: {}", self.check, self.message),
            None => write!(f, "{sev} [{}]: {}", self.check, self.message),
        }
    }
}

/// Options of [`lint`].
#[derive(Debug, Clone)]
pub struct LintOptions {
    pub format: Format,
    pub mask: MaskMode,
    /// When set, examples longer than this are reported (truncation leaving no supervised
    /// token is an error, other long examples a warning).
    pub max_len: Option<usize>,
    /// Held-out files: any conversation also in the training files is an error.
    pub heldout: Vec<PathBuf>,
    /// Findings kept per check (all are counted).
    pub max_findings_per_check: usize,
}

impl Default for LintOptions {
    fn default() -> Self {
        LintOptions {
            format: Format::Auto,
            mask: MaskMode::Assistant,
            max_len: None,
            heldout: Vec::new(),
            max_findings_per_check: 50,
        }
    }
}

/// The checks `lint` runs, in order.
pub const LINT_CHECKS: [&str; 11] = [
    "records",
    "tools",
    "special tokens",
    "round trip",
    "prompt prefix",
    "end of turn",
    "bos",
    "padding",
    "length",
    "duplicates",
    "heldout overlap",
];

/// What `lint` found.
#[derive(Debug, Clone, Default)]
pub struct LintReport {
    pub files: Vec<PathBuf>,
    pub template: String,
    pub conversations: usize,
    pub findings: Vec<Finding>,
    /// Findings per check (including those not kept in `findings`), errors and warnings.
    pub counts: HashMap<&'static str, (usize, usize)>,
    pub max_per_check: usize,
}

impl LintReport {
    pub fn errors(&self) -> usize {
        self.counts.values().map(|c| c.0).sum()
    }
    pub fn warnings(&self) -> usize {
        self.counts.values().map(|c| c.1).sum()
    }
    /// True when no error was found (warnings allowed).
    pub fn passed(&self) -> bool {
        self.errors() == 0
    }

    fn add(
        &mut self,
        severity: Severity,
        check: &'static str,
        origin: Option<Origin>,
        msg: String,
    ) {
        let c = self.counts.entry(check).or_default();
        match severity {
            Severity::Error => c.0 += 1,
            Severity::Warning => c.1 += 1,
        }
        if c.0 + c.1 <= self.max_per_check {
            self.findings.push(Finding {
                severity,
                check,
                origin,
                message: msg,
            });
        }
    }
}

impl fmt::Display for LintReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for x in &self.findings {
            writeln!(f, "{x}")?;
        }
        let files: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        writeln!(
            f,
            "lint {} ({} conversations, template {}):",
            files.join(", "),
            self.conversations,
            self.template
        )?;
        for check in LINT_CHECKS {
            let (e, w) = self.counts.get(check).copied().unwrap_or((0, 0));
            let status = if e > 0 {
                "FAIL"
            } else if w > 0 {
                "warn"
            } else {
                "ok"
            };
            let shown = e + w;
            let more = if shown > self.max_per_check {
                format!(" (first {} shown)", self.max_per_check)
            } else {
                String::new()
            };
            writeln!(
                f,
                "  {status:<4} {check:<16} {e} errors, {w} warnings{more}"
            )?;
        }
        if self.passed() {
            writeln!(f, "PASSED ({} warnings)", self.warnings())
        } else {
            writeln!(
                f,
                "FAILED: {} errors, {} warnings",
                self.errors(),
                self.warnings()
            )
        }
    }
}

/// `manners data lint FILE... [--heldout FILE]`: reads every file (bad records and role order
/// are findings, not errors) and checks, per conversation: the template round trip (decoded
/// ids equal the rendered text; for built-ins, the exported Jinja gives the same ids and
/// mask), the inference prompt is a token prefix of the training render, every supervised
/// assistant turn ends in a supervised end-of-turn token, exactly the expected BOS, lengths;
/// then padding by position on a padded batch, duplicates across the files and overlap with
/// the held-out files. The CLI exits non-zero when `!report.passed()`.
pub fn lint(
    paths: &[PathBuf],
    template: &ChatTemplate,
    tok: &Tokenizer,
    opts: &LintOptions,
) -> Result<LintReport> {
    let mut rep = LintReport {
        files: paths.to_vec(),
        template: template.name().to_string(),
        max_per_check: opts.max_findings_per_check.max(1),
        ..LintReport::default()
    };
    // records
    let mut convs: Vec<Conversation> = Vec::new();
    for p in paths {
        let (c, read) = read_conversations(p, opts.format, BadRecordPolicy::Skip)?;
        let n_rej = read.n_rejected();
        for r in &read.first_rejections {
            let msg = match &r.field {
                Some(fl) => format!("field `{fl}`: {}", r.reason),
                None => r.reason.to_string(),
            };
            // Malformed tool calls (arguments that are not JSON, a result answering no call)
            // are the tools check's.
            let check = if matches!(r.reason, crate::error::RejectReason::BadToolCall(_)) {
                "tools"
            } else {
                "records"
            };
            rep.add(Severity::Error, check, Some(r.origin.clone()), msg);
        }
        // Rejections past the reader's first few are counted, not listed.
        rep.counts.entry("records").or_default().0 += n_rej - read.first_rejections.len();
        convs.extend(c);
    }
    rep.conversations = convs.len();
    if convs.is_empty() {
        rep.add(
            Severity::Error,
            "records",
            None,
            "no usable conversation: the dataset is empty (or every record was rejected)".into(),
        );
    }

    // special tokens
    let missing: Vec<String> = template
        .required_special_tokens()
        .into_iter()
        .filter(|t| tok.token_to_id(t).is_none())
        .collect();
    for t in &missing {
        rep.add(
            Severity::Error,
            "special tokens",
            None,
            format!(
                "the tokenizer has no token {t:?}, which template {} writes",
                template.name()
            ),
        );
    }
    if !missing.is_empty() {
        return Ok(rep);
    }

    let jinja_twin = if template.name() == "jinja" {
        None
    } else {
        Some(
            ChatTemplate::from_jinja(&template.to_jinja(), template.specials())?
                .with_mask_reasoning(template.masks_reasoning()),
        )
    };
    let stops = template.stop_token_ids(tok);
    let bos = template
        .specials()
        .bos
        .as_deref()
        .and_then(|b| tok.token_to_id(b));
    let mut enc = TokEncoder::new(tok);
    let mut encoded: Vec<Encoded> = Vec::new();
    for c in &convs {
        let o = c.origin.clone();
        let e = match template.encode_with(&mut enc, c, opts.mask) {
            Ok(e) => e,
            Err(err) => {
                rep.add(
                    Severity::Error,
                    "round trip",
                    o,
                    format!("cannot encode: {err}"),
                );
                continue;
            }
        };
        // tools: a tool result is context, never a target
        for (i, m) in c.messages.iter().enumerate() {
            if m.role == Role::Tool && crate::template::trains(opts.mask, &c.messages, i) {
                rep.add(
                    Severity::Error,
                    "tools",
                    o.clone(),
                    format!(
                        "messages[{i}] (a tool result) is supervised: the model would learn to \
                         write tool outputs (drop its `train: true`, or use --mask assistant)"
                    ),
                );
            }
        }
        // round trip
        let text = template.render_with_tools(&c.messages, &c.tools, false)?;
        let decoded = tok.decode(&e.ids, false).map_err(DataError::tokenizer)?;
        if decoded != text {
            rep.add(
                Severity::Error,
                "round trip",
                o.clone(),
                "decoding the ids does not give the rendered text back (lossy tokenizer?)".into(),
            );
        }
        if let Some(twin) = &jinja_twin {
            match twin.encode(c, tok, opts.mask) {
                Ok(t) if t == e => {}
                Ok(_) => rep.add(
                    Severity::Error,
                    "round trip",
                    o.clone(),
                    "the exported Jinja template encodes differently".into(),
                ),
                Err(err) => rep.add(
                    Severity::Error,
                    "round trip",
                    o.clone(),
                    format!("the exported Jinja template fails: {err}"),
                ),
            }
        }
        // prompt prefix
        for (i, m) in c.messages.iter().enumerate() {
            if m.role != Role::Assistant {
                continue;
            }
            match template.encode_prompt_with_tools(&c.messages[..i], &c.tools, tok) {
                Ok(p) if e.ids.starts_with(&p) => {}
                // With {% generation %} markers training follows the marked spans (as
                // transformers does), so a template that renders earlier turns differently once
                // a later one exists (reasoning dropped from history) still trains; the model
                // just sees other prompts at inference. Without markers the spans cannot be found.
                Ok(_) if template.marks_generation() => rep.add(
                    Severity::Warning,
                    "prompt prefix",
                    o.clone(),
                    format!("the inference prompt before messages[{i}] is not a token prefix of the training render (the template renders earlier turns differently once a later turn exists); training follows its {{% generation %}} spans"),
                ),
                Ok(_) => rep.add(
                    Severity::Error,
                    "prompt prefix",
                    o.clone(),
                    format!("the inference prompt before messages[{i}] is not a token prefix of the training render"),
                ),
                Err(err) => rep.add(Severity::Error, "prompt prefix", o.clone(), err.to_string()),
            }
        }
        // end of turn
        if opts.mask != MaskMode::All {
            let trained = (0..c.messages.len())
                .filter(|&i| {
                    c.messages[i].role == Role::Assistant
                        && crate::template::trains(opts.mask, &c.messages, i)
                })
                .count();
            let mut runs = 0;
            let mut bad_runs = 0;
            let mut i = 0;
            while i < e.ids.len() {
                if !e.loss_mask[i] {
                    i += 1;
                    continue;
                }
                let j = (i..e.ids.len())
                    .find(|&j| !e.loss_mask[j])
                    .unwrap_or(e.ids.len());
                runs += 1;
                if !stops.contains(&e.ids[j - 1]) {
                    bad_runs += 1;
                }
                i = j;
            }
            let user_trained = c
                .messages
                .iter()
                .any(|m| m.role != Role::Assistant && m.train == Some(true));
            // With reasoning masked inside a turn (a Jinja template's `<think>` tag stays
            // supervised), a turn has a span before its reasoning too: count the spans that
            // end a turn.
            let (runs, bad_runs) = if template.masks_reasoning() {
                (runs - bad_runs, 0)
            } else {
                (runs, bad_runs)
            };
            if !user_trained && (bad_runs > 0 || runs != trained) {
                rep.add(
                    Severity::Error,
                    "end of turn",
                    o.clone(),
                    format!(
                        "{trained} supervised assistant turns but {runs} supervised spans, \
                         {bad_runs} not ending in an end-of-turn token {stops:?}"
                    ),
                );
            }
        }
        // bos
        if let (Some(b), Some(expected)) = (bos, template.expected_bos(&c.messages)) {
            let count = e.ids.iter().filter(|&&t| t == b).count();
            let doubled = e.ids.windows(2).any(|w| w[0] == b && w[1] == b);
            if count != expected || e.ids.first() != Some(&b) || doubled {
                rep.add(
                    Severity::Error,
                    "bos",
                    o.clone(),
                    format!("{count} BOS tokens (expected {expected}, the first token first, never two in a row)"),
                );
            }
        }
        // length
        if e.n_supervised() == 0 {
            rep.add(
                Severity::Error,
                "length",
                o.clone(),
                "no supervised token".into(),
            );
        } else if let Some(max) = opts.max_len
            && e.len() > max
        {
            let kept = Encoded {
                ids: e.ids[..max].to_vec(),
                loss_mask: e.loss_mask[..max].to_vec(),
                mixed: e.mixed,
            };
            if kept.n_supervised() == 0 {
                rep.add(
                    Severity::Error,
                    "length",
                    o.clone(),
                    format!(
                        "{} tokens > max_len {max}, and truncation leaves no supervised token",
                        e.len()
                    ),
                );
            } else {
                rep.add(
                    Severity::Warning,
                    "length",
                    o.clone(),
                    format!(
                        "{} tokens > max_len {max}: will be truncated or dropped",
                        e.len()
                    ),
                );
            }
        }
        encoded.push(e);
    }

    // padding by position: pad with EOS (a real, frequent id) and check nothing pad is trained
    if !encoded.is_empty() {
        let sample: Vec<Encoded> = encoded
            .iter()
            .filter(|e| e.n_positions() > 0)
            .take(16)
            .cloned()
            .collect();
        let want: usize = sample.iter().map(Encoded::n_supervised).sum();
        let pad_id = stops.first().copied().unwrap_or(0);
        let cfg = BatchConfig {
            batch_size: sample.len().max(1),
            pack: false,
            shuffle: false,
            pad_id,
            ..BatchConfig::default()
        };
        if let Ok(mut l) = Loader::new(sample, cfg)
            && let Ok(b) = l.next_batch()
        {
            let pad_trained = (0..b.inputs.len())
                .filter(|&i| b.doc_ids[i] == 0 && b.loss_mask[i])
                .count();
            let real: usize = b.doc_ids.iter().filter(|&&d| d != 0).count();
            if b.n_supervised != want || pad_trained > 0 || real != b.n_tokens {
                rep.add(Severity::Error, "padding", None, format!(
                    "padded batch: {} supervised targets (expected {want}), {pad_trained} padding positions supervised",
                    b.n_supervised));
            }
        }
    }

    // duplicates
    let mut seen: HashMap<String, Option<Origin>> = HashMap::new();
    for c in &convs {
        let k = dedup_key(c);
        match seen.get(&k) {
            Some(first) => {
                let of = first
                    .as_ref()
                    .map_or("an earlier record".into(), |o| o.to_string());
                rep.add(
                    Severity::Warning,
                    "duplicates",
                    c.origin.clone(),
                    format!("duplicate of {of}"),
                );
            }
            None => {
                seen.insert(k, c.origin.clone());
            }
        }
    }
    // heldout overlap
    for p in &opts.heldout {
        let (held, _) = read_conversations(p, opts.format, BadRecordPolicy::Skip)?;
        for h in &held {
            if let Some(first) = seen.get(&dedup_key(h)) {
                let of = first
                    .as_ref()
                    .map_or("a training record".into(), |o| o.to_string());
                rep.add(
                    Severity::Error,
                    "heldout overlap",
                    h.origin.clone(),
                    format!("held-out conversation also in the training data ({of})"),
                );
            }
        }
    }
    Ok(rep)
}
