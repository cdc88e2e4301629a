//! Hugging Face Jinja chat templates, rendered with minijinja.
//!
//! Spans and segments are found by rendering, never by parsing the template:
//! - `{% generation %}`/`{% endgeneration %}` (HF's assistant-mask markers; minijinja has no
//!   custom tags) are rewritten to emit reserved marker characters, so the render says where
//!   the supervised spans are. As in transformers, the marked blocks of the full render are
//!   the spans, one or several per assistant turn, even when a turn's inference prompt is not
//!   a prefix of the render (templates that drop earlier turns' reasoning); `lint` warns then.
//! - Without markers, turn `i` is found by rendering the prefix `messages[..i]` with
//!   `add_generation_prompt=true` (where the reply starts) and `messages[..=i]` without it
//!   (where the turn ends); both must be prefixes of the full render. The supervised span runs
//!   from the reply's start to the end of the last end-of-turn/EOS token inside the turn.
//! - Message contents are located by rendering once more with each content replaced by a
//!   reserved marker; when substituting the contents back gives the real render exactly, the
//!   contents are tokenized as plain text (segment by segment). Templates that transform
//!   contents (e.g. `| trim`) fall back to tokenizing the rendered text between the cut points,
//!   where marker-like text inside a message may become a special token (as in HF).

use std::borrow::Cow;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;
use serde_json::Value as Json;

use super::{Seg, SegKind, SpecialTokens, trains};
use crate::conversation::{JsonText, Message, OpenAiCall, Role};
use crate::error::{DataError, Result};
use crate::read::reserved_char;
use crate::template::MaskMode;

const GEN_START: char = '\u{FDD0}';
const GEN_END: char = '\u{FDD1}';
const CONTENT_START: char = '\u{FDD2}';
const CONTENT_END: char = '\u{FDD3}';
const NAME: &str = "jinja";

#[derive(Clone)]
pub(crate) struct JinjaTemplate {
    env: Environment<'static>,
    source: String,
    has_generation: bool,
    specials: SpecialTokens,
    special_strings: Vec<String>,
    end_of_turn: Option<String>,
}

/// A message as transformers passes it to templates: `role`, `content`, and where the data
/// has them `tool_calls` (OpenAI shape), `tool_call_id`, `name`, and the reasoning as both
/// `reasoning_content` and `thinking` (gpt-oss's name; transformers fills both).
#[derive(Serialize)]
struct JMsg<'a> {
    role: &'a str,
    content: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<OpenAiCall<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    /// The reasoning again under gpt-oss's name, as transformers passes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
}

#[derive(Serialize)]
struct Ctx<'a> {
    messages: &'a [JMsg<'a>],
    add_generation_prompt: bool,
    bos_token: &'a str,
    eos_token: &'a str,
    pad_token: &'a str,
    /// None without tools, as transformers passes it.
    tools: Option<&'a [JsonText]>,
    documents: Option<()>,
}

fn jerr(e: Error) -> DataError {
    // `{:#}` includes minijinja's source context (line and caret) where it has one.
    DataError::template(NAME, format!("{e:#}"))
}

impl JinjaTemplate {
    pub(crate) fn new(source: &str, specials: &SpecialTokens) -> Result<Self> {
        if let Some(c) = reserved_char(source) {
            return Err(DataError::template(
                NAME,
                format!("source contains reserved character U+{:04X}", c as u32),
            ));
        }
        let (processed, has_generation) = rewrite_generation(source);
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| -> String {
            strftime_now(&fmt)
        });
        // What transformers' Jinja2 environment gives templates, where minijinja differs:
        // `tojson` as Python's `json.dumps` (", " and ": " separators, no HTML escaping, its
        // keyword arguments), and the `iterable`/`sequence` tests of Python, for which none is
        // neither (templates guard `tools is iterable and tools|length > 0` with tools none).
        env.add_filter("tojson", tojson);
        env.add_test("iterable", |v: Value| {
            v.is_undefined() || (!v.is_none() && v.try_iter().is_ok())
        });
        env.add_test("sequence", |v: Value| {
            matches!(
                v.kind(),
                ValueKind::Seq | ValueKind::String | ValueKind::Map | ValueKind::Bytes
            )
        });
        env.add_template_owned("chat", processed).map_err(jerr)?;
        let mut special_strings: Vec<String> = Vec::new();
        special_strings.extend(specials.bos.clone());
        special_strings.extend(specials.eos.clone());
        special_strings.extend(specials.additional.iter().cloned());
        special_strings.extend(pipe_tokens(source));
        let mut seen = std::collections::HashSet::new();
        special_strings.retain(|t| seen.insert(t.clone()));
        let mut t = JinjaTemplate {
            env,
            source: source.to_string(),
            has_generation,
            specials: specials.clone(),
            special_strings,
            end_of_turn: None,
        };
        t.end_of_turn = t.detect_end_of_turn();
        Ok(t)
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn special_strings(&self) -> &[String] {
        &self.special_strings
    }

