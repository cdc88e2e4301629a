//! What a fine-tuned model does on held-out data: clean-stop rate, answer accuracy, response
//! length, held-out response loss, raw-text loss (forgetting), and a cloze check of facts.
//! Everything runs on a non-autodiff copy of the model, generation batched.

use std::collections::BTreeMap;

use manners_data::{
    BatchConfig, ChatTemplate, Conversation, Encoded, LengthPolicy, MaskMode, Message, Reference,
    Role, batches, encode_dataset, encode_texts, last_user, pack_stream,
};
use manners_data::{Reply, ToolCall};
use manners_model::{Generation, GenerationConfig, Model, Tokenizer, generate_batch};
use serde::Serialize;

use crate::error::Result;
use crate::step::heldout_nll;

/// How prompts are put to the model.
#[derive(Clone)]
pub enum PromptMode {
    /// The conversation rendered with a chat template, generation stopping at its end-of-turn.
    Chat(ChatTemplate),
    /// The last user message as plain text (how a base model sees a question), generation
    /// stopping at end-of-text.
    Raw,
}

impl PromptMode {
    pub fn name(&self) -> String {
        match self {
            PromptMode::Chat(t) => format!("chat ({})", t.name()),
            PromptMode::Raw => "raw text".into(),
        }
    }
}

/// Settings of an evaluation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub max_new_tokens: usize,
    /// Prompts generated together.
    pub batch_size: usize,
    /// Responses kept in the report, to show.
    pub keep_samples: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            max_new_tokens: 48,
            batch_size: 32,
            keep_samples: 8,
        }
    }
}

/// One generated answer.
#[derive(Clone, Debug, Serialize)]
pub struct EvalSample {
    pub prompt: String,
    pub reference: String,
    pub response: String,
    pub stopped: bool,
    pub correct: bool,
}

/// Accuracy of one kind of question.
#[derive(Clone, Debug, Serialize)]
pub struct KindAccuracy {
    pub kind: String,
    pub n: usize,
    pub accuracy: f64,
}

/// The result of generating answers to held-out questions.
#[derive(Clone, Debug, Serialize)]
pub struct AnswerReport {
    pub mode: String,
    pub n: usize,
    /// Share of responses that ended at a stop token within the token budget.
    pub clean_stop_rate: f64,
    /// Share of responses containing the reference answer (case-insensitive; whole words when
    /// reference facts are given).
    pub accuracy: f64,
    /// Share of responses equal to the reference answer (case-insensitive).
    pub exact: f64,
    /// Mean response length in tokens.
    pub mean_response_tokens: f64,
    pub by_kind: Vec<KindAccuracy>,
    pub samples: Vec<EvalSample>,
}

/// The question part of a conversation (messages before its last assistant turn) and the
/// reference answer (that turn's content).
pub fn split_question(c: &Conversation) -> Option<(Vec<Message>, String)> {
    let last = c.messages.iter().rposition(|m| m.role == Role::Assistant)?;
    Some((
        c.messages[..last].to_vec(),
        c.messages[last].content.clone(),
    ))
}

