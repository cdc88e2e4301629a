//! Encoded examples on disk, for datasets larger than memory: a dataset is encoded once, as a
//! stream, into a temporary file, and the loader reads each batch's examples back. What stays
//! in memory is an index of 9 bytes per example (offset and raw-text flag).
//!
//! File layout: example after example, each as its token ids (`u32`, little endian) followed by
//! its loss mask (one byte per token). The file is private to the process: on Unix it is
//! unlinked as soon as it is created (the open handle keeps it alive, and nothing is left
//! behind even after `kill -9`); elsewhere it is removed when the store is dropped.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{DataError, Result};
use crate::rng::mix;
use crate::template::Encoded;

const BYTES_PER_TOKEN: u64 = 5;

/// The starting value of [`Fingerprint`] (shared with the in-memory examples' fingerprint).
const FINGERPRINT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// A running fingerprint of examples (ids, mask and length of each, in order): a restored
/// loader checks it to be sure it reads the same data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint(pub(crate) u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(FINGERPRINT_SEED)
    }
}

impl Fingerprint {
    pub(crate) fn add(&mut self, e: &Encoded) {
        let mut h = mix(self.0 ^ e.ids.len() as u64);
        for (&id, &m) in e.ids.iter().zip(&e.loss_mask) {
            h = mix(h ^ (u64::from(id) << 1 | u64::from(m)));
        }
        self.0 = h;
    }
}

/// Encoded examples in a temporary file, read back one example at a time.
#[derive(Debug)]
pub struct TokenStore {
    file: File,
    /// Removed on drop where the file could not be unlinked at creation (not Unix).
    remove: Option<PathBuf>,
    /// `offsets[i]..offsets[i + 1]`: example `i`'s tokens, counted in tokens from the start.
    offsets: Vec<u64>,
    /// Examples that are raw text mixed into SFT data ([`Encoded::mixed`]).
    mixed: Vec<bool>,
    fingerprint: u64,
    supervised: u64,
}

/// Appends examples to a new [`TokenStore`]; [`finish`](Self::finish) makes it readable.
#[derive(Debug)]
pub struct TokenStoreWriter {
    out: BufWriter<File>,
    path: PathBuf,
    remove: Option<PathBuf>,
    offsets: Vec<u64>,
    mixed: Vec<bool>,
    fingerprint: Fingerprint,
    supervised: u64,
    buf: Vec<u8>,
}

static NEXT_STORE: AtomicU64 = AtomicU64::new(0);

impl TokenStore {
    /// Starts a store in a new temporary file inside `dir` (created if missing). Put it on a
    /// disk, not a memory-backed `/tmp`, when the point is to save memory.
    pub fn create_in(dir: &Path) -> Result<TokenStoreWriter> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let path = dir.join(format!(
            ".manners-tokens-{}-{}.tmp",
            std::process::id(),
            NEXT_STORE.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| DataError::io(&path, e))?;
        // On Unix the open handle keeps an unlinked file alive: nothing is left behind, even if
        // the process is killed. Elsewhere the store removes it when dropped.
        let remove = if cfg!(unix) && std::fs::remove_file(&path).is_ok() {
            None
        } else {
            Some(path.clone())
        };
        Ok(TokenStoreWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            path,
            remove,
            offsets: vec![0],
            mixed: Vec::new(),
            fingerprint: Fingerprint::default(),
            supervised: 0,
            buf: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.mixed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mixed.is_empty()
    }

    /// Tokens of example `i`.
    pub fn example_len(&self, i: usize) -> usize {
        (self.offsets[i + 1] - self.offsets[i]) as usize
    }

    /// Tokens in all examples.
    pub fn tokens(&self) -> u64 {
        self.offsets.last().copied().unwrap_or(0)
    }

    /// Supervised tokens in all examples.
    pub fn supervised(&self) -> u64 {
        self.supervised
    }

    pub fn is_mixed(&self, i: usize) -> bool {
        self.mixed[i]
    }

    /// The fingerprint of the examples, in order (equal to that of the same examples in memory).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Reads example `i` back.
    pub fn get(&self, i: usize) -> Result<Encoded> {
        let n = self.example_len(i);
        let mut buf = vec![0u8; n * BYTES_PER_TOKEN as usize];
        read_exact_at(&self.file, &mut buf, self.offsets[i] * BYTES_PER_TOKEN).map_err(|e| {
            DataError::State(format!(
                "reading example {i} back from the token store failed: {e}"
            ))
        })?;
        let (ids, mask) = buf.split_at(4 * n);
        Ok(Encoded {
            ids: ids
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            loss_mask: mask.iter().map(|&b| b != 0).collect(),
            mixed: self.mixed[i],
        })
    }
}

impl Drop for TokenStore {
    fn drop(&mut self) {
        if let Some(p) = &self.remove {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl TokenStoreWriter {
    pub fn push(&mut self, e: &Encoded) -> Result<()> {
        self.buf.clear();
        for id in &e.ids {
            self.buf.extend_from_slice(&id.to_le_bytes());
        }
        self.buf.extend(e.loss_mask.iter().map(|&m| u8::from(m)));
        let path = &self.path;
        self.out
            .write_all(&self.buf)
            .map_err(|err| DataError::io(path, err))?;
        let end = self.offsets.last().copied().unwrap_or(0) + e.ids.len() as u64;
        self.offsets.push(end);
        self.mixed.push(e.mixed);
        self.fingerprint.add(e);
        self.supervised += e.n_supervised() as u64;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.mixed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mixed.is_empty()
    }

    /// Flushes the file and returns the readable store.
    pub fn finish(mut self) -> Result<TokenStore> {
        let path = self.path.clone();
        self.out.flush().map_err(|e| DataError::io(&path, e))?;
        let remove = self.remove.take();
        let file = match self.out.into_inner() {
            Ok(f) => f,
            Err(e) => return Err(DataError::io(&path, e.into_error())),
        };
        let mut offsets = std::mem::take(&mut self.offsets);
        offsets.shrink_to_fit();
        let mut mixed = std::mem::take(&mut self.mixed);
        mixed.shrink_to_fit();
        Ok(TokenStore {
            file,
            remove,
            offsets,
            mixed,
            fingerprint: self.fingerprint.0,
            supervised: self.supervised,
        })
    }
}

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, at)
}

#[cfg(windows)]
fn read_exact_at(f: &File, mut buf: &mut [u8], mut at: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, at) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(any(unix, windows)))]
fn read_exact_at(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(buf)
}