    pub(crate) fn end_of_turn(&self) -> Option<String> {
        self.end_of_turn.clone()
    }

    fn render_j(&self, msgs: &[JMsg<'_>], tools: &[JsonText], agp: bool) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(jerr)?;
        let ctx = Ctx {
            messages: msgs,
            add_generation_prompt: agp,
            bos_token: self.specials.bos.as_deref().unwrap_or(""),
            eos_token: self.specials.eos.as_deref().unwrap_or(""),
            pad_token: self.specials.pad.as_deref().unwrap_or(""),
            tools: (!tools.is_empty()).then_some(tools),
            documents: None,
        };
        tmpl.render(ctx).map_err(jerr)
    }

    /// Renders real messages; returns the text without generation markers.
    fn render_plain(&self, msgs: &[Message], tools: &[JsonText], agp: bool) -> Result<String> {
        let j: Vec<JMsg<'_>> = msgs.iter().map(jmsg).collect();
        Ok(strip_gen(&self.render_j(&j, tools, agp)?).0)
    }

    /// Whether the source reads `tools` or `tool_calls` (a template that renders tool use).
    pub(crate) fn mentions_tools(&self) -> bool {
        self.source.contains("tool_calls") || self.source.contains("tools")
    }

    fn detect_end_of_turn(&self) -> Option<String> {
        let probe = [Message::user("Hi"), Message::assistant("Yo")];
        let p = self.render_plain(&probe[..1], &[], true).ok()?;
        let f = self.render_plain(&probe, &[], false).ok()?;
        let rest = f.strip_prefix(p.as_str())?;
        let tail = &rest[rest.find("Yo")? + 2..];
        self.special_strings
            .iter()
            .filter_map(|s| tail.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|&(at, s)| (at, usize::MAX - s.len()))
            .map(|(_, s)| s.clone())
    }

    pub(crate) fn segments(
        &self,
        msgs: &[Message],
        tools: &[JsonText],
        prompt: bool,
        mode: MaskMode,
        mask_reasoning: bool,
    ) -> Result<Vec<Seg<'static>>> {
        for (i, m) in msgs.iter().enumerate() {
            let texts = [Some(&m.content), m.reasoning.as_ref()];
            if let Some(c) = texts.iter().flatten().find_map(|t| reserved_char(t)) {
                return Err(DataError::Conversation {
                    origin: None,
                    field: Some(format!("messages[{i}].content")),
                    message: format!("contains reserved character U+{:04X}", c as u32),
                });
            }
        }
        let real: Vec<JMsg<'_>> = msgs.iter().map(jmsg).collect();
        let (text, gen_ranges) = strip_gen(&self.render_j(&real, tools, prompt)?);
        if !gen_ranges.iter().all(|r| r.0 <= r.1) {
            return Err(DataError::template(
                NAME,
                "unbalanced {% generation %} / {% endgeneration %} markers",
            ));
        }

        // Content ranges, when the template renders contents verbatim.
        // (Empty contents stay empty: templates test `if message.content`.)
        let skel: Vec<JMsg<'_>> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut j = jmsg(m);
                if !m.content.is_empty() {
                    j.content = Cow::Owned(format!("{CONTENT_START}{i}{CONTENT_END}"));
                }
                j
            })
            .collect();
        let skel_text = self.render_j(&skel, tools, prompt)?;
        let contents = locate_contents(&skel_text, msgs, &text);

        let asst: Vec<usize> = (0..msgs.len())
            .filter(|&i| msgs[i].role == Role::Assistant)
            .collect();
        let mut cuts: Vec<usize> = vec![0, text.len()];
        let mut ranges: Vec<(usize, usize, bool)> = Vec::new(); // (start, end, train)

        // Where each reply starts as inference renders it (messages[..i] with
        // add_generation_prompt), when that render is a prefix of the conversation's.
        let mut prompt_ends: Vec<Option<usize>> = Vec::with_capacity(asst.len());
        for &i in &asst {
            let p = self.render_plain(&msgs[..i], tools, true)?;
            prompt_ends.push(text.starts_with(p.as_str()).then_some(p.len()));
        }
        cuts.extend(prompt_ends.iter().flatten());

        if self.has_generation {
            // As transformers does: the supervised spans are the full render's
            // {% generation %} blocks, whatever the prefixes render (templates that drop
            // earlier turns' reasoning render them differently once a later turn exists;
            // `lint` reports that), one block or several per assistant turn.
            let trains_of = self.generation_owners(&gen_ranges, &asst, &prompt_ends, msgs, mode)?;
            for (&(s, e), t) in gen_ranges.iter().zip(trains_of) {
                cuts.push(s);
                cuts.push(e);
                ranges.push((s, e, t));
            }
        } else {
            for (k, &i) in asst.iter().enumerate() {
                let Some(p) = prompt_ends[k] else {
                    return Err(DataError::template(
                        NAME,
                        format!(
                            "cannot find the assistant spans: the prompt for turn {i} \
                             (messages[..{i}] with add_generation_prompt) is not a prefix of the \
                             conversation's render, so inference would not see what training \
                             saw; a template with {{% generation %}} markers is trained on its \
                             marked spans instead"
                        ),
                    ));
                };
                let f = self.render_plain(&msgs[..=i], tools, false)?;
                if !text.starts_with(f.as_str()) || f.len() <= p {
                    return Err(DataError::template(
                        NAME,
                        format!(
                            "cannot find the assistant spans: the render of messages[..={i}] \
                             is not a prefix of the conversation's render extending its prompt; \
                             add {{% generation %}} markers to the template"
                        ),
                    ));
                }
                let (s, e) = (p, self.supervised_end(&text, p, f.len()));
                cuts.push(s);
                cuts.push(e);
                ranges.push((s, e, trains(mode, msgs, i)));
            }
        }
        if mask_reasoning && !prompt {
            // Each turn's reasoning text, searched from where its reply starts, is kept out
            // of the loss (the tags around it and the answer after it are not); a turn whose
            // reasoning the template drops has nothing to mask.
            let mut from = 0;
            for (k, &i) in asst.iter().enumerate() {
                let Some(r) = msgs[i].reasoning.as_deref().map(str::trim) else {
                    continue;
                };
                from = from.max(prompt_ends[k].unwrap_or(0));
                if let Some(at) = text[from..].find(r).filter(|_| !r.is_empty()) {
                    let (s, e) = (from + at, from + at + r.len());
                    ranges.insert(0, (s, e, false));
                    cuts.push(s);
                    cuts.push(e);
                    from = e;
                }
            }
        }
        let frame_train = mode == MaskMode::All && !prompt;
        for (i, m) in msgs.iter().enumerate() {
            if m.role == Role::Assistant {
                continue;
            }
            let t = trains(mode, msgs, i);
            match contents.as_ref().map(|c| c[i]) {
                Some((s, e)) => ranges.push((s, e, t)),
                None if t != frame_train && !prompt => {
                    return Err(DataError::template(
                        NAME,
                        format!(
                            "cannot apply the train flag of messages[{i}]: the template does \
                             not render its content verbatim"
                        ),
                    ));
                }
                None => {}
            }
        }
        if let Some(c) = &contents {
            for &(s, e) in c {
                cuts.push(s);
                cuts.push(e);
            }
        }
        cuts.sort_unstable();
        cuts.dedup();

        let mut segs = Vec::with_capacity(cuts.len());
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a == b {
                continue;
            }
            let inside = |r: &(usize, usize)| r.0 <= a && b <= r.1;
            let is_content = contents.as_ref().is_some_and(|c| c.iter().any(&inside));
            let train = !prompt
                && ranges
                    .iter()
                    .find(|r| inside(&(r.0, r.1)))
                    .map_or(frame_train, |r| r.2);
            segs.push(Seg::new(
                text[a..b].to_string(),
                if is_content {
                    SegKind::Content
                } else {
                    SegKind::Frame
                },
                train,
            ));
        }
        Ok(segs)
    }

    /// Whether each {% generation %} block is trained: the flag of the assistant turn it
    /// belongs to. One block per turn pairs them in order; several per turn (reasoning and
    /// answer marked apart) go to the last turn whose prompt ends at or before the block. When
    /// the prompts are not prefixes of the render either, the blocks can be assigned only if
    /// every assistant turn has the same flag.
    fn generation_owners(
        &self,
        gen_ranges: &[(usize, usize)],
        asst: &[usize],
        prompt_ends: &[Option<usize>],
        msgs: &[Message],
        mode: MaskMode,
    ) -> Result<Vec<bool>> {
        let flags: Vec<bool> = asst.iter().map(|&i| trains(mode, msgs, i)).collect();
        if gen_ranges.len() == asst.len() {
            return Ok(flags);
        }
        if asst.is_empty() {
            // A prompt (no assistant turn yet) whose frame opens a block: nothing to train.
            return Ok(vec![false; gen_ranges.len()]);
        }
        if prompt_ends.iter().all(Option::is_some) {
            return gen_ranges
                .iter()
                .map(|&(s, _)| {
                    let owner = prompt_ends.iter().rposition(|p| p.is_some_and(|p| p <= s));
                    owner.map(|k| flags[k]).ok_or_else(|| {
                        DataError::template(
                            NAME,
                            format!(
                                "a {{% generation %}} block starts at character {s}, before the \
                                 first assistant turn's reply"
                            ),
                        )
                    })
                })
                .collect();
        }
        if flags.iter().all(|&f| f == flags[0]) {
            return Ok(vec![flags[0]; gen_ranges.len()]);
        }
        Err(DataError::template(
            NAME,
            format!(
                "cannot tell which assistant turn each of the {} {{% generation %}} blocks belongs \
                 to ({} assistant turns; the template renders earlier turns differently once a \
                 later turn exists), and the turns' train flags differ",
                gen_ranges.len(),
                asst.len()
            ),
        ))
    }

    pub(crate) fn has_generation(&self) -> bool {
        self.has_generation
    }

    /// End of the supervised part of a turn `text[start..end]`: just after the last
    /// end-of-turn/EOS token in it, or `end` when there is none.
    fn supervised_end(&self, text: &str, start: usize, end: usize) -> usize {
        let turn = &text[start..end];
        let stops = self.end_of_turn.iter().chain(self.specials.eos.iter());
        stops
            .filter_map(|s| turn.rfind(s.as_str()).map(|at| start + at + s.len()))
            .max()
            .unwrap_or(end)
    }
}