/// Generates an answer for every conversation and scores it. With `references` (aligned with
/// `convs`), an answer is correct when [`Reference::is_correct`] says so; otherwise when it
/// contains the conversation's last assistant turn.
pub fn answer_questions(
    model: &Model,
    tok: &Tokenizer,
    mode: &PromptMode,
    convs: &[Conversation],
    references: Option<&[Reference]>,
    opts: &EvalOptions,
) -> Result<AnswerReport> {
    let mut prompts = Vec::new();
    let mut shown = Vec::new();
    let mut refs = Vec::new();
    for c in convs {
        let Some((msgs, reference)) = split_question(c) else {
            continue;
        };
        let user = last_user(&msgs).unwrap_or_default().to_string();
        let ids = match mode {
            PromptMode::Chat(t) => t.encode_prompt(&msgs, tok.hf())?,
            PromptMode::Raw => tok.encode(&user)?,
        };
        prompts.push(ids);
        shown.push(user);
        refs.push(reference);
    }
    let outs = generate_all(model, tok, mode, &prompts, opts)?;
    let n = outs.len();
    let mut stopped = 0usize;
    let mut correct = 0usize;
    let mut exact = 0usize;
    let mut tokens = 0usize;
    let mut kinds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut samples = Vec::new();
    for (i, g) in outs.iter().enumerate() {
        let response = g.text.trim().to_string();
        let (ok, ex, reference, kind) = match references.and_then(|f| f.get(i)) {
            Some(f) => (
                f.is_correct(&response),
                f.is_exact(&response),
                f.answer.clone(),
                f.kind.clone(),
            ),
            None => {
                let r = refs[i].trim().to_lowercase();
                let resp = response.to_lowercase();
                let ok = !r.is_empty() && resp.contains(&r);
                (ok, resp == r, refs[i].clone(), "all".to_string())
            }
        };
        stopped += usize::from(g.stopped_cleanly());
        correct += usize::from(ok);
        exact += usize::from(ex);
        tokens += g.tokens.len();
        let e = kinds.entry(kind).or_default();
        e.0 += 1;
        e.1 += usize::from(ok);
        if samples.len() < opts.keep_samples {
            samples.push(EvalSample {
                prompt: shown[i].clone(),
                reference,
                response,
                stopped: g.stopped_cleanly(),
                correct: ok,
            });
        }
    }
    let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    Ok(AnswerReport {
        mode: mode.name(),
        n,
        clean_stop_rate: frac(stopped),
        accuracy: frac(correct),
        exact: frac(exact),
        mean_response_tokens: frac(tokens),
        by_kind: kinds
            .into_iter()
            .map(|(kind, (n, ok))| KindAccuracy {
                kind,
                n,
                accuracy: ok as f64 / n.max(1) as f64,
            })
            .collect(),
        samples,
    })
}

/// Greedy answers to `prompts`, batched, stopping where `mode` ends a turn.
fn generate_all(
    model: &Model,
    tok: &Tokenizer,
    mode: &PromptMode,
    prompts: &[Vec<u32>],
    opts: &EvalOptions,
) -> Result<Vec<Generation>> {
    let (stop_ids, stop_strings) = match mode {
        PromptMode::Chat(t) => {
            let mut ids = t.stop_token_ids(tok.hf());
            ids.extend(tok.eos_id());
            (ids, t.stop_strings())
        }
        PromptMode::Raw => (tok.eos_id().into_iter().collect(), Vec::new()),
    };
    let ctx = model.n_positions();
    let cfg = GenerationConfig::stopping_at(opts.max_new_tokens, ctx, stop_ids, stop_strings);
    let mut outs = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(opts.batch_size.max(1)) {
        let longest = chunk.iter().map(Vec::len).max().unwrap_or(0);
        let cfg = cfg.for_prompt(longest, ctx);
        let chunk: Vec<Vec<u32>> = chunk.iter().map(|p| cfg.fit(p, ctx).to_vec()).collect();
        outs.extend(generate_batch(model, tok, &chunk, &cfg)?);
    }
    Ok(outs)
}

/// A held-out question for the tool-use measure: the prompt, the call that answers it and the
/// reference the final answer must hold.
#[derive(Clone, Debug)]
pub struct ToolQuestion {
    pub messages: Vec<Message>,
    /// The tool and the string arguments a right call has (compared in lower case, spaces
    /// collapsed, without "the").
    pub tool: String,
    pub args: Vec<(String, String)>,
    pub reference: Reference,
}

/// The tool-use measure: questions and the tool that runs the model's calls.
#[derive(Clone)]
pub struct ToolEval {
    pub questions: Vec<ToolQuestion>,
    pub run: std::sync::Arc<dyn Fn(&ToolCall) -> String + Send + Sync>,
}

/// One tool-use exchange, to show.
#[derive(Clone, Debug, Serialize)]
pub struct ToolSample {
    pub question: String,
    /// The model's first call (`name {arguments}`), or its reply when it made none.
    pub call: String,
    pub result: String,
    pub answer: String,
    pub correct: bool,
}

/// How a model uses a tool on held-out questions.
#[derive(Clone, Debug, Serialize)]
pub struct ToolReport {
    pub n: usize,
    /// Share of questions whose reply holds a well-formed call of the tool (any arguments).
    pub any_call_rate: f64,
    /// Share of questions whose reply's first call is the right tool with the right entity
    /// and field.
    pub call_rate: f64,
    /// Share of questions answered correctly after the model's call ran and its result was
    /// fed back (no call, no answer).
    pub answer_accuracy: f64,
    pub samples: Vec<ToolSample>,
}

