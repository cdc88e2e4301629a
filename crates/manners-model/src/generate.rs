//! Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p), seeded,
//! with stop token ids, stop strings, a token budget and streaming.
//!
//! Run it on a non-autodiff model (`model.valid()`, or a model built on a plain device): a
//! forward pass on an autodiff device without `backward()` keeps its graph alive.

use burn::prelude::*;
use rand::SeedableRng;
use rand::distr::{Distribution, weighted::WeightedIndex};
use rand::rngs::StdRng;

use crate::cache::KvCache;
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// How the next token is picked.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token.
    Greedy,
    /// A draw from the distribution: logits / temperature, then top-k, then top-p (nucleus).
    Sample {
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
    },
}

impl Sampling {
    /// Sampling from a temperature (0: greedy), top-k and top-p, checked: a temperature that
    /// is negative or not finite, `top_k` 0 or `top_p` outside (0, 1] is an error naming it.
    pub fn new(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> Result<Self> {
        let s = if temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
            }
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks the parameters can be sampled with (see [`Sampling::new`]).
    pub fn validate(&self) -> Result<()> {
        let Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } = self
        else {
            return Ok(());
        };
        let bad = |m: String| Err(ModelError::Generation(m));
        if !(temperature.is_finite() && *temperature > 0.0) {
            return bad(format!(
                "temperature {temperature} must be a finite number >= 0 (0: greedy)"
            ));
        }
        if *top_k == Some(0) {
            return bad("top_k must be at least 1".into());
        }
        if let Some(p) = top_p
            && !(*p > 0.0 && *p <= 1.0)
        {
            return bad(format!("top_p {p} must be in (0, 1]"));
        }
        Ok(())
    }
}

/// Generation settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationConfig {
    /// Most new tokens per prompt.
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Seed of the sampler (ignored by greedy decoding).
    pub seed: u64,
    /// Generation stops when one of these is produced (not included in the output).
    pub stop_token_ids: Vec<u32>,
    /// Generation stops when the text contains one of these (cut from the output).
    pub stop_strings: Vec<String>,
}

impl GenerationConfig {
    /// Greedy decoding of up to `max_new_tokens` for a model of `ctx` positions (capped so at
    /// least one prompt token fits), stopping at any of `stop_token_ids` or `stop_strings`.
    pub fn stopping_at(
        max_new_tokens: usize,
        ctx: usize,
        mut stop_token_ids: Vec<u32>,
        stop_strings: Vec<String>,
    ) -> Self {
        let mut seen = std::collections::HashSet::new();
        stop_token_ids.retain(|id| seen.insert(*id));
        GenerationConfig {
            max_new_tokens: max_new_tokens.min(ctx.saturating_sub(1)).max(1),
            stop_token_ids,
            stop_strings,
            ..Default::default()
        }
    }

    /// This config with its budget lowered so that a prompt of `len` tokens stays whole in a
    /// context of `ctx` positions, but not below a quarter of the context (or the budget itself
    /// when smaller): a prompt longer than that still loses its oldest tokens in [`Self::fit`].
    /// Without this, a small-context model would lose the head of every prompt (its BOS and
    /// the question) to an answer budget it rarely uses.
    pub fn for_prompt(&self, len: usize, ctx: usize) -> GenerationConfig {
        let floor = self.max_new_tokens.min((ctx / 4).max(1));
        let room = ctx.saturating_sub(len);
        GenerationConfig {
            max_new_tokens: self.max_new_tokens.min(room.max(floor)),
            ..self.clone()
        }
    }

    /// The most recent part of `prompt` that leaves room for this config's new tokens in a
    /// context of `ctx` positions (the whole prompt when it fits).
    pub fn fit<'a>(&self, prompt: &'a [u32], ctx: usize) -> &'a [u32] {
        let keep = ctx.saturating_sub(self.max_new_tokens).max(1);
        &prompt[prompt.len().saturating_sub(keep)..]
    }
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 64,
            sampling: Sampling::Greedy,
            seed: 0,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was produced.
    StopToken(u32),
    /// A stop string appeared in the text.
    StopString(String),
    /// The token budget ran out.
    MaxTokens,
}