fn jmsg(m: &Message) -> JMsg<'_> {
    JMsg {
        role: m.role.as_str(),
        content: Cow::Borrowed(&m.content),
        tool_calls: (!m.tool_calls.is_empty())
            .then(|| m.tool_calls.iter().map(OpenAiCall::from).collect()),
        tool_call_id: m.tool_call_id.as_deref(),
        name: m.name.as_deref(),
        reasoning_content: m.reasoning.as_deref(),
        thinking: m.reasoning.as_deref(),
    }
}

/// Removes generation markers; returns the text and the marked ranges (in text offsets).
/// An unbalanced marker yields a range with start > end.
fn strip_gen(s: &str) -> (String, Vec<(usize, usize)>) {
    let mut out = String::with_capacity(s.len());
    let mut ranges = Vec::new();
    let mut open: Option<usize> = None;
    for c in s.chars() {
        match c {
            GEN_START => {
                if open.is_some() {
                    ranges.push((usize::MAX, 0));
                }
                open = Some(out.len());
            }
            GEN_END => match open.take() {
                Some(st) => ranges.push((st, out.len())),
                None => ranges.push((usize::MAX, 0)),
            },
            c => out.push(c),
        }
    }
    if open.is_some() {
        ranges.push((usize::MAX, 0));
    }
    (out, ranges)
}