/// A reply's first call, and whether it is the right one for `q`: the question's tool and
/// its expected arguments (lower case, spaces collapsed, "the" and end punctuation ignored).
pub fn judge_call<'r>(q: &ToolQuestion, reply: &'r Reply) -> Option<(&'r ToolCall, bool)> {
    let call = reply.tool_calls.first()?;
    let norm = |s: &str| {
        s.trim()
            .trim_end_matches(['?', '.', '!'])
            .to_lowercase()
            .split_whitespace()
            .filter(|w| *w != "the")
            .collect::<Vec<_>>()
            .join(" ")
    };
    let args_ok = q.args.iter().all(|(k, want)| {
        call.argument_str(k)
            .is_some_and(|got| norm(&got) == norm(want))
    });
    Some((call, call.name == q.tool && args_ok))
}

/// The least token budget of a reply that may hold a tool call.
pub const TOOL_CALL_TOKENS: usize = 96;

/// The agent loop on each question: the model replies; its first tool call (if any) runs
/// through `te.run`; the result goes back as a tool turn and the model answers.
pub fn tool_use(
    model: &Model,
    tok: &Tokenizer,
    template: &ChatTemplate,
    te: &ToolEval,
    opts: &EvalOptions,
) -> Result<ToolReport> {
    let mode = PromptMode::Chat(template.clone());
    // A call is markup plus JSON: room for it even when answers get a short budget.
    let opts = &EvalOptions {
        max_new_tokens: opts.max_new_tokens.max(TOOL_CALL_TOKENS),
        ..opts.clone()
    };
    let mut prompts = Vec::with_capacity(te.questions.len());
    for q in &te.questions {
        prompts.push(template.encode_prompt(&q.messages, tok.hf())?);
    }
    let replies = generate_all(model, tok, &mode, &prompts, opts)?;
    let n = replies.len();
    let mut right = 0usize;
    let mut any = 0usize;
    let mut samples: Vec<ToolSample> = Vec::with_capacity(n);
    let mut follow = Vec::new();
    let mut follow_of = Vec::new();
    for (i, g) in replies.iter().enumerate() {
        let q = &te.questions[i];
        let reply = Reply::parse(&g.text);
        let question = last_user(&q.messages).unwrap_or_default().to_string();
        let Some((call, right_call)) = judge_call(q, &reply) else {
            samples.push(ToolSample {
                question,
                call: g.text.trim().to_string(),
                result: String::new(),
                answer: String::new(),
                correct: false,
            });
            continue;
        };
        any += usize::from(call.name == q.tool);
        right += usize::from(right_call);
        let result = (te.run)(call);
        let mut msgs = q.messages.clone();
        let mut a = Message::assistant("");
        a.tool_calls.push(call.clone());
        msgs.push(a);
        msgs.push(Message::tool(result.clone()));
        follow.push(template.encode_prompt(&msgs, tok.hf())?);
        follow_of.push(i);
        samples.push(ToolSample {
            question,
            call: format!("{} {}", call.name, call.arguments),
            result,
            answer: String::new(),
            correct: false,
        });
    }
    let answers = generate_all(model, tok, &mode, &follow, opts)?;
    let mut correct = 0usize;
    for (g, &i) in answers.iter().zip(&follow_of) {
        let text = g.text.trim().to_string();
        let ok = te.questions[i].reference.is_correct(&text);
        correct += usize::from(ok);
        samples[i].answer = text;
        samples[i].correct = ok;
    }
    samples.truncate(opts.keep_samples);
    let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    Ok(ToolReport {
        n,
        any_call_rate: frac(any),
        call_rate: frac(right),
        answer_accuracy: frac(correct),
        samples,
    })
}

/// Mean loss per supervised token of `examples` (masked mean, no gradient), in batches of
/// `batch_size` rows, or fewer where a GPU's buffer limit cannot hold a batch's logits or
/// attention scores (halved until it can: the mean does not depend on the batching).
pub fn mean_loss(model: &Model, examples: &[Encoded], batch_size: usize) -> Result<f64> {
    if examples.is_empty() {
        return Ok(f64::NAN);
    }
    let seq = examples
        .iter()
        .map(Encoded::len)
        .max()
        .unwrap_or(2)
        .saturating_sub(1)
        .max(1);
    let limit = manners_model::BufferLimit::of(&model.device());
    let shape = (model.vocab_size(), model.n_heads());
    let batches = batches_within(examples, seq, batch_size, limit.as_ref(), shape)?;
    let (sum, count) = heldout_nll(model, &batches);
    Ok(sum / count.max(1) as f64)
}