/// One finished generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// New tokens, without the stop token.
    pub tokens: Vec<u32>,
    /// Decoded new text, cut before any stop string.
    pub text: String,
    pub stop: StopReason,
}

impl Generation {
    /// True when generation ended on a stop token or string rather than the budget.
    pub fn stopped_cleanly(&self) -> bool {
        !matches!(self.stop, StopReason::MaxTokens)
    }
}

/// Picks tokens from logits on the host, reproducibly from a seed.
pub struct Sampler {
    sampling: Sampling,
    rng: StdRng,
}

impl Sampler {
    pub fn new(sampling: Sampling, seed: u64) -> Self {
        Sampler {
            sampling,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Picks one token id from a row of logits.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        match &self.sampling {
            Sampling::Greedy => argmax(logits),
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
            } => {
                if *temperature <= 0.0 {
                    return argmax(logits);
                }
                let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
                let by_logit =
                    |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
                if let Some(k) = top_k.filter(|&k| k > 0 && k < idx.len()) {
                    idx.select_nth_unstable_by(k - 1, by_logit);
                    idx.truncate(k);
                }
                idx.sort_unstable_by(by_logit);
                let max = logits[idx[0] as usize];
                let mut probs: Vec<f64> = idx
                    .iter()
                    .map(|&i| (((logits[i as usize] - max) / temperature) as f64).exp())
                    .collect();
                let total: f64 = probs.iter().sum();
                if let Some(p) = top_p.filter(|&p| p > 0.0 && p < 1.0) {
                    // Keep the smallest prefix whose mass reaches p (always at least one token).
                    let mut acc = 0.0;
                    let mut keep = probs.len();
                    for (n, q) in probs.iter().enumerate() {
                        acc += q / total;
                        if acc >= p as f64 {
                            keep = n + 1;
                            break;
                        }
                    }
                    probs.truncate(keep);
                    idx.truncate(keep);
                }
                match WeightedIndex::new(&probs) {
                    Ok(w) => idx[w.sample(&mut self.rng)],
                    Err(_) => idx[0],
                }
            }
        }
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Incremental text of one row: decodes the new tokens, finds stop strings, and releases text
/// for streaming only when it can no longer turn into a stop string or a partial character.
struct RowState {
    tokens: Vec<u32>,
    emitted: usize,
    done: Option<StopReason>,
    text: String,
}

impl RowState {
    fn new() -> Self {
        RowState {
            tokens: Vec::new(),
            emitted: 0,
            done: None,
            text: String::new(),
        }
    }

    /// Adds a token; returns the text now safe to stream.
    fn push(&mut self, tok: &Tokenizer, id: u32, cfg: &GenerationConfig) -> String {
        if cfg.stop_token_ids.contains(&id) {
            self.done = Some(StopReason::StopToken(id));
            return self.flush();
        }
        self.tokens.push(id);
        self.text = tok.decode(&self.tokens, false);
        for s in &cfg.stop_strings {
            if let Some(at) = self.text.find(s.as_str()).filter(|_| !s.is_empty()) {
                self.text.truncate(at);
                self.done = Some(StopReason::StopString(s.clone()));
                return self.flush();
            }
        }
        if self.tokens.len() >= cfg.max_new_tokens {
            self.done = Some(StopReason::MaxTokens);
            return self.flush();
        }
        // Hold back a trailing partial UTF-8 sequence and any suffix that may begin a stop string.
        let mut safe = self.text.len();
        if self.text.ends_with('\u{FFFD}') {
            safe -= '\u{FFFD}'.len_utf8();
        }
        for s in &cfg.stop_strings {
            for k in (1..s.len()).rev() {
                if s.is_char_boundary(k) && self.text[..safe].ends_with(&s[..k]) {
                    safe = safe.min(self.text[..safe].len() - k);
                    break;
                }
            }
        }
        self.release(safe)
    }

    fn flush(&mut self) -> String {
        let n = self.text.len();
        self.release(n)
    }

    fn release(&mut self, upto: usize) -> String {
        if upto <= self.emitted || !self.text.is_char_boundary(upto) {
            return String::new();
        }
        let out = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        out
    }
}

/// Generates from one prompt, calling `on_text` with each piece of new text as it becomes final
/// (for streaming; pass `|_| {}` to ignore).
pub fn generate(
    model: &Model,
    tok: &Tokenizer,
    prompt: &[u32],
    cfg: &GenerationConfig,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    let mut out =
        generate_batch_inner(model, tok, &[prompt.to_vec()], cfg, &mut |_, s| on_text(s))?;
    Ok(out.remove(0))
}

/// Generates from several prompts at once (left-padded into one batch): much faster than one at
/// a time for evaluation. Results are in prompt order; with greedy decoding each equals what
/// [`generate`] gives for that prompt alone.
pub fn generate_batch(
    model: &Model,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
) -> Result<Vec<Generation>> {
    generate_batch_inner(model, tok, prompts, cfg, &mut |_, _| {})
}

fn generate_batch_inner(
    model: &Model,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Generation>> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    cfg.sampling.validate()?;
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(ModelError::Generation(format!("prompt {i} is empty")));
    }
    let vocab = model.vocab_size();
    if let Some(&bad) = prompts.iter().flatten().find(|&&id| id as usize >= vocab) {
        return Err(ModelError::Generation(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        )));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    // The last new token is never fed back, so it needs no position.
    let needed = longest + cfg.max_new_tokens.saturating_sub(1);
    if needed > model.n_positions() {
        return Err(ModelError::ContextOverflow {
            needed,
            max: model.n_positions(),
        });
    }
    let device = model.device();
    let b = prompts.len();
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let pad_id = i64::from(prompts[0][0]);
    let mut ids = Vec::with_capacity(b * longest);
    for (p, &pad) in prompts.iter().zip(&pads) {
        ids.extend(std::iter::repeat_n(pad_id, pad));
        ids.extend(p.iter().map(|&x| i64::from(x)));
    }
    let mut cache = KvCache::with_left_padding(pads);
    cache.reserve(needed);
    let mut samplers: Vec<Sampler> = (0..b)
        .map(|r| Sampler::new(cfg.sampling.clone(), cfg.seed.wrapping_add(r as u64)))
        .collect();
    let mut rows: Vec<RowState> = (0..b).map(|_| RowState::new()).collect();
    let mut input = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, longest]), &device);
    if cfg.max_new_tokens == 0 {
        return Ok(rows
            .into_iter()
            .map(|_| Generation {
                tokens: vec![],
                text: String::new(),
                stop: StopReason::MaxTokens,
            })
            .collect());
    }
    loop {
        let logits = model.forward_cached(input, &mut cache); // [b, vocab]
        let data = logits.into_data().convert::<f32>();
        let flat = data
            .as_slice::<f32>()
            .map_err(|e| ModelError::Generation(format!("{e:?}")))?;
        let mut next = Vec::with_capacity(b);
        for (r, row) in rows.iter_mut().enumerate() {
            if row.done.is_some() {
                next.push(pad_id);
                continue;
            }
            let id = samplers[r].pick(&flat[r * vocab..(r + 1) * vocab]);
            let piece = row.push(tok, id, cfg);
            if !piece.is_empty() {
                on_text(r, &piece);
            }
            next.push(i64::from(id));
        }
        if rows.iter().all(|r| r.done.is_some()) {
            break;
        }
        input = Tensor::from_data(TensorData::new(next, [b, 1]), &device);
    }
    Ok(rows
        .into_iter()
        .map(|r| Generation {
            tokens: r.tokens,
            text: r.text,
            stop: r.done.unwrap_or(StopReason::MaxTokens),
        })
        .collect())
}

