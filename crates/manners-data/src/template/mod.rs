//! Chat templates: render a conversation into token ids plus a loss mask (training), or into
//! the prompt the model continues (inference).
//!
//! # Built-in frames (exact text; `{c}` is the message content, `<eos>`/`<bos>` come from
//! [`SpecialTokens`])
//!
//! | template | frame | supervised (mask true) |
//! | --- | --- | --- |
//! | `chatml` | `[<bos>]` then per message `<\|im_start\|>{role}\n{c}<\|im_end\|>\n`; prompt ends `<\|im_start\|>assistant\n` | `{c}<\|im_end\|>` (the `\n` after it is not, as in HF/TRL assistant masks) |
//! | `chatml-tools` | `chatml`, plus: with `tools`, a system turn `{system}\n\n# Tools ... <tools>\n{schema}...\n</tools> ...` (Qwen2.5's wording, the schemas as `json.dumps`); an assistant turn `[<think>\n{reasoning}\n</think>\n\n]{c}` then per call `[\n]<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (a newline before every call but a first one with no text); a result `<\|im_start\|>tool\n<tool_response>\n{c}\n</tool_response><\|im_end\|>\n` | reasoning block (unless `--mask-reasoning`), `{c}`, the calls and `<\|im_end\|>`; never a tool result |
//! | `plain` | `[<bos>]` then `System: {c}\n`, `User: {c}\n`, `Assistant: {c}<eos>\n`; prompt ends `Assistant:` | ` {c}<eos>` |
//! | `llama2` | per exchange `<bos>[INST] {user} [/INST] {c} <eos>`; the first user turn becomes `<bos>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]` when there is a system message; prompt ends ` [/INST]` | ` {c} <eos>` |
//!
//! `chatml` renders reasoning as `chatml-tools` does but refuses tools; `plain` and `llama2`
//! refuse tools and reasoning (an error naming the message, never a silent drop).
//!
//! `<bos>` is written once at the start by `chatml` and `plain` when the tokenizer has one
//! (`SpecialTokens::bos`), and by `llama2` at the start of every exchange (Meta's format).
//!
//! # Tokenization rules (all templates, Jinja included)
//! - Segment by segment: template markers, template text and message contents are tokenized
//!   separately, so no BPE merge crosses a role boundary and every mask boundary is a token
//!   boundary. The one exception is deliberate: a single space between a label and the content
//!   (`User: hi`, `[INST] hi`, `[/INST] answer`) is tokenized with the content, because GPT-2's
//!   byte-level BPE attaches spaces to the following word (` hi` is one token, as in
//!   pretraining text). The supervised span of `plain`/`llama2` therefore starts with that
//!   space. Likewise a blank line before a content that starts with a word goes with the
//!   content (`llama2`'s `<</SYS>>\n\n{user}`, `chatml-tools`' `</think>\n\n{c}`; in Jinja
//!   templates any whitespace run before such a content): a byte-level pre-tokenizer splits
//!   `"\n\nHi"` as `"\n"`, `"\n"`, `"Hi"` but `"\n\n"` alone as one piece, so this gives the ids
//!   of the full render, as transformers tokenizes it.
//! - Adjacent template text is tokenized as one string, also across a mask boundary (a
//!   `{% generation %}` block opening inside `<|end|><|start|>` when those are not special
//!   tokens): a token there is supervised when it overlaps a supervised span, transformers'
//!   rule for `return_assistant_tokens_mask`.
//! - Message contents are always tokenized as plain text: marker-like text inside a message
//!   (`<|im_end|>`, `</s>`) never becomes a special token.
//! - No special tokens are added by the tokenizer itself (`add_special_tokens = false`): the
//!   template writes BOS/EOS, so there is exactly one BOS where the tokenizer uses one.

mod folder;
mod jinja;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::conversation::{Conversation, JsonText, Message, Role, validate_messages};
use crate::error::{DataError, RejectReason, Result};

pub use folder::{TEMPLATE_FILE, choose_template, saved_template, strip_generation_tags};
pub(crate) use jinja::JinjaTemplate;

/// Names of the tokenizer's special tokens that templates write (GPT-2: EOS `<|endoftext|>`,
/// no BOS).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<String>,
    /// Other special tokens (HF `additional_special_tokens`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<String>,
}

impl SpecialTokens {
    /// GPT-2: EOS (and PAD) `<|endoftext|>`, no BOS.
    pub fn gpt2() -> Self {
        SpecialTokens {
            bos: None,
            eos: Some("<|endoftext|>".into()),
            pad: None,
            additional: Vec::new(),
        }
    }

    /// Reads `bos_token`, `eos_token`, `pad_token` and `additional_special_tokens` (strings or
    /// `{"content": ...}` objects) from an HF `tokenizer_config.json`.
    pub fn from_tokenizer_config(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        Ok(jinja::specials_from_config(&v))
    }
}