/// `examples` in batches of `batch_size` rows of `seq` positions, halved until every batch's
/// logits and attention scores fit `limit` (for a model of `(vocab, heads)`); an error when a
/// single row does not.
fn batches_within(
    examples: &[Encoded],
    seq: usize,
    batch_size: usize,
    limit: Option<&manners_model::BufferLimit>,
    shape: (usize, usize),
) -> Result<Vec<manners_data::HostBatch>> {
    let mut batch_size = batch_size.max(1);
    loop {
        let cfg = BatchConfig {
            batch_size,
            seq_len: seq,
            pack: false,
            shuffle: false,
            ..BatchConfig::default()
        };
        let batches = batches(examples, &cfg)?;
        let fits = batches.iter().enumerate().try_for_each(|(i, b)| {
            crate::check_batch(limit, shape, b, &|| {
                format!("evaluation batch {} ({batch_size} rows)", i + 1)
            })
        });
        match fits {
            Ok(()) => return Ok(batches),
            Err(e) if batch_size == 1 => return Err(e),
            Err(_) => batch_size /= 2,
        }
    }
}

/// Held-out response loss: the masked loss of the assistant turns of `convs`.
pub fn response_loss(
    model: &Model,
    tok: &Tokenizer,
    template: &ChatTemplate,
    convs: &[Conversation],
) -> Result<f64> {
    let max_len = model.n_positions() + 1;
    let (enc, _) = encode_dataset(
        convs,
        template,
        tok.hf(),
        MaskMode::Assistant,
        max_len,
        LengthPolicy::Truncate,
    )?;
    mean_loss(model, &enc, 16)
}

/// Loss on raw text (every token), documents stream-packed into rows of the model's context:
/// the forgetting measure (it rises when fine-tuning erodes the base model's language model).
pub fn text_loss(model: &Model, tok: &Tokenizer, docs: &[String]) -> Result<f64> {
    let seq = model.n_positions();
    let ids: Vec<Vec<u32>> = encode_texts(docs, tok.hf(), None)?
        .into_iter()
        .map(|e| e.ids)
        .collect();
    let rows = pack_stream(&ids, tok.eos_id(), seq);
    mean_loss(model, &rows, 8)
}