/// Reference decoding without a cache: re-runs the whole sequence for every new token. Slow;
/// kept to test that the cached path gives the same tokens.
pub fn generate_greedy_uncached(model: &Model, prompt: &[u32], max_new_tokens: usize) -> Vec<u32> {
    let device = model.device();
    let mut seq: Vec<i64> = prompt.iter().map(|&x| i64::from(x)).collect();
    let mut out = Vec::new();
    for _ in 0..max_new_tokens {
        let t = seq.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(seq.clone(), [1, t]), &device);
        let logits = model
            .forward(ids)
            .narrow(1, t - 1, 1)
            .reshape([model.vocab_size()]);
        let v = logits
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        let id = argmax(&v);
        out.push(id);
        seq.push(i64::from(id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_and_prompts_fit_the_context() {
        let c = GenerationConfig::stopping_at(48, 64, vec![3, 5, 3], vec![]);
        assert_eq!(c.max_new_tokens, 48);
        assert_eq!(c.stop_token_ids, vec![3, 5]);
        let p: Vec<u32> = (0..30).collect();
        assert_eq!(c.fit(&p, 64), &p[14..], "16 prompt tokens + 48 new = 64");
        assert_eq!(c.fit(&p[..10], 64), &p[..10]);
        let tiny = GenerationConfig::stopping_at(48, 8, vec![], vec![]);
        assert_eq!((tiny.max_new_tokens, tiny.fit(&p, 8).len()), (7, 1));
        // A 26-token prompt keeps its head: the budget shrinks to the 38 positions left...
        let short = c.for_prompt(26, 64);
        assert_eq!(short.max_new_tokens, 38);
        assert_eq!(short.fit(&p[..26], 64), &p[..26]);
        assert_eq!(short.stop_token_ids, c.stop_token_ids);
        // ...but never below a quarter of the context: a 60-token prompt loses 12 tokens.
        let long: Vec<u32> = (0..60).collect();
        let l = c.for_prompt(60, 64);
        assert_eq!((l.max_new_tokens, l.fit(&long, 64)), (16, &long[12..]));
        // A budget already below the floor is kept; a prompt that fits changes nothing.
        let small = GenerationConfig::stopping_at(8, 64, vec![], vec![]);
        assert_eq!(small.for_prompt(63, 64).max_new_tokens, 8);
        assert_eq!(c.for_prompt(10, 64).max_new_tokens, 48);
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(Sampling::Greedy, 0);
        assert_eq!(s.pick(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(
            Sampling::Sample {
                temperature: 1.0,
                top_k: Some(1),
                top_p: None,
            },
            7,
        );
        for _ in 0..20 {
            assert_eq!(s.pick(&[0.1, 3.0, -1.0, 2.9]), 1);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities 0.5, 0.3, 0.15, 0.05 (as logits, shuffled). top_p 0.7: the nucleus is
        // the two most likely (0.8 >= 0.7), renormalised to 0.625 / 0.375. Without top-p the
        // other two would be drawn 20% of the time; with the wrong cut (one token, or three)
        // the frequencies move far outside the tolerance (4 standard deviations, 2,000 draws).
        let p = [0.15f32, 0.5, 0.05, 0.3];
        let logits: Vec<f32> = p.iter().map(|x| x.ln() + 3.0).collect();
        let mut s = Sampler::new(
            Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.7),
            },
            1,
        );
        let mut counts = [0usize; 4];
        for _ in 0..2000 {
            counts[s.pick(&logits) as usize] += 1;
        }
        assert_eq!(counts[0] + counts[2], 0, "outside the nucleus: {counts:?}");
        let top = counts[1] as f64 / 2000.0;
        assert!(
            (top - 0.625).abs() < 0.044,
            "{top} (want 0.625): {counts:?}"
        );
        // top_p 0.4 keeps only the most likely token: sampling is then greedy.
        let mut s = Sampler::new(
            Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.4),
            },
            2,
        );
        assert!((0..200).all(|_| s.pick(&logits) == 1));
    }

    #[test]
    fn sampling_is_seeded() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let cfg = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(cfg.clone(), 42);
            (0..30).map(|_| s.pick(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(cfg.clone(), 42);
            (0..30).map(|_| s.pick(&logits)).collect()
        };
        let c: Vec<u32> = {
            let mut s = Sampler::new(cfg, 43);
            (0..30).map(|_| s.pick(&logits)).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // logits ln(1), ln(3): expect token 1 about 75% of the time.
        let logits = [0.0f32, 3f32.ln()];
        let mut s = Sampler::new(
            Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: None,
            },
            3,
        );
        let ones = (0..4000).filter(|_| s.pick(&logits) == 1).count();
        let frac = ones as f64 / 4000.0;
        assert!((frac - 0.75).abs() < 0.03, "{frac}");
    }
}