/// Which tokens are training targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskMode {
    /// Every assistant turn's content and end-of-turn token (default).
    #[default]
    Assistant,
    /// Only the last assistant turn.
    Last,
    /// Every token (train on inputs too).
    All,
}

impl FromStr for MaskMode {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "assistant" => Ok(MaskMode::Assistant),
            "last" => Ok(MaskMode::Last),
            "all" => Ok(MaskMode::All),
            o => Err(DataError::Config(format!(
                "unknown mask mode {o:?} (assistant, last, all)"
            ))),
        }
    }
}

/// Token ids and a loss mask of the same length. `loss_mask[i]` is true when token `i` is a
/// training target (predicted from the tokens before it); `loss_mask[0]` is never used as a
/// target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub loss_mask: Vec<bool>,
    /// A raw-text piece mixed into SFT data ([`crate::mix_texts`]): its loss is reported apart
    /// from the conversations' loss.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mixed: bool,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Number of supervised targets: `loss_mask[1..]` that are true.
    pub fn n_supervised(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|&&m| m).count()
    }
    /// Number of (input, target) positions: `len - 1`.
    pub fn n_positions(&self) -> usize {
        self.ids.len().saturating_sub(1)
    }
}

/// The serialisable description of a template, saved with checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TemplateSpec {
    Builtin {
        name: String,
        specials: SpecialTokens,
    },
    Jinja {
        source: String,
        specials: SpecialTokens,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    ChatMl,
    /// ChatML with Hermes-style tool calls (Qwen2.5's format).
    ChatMlTools,
    Plain,
    Llama2,
}

const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";

#[derive(Clone)]
enum Inner {
    Builtin(Builtin),
    Jinja(Box<JinjaTemplate>),
}

/// A chat template. See the module docs for the exact frames and tokenization rules.
#[derive(Clone)]
pub struct ChatTemplate {
    inner: Inner,
    specials: SpecialTokens,
    /// Keep assistant reasoning in the context but out of the loss (`--mask-reasoning`).
    mask_reasoning: bool,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name())
            .field("specials", &self.specials)
            .finish()
    }
}

/// How a segment is tokenized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegKind {
    /// Exactly one special token, by name.
    Special,
    /// Template text: added/special tokens inside it are split out.
    Frame,
    /// Message content: tokenized as plain text.
    Content,
}

/// A piece of a rendered conversation.
#[derive(Debug, Clone)]
pub(crate) struct Seg<'a> {
    pub text: Cow<'a, str>,
    pub kind: SegKind,
    pub train: bool,
}

impl<'a> Seg<'a> {
    fn new(text: impl Into<Cow<'a, str>>, kind: SegKind, train: bool) -> Self {
        Seg {
            text: text.into(),
            kind,
            train,
        }
    }
}

/// Which messages are supervised under a mask mode (the per-message `train` flag wins).
pub(crate) fn trains(mode: MaskMode, msgs: &[Message], i: usize) -> bool {
    match msgs[i].train {
        Some(t) => t,
        None => match mode {
            MaskMode::All => true,
            MaskMode::Assistant => msgs[i].role == Role::Assistant,
            MaskMode::Last => {
                msgs[i].role == Role::Assistant
                    && msgs[i + 1..].iter().all(|m| m.role != Role::Assistant)
            }
        },
    }
}

impl ChatTemplate {
    /// A built-in template: `"chatml"`, `"plain"` or `"llama2"`.
    pub fn builtin(name: &str, specials: &SpecialTokens) -> Result<Self> {
        let b = match name {
            "chatml" => Builtin::ChatMl,
            "chatml-tools" => Builtin::ChatMlTools,
            "plain" => Builtin::Plain,
            "llama2" | "llama-2" => Builtin::Llama2,
            other => {
                return Err(DataError::template(
                    other,
                    "unknown built-in template (chatml, chatml-tools, plain, llama2; or a path \
                     to a tokenizer_config.json or .jinja file)",
                ));
            }
        };
        let needs_eos = matches!(b, Builtin::Plain | Builtin::Llama2);
        if needs_eos && specials.eos.is_none() {
            return Err(DataError::template(
                name,
                "needs an end-of-sequence token (SpecialTokens::eos)",
            ));
        }
        if b == Builtin::Llama2 && specials.bos.is_none() {
            return Err(DataError::template(
                name,
                "needs a beginning-of-sequence token (SpecialTokens::bos), e.g. <s>",
            ));
        }
        Ok(ChatTemplate {
            inner: Inner::Builtin(b),
            specials: specials.clone(),
            mask_reasoning: false,
        })
    }