/// The examples a [`Loader`](crate::Loader) draws from: in memory, or in a [`TokenStore`].
#[derive(Debug, Clone)]
pub enum Examples {
    Memory(Arc<Vec<Encoded>>),
    Store(Arc<TokenStore>),
}

impl Examples {
    pub fn len(&self) -> usize {
        match self {
            Examples::Memory(v) => v.len(),
            Examples::Store(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens of example `i`.
    pub fn example_len(&self, i: usize) -> usize {
        match self {
            Examples::Memory(v) => v[i].len(),
            Examples::Store(s) => s.example_len(i),
        }
    }

    /// (input, target) positions of example `i`: its tokens minus one.
    pub fn n_positions(&self, i: usize) -> usize {
        self.example_len(i).saturating_sub(1)
    }

    /// Example `i` (borrowed from memory, or read from the store).
    pub fn get(&self, i: usize) -> Result<Cow<'_, Encoded>> {
        match self {
            Examples::Memory(v) => Ok(Cow::Borrowed(&v[i])),
            Examples::Store(s) => s.get(i).map(Cow::Owned),
        }
    }

    /// Total tokens and supervised tokens.
    pub fn totals(&self) -> (u64, u64) {
        match self {
            Examples::Memory(v) => (
                v.iter().map(|e| e.len() as u64).sum(),
                v.iter().map(|e| e.n_supervised() as u64).sum(),
            ),
            Examples::Store(s) => (s.tokens(), s.supervised()),
        }
    }

    /// The fingerprint a restored loader checks (ids, masks and lengths, in order).
    pub fn fingerprint(&self) -> u64 {
        match self {
            Examples::Memory(v) => {
                let mut f = Fingerprint::default();
                for e in v.iter() {
                    f.add(e);
                }
                f.0
            }
            Examples::Store(s) => s.fingerprint(),
        }
    }
}

impl From<Vec<Encoded>> for Examples {
    fn from(v: Vec<Encoded>) -> Self {
        Examples::Memory(Arc::new(v))
    }
}

impl From<Arc<Vec<Encoded>>> for Examples {
    fn from(v: Arc<Vec<Encoded>>) -> Self {
        Examples::Memory(v)
    }
}

impl From<TokenStore> for Examples {
    fn from(s: TokenStore) -> Self {
        Examples::Store(Arc::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], sup_from: usize, mixed: bool) -> Encoded {
        Encoded {
            ids: ids.to_vec(),
            loss_mask: (0..ids.len()).map(|i| i >= sup_from).collect(),
            mixed,
        }
    }

    #[test]
    fn a_store_gives_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let written = vec![
            ex(&[1, 2, 3], 1, false),
            ex(&[u32::MAX, 0, 70_000, 5, 6], 3, true),
            ex(&[9, 8], 1, false),
        ];
        let mut w = TokenStore::create_in(dir.path()).unwrap();
        for e in &written {
            w.push(e).unwrap();
        }
        let store = w.finish().unwrap();
        assert_eq!(store.len(), 3);
        assert_eq!(store.tokens(), 10);
        assert_eq!(store.supervised(), 2 + 2 + 1);
        for (i, e) in written.iter().enumerate() {
            assert_eq!(&store.get(i).unwrap(), e, "example {i}");
        }
        // The fingerprint is the in-memory examples' one, so a cursor saved with one restores
        // against the other.
        let mem = Examples::from(written.clone());
        assert_eq!(store.fingerprint(), mem.fingerprint());
        let changed = vec![written[0].clone(), written[2].clone(), written[1].clone()];
        assert_ne!(store.fingerprint(), Examples::from(changed).fingerprint());
        // Nothing is left in the folder: the file is private to the store.
        if cfg!(unix) {
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
        drop(store);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
