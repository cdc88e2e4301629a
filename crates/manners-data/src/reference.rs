//! Is a generated answer right? A reference answer and the rule that matches it, used to score
//! held-out questions (no model needed).

use serde::{Deserialize, Serialize};

/// A reference answer to one question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// What kind of question it answers (accuracy is also reported per kind).
    pub kind: String,
    /// `Lima`, `O`, `8`, ...
    pub answer: String,
    /// Match case too (element symbols: `He` must not be found in "he said").
    #[serde(default)]
    pub case_sensitive: bool,
}

impl Reference {
    pub fn new(kind: impl Into<String>, answer: impl Into<String>) -> Self {
        Reference {
            kind: kind.into(),
            answer: answer.into(),
            case_sensitive: false,
        }
    }

    /// Whether `response` gives the answer: it contains `answer` as a whole word (not inside a
    /// longer word or number: `2` is not found in `12`, `Niger` not in `Nigeria`),
    /// case-insensitively unless [`Reference::case_sensitive`]. Plain substring search would
    /// count every response holding an `o` as naming oxygen's symbol.
    pub fn is_correct(&self, response: &str) -> bool {
        if self.case_sensitive {
            contains_word(response, &self.answer)
        } else {
            contains_word(&response.to_lowercase(), &self.answer.to_lowercase())
        }
    }

    /// Whether `response` is the answer and nothing else (case-insensitive, ignoring
    /// surrounding whitespace and final `.`/`!`).
    pub fn is_exact(&self, response: &str) -> bool {
        let clean = |s: &str| s.trim().trim_end_matches(['.', '!']).trim().to_lowercase();
        !self.answer.is_empty() && clean(response) == clean(&self.answer)
    }
}

/// `word` occurs in `text` with no letter or digit right before or after it.
pub fn contains_word(text: &str, word: &str) -> bool {
    !word.is_empty()
        && text.match_indices(word).any(|(i, m)| {
            !text[..i]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
                && !text[i + m.len()..]
                    .chars()
                    .next()
                    .is_some_and(char::is_alphanumeric)
        })
}