    /// A Hugging Face Jinja `chat_template` (rendered with minijinja, `trim_blocks` and
    /// `lstrip_blocks` on as in HF). Assistant spans come from `{% generation %}` markers when
    /// the template has them, otherwise from rendering prefixes of the conversation and
    /// comparing; encoding fails with a clear error when neither works.
    pub fn from_jinja(source: &str, specials: &SpecialTokens) -> Result<Self> {
        Ok(ChatTemplate {
            inner: Inner::Jinja(Box::new(JinjaTemplate::new(source, specials)?)),
            specials: specials.clone(),
            mask_reasoning: false,
        })
    }

    /// Reads `chat_template`, `bos_token`, `eos_token`, ... from an HF `tokenizer_config.json`.
    pub fn from_tokenizer_config(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let specials = jinja::specials_from_config(&v);
        let source = jinja::chat_template_from_config(&v).ok_or_else(|| DataError::Json {
            path: path.to_path_buf(),
            message: "no `chat_template` string (or list entry named \"default\")".into(),
        })?;
        Self::from_jinja(&source, &specials)
    }

    /// Resolves a CLI `--template` value: a built-in name, a `tokenizer_config.json` (any
    /// `.json` file) or a Jinja file (any other path).
    pub fn resolve(arg: &str, specials: &SpecialTokens) -> Result<Self> {
        if matches!(
            arg,
            "chatml" | "chatml-tools" | "plain" | "llama2" | "llama-2"
        ) {
            return Self::builtin(arg, specials);
        }
        let path = Path::new(arg);
        if !path.exists() {
            return Self::builtin(arg, specials);
        }
        if arg.ends_with(".json") {
            Self::from_tokenizer_config(path)
        } else {
            let src = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
            Self::from_jinja(&src, specials)
        }
    }

    /// Rebuilds a template from its saved spec.
    pub fn from_spec(spec: &TemplateSpec) -> Result<Self> {
        match spec {
            TemplateSpec::Builtin { name, specials } => Self::builtin(name, specials),
            TemplateSpec::Jinja { source, specials } => Self::from_jinja(source, specials),
        }
    }

    /// The serialisable spec (saved with checkpoints).
    pub fn spec(&self) -> TemplateSpec {
        match &self.inner {
            Inner::Builtin(_) => TemplateSpec::Builtin {
                name: self.name().to_string(),
                specials: self.specials.clone(),
            },
            Inner::Jinja(j) => TemplateSpec::Jinja {
                source: j.source().to_string(),
                specials: self.specials.clone(),
            },
        }
    }

    pub fn name(&self) -> &str {
        match &self.inner {
            Inner::Builtin(Builtin::ChatMl) => "chatml",
            Inner::Builtin(Builtin::ChatMlTools) => "chatml-tools",
            Inner::Builtin(Builtin::Plain) => "plain",
            Inner::Builtin(Builtin::Llama2) => "llama2",
            Inner::Jinja(_) => "jinja",
        }
    }

    pub fn specials(&self) -> &SpecialTokens {
        &self.specials
    }

    /// Special tokens the template writes; the caller adds missing ones to the tokenizer (and
    /// resizes the embeddings). For Jinja templates: BOS/EOS/additional from the specials plus
    /// every `<|...|>` string literal in the source.
    pub fn required_special_tokens(&self) -> Vec<String> {
        let s = &self.specials;
        let mut out: Vec<String> = Vec::new();
        match &self.inner {
            Inner::Builtin(Builtin::ChatMl | Builtin::ChatMlTools) => {
                out.extend(s.bos.clone());
                out.push(IM_START.into());
                out.push(IM_END.into());
            }
            Inner::Builtin(Builtin::Plain | Builtin::Llama2) => {
                out.extend(s.bos.clone());
                out.extend(s.eos.clone());
            }
            Inner::Jinja(j) => out.extend(j.special_strings().iter().cloned()),
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|t| seen.insert(t.clone()));
        out
    }

    /// The token that ends an assistant turn (supervised; generation stops on it).
    pub fn end_of_turn(&self) -> Option<String> {
        match &self.inner {
            Inner::Builtin(Builtin::ChatMl | Builtin::ChatMlTools) => Some(IM_END.into()),
            Inner::Builtin(_) => self.specials.eos.clone(),
            Inner::Jinja(j) => j.end_of_turn().or_else(|| self.specials.eos.clone()),
        }
    }

    /// End-of-turn token ids for generation (end-of-turn and EOS, those the tokenizer has).
    pub fn stop_token_ids(&self, tok: &Tokenizer) -> Vec<u32> {
        let mut out = Vec::new();
        for t in self.end_of_turn().iter().chain(self.specials.eos.iter()) {
            if let Some(id) = tok.token_to_id(t)
                && !out.contains(&id)
            {
                out.push(id);
            }
        }
        out
    }

