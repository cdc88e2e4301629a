//! Conversation files to training examples with bounded memory: the files are read as a
//! stream (twice: once to count, once to encode), conversations are de-duplicated, filtered,
//! split into training and held-out parts and encoded in chunks, and the training examples go
//! to a [`TokenStore`] on disk. Memory holds one chunk, the held-out conversations, the store's
//! index (9 bytes per example) and, with de-duplication, 16 bytes of hash per distinct
//! conversation; never the dataset.
//!
//! The result equals reading everything into memory and running [`dedup`](crate::dedup),
//! [`filter_quality`](crate::filter_quality), [`split_heldout_at_most`](crate::split_heldout_at_most)
//! and [`encode_dataset`] on it, with one difference: the held-out split is drawn over the
//! records as read (before de-duplication and filtering, which then apply to both parts), since
//! only their count is known before the second pass.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::batch::heldout_indices;
use crate::conversation::Conversation;
use crate::encode::{EncodeReport, LengthPolicy, encode_dataset};
use crate::error::Result;
use crate::quality::{Deduper, FilterReport, QualityFilter, QualityGate};
use crate::read::{BadRecordPolicy, Format, ReadReport, stream_conversations};
use crate::store::{TokenStore, TokenStoreWriter};
use crate::template::{ChatTemplate, MaskMode};

/// Conversations encoded per chunk (in parallel inside a chunk).
const CHUNK: usize = 4096;

/// How [`encode_files`] reads, filters, splits and encodes.
#[derive(Debug, Clone)]
pub struct StreamOptions<'a> {
    pub format: Format,
    pub policy: BadRecordPolicy,
    /// Fraction of the records held out (0 for none), at most `max_heldout` of them, drawn
    /// with `seed` as [`split_heldout_at_most`](crate::split_heldout_at_most) draws them.
    pub heldout_fraction: f64,
    pub max_heldout: usize,
    pub seed: u64,
    /// Drop exact duplicates ([`dedup_key`](crate::dedup_key)), keeping the first.
    pub dedup: bool,
    pub quality: Option<QualityFilter>,
    pub template: &'a ChatTemplate,
    pub tokenizer: &'a Tokenizer,
    pub mask: MaskMode,
    pub max_len: usize,
    pub truncation: LengthPolicy,
    /// Where the token store's temporary file goes (a disk, not a memory-backed folder).
    pub store_dir: &'a Path,
}

/// What [`encode_files`] made and saw.
#[derive(Debug)]
pub struct Streamed {
    /// The training examples, still open: more (e.g. mixed raw text) may be appended before
    /// [`TokenStoreWriter::finish`].
    pub train: TokenStoreWriter,
    /// The held-out conversations, in file order (not encoded).
    pub heldout: Vec<Conversation>,
    /// One report per file (from the first pass).
    pub read: Vec<(PathBuf, ReadReport)>,
    pub dedup: Option<FilterReport>,
    pub quality: Option<FilterReport>,
    /// The training examples' encoding (held-out conversations not included).
    pub encode: EncodeReport,
}

/// Reads `files` as a stream into a token store: see the module documentation.
pub fn encode_files(files: &[PathBuf], o: &StreamOptions<'_>) -> Result<Streamed> {
    // Pass 1: count the records (and meet every bad one before any encoding work).
    let mut read = Vec::new();
    let mut n = 0usize;
    for f in files {
        let report = stream_conversations(f, o.format, o.policy, |_| {
            n += 1;
            Ok(())
        })?;
        read.push((f.clone(), report));
    }
    let held = heldout_indices(n, o.heldout_fraction, o.seed, o.max_heldout);

    // Pass 2: filter, split and encode.
    let mut dedup = o.dedup.then(Deduper::default);
    let mut quality = o.quality.map(|q| QualityGate::new(q, o.tokenizer));
    let mut train = TokenStore::create_in(o.store_dir)?;
    let mut heldout = Vec::new();
    let mut encode = EncodeReport {
        max_len: o.max_len,
        ..EncodeReport::default()
    };
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut j = 0usize;
    let flush = |chunk: &mut Vec<Conversation>,
                 train: &mut TokenStoreWriter,
                 encode: &mut EncodeReport|
     -> Result<()> {
        let (examples, report) = encode_dataset(
            chunk,
            o.template,
            o.tokenizer,
            o.mask,
            o.max_len,
            o.truncation,
        )?;
        for e in &examples {
            train.push(e)?;
        }
        encode.merge(report);
        chunk.clear();
        Ok(())
    };
    for f in files {
        // Bad records were met (and counted) in the first pass; skip them quietly now.
        stream_conversations(f, o.format, BadRecordPolicy::Skip, |c| {
            let is_held = held.binary_search(&j).is_ok();
            j += 1;
            if let Some(d) = &mut dedup
                && !d.keep(&c)
            {
                return Ok(());
            }
            if let Some(q) = &mut quality
                && !q.keep(&c)?
            {
                return Ok(());
            }
            if is_held {
                heldout.push(c);
                return Ok(());
            }
            chunk.push(c);
            if chunk.len() == CHUNK {
                flush(&mut chunk, &mut train, &mut encode)?;
            }
            Ok(())
        })?;
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut train, &mut encode)?;
    }
    Ok(Streamed {
        train,
        heldout,
        read,
        dedup: dedup.map(Deduper::into_report),
        quality: quality.map(QualityGate::into_report),
        encode,
    })
}