/// A fill-in-the-blank check: does greedy continuation of `prompt` begin with `answer`?
#[derive(Clone, Debug, Serialize)]
pub struct ClozeItem {
    pub prompt: String,
    pub answer: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClozeReport {
    pub n: usize,
    pub accuracy: f64,
    pub samples: Vec<(String, String, String, bool)>,
}

/// Greedy top-1 cloze accuracy: the continuation, trimmed, starts with the answer.
pub fn cloze(
    model: &Model,
    tok: &Tokenizer,
    items: &[ClozeItem],
    keep_samples: usize,
) -> Result<ClozeReport> {
    let cfg = GenerationConfig {
        max_new_tokens: 8,
        ..Default::default()
    };
    let mut ok = 0usize;
    let mut samples = Vec::new();
    for chunk in items.chunks(64) {
        let prompts: Vec<Vec<u32>> = chunk
            .iter()
            .map(|c| tok.encode(&c.prompt))
            .collect::<std::result::Result<_, _>>()?;
        let outs = generate_batch(model, tok, &prompts, &cfg)?;
        for (item, g) in chunk.iter().zip(outs) {
            let cont = g.text.trim_start().to_string();
            let hit = cont.starts_with(&item.answer)
                && !cont[item.answer.len()..]
                    .chars()
                    .next()
                    .is_some_and(char::is_alphanumeric);
            ok += usize::from(hit);
            if samples.len() < keep_samples {
                samples.push((item.prompt.clone(), item.answer.clone(), cont, hit));
            }
        }
    }
    Ok(ClozeReport {
        n: items.len(),
        accuracy: ok as f64 / items.len().max(1) as f64,
        samples,
    })
}

/// Everything measured about one model in one prompt mode.
#[derive(Clone, Debug, Serialize)]
pub struct EvalSummary {
    pub label: String,
    pub answers: Option<AnswerReport>,
    /// Masked loss of the held-out assistant turns (chat mode only).
    pub response_loss: Option<f64>,
    /// Loss on held-out raw text (forgetting).
    pub text_loss: Option<f64>,
    pub cloze: Option<ClozeReport>,
    /// Tool use on held-out questions (chat mode only).
    pub tools: Option<ToolReport>,
}

/// What to evaluate on.
#[derive(Clone, Default)]
pub struct EvalData {
    pub conversations: Vec<Conversation>,
    /// Reference answers aligned with `conversations` (else their last assistant turns).
    pub references: Option<Vec<Reference>>,
    pub raw_text: Vec<String>,
    pub cloze: Vec<ClozeItem>,
    /// Held-out questions answered through a tool.
    pub tools: Option<ToolEval>,
}

/// Runs every measurement `data` allows.
pub fn evaluate(
    label: &str,
    model: &Model,
    tok: &Tokenizer,
    mode: &PromptMode,
    data: &EvalData,
    opts: &EvalOptions,
) -> Result<EvalSummary> {
    let answers = if data.conversations.is_empty() {
        None
    } else {
        Some(answer_questions(
            model,
            tok,
            mode,
            &data.conversations,
            data.references.as_deref(),
            opts,
        )?)
    };
    let response_loss = match mode {
        PromptMode::Chat(t) if !data.conversations.is_empty() => {
            Some(response_loss(model, tok, t, &data.conversations)?)
        }
        _ => None,
    };
    let text_loss = if data.raw_text.is_empty() {
        None
    } else {
        Some(text_loss(model, tok, &data.raw_text)?)
    };
    let cloze = if data.cloze.is_empty() {
        None
    } else {
        Some(cloze(model, tok, &data.cloze, opts.keep_samples)?)
    };
    let tools = match (mode, &data.tools) {
        (PromptMode::Chat(t), Some(te)) if !te.questions.is_empty() => {
            Some(tool_use(model, tok, t, te, opts)?)
        }
        _ => None,
    };
    Ok(EvalSummary {
        label: label.to_string(),
        answers,
        response_loss,
        text_loss,
        cloze,
        tools,
    })
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map(f).unwrap_or_else(|| "-".into())
}

/// Models side by side: one column per summary.
pub fn comparison_markdown(cols: &[EvalSummary]) -> String {
    let mut s = String::new();
    s.push_str("| metric |");
    for c in cols {
        s.push_str(&format!(" {} |", c.label));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(cols.len()));
    s.push('\n');
    let mut row = |name: &str, f: &dyn Fn(&EvalSummary) -> String| {
        s.push_str(&format!("| {name} |"));
        for c in cols {
            s.push_str(&format!(" {} |", f(c)));
        }
        s.push('\n');
    };
    row("clean stop (end-of-turn within budget)", &|c| {
        opt(c.answers.as_ref().map(|a| a.clean_stop_rate), pct)
    });
    row("answer accuracy (reference in response)", &|c| {
        opt(c.answers.as_ref().map(|a| a.accuracy), pct)
    });
    row("exact match", &|c| {
        opt(c.answers.as_ref().map(|a| a.exact), pct)
    });
    row("mean response length (tokens)", &|c| {
        opt(c.answers.as_ref().map(|a| a.mean_response_tokens), |x| {
            format!("{x:.1}")
        })
    });
    row("held-out response loss", &|c| {
        opt(c.response_loss, |x| format!("{x:.3}"))
    });
    row("raw-text loss (forgetting)", &|c| {
        opt(c.text_loss, |x| format!("{x:.3}"))
    });
    row("capital cloze top-1", &|c| {
        opt(c.cloze.as_ref().map(|x| x.accuracy), pct)
    });
    row("tool: replies with a lookup call", &|c| {
        opt(c.tools.as_ref().map(|x| x.any_call_rate), pct)
    });
    row("tool: call names the held-out entity and field", &|c| {
        opt(c.tools.as_ref().map(|x| x.call_rate), pct)
    });
    row("tool: right answer after the call ran", &|c| {
        opt(c.tools.as_ref().map(|x| x.answer_accuracy), pct)
    });
    s
}

/// The first few answers of each column, side by side.
pub fn samples_markdown(cols: &[EvalSummary], n: usize) -> String {
    let mut s = String::new();
    let Some(first) = cols.iter().find_map(|c| c.answers.as_ref()) else {
        return s;
    };
    for i in 0..first.samples.len().min(n) {
        let q = &first.samples[i];
        s.push_str(&format!(
            "**Q:** {}  \n*reference:* {}\n\n",
            q.prompt.replace('\n', " "),
            q.reference
        ));
        for c in cols {
            if let Some(a) = c.answers.as_ref().and_then(|a| a.samples.get(i)) {
                let mark = if a.correct { "✓" } else { "✗" };
                let cut = if a.stopped { "" } else { " …[budget]" };
                let resp: String = a.response.replace('\n', " ⏎ ").chars().take(160).collect();
                s.push_str(&format!("- {} {mark}: {resp}{cut}\n", c.label));
            }
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a GPU whose buffers cannot hold a batch's logits, evaluation batches get fewer rows
    /// (halved: 16, 8, 4) instead of failing, and still cover every example once; without a
    /// limit the batches keep their size; a limit under one row's logits is an error naming the
    /// batch. Sizes by hand: a row of 11 supervised targets over a vocabulary of 100 is 4,400
    /// bytes of logits (the scores, 4 heads x 11 x 11 x 4 bytes, are smaller).
    #[test]
    fn evaluation_batches_shrink_to_fit_a_gpu_buffer() {
        let examples: Vec<Encoded> = (0..16u32)
            .map(|i| Encoded {
                ids: (0..12).map(|j| (i * 12 + j) % 100).collect(),
                loss_mask: vec![true; 12],
                mixed: false,
            })
            .collect();
        let limit = |bytes| manners_model::BufferLimit {
            bytes,
            device: "a small adapter".into(),
        };
        let within =
            |l: Option<&manners_model::BufferLimit>| batches_within(&examples, 11, 16, l, (100, 4));
        assert_eq!(within(None).unwrap().len(), 1);
        // Room for 5 rows of logits: 16 and 8 do not fit, 4 do.
        let got = within(Some(&limit(5 * 4_400))).unwrap();
        assert_eq!(
            got.iter().map(|b| b.batch).collect::<Vec<_>>(),
            [4, 4, 4, 4]
        );
        assert_eq!(got.iter().map(|b| b.n_supervised).sum::<usize>(), 16 * 11);
        // Every example once: the first token of each row, against each example's first.
        let mut firsts: Vec<u32> = got
            .iter()
            .flat_map(|b| b.inputs.chunks(11).map(|row| row[0]))
            .collect();
        let mut want: Vec<u32> = examples.iter().map(|e| e.ids[0]).collect();
        firsts.sort_unstable();
        want.sort_unstable();
        assert_eq!(firsts, want);
        let err = within(Some(&limit(4_399))).unwrap_err().to_string();
        assert!(
            err.starts_with("the logits of evaluation batch 1 (1 rows) ([11, 100], f32)"),
            "{err}"
        );
    }

    #[test]
    fn a_call_is_right_only_with_the_tool_entity_and_field() {
        let q = ToolQuestion {
            messages: vec![Message::user("What is the capital of Peru?")],
            tool: "lookup".into(),
            args: vec![("query".into(), "capital of Peru".into())],
            reference: Reference {
                kind: "country-capital".into(),
                answer: "Lima".into(),
                case_sensitive: false,
            },
        };
        let judge = |text: &str| judge_call(&q, &Reply::parse(text)).map(|(_, ok)| ok);
        let call = |name: &str, query: &str| {
            format!(
                "Let me look.\n<tool_call>\n{{\"name\": \"{name}\", \"arguments\": {{\"query\": \"{query}\"}}}}\n</tool_call>"
            )
        };
        assert_eq!(judge(&call("lookup", "The capital of  peru ")), Some(true));
        assert_eq!(judge(&call("lookup", "capital of Chile")), Some(false));
        assert_eq!(judge(&call("lookup", "continent of Peru")), Some(false));
        assert_eq!(judge(&call("search", "capital of Peru")), Some(false));
        assert_eq!(judge("The capital of Peru is Lima."), None);
        // A call cut off by the budget is no call.
        assert_eq!(
            judge("<tool_call>\n{\"name\": \"lookup\", \"arguments\": {\"query\""),
            None
        );
    }
}