    /// Text stop strings, a fallback for models that do not emit the end-of-turn token.
    pub fn stop_strings(&self) -> Vec<String> {
        match &self.inner {
            Inner::Builtin(Builtin::ChatMl | Builtin::ChatMlTools) => {
                vec![IM_END.into(), IM_START.into()]
            }
            Inner::Builtin(Builtin::Plain) => vec!["\nUser:".into(), "\nSystem:".into()],
            Inner::Builtin(Builtin::Llama2) => vec!["[INST]".into()],
            Inner::Jinja(j) => j.end_of_turn().into_iter().collect(),
        }
    }

    /// Training render: ids and loss mask. Validates the role order first.
    pub fn encode(&self, conv: &Conversation, tok: &Tokenizer, mask: MaskMode) -> Result<Encoded> {
        let mut enc = TokEncoder::new(tok);
        self.encode_with(&mut enc, conv, mask)
    }

    pub(crate) fn encode_with(
        &self,
        enc: &mut TokEncoder<'_>,
        conv: &Conversation,
        mask: MaskMode,
    ) -> Result<Encoded> {
        check_messages(&conv.messages, true).map_err(|e| e.with_origin(&conv.origin))?;
        let segs = self
            .segments(&conv.messages, &conv.tools, false, mask)
            .map_err(|e| e.with_origin(&conv.origin))?;
        self.tokenize(enc, &segs)
            .map_err(|e| e.with_origin(&conv.origin))
    }

    /// Whether the supervised spans come from `{% generation %}` markers (a Jinja template
    /// that has them): training follows them even where a turn's inference prompt is not a
    /// prefix of the conversation's render.
    pub fn marks_generation(&self) -> bool {
        matches!(&self.inner, Inner::Jinja(j) if j.has_generation())
    }

    /// Inference render: the prompt the model continues, ending where the assistant's content
    /// starts. `messages` must end with a user turn. It is token for token a prefix of
    /// [`encode`](Self::encode) of the same turns followed by an assistant reply.
    pub fn encode_prompt(&self, messages: &[Message], tok: &Tokenizer) -> Result<Vec<u32>> {
        self.encode_prompt_with_tools(messages, &[], tok)
    }

    /// [`encode_prompt`](Self::encode_prompt) with the functions the model may call
    /// (OpenAI `tools`). `messages` may end with tool results (the model answers them).
    pub fn encode_prompt_with_tools(
        &self,
        messages: &[Message],
        tools: &[JsonText],
        tok: &Tokenizer,
    ) -> Result<Vec<u32>> {
        check_messages(messages, false)?;
        let segs = self.segments(messages, tools, true, MaskMode::Assistant)?;
        let mut enc = TokEncoder::new(tok);
        Ok(self.tokenize(&mut enc, &segs)?.ids)
    }