/// From the skeleton render (contents replaced by markers), the byte range of every message's
/// content in the real text, extended over the whitespace before it when the content starts
/// with a word: BPE pre-tokenizers split a run of whitespace differently at the end of a
/// string (`"\n\n"` alone is one piece, `"\n\nHi"` splits as `"\n"`, `"\n"`, `"Hi"`; `" Hi"` is
/// one piece), so tokenizing the run with the content gives the ids of the full render, as
/// transformers tokenizes it. A content that starts with whitespace itself takes only a
/// single space before it (the built-in templates' label space). `None` unless each content appears exactly once and substituting the contents
/// back reproduces the real render.
fn locate_contents(skel: &str, msgs: &[Message], real: &str) -> Option<Vec<(usize, usize)>> {
    let (skel, _) = strip_gen(skel);
    let mut out = String::with_capacity(real.len());
    let mut ranges: Vec<Option<(usize, usize)>> = vec![None; msgs.len()];
    let mut rest = skel.as_str();
    while let Some(at) = rest.find(CONTENT_START) {
        out.push_str(&rest[..at]);
        rest = &rest[at + CONTENT_START.len_utf8()..];
        let end = rest.find(CONTENT_END)?;
        let i: usize = rest[..end].parse().ok()?;
        rest = &rest[end + CONTENT_END.len_utf8()..];
        let slot = ranges.get_mut(i)?;
        if msgs[i].content.is_empty() {
            return None;
        }
        if slot.is_some() {
            return None;
        }
        let start = out.len();
        out.push_str(&msgs[i].content);
        *slot = Some((start, out.len()));
    }
    out.push_str(rest);
    if out != real {
        return None;
    }
    for (r, m) in ranges.iter_mut().zip(msgs) {
        if m.content.is_empty() {
            *r = Some((0, 0));
        }
    }
    let ends: Vec<usize> = ranges.iter().flatten().map(|r| r.1).collect();
    ranges
        .into_iter()
        .map(|r| {
            r.map(|(s, e)| {
                if s == e {
                    return (s, e);
                }
                // Never into the content before it.
                let floor = ends.iter().copied().filter(|&x| x <= s).max().unwrap_or(0);
                let before = real[floor..s].chars().rev();
                let lead = if real[s..e].starts_with(char::is_whitespace) {
                    // Whitespace on both sides: only the label's single space, as the
                    // built-in templates write it.
                    before.take(1).filter(|&c| c == ' ').count()
                } else {
                    before
                        .take_while(|c| c.is_whitespace())
                        .map(char::len_utf8)
                        .sum::<usize>()
                };
                (s - lead, e)
            })
        })
        .collect()
}

