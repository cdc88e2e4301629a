//! # manners-assets
//!
//! The data manners ships in `assets/`, made from its public sources. Not part of the
//! "dataset file -> batch" pipeline of `manners-data` (which it builds on): this is the
//! project's own data, rebuilt deterministically by `manners data build-default` and
//! `manners pretrain`.
//!
//! ```text
//! assets/knowledge/*.tsv ──Knowledge::load──▶ Knowledge ─┬─build_corpus──────▶ pretraining corpus (+ books)
//!                                                        └─build_default_set─▶ assets/sft/*.jsonl
//! ```
//!
//! - [`knowledge`]: the tables (countries, elements, US states, WordNet words), with errors
//!   naming file, line and field.
//! - [`corpus`]: the books cut into documents with the facts written as varied prose through
//!   them; held-out documents for measuring forgetting.
//! - [`default_set`]: the default instruction set: an entity split with no held-out leakage,
//!   questions in several phrasings, multi-turn follow-ups, system prompts, identity pairs,
//!   held-out questions with reference answers.
//! - [`noise`]: seeded corruption of responses, for the noisy-vs-clean experiments.
//!
//! ```no_run
//! use std::path::Path;
//! use manners_assets::{DefaultSetConfig, Knowledge, build_default_set, load_identity, write_default_set};
//! # fn main() -> Result<(), manners_data::DataError> {
//! let k = Knowledge::load(Path::new("assets/knowledge"))?;
//! let identity = load_identity(Path::new("assets/instruct/identity.json"))?;
//! let set = build_default_set(&k, &identity, &DefaultSetConfig::default());
//! write_default_set(Path::new("assets/sft"), &set)?; // the same files, byte for byte
//! # Ok(()) }
//! ```

pub mod corpus;
pub mod default_set;
pub mod knowledge;
pub mod noise;

pub use corpus::{Corpus, CorpusConfig, build_corpus, load_books};
pub use default_set::{
    DEFAULT_SET_FILES, DefaultSet, DefaultSetConfig, DefaultSetStats, EntityRef, HeldoutFact,
    LOOKUP_SYSTEM, LOOKUP_TOOL, MAX_CONVERSATION_CHARS, SHORT_ANSWER_KINDS, build_default_set,
    load_identity, lookup_call, lookup_conversation, lookup_field, lookup_prompt, lookup_query,
    lookup_table, parse_query, run_lookup, write_default_set,
};
pub use knowledge::Knowledge;
pub use noise::{Corruption, corrupt_dataset, corrupt_text};