    /// The rendered text (what the token ids decode to): the training render, or the
    /// inference prompt with `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, &[], add_generation_prompt)
    }

    /// [`render`](Self::render) with the functions the model may call.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: &[JsonText],
        add_generation_prompt: bool,
    ) -> Result<String> {
        check_messages(messages, !add_generation_prompt)?;
        let segs = self.segments(messages, tools, add_generation_prompt, MaskMode::Assistant)?;
        Ok(segs.iter().map(|s| s.text.as_ref()).collect())
    }

    /// Checks the template writes the messages' content: one that never does (a Jinja
    /// template with a typo in `message['content']`, say) would train and chat on nothing.
    pub fn check_renders_content(&self) -> Result<()> {
        let probe = "Is this message in the prompt?";
        let text = self.render(&[Message::user(probe)], true)?;
        if text.contains(probe) {
            Ok(())
        } else {
            Err(DataError::Template {
                template: self.name().to_string(),
                message: format!(
                    "it does not write the messages' content: a user message is missing from \
                     its output {text:?}"
                ),
            })
        }
    }

    /// A Hugging Face compatible Jinja `chat_template` rendering exactly the same text (with
    /// `{% generation %}` markers around the supervised spans), for `tokenizer_config.json`.
    pub fn to_jinja(&self) -> String {
        match &self.inner {
            Inner::Builtin(b) => builtin_jinja(*b, &self.specials),
            Inner::Jinja(j) => j.source().to_string(),
        }
    }

    /// How many BOS tokens a correct encoding of `conv` holds (for lint).
    pub fn expected_bos(&self, messages: &[Message]) -> Option<usize> {
        self.specials.bos.as_ref()?;
        match &self.inner {
            Inner::Builtin(Builtin::Llama2) => {
                Some(messages.iter().filter(|m| m.role == Role::User).count())
            }
            Inner::Builtin(_) => Some(1),
            Inner::Jinja(_) => None,
        }
    }

    /// Keeps assistant reasoning in the context but out of the loss (`--mask-reasoning`):
    /// the reasoning block (for `chatml`/`chatml-tools` `<think>\n...\n</think>`; for Jinja
    /// templates the reasoning text where the render holds it) is not supervised, the answer
    /// and tool calls after it are.
    pub fn with_mask_reasoning(mut self, mask: bool) -> Self {
        self.mask_reasoning = mask;
        self
    }

    /// Whether reasoning is kept out of the loss.
    pub fn masks_reasoning(&self) -> bool {
        self.mask_reasoning
    }

    /// Whether the template can render tool calls, tool results and a `tools` list.
    pub fn renders_tools(&self) -> bool {
        match &self.inner {
            Inner::Builtin(b) => *b == Builtin::ChatMlTools,
            Inner::Jinja(j) => j.mentions_tools(),
        }
    }

    fn segments<'a>(
        &self,
        msgs: &'a [Message],
        tools: &'a [JsonText],
        prompt: bool,
        mode: MaskMode,
    ) -> Result<Vec<Seg<'a>>> {
        match &self.inner {
            Inner::Builtin(b) => {
                builtin_supports(*b, msgs, tools)?;
                Ok(builtin_segments(
                    *b,
                    &self.specials,
                    msgs,
                    tools,
                    prompt,
                    mode,
                    self.mask_reasoning,
                ))
            }
            Inner::Jinja(j) => j.segments(msgs, tools, prompt, mode, self.mask_reasoning),
        }
    }

    fn tokenize(&self, enc: &mut TokEncoder<'_>, segs: &[Seg<'_>]) -> Result<Encoded> {
        let mut out = Encoded::default();
        let mut i = 0;
        while i < segs.len() {
            let s = &segs[i];
            // Adjacent template text is tokenized as one string, as transformers does, also
            // across a mask boundary (a `{% generation %}` block that opens inside
            // `<|end|><|start|>`): a token is then supervised when it overlaps a supervised
            // segment (transformers' rule: the tokens from the one holding the span's first
            // character to the one holding its last).
            let run = segs[i..]
                .iter()
                .take_while(|x| x.kind == SegKind::Frame)
                .count();
            if run > 1 && segs[i..i + run].iter().all(|x| x.train == s.train) {
                let text: String = segs[i..i + run].iter().map(|x| x.text.as_ref()).collect();
                let before = out.ids.len();
                enc.frame(&text, &mut out.ids)?;
                let n = out.ids.len() - before;
                out.loss_mask.extend(std::iter::repeat_n(s.train, n));
                i += run;
                continue;
            }
            if run > 1 {
                let text: String = segs[i..i + run].iter().map(|x| x.text.as_ref()).collect();
                let mut spans = Vec::with_capacity(run);
                let mut at = 0;
                for x in &segs[i..i + run] {
                    spans.push((at, at + x.text.len(), x.train));
                    at += x.text.len();
                }
                let e = enc
                    .tok
                    .encode(text.as_str(), false)
                    .map_err(DataError::tokenizer)?;
                for (&id, &(a, b)) in e.get_ids().iter().zip(e.get_offsets()) {
                    out.ids.push(id);
                    let b = b.max(a + 1);
                    out.loss_mask
                        .push(spans.iter().any(|&(s0, s1, t)| t && s0 < b && a < s1));
                }
                i += run;
                continue;
            }
            let before = out.ids.len();
            match s.kind {
                SegKind::Special => out.ids.push(enc.special(&s.text, self.name())?),
                SegKind::Frame => enc.frame(&s.text, &mut out.ids)?,
                SegKind::Content => enc.text(&s.text, &mut out.ids)?,
            }
            let n = out.ids.len() - before;
            out.loss_mask.extend(std::iter::repeat_n(s.train, n));
            i += 1;
        }
        Ok(out)
    }
}