/// Rewrites `{% generation %}`/`{% endgeneration %}` (with any whitespace control) into
/// `{%<l> if true %}MARK{% endif <r>%}`, which keeps the tag's whitespace behaviour
/// (lstrip/trim_blocks and `-`) and emits a marker character.
fn rewrite_generation(src: &str) -> (String, bool) {
    let mut out = String::with_capacity(src.len());
    let mut found = false;
    let mut rest = src;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        let Some(close) = tail.find("%}") else {
            out.push_str(&rest[at..]);
            return (out, found);
        };
        let inner = &tail[..close];
        let (l, body) = match inner.chars().next() {
            Some(c @ ('-' | '+')) => (Some(c), &inner[1..]),
            _ => (None, inner),
        };
        let (body, r) = match body.chars().last() {
            Some(c @ ('-' | '+')) => (&body[..body.len() - 1], Some(c)),
            _ => (body, None),
        };
        let mark = match body.trim() {
            "generation" => Some(GEN_START),
            "endgeneration" => Some(GEN_END),
            _ => None,
        };
        match mark {
            Some(m) => {
                found = true;
                let l = l.map(String::from).unwrap_or_default();
                let r = r.map(String::from).unwrap_or_default();
                out.push_str(&format!("{{%{l} if true %}}{m}{{% endif {r}%}}"));
            }
            None => out.push_str(&rest[at..at + 2 + close + 2]),
        }
        rest = &tail[close + 2..];
    }
    out.push_str(rest);
    (out, found)
}

/// `<|...|>` strings in a template source (special tokens of ChatML-like formats).
fn pipe_tokens(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("<|") {
        let tail = &rest[at + 2..];
        match tail.find("|>") {
            Some(end)
                if end > 0
                    && end <= 60
                    && !tail[..end]
                        .chars()
                        .any(|c| c.is_whitespace() || matches!(c, '\'' | '"' | '<' | '>')) =>
            {
                out.push(format!("<|{}|>", &tail[..end]));
                rest = &tail[end + 2..];
            }
            _ => rest = tail,
        }
    }
    out
}

