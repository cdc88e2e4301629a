//! Mixing raw text into SFT data (every raw token supervised), to limit forgetting.

use std::fmt;

use crate::encode::split_long;
use crate::rng::{SplitMix64, mix};
use crate::template::Encoded;

/// What [`mix_texts`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MixReport {
    pub sft_examples: usize,
    pub sft_tokens: usize,
    /// Raw-text pieces available (documents split to `max_len`).
    pub text_available: usize,
    pub text_added: usize,
    pub text_tokens: usize,
    /// Fraction of examples in the result that are raw text.
    pub fraction: f64,
}

impl fmt::Display for MixReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tok_frac = self.text_tokens as f64 / (self.text_tokens + self.sft_tokens).max(1) as f64;
        write!(
            f,
            "mixed {} raw-text pieces ({} tokens, {:.1}% of tokens) into {} SFT examples: \
             {:.1}% of examples (of {} pieces available)",
            self.text_added,
            self.text_tokens,
            100.0 * tok_frac,
            self.sft_examples,
            100.0 * self.fraction,
            self.text_available
        )
    }
}

/// Mixes raw-text documents (encoded with [`encode_text`](crate::encode_text): every token
/// supervised) into SFT examples so that `fraction` of the resulting examples are raw text.
/// Documents longer than `max_len` are split first; pieces are drawn without replacement
/// (seeded), so fewer are added when not enough exist. Raw text is appended at the end: the
/// loader shuffles.
pub fn mix_texts(
    sft: Vec<Encoded>,
    texts: &[Encoded],
    fraction: f64,
    seed: u64,
    max_len: usize,
) -> (Vec<Encoded>, MixReport) {
    let sft_tokens = sft.iter().map(Encoded::len).sum();
    let (pieces, report) = mix_pieces(sft.len(), sft_tokens, texts, fraction, seed, max_len);
    let mut out = sft;
    out.extend(pieces);
    (out, report)
}

/// The raw-text pieces [`mix_texts`] would append to `n_sft` SFT examples of `sft_tokens`
/// tokens (for examples that are not in memory, e.g. in a [`TokenStore`](crate::TokenStore)).
pub fn mix_pieces(
    n_sft: usize,
    sft_tokens: usize,
    texts: &[Encoded],
    fraction: f64,
    seed: u64,
    max_len: usize,
) -> (Vec<Encoded>, MixReport) {
    let mut pieces: Vec<Encoded> = texts
        .iter()
        .flat_map(|t| split_long(t, max_len))
        .filter(|e| e.len() >= 2)
        .collect();
    let n = n_sft;
    let f = if fraction.is_finite() {
        fraction.clamp(0.0, 0.99)
    } else {
        0.0
    };
    let want = (n as f64 * f / (1.0 - f)).round() as usize;
    let mut rng = SplitMix64::new(mix(seed ^ 0x313_u64));
    rng.shuffle(&mut pieces);
    let available = pieces.len();
    pieces.truncate(want);
    for p in &mut pieces {
        p.mixed = true;
    }
    let mut report = MixReport {
        sft_examples: n,
        sft_tokens,
        text_available: available,
        text_added: pieces.len(),
        text_tokens: pieces.iter().map(Encoded::len).sum(),
        fraction: 0.0,
    };
    report.fraction = pieces.len() as f64 / (n + pieces.len()).max(1) as f64;
    (pieces, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixing_fraction() {
        let sft: Vec<Encoded> = (0..90)
            .map(|_| Encoded {
                ids: vec![1, 2],
                loss_mask: vec![false, true],
                mixed: false,
            })
            .collect();
        let texts: Vec<Encoded> = (0..50)
            .map(|_| Encoded {
                ids: vec![3; 10],
                loss_mask: vec![true; 10],
                mixed: false,
            })
            .collect();
        let (mixed, r) = mix_texts(sft, &texts, 0.1, 0, 100);
        assert_eq!(r.text_added, 10);
        assert_eq!(mixed.len(), 100);
        assert!((r.fraction - 0.1).abs() < 1e-9);
        // The pieces are marked, so their loss can be reported apart.
        assert_eq!(mixed.iter().filter(|e| e.mixed).count(), 10);
    }
}