fn check_messages(msgs: &[Message], complete: bool) -> Result<()> {
    validate_messages(msgs, complete).map_err(|(i, reason)| {
        let field = match reason {
            RejectReason::EmptyAssistant => format!("messages[{i}].content"),
            _ => format!("messages[{i}].role"),
        };
        DataError::Conversation {
            origin: None,
            field: Some(field),
            message: reason.to_string(),
        }
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| DataError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Refuses what a built-in template cannot render, naming the message: tools with anything
/// but `chatml-tools`, reasoning with `plain` and `llama2`.
fn builtin_supports(b: Builtin, msgs: &[Message], tools: &[JsonText]) -> Result<()> {
    let name = match b {
        Builtin::ChatMl => "chatml",
        Builtin::ChatMlTools => return Ok(()),
        Builtin::Plain => "plain",
        Builtin::Llama2 => "llama2",
    };
    let refuse = |field: String, what: &str| {
        Err(DataError::Conversation {
            origin: None,
            field: Some(field),
            message: format!(
                "template `{name}` cannot render {what}: use `--template chatml-tools` or the \
                 model's own Jinja template"
            ),
        })
    };
    if !tools.is_empty() {
        return refuse("tools".into(), "a tools list");
    }
    for (i, m) in msgs.iter().enumerate() {
        if !m.tool_calls.is_empty() {
            return refuse(format!("messages[{i}].tool_calls"), "tool calls");
        }
        if m.role == Role::Tool {
            return refuse(format!("messages[{i}].role"), "tool results");
        }
        if m.reasoning.is_some() && b != Builtin::ChatMl {
            return refuse(format!("messages[{i}].reasoning_content"), "reasoning");
        }
    }
    Ok(())
}

/// The system-turn text `chatml-tools` adds when the conversation has tools (Qwen2.5's
/// Hermes-style wording): the schemas one per line in `<tools>`, then how to call.
pub(crate) fn tools_block(tools: &[JsonText]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        s.push('\n');
        s.push_str(&jinja::py_json(&t.to_value()));
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": \
         <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// A tool call as `chatml-tools` writes it inside `<tool_call>`: `{"name": ..., "arguments":
/// ...}` with Python's `json.dumps` spacing.
pub fn tool_call_json(name: &str, arguments: &JsonText) -> String {
    format!(
        "{{\"name\": {}, \"arguments\": {}}}",
        jinja::py_json(&minijinja::Value::from(name)),
        jinja::py_json(&arguments.to_value())
    )
}

/// The segments of a built-in template.
fn builtin_segments<'a>(
    b: Builtin,
    sp: &SpecialTokens,
    msgs: &'a [Message],
    tools: &'a [JsonText],
    prompt: bool,
    mode: MaskMode,
    mask_reasoning: bool,
) -> Vec<Seg<'a>> {
    use SegKind::{Content, Frame, Special};
    let all = mode == MaskMode::All;
    let mut out: Vec<Seg<'a>> = Vec::with_capacity(msgs.len() * 5 + 3);
    // Content with the separating space in front (see module docs).
    let spaced = |c: &'a str| -> Cow<'a, str> { Cow::Owned(format!(" {c}")) };
    match b {
        Builtin::ChatMl | Builtin::ChatMlTools => {
            if let Some(bos) = &sp.bos {
                out.push(Seg::new(bos.clone(), Special, all));
            }
            let has_system = msgs.first().is_some_and(|m| m.role == Role::System);
            if !tools.is_empty() && !has_system {
                out.push(Seg::new(IM_START, Special, all));
                out.push(Seg::new("system\n", Frame, all));
                out.push(Seg::new(tools_block(tools), Frame, all));
                out.push(Seg::new(IM_END, Special, all));
                out.push(Seg::new("\n", Frame, all));
            }
            for (i, m) in msgs.iter().enumerate() {
                let t = trains(mode, msgs, i);
                out.push(Seg::new(IM_START, Special, all));
                out.push(Seg::new(
                    match m.role {
                        Role::System => "system\n",
                        Role::User => "user\n",
                        Role::Assistant => "assistant\n",
                        Role::Tool => "tool\n",
                    },
                    Frame,
                    all,
                ));
                match m.role {
                    Role::Assistant => {
                        // Whitespace before a text is tokenized with it (as in the full
                        // render: BPE keeps a run of newlines before a word apart).
                        let mut lead = "";
                        if let Some(r) = &m.reasoning {
                            let tr = t && !mask_reasoning;
                            out.push(Seg::new("<think>\n", Frame, tr));
                            out.push(Seg::new(r.as_str(), Content, tr));
                            out.push(Seg::new("\n</think>", Frame, tr));
                            lead = "\n\n";
                        }
                        if m.content.is_empty() {
                            // Only calls: the lead goes with the first call's tag.
                        } else if lead.is_empty() {
                            out.push(Seg::new(m.content.as_str(), Content, t));
                        } else {
                            out.push(Seg::new(format!("{lead}{}", m.content), Content, t));
                        }
                        for (k, c) in m.tool_calls.iter().enumerate() {
                            let open = match (k, m.content.is_empty()) {
                                (0, true) => Cow::Owned(format!("{lead}<tool_call>\n")),
                                _ => Cow::Borrowed("\n<tool_call>\n"),
                            };
                            out.push(Seg::new(open, Frame, t));
                            out.push(Seg::new(tool_call_json(&c.name, &c.arguments), Content, t));
                            out.push(Seg::new("\n</tool_call>", Frame, t));
                        }
                    }
                    Role::Tool => {
                        out.push(Seg::new("<tool_response>\n", Frame, t));
                        out.push(Seg::new(m.content.as_str(), Content, t));
                        out.push(Seg::new("\n</tool_response>", Frame, t));
                    }
                    Role::System if !tools.is_empty() => {
                        out.push(Seg::new(m.content.as_str(), Content, t));
                        out.push(Seg::new(format!("\n\n{}", tools_block(tools)), Frame, t));
                    }
                    _ => out.push(Seg::new(m.content.as_str(), Content, t)),
                }
                out.push(Seg::new(IM_END, Special, t));
                out.push(Seg::new("\n", Frame, all));
            }
            if prompt {
                out.push(Seg::new(IM_START, Special, false));
                out.push(Seg::new("assistant\n", Frame, false));
            }
        }
        Builtin::Plain => {
            let eos = sp.eos.clone().unwrap_or_default();
            if let Some(bos) = &sp.bos {
                out.push(Seg::new(bos.clone(), Special, all));
            }
            for (i, m) in msgs.iter().enumerate() {
                let t = trains(mode, msgs, i);
                let label = match m.role {
                    Role::System => "System:",
                    Role::User | Role::Tool => "User:",
                    Role::Assistant => "Assistant:",
                };
                out.push(Seg::new(label, Frame, all));
                out.push(Seg::new(spaced(&m.content), Content, t));
                if m.role == Role::Assistant {
                    out.push(Seg::new(eos.clone(), Special, t));
                    out.push(Seg::new("\n", Frame, all));
                } else {
                    out.push(Seg::new("\n", Frame, t));
                }
            }
            if prompt {
                out.push(Seg::new("Assistant:", Frame, false));
            }
        }
        Builtin::Llama2 => {
            let bos = sp.bos.clone().unwrap_or_default();
            let eos = sp.eos.clone().unwrap_or_default();
            let (system, start) = match msgs.first() {
                Some(m) if m.role == Role::System => (Some((0, m)), 1),
                _ => (None, 0),
            };
            for (i, m) in msgs.iter().enumerate().skip(start) {
                let t = trains(mode, msgs, i);
                match m.role {
                    Role::User => {
                        out.push(Seg::new(bos.clone(), Special, all));
                        match (i == start, system) {
                            (true, Some((si, s))) => {
                                out.push(Seg::new("[INST] <<SYS>>\n", Frame, all));
                                out.push(Seg::new(
                                    s.content.as_str(),
                                    Content,
                                    trains(mode, msgs, si),
                                ));
                                // The blank line goes with a content that starts with a word,
                                // as the full string tokenizes ("\n\n" alone is one token).
                                if m.content.starts_with(char::is_whitespace) {
                                    out.push(Seg::new("\n<</SYS>>\n\n", Frame, all));
                                    out.push(Seg::new(m.content.as_str(), Content, t));
                                } else {
                                    out.push(Seg::new("\n<</SYS>>", Frame, all));
                                    out.push(Seg::new(format!("\n\n{}", m.content), Content, t));
                                }
                            }
                            _ => {
                                out.push(Seg::new("[INST]", Frame, all));
                                out.push(Seg::new(spaced(&m.content), Content, t));
                            }
                        }
                        out.push(Seg::new(" [/INST]", Frame, t));
                    }
                    _ => {
                        out.push(Seg::new(spaced(&m.content), Content, t));
                        out.push(Seg::new(" ", Frame, t));
                        out.push(Seg::new(eos.clone(), Special, t));
                    }
                }
            }
        }
    }
    out
}

/// `chatml` and `chatml-tools` as an HF Jinja template (`{bos}` is replaced): tools in the
/// system turn, reasoning in `<think>`, calls in `<tool_call>`, results in `tool` turns.
const CHATML_JINJA: &str = r#"{bos}{%- if tools -%}
{{- '<|im_start|>system\n' -}}
{%- if messages[0]['role'] == 'system' -%}
{{- messages[0]['content'] + '\n\n' -}}
{%- endif -%}
{{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
{%- for tool in tools -%}
{{- '\n' + (tool | tojson) -}}
{%- endfor -%}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if not (tools and loop.first and message['role'] == 'system') -%}
{{- '<|im_start|>' + message['role'] + '\n' -}}
{%- if message['role'] == 'assistant' -%}
{% generation %}
{%- if message['reasoning_content'] -%}
{{- '<think>\n' + message['reasoning_content'] + '\n</think>\n\n' -}}
{%- endif -%}
{{- message['content'] -}}
{%- for call in message['tool_calls'] or [] -%}
{%- if not loop.first or message['content'] -%}
{{- '\n' -}}
{%- endif -%}
{{- '<tool_call>\n{"name": ' + (call['function']['name'] | tojson) + ', "arguments": ' + (call['function']['arguments'] | tojson) + '}\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>' -}}
{% endgeneration %}
{%- elif message['role'] == 'tool' -%}
{{- '<tool_response>\n' + message['content'] + '\n</tool_response><|im_end|>' -}}
{%- else -%}
{{- message['content'] + '<|im_end|>' -}}
{%- endif -%}
{{- '\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"#;

/// HF Jinja source equivalent to a built-in template.
fn builtin_jinja(b: Builtin, sp: &SpecialTokens) -> String {
    let bos = if sp.bos.is_some() {
        "{{- bos_token -}}\n"
    } else {
        ""
    };
    match b {
        Builtin::ChatMl | Builtin::ChatMlTools => CHATML_JINJA.replace("{bos}", bos),
        Builtin::Plain => format!(
            "{bos}{{%- for message in messages -%}}
{{%- if message['role'] == 'system' -%}}
{{{{- 'System: ' + message['content'] + '\\n' -}}}}
{{%- elif message['role'] == 'user' -%}}
{{{{- 'User: ' + message['content'] + '\\n' -}}}}
{{%- else -%}}
{{{{- 'Assistant:' -}}}}
{{% generation %}}{{{{ ' ' + message['content'] + eos_token }}}}{{% endgeneration %}}
{{{{- '\\n' -}}}}
{{%- endif -%}}
{{%- endfor -%}}
{{%- if add_generation_prompt -%}}
{{{{- 'Assistant:' -}}}}
{{%- endif -%}}
"
        ),
        Builtin::Llama2 => "{%- for message in messages -%}
{%- if message['role'] == 'user' -%}
{{- bos_token + '[INST]' -}}
{%- if loop.index0 == 1 and messages[0]['role'] == 'system' -%}
{{- ' <<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' + message['content'] -}}
{%- else -%}
{{- ' ' + message['content'] -}}
{%- endif -%}
{{- ' [/INST]' -}}
{%- elif message['role'] == 'assistant' -%}
{% generation %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endgeneration %}
{%- endif -%}
{%- endfor -%}
"
        .to_string(),
    }
}

/// Tokenizes segments with a borrowed tokenizer: template text through the full tokenizer
/// (special tokens split out, cached), message contents through normalizer, pre-tokenizer and
/// model only, so text that looks like a special token stays text (the same ids as HF
/// `encode_special_tokens = True`, without cloning the tokenizer).
pub(crate) struct TokEncoder<'t> {
    tok: &'t Tokenizer,
    frames: HashMap<String, Vec<u32>>,
    ids: HashMap<String, u32>,
}

impl<'t> TokEncoder<'t> {
    pub(crate) fn new(tok: &'t Tokenizer) -> Self {
        TokEncoder {
            tok,
            frames: HashMap::new(),
            ids: HashMap::new(),
        }
    }

    pub(crate) fn special(&mut self, name: &str, template: &str) -> Result<u32> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let id = self
            .tok
            .token_to_id(name)
            .ok_or_else(|| DataError::MissingSpecialToken {
                template: template.to_string(),
                token: name.to_string(),
            })?;
        self.ids.insert(name.to_string(), id);
        Ok(id)
    }

    /// Template text: special tokens inside are split out by the tokenizer. Cached.
    pub(crate) fn frame(&mut self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if let Some(ids) = self.frames.get(text) {
            out.extend_from_slice(ids);
            return Ok(());
        }
        let ids = encode_raw(self.tok, text)?;
        out.extend_from_slice(&ids);
        if self.frames.len() < 4096 {
            self.frames.insert(text.to_string(), ids);
        }
        Ok(())
    }

    /// Message text: never produces special (or added) tokens.
    pub(crate) fn text(&mut self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        encode_plain(self.tok, text, out)
    }
}

/// Normalizer, pre-tokenizer and model, without the added vocabulary.
pub(crate) fn encode_plain(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) -> Result<()> {
    use tokenizers::{
        Model, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    };
    if text.is_empty() {
        return Ok(());
    }
    let mut pre = PreTokenizedString::from(text);
    if let Some(n) = tok.get_normalizer() {
        pre.normalize(|s| n.normalize(s))
            .map_err(DataError::tokenizer)?;
    }
    if let Some(p) = tok.get_pre_tokenizer() {
        p.pre_tokenize(&mut pre).map_err(DataError::tokenizer)?;
    }
    let model = tok.get_model();
    pre.tokenize(|s| model.tokenize(s.get()))
        .map_err(DataError::tokenizer)?;
    for (_, _, toks) in pre.get_splits(OffsetReferential::Original, OffsetType::None) {
        if let Some(toks) = toks {
            out.extend(toks.iter().map(|t| t.id));
        }
    }
    Ok(())
}

pub(crate) fn encode_raw(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    tok.encode_fast(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(DataError::tokenizer)
}
