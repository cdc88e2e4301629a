//! Seeded corruption of responses, for the noisy-vs-clean and quality experiments.

use manners_data::{Conversation, Role, SplitMix64, mix};

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

#[cfg(test)]
mod tests {
    use super::*;
    use manners_data::Message;

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
}