fn token_str(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

pub(crate) fn specials_from_config(v: &Json) -> SpecialTokens {
    let mut additional: Vec<String> = v
        .get("additional_special_tokens")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(|t| token_str(Some(t))).collect())
        .unwrap_or_default();
    if let Some(Json::Object(dec)) = v.get("added_tokens_decoder") {
        for t in dec.values() {
            if t.get("special").and_then(Json::as_bool) == Some(true)
                && let Some(c) = token_str(Some(t))
                && !additional.contains(&c)
            {
                additional.push(c);
            }
        }
    }
    let bos = token_str(v.get("bos_token"));
    let eos = token_str(v.get("eos_token"));
    let pad = token_str(v.get("pad_token"));
    additional.retain(|t| Some(t) != bos.as_ref() && Some(t) != eos.as_ref());
    SpecialTokens {
        bos,
        eos,
        pad,
        additional,
    }
}

pub(crate) fn chat_template_from_config(v: &Json) -> Option<String> {
    match v.get("chat_template")? {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(Json::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// `json.dumps(v)` as Python writes it (", " and ": " separators, keys in order, no ASCII
/// escaping).
pub(crate) fn py_json(v: &Value) -> String {
    let opts = PyJson {
        ensure_ascii: false,
        indent: None,
        item: ", ".into(),
        key: ": ".into(),
        sort_keys: false,
    };
    let mut out = String::new();
    opts.write(v, 0, &mut out)
        .expect("plain JSON values always write");
    out
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, marked safe.
fn tojson(v: Value, kw: Kwargs) -> std::result::Result<Value, Error> {
    let ensure_ascii: Option<bool> = kw.get("ensure_ascii")?;
    let indent: Option<Value> = kw.get("indent")?;
    let separators: Option<Vec<String>> = kw.get("separators")?;
    let sort_keys: Option<bool> = kw.get("sort_keys")?;
    kw.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(i) if i.is_none() => None,
        Some(i) => match i.kind() {
            ValueKind::String => Some(i.as_str().unwrap_or_default().to_string()),
            _ => Some(" ".repeat(usize::try_from(i).unwrap_or(0))),
        },
    };
    let (item, key) = match separators.as_deref() {
        Some([a, b]) => (a.clone(), b.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair (item separator, key separator)",
            ));
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let opts = PyJson {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item,
        key,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    opts.write(&v, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

struct PyJson {
    ensure_ascii: bool,
    indent: Option<String>,
    item: String,
    key: String,
    sort_keys: bool,
}

impl PyJson {
    fn newline(&self, level: usize, out: &mut String) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    }

    fn write(&self, v: &Value, level: usize, out: &mut String) -> std::result::Result<(), Error> {
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                if let Ok(i) = i64::try_from(v.clone()) {
                    out.push_str(&i.to_string());
                } else {
                    let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                    out.push_str(&py_float(f));
                }
            }
            ValueKind::String => self.string(v.as_str().unwrap_or_default(), out),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container(('[', ']'), &items, level, out, |x, out| {
                    self.write(x, level + 1, out)
                })?;
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort_by_key(|a| a.to_string());
                }
                self.container(('{', '}'), &keys, level, out, |k, out| {
                    match k.as_str() {
                        Some(s) => self.string(s, out),
                        None => self.string(&k.to_string(), out),
                    }
                    out.push_str(&self.key);
                    self.write(&v.get_item(k)?, level + 1, out)
                })?;
            }
            _ => self.string(&v.to_string(), out),
        }
        Ok(())
    }

    /// `open` items `close`, each written by `each` after the item separator and (with an
    /// indent) a new line; empty as `[]` / `{}` as Python writes them.
    fn container(
        &self,
        (open, close): (char, char),
        items: &[Value],
        level: usize,
        out: &mut String,
        mut each: impl FnMut(&Value, &mut String) -> std::result::Result<(), Error>,
    ) -> std::result::Result<(), Error> {
        out.push(open);
        if !items.is_empty() {
            for (n, x) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(&self.item);
                }
                self.newline(level + 1, out);
                each(x, out)?;
            }
            self.newline(level, out);
        }
        out.push(close);
        Ok(())
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `repr` of a float, as `json.dumps` writes it: Rust's `{:?}` has the same shortest
/// round-trip digits and the same switch to exponents (below 1e-4, from 1e16); only the
/// exponent is written differently (`1e20` / `1e+20`, `1.5e-5` / `1.5e-05`).
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((m, e)) => {
            let e: i32 = e.parse().unwrap_or(0);
            format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
        }
        None => s,
    }
}

