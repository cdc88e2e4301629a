//! Seeded corruption for noisy-vs-clean experiments, and mixing raw text into SFT data.

use std::fmt;

use crate::conversation::{Conversation, Role};
use crate::encode::split_long;
use crate::rng::{SplitMix64, mix};
use crate::template::Encoded;

/// How a response is corrupted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Corruption {
    /// The words in random order.
    ShuffleWords,
    /// A random half of the words removed (order kept; at least one word stays).
    DropHalf,
    /// After each character, a junk character inserted with probability `per_char`.
    JunkChars { per_char: f64 },
}

const JUNK: &[char] = &[
    '#', '@', '$', '%', '^', '&', '*', '~', '|', '{', '}', '¤', '§', '¶', '•', '¿', 'þ', 'ß',
];

/// Corrupts one text.
pub fn corrupt_text(text: &str, kind: Corruption, rng: &mut SplitMix64) -> String {
    match kind {
        Corruption::ShuffleWords => {
            let mut words: Vec<&str> = text.split_whitespace().collect();
            rng.shuffle(&mut words);
            words.join(" ")
        }
        Corruption::DropHalf => {
            let words: Vec<&str> = text.split_whitespace().collect();
            let mut idx: Vec<usize> = (0..words.len()).collect();
            rng.shuffle(&mut idx);
            let keep = words.len().div_ceil(2);
            let mut kept = idx[..keep].to_vec();
            kept.sort_unstable();
            kept.iter().map(|&i| words[i]).collect::<Vec<_>>().join(" ")
        }
        Corruption::JunkChars { per_char } => {
            let mut out = String::with_capacity(text.len() * 2);
            for c in text.chars() {
                out.push(c);
                if rng.unit() < per_char {
                    out.push(JUNK[rng.below(JUNK.len() as u64) as usize]);
                }
            }
            out
        }
    }
}

/// Corrupts the assistant turns of a seeded `rate` fraction of the conversations (each chosen
/// independently with probability `rate`). Returns the data and how many were corrupted.
pub fn corrupt_dataset(
    convs: &[Conversation],
    kind: Corruption,
    rate: f64,
    seed: u64,
) -> (Vec<Conversation>, usize) {
    let mut rng = SplitMix64::new(mix(seed ^ 0xC0_22_u64));
    let mut n = 0;
    let out = convs
        .iter()
        .map(|c| {
            if rng.unit() >= rate {
                return c.clone();
            }
            n += 1;
            let mut c = c.clone();
            for m in c.messages.iter_mut().filter(|m| m.role == Role::Assistant) {
                let new = corrupt_text(&m.content, kind, &mut rng);
                if !new.trim().is_empty() {
                    m.content = new;
                }
            }
            c
        })
        .collect();
    (out, n)
}

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
    let mut pieces: Vec<Encoded> = texts
        .iter()
        .flat_map(|t| split_long(t, max_len))
        .filter(|e| e.len() >= 2)
        .collect();
    let n = sft.len();
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
    let mut report = MixReport {
        sft_examples: n,
        sft_tokens: sft.iter().map(Encoded::len).sum(),
        text_available: available,
        text_added: pieces.len(),
        text_tokens: pieces.iter().map(Encoded::len).sum(),
        fraction: 0.0,
    };
    report.fraction = pieces.len() as f64 / (n + pieces.len()).max(1) as f64;
    let mut out = sft;
    out.extend(pieces);
    (out, report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::Message;

    #[test]
    fn corruptions_are_seeded() {
        let t = "the quick brown fox jumps over the lazy dog";
        let a = corrupt_text(t, Corruption::ShuffleWords, &mut SplitMix64::new(1));
        let b = corrupt_text(t, Corruption::ShuffleWords, &mut SplitMix64::new(1));
        assert_eq!(a, b);
        let mut w: Vec<&str> = a.split(' ').collect();
        let mut o: Vec<&str> = t.split(' ').collect();
        w.sort_unstable();
        o.sort_unstable();
        assert_eq!(w, o);
        let h = corrupt_text(t, Corruption::DropHalf, &mut SplitMix64::new(1));
        assert_eq!(h.split(' ').count(), 5);
        let j = corrupt_text(
            t,
            Corruption::JunkChars { per_char: 1.0 },
            &mut SplitMix64::new(1),
        );
        assert_eq!(j.chars().count(), 2 * t.chars().count());
        assert_eq!(
            corrupt_text(
                t,
                Corruption::JunkChars { per_char: 0.0 },
                &mut SplitMix64::new(1)
            ),
            t
        );
    }

    #[test]
    fn dataset_rate() {
        let c = Conversation::new(vec![Message::user("q"), Message::assistant("a b c d")]);
        let convs = vec![c; 1000];
        let (_, n) = corrupt_dataset(&convs, Corruption::DropHalf, 0.3, 5);
        assert!((250..350).contains(&n), "{n}");
    }

    #[test]
    fn mixing_fraction() {
        let sft: Vec<Encoded> = (0..90)
            .map(|_| Encoded {
                ids: vec![1, 2],
                loss_mask: vec![false, true],
            })
            .collect();
        let texts: Vec<Encoded> = (0..50)
            .map(|_| Encoded {
                ids: vec![3; 10],
                loss_mask: vec![true; 10],
            })
            .collect();
        let (mixed, r) = mix_texts(sft, &texts, 0.1, 0, 100);
        assert_eq!(r.text_added, 10);
        assert_eq!(mixed.len(), 100);
        assert!((r.fraction - 0.1).abs() < 1e-9);
    }
}
