//! # manners-data
//!
//! Everything between a dataset file and a host-side batch, with no Burn in it:
//!
//! ```text
//! file ──read_conversations──▶ Vec<Conversation> ──ChatTemplate::encode──▶ Encoded { ids, loss_mask }
//!      ──encode_dataset (max_len + LengthPolicy)──▶ Vec<Encoded> ──Loader (pack / pad)──▶ HostBatch
//! ```
//!
//! Datasets larger than memory take the same steps as a stream: [`encode_files`] reads the
//! files record by record (dedup, quality filter, held-out split, encoding in chunks) into a
//! [`TokenStore`] on disk, and the [`Loader`] reads each batch's examples back from it
//! ([`Examples::Store`]); memory holds an index of 9 bytes per example.
//!
//! ```no_run
//! use std::path::Path;
//! use manners_data::*;
//! # fn main() -> Result<(), DataError> {
//! # let tok: tokenizers::Tokenizer = unimplemented!();
//! let (convs, report) = read_conversations(Path::new("data.jsonl"), Format::Auto, BadRecordPolicy::Skip)?;
//! println!("{report}");
//! let template = ChatTemplate::builtin("chatml", &SpecialTokens::gpt2())?;
//! // the caller adds template.required_special_tokens() to the tokenizer if missing
//! let (examples, enc) = encode_dataset(&convs, &template, &tok, MaskMode::Assistant, 513, LengthPolicy::Truncate)?;
//! println!("{enc}");
//! let mut loader = Loader::new(examples, BatchConfig { batch_size: 8, seq_len: 512, ..BatchConfig::default() })?;
//! let batch: HostBatch = loader.next_batch()?;  // inputs, targets, loss_mask, positions, doc_ids
//! let cursor = loader.state();                   // serde: save with the checkpoint
//! # Ok(()) }
//! ```
//!
//! ## Contracts other crates rely on
//! - The tokenizer is `tokenizers::Tokenizer` itself. Templates never let the tokenizer add
//!   special tokens (`add_special_tokens = false`); they write BOS/EOS themselves.
//! - `Encoded { ids, loss_mask }`: same length; `loss_mask[i]` means token `i` is a target.
//!   An example of `n` tokens gives `n - 1` positions: `inputs = ids[..n-1]`,
//!   `targets = ids[1..]`, `mask = loss_mask[1..]`; `max_len = seq_len + 1`.
//! - `HostBatch`: row-major `[batch, seq_len]`; padding is `doc_ids == 0` with mask false
//!   (pad id = `BatchConfig::pad_id`, may equal EOS); documents of a packed row are numbered
//!   1, 2, ... and positions restart at 0 for each; attend only where doc ids are equal.
//! - `Loader::new` and `Loader::restore` return `Result` (they validate the examples against
//!   the config); `LoaderState` is serde and a restored loader yields exactly the batches the
//!   original would have.
//! - Templates: see [`ChatTemplate`] and the table in its module docs for the exact frames,
//!   which tokens are supervised, and the tokenization rules.
//! - Errors: one [`DataError`]; variants from records name file, line and field.
//!
//! The data the project ships (knowledge tables, pretraining corpus, the default instruction
//! set) is made by the `manners-assets` crate, not here: this crate is "file -> batch" for any
//! dataset.

mod batch;
mod conversation;
mod encode;
mod error;
mod inspect;
mod jsonl;
mod mix;
mod quality;
mod read;
mod reference;
mod rng;
mod store;
mod stream;
mod template;
mod time;

pub use batch::{
    BatchConfig, HostBatch, Loader, LoaderState, batches, best_fit_decreasing, heldout_indices,
    pack_stream, split_heldout, split_heldout_at_most,
};
pub use conversation::{Conversation, JsonText, Message, Origin, Reply, Role, ToolCall, last_user};
pub use encode::{
    EncodeReport, LengthPolicy, encode_dataset, encode_text, encode_texts, split_long,
};
pub use error::{DataError, RejectReason, Result};
pub use inspect::{
    Finding, Highlight, InspectOptions, InspectReport, LINT_CHECKS, LintOptions, LintReport,
    Severity, debug_render, inspect, length_histogram, lint,
};
pub use jsonl::{conversation_json, write_conversations, write_json_lines, write_texts};
pub use mix::{MixReport, mix_pieces, mix_texts};
pub use quality::{
    Deduper, FilterReport, QualityFilter, QualityGate, QualityScores, dedup, dedup_key,
    filter_quality, normalize_text, quality_scores,
};
pub use read::{
    BadRecordPolicy, Format, ReadReport, Rejection, parse_conversation, parse_record, read_bytes,
    read_conversations, read_texts, stream_conversations,
};
pub use reference::{Reference, contains_word};
pub use rng::{SplitMix64, mix};
pub use store::{Examples, TokenStore, TokenStoreWriter};
pub use stream::{StreamOptions, Streamed, encode_files};
pub use template::{
    ChatTemplate, Encoded, MaskMode, SpecialTokens, TEMPLATE_FILE, TemplateSpec, choose_template,
    saved_template, strip_generation_tags, tool_call_json,
};
pub use time::{format_utc, now_secs};

#[cfg(test)]
mod tests {
    /// Types other crates move across threads (the trainer's data thread, the TUI).
    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::ChatTemplate>();
        check::<super::Loader>();
        check::<super::HostBatch>();
        check::<super::DataError>();
        check::<super::Conversation>();
    }
}