/// `strftime_now` of chat templates (UTC).
fn strftime_now(fmt: &str) -> String {
    crate::time::format_utc(crate::time::now_secs(), fmt)
}

#[cfg(test)]
mod tests {

    /// `tojson` writes what Python's `json.dumps` writes (separators, no HTML escaping,
    /// ensure_ascii, indent, separators, sort_keys), as transformers' filter does: golden
    /// strings from `tests/golden/make_jinja_golden.py`.
    #[test]
    fn tojson_matches_python_json_dumps() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/jinja_golden.json"
        );
        let golden: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = golden["tojson"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        for c in cases {
            let kwargs = c["kwargs"].as_object().unwrap();
            let kw = Kwargs::from_iter(
                kwargs
                    .iter()
                    .map(|(k, v)| (k.as_str(), Value::from_serialize(v))),
            );
            let got = tojson(Value::from_serialize(&c["value"]), kw).unwrap();
            assert_eq!(
                got.as_str().unwrap(),
                c["json"].as_str().unwrap(),
                "{kwargs:?}"
            );
        }
        // An unknown keyword is an error, not ignored.
        let kw = Kwargs::from_iter([("indnet", Value::from(2))]);
        assert!(tojson(Value::from(1), kw).is_err());
        assert_eq!(py_float(1e20), "1e+20");
        assert_eq!(py_float(0.0001), "0.0001");
        assert_eq!(py_float(1.5e-5), "1.5e-05");
        assert_eq!(py_float(-2.0), "-2.0");
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(9999999999999998.0), "9999999999999998.0");
        assert_eq!(py_float(0.00009), "9e-05");
    }

    /// none is neither iterable nor a sequence (Python's tests), so guards like
    /// `tools is iterable and tools | length > 0` hold with no tools.
    #[test]
    fn python_iterable_and_sequence_tests() {
        let t = JinjaTemplate::new(
            "{{ tools is iterable }} {{ tools is sequence }} {{ 'ab' is sequence }} \
             {{ x is iterable }} {% for m in messages %}{{ m.content }}{% endfor %}",
            &SpecialTokens::gpt2(),
        )
        .unwrap();
        let out = t.render_plain(&[Message::user("hi")], &[], false).unwrap();
        assert_eq!(out, "False False True True hi");
    }
    use super::*;

    #[test]
    fn generation_tags_are_rewritten_keeping_whitespace_control() {
        let (s, found) = rewrite_generation("a{%- generation -%}b{% endgeneration %}c{% if x %}");
        assert!(found);
        assert_eq!(
            s,
            "a{%- if true %}\u{FDD0}{% endif -%}b{% if true %}\u{FDD1}{% endif %}c{% if x %}"
        );
        assert!(!rewrite_generation("{% for m in messages %}").1);
    }

    #[test]
    fn pipe_tokens_are_found() {
        let t = pipe_tokens("{{ '<|im_start|>' + role }}<|im_end|> <| not |> a|b");
        assert_eq!(t, vec!["<|im_start|>", "<|im_end|>"]);
    }

    #[test]
    fn config_specials() {
        let v: Json = serde_json::json!({
            "bos_token": {"content": "<s>"}, "eos_token": "</s>",
            "chat_template": [{"name": "default", "template": "x"}, {"name": "tool_use", "template": "y"}],
            "added_tokens_decoder": {"1": {"content": "<s>", "special": true},
                                      "32000": {"content": "<|im_end|>", "special": true}}
        });
        let s = specials_from_config(&v);
        assert_eq!(s.bos.as_deref(), Some("<s>"));
        assert_eq!(s.eos.as_deref(), Some("</s>"));
        assert_eq!(s.additional, vec!["<|im_end|>".to_string()]);
        assert_eq!(chat_template_from_config(&v).as_deref(), Some("x"));
    }
}
