//! Batching on the host: packing (best-fit-decreasing) or padding, a deterministic loader with
//! a serialisable cursor, the pretraining stream packer and the held-out split.
//!
//! An example with `n` tokens gives `n - 1` (input, target) positions: `inputs = ids[..n-1]`,
//! `targets = ids[1..]`, `mask = loss_mask[1..]`. Rows hold whole examples, so no target ever
//! crosses a document boundary. Padding is identified by position (doc id 0, mask false),
//! never by token id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::{SplitMix64, mix};
use crate::store::Examples;
use crate::template::Encoded;

/// How examples become batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchConfig {
    /// Rows per batch.
    pub batch_size: usize,
    /// Positions per row (packing); the longest example must have at most `seq_len + 1`
    /// tokens. In padding mode a batch is as long as its longest example.
    pub seq_len: usize,
    /// Pack several examples per row (best-fit-decreasing) instead of one per row.
    pub pack: bool,
    /// Shuffle (seeded) every epoch.
    pub shuffle: bool,
    pub seed: u64,
    /// Drop an epoch's last, partial batch (kept when it would be the only one).
    pub drop_last: bool,
    /// Token id written at padding positions of inputs and targets (never supervised).
    pub pad_id: u32,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            batch_size: 8,
            seq_len: 512,
            pack: true,
            shuffle: true,
            seed: 0,
            drop_last: false,
            pad_id: 0,
        }
    }
}

/// A batch as plain row-major `[batch, seq_len]` vectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostBatch {
    pub batch: usize,
    pub seq_len: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub loss_mask: Vec<bool>,
    /// Restart at 0 for every document inside a packed row.
    pub positions: Vec<u32>,
    /// 0 = padding; the documents of a row are numbered 1, 2, ...; attention is allowed only
    /// between equal doc ids (and causally).
    pub doc_ids: Vec<u32>,
    /// Targets that belong to raw text mixed into SFT data ([`Encoded::mixed`]).
    pub mixed: Vec<bool>,
    /// Supervised targets in the batch.
    pub n_supervised: usize,
    /// Of them, mixed raw text.
    pub n_mixed: usize,
    /// Non-padding positions in the batch.
    pub n_tokens: usize,
}

impl HostBatch {
    /// Assembles rows of whole examples; `seq_len` must fit every row.
    pub fn from_rows(
        examples: &[Encoded],
        rows: &[Vec<usize>],
        seq_len: usize,
        pad_id: u32,
    ) -> Self {
        let got: Result<Self> = Self::assemble(
            |i| Ok(std::borrow::Cow::Borrowed(&examples[i])),
            rows,
            seq_len,
            pad_id,
        );
        got.unwrap_or_default()
    }

    /// [`from_rows`](Self::from_rows) over any source of examples (a store read can fail).
    fn assemble<'a>(
        get: impl Fn(usize) -> Result<std::borrow::Cow<'a, Encoded>>,
        rows: &[Vec<usize>],
        seq_len: usize,
        pad_id: u32,
    ) -> Result<Self> {
        let size = rows.len() * seq_len;
        let mut b = HostBatch {
            batch: rows.len(),
            seq_len,
            inputs: vec![pad_id; size],
            targets: vec![pad_id; size],
            loss_mask: vec![false; size],
            positions: vec![0; size],
            doc_ids: vec![0; size],
            mixed: vec![false; size],
            n_supervised: 0,
            n_mixed: 0,
            n_tokens: 0,
        };
        for (r, row) in rows.iter().enumerate() {
            let mut at = r * seq_len;
            for (d, &i) in row.iter().enumerate() {
                let e = get(i)?;
                let n = e.n_positions();
                debug_assert!(at + n <= (r + 1) * seq_len, "row overflows seq_len");
                b.inputs[at..at + n].copy_from_slice(&e.ids[..n]);
                b.targets[at..at + n].copy_from_slice(&e.ids[1..]);
                b.loss_mask[at..at + n].copy_from_slice(&e.loss_mask[1..]);
                for p in 0..n {
                    b.positions[at + p] = p as u32;
                    b.doc_ids[at + p] = d as u32 + 1;
                }
                b.n_supervised += e.n_supervised();
                if e.mixed {
                    b.mixed[at..at + n].fill(true);
                    b.n_mixed += e.n_supervised();
                }
                b.n_tokens += n;
                at += n;
            }
        }
        Ok(b)
    }
}

/// Best-fit-decreasing: `order` (already shuffled) sorted by size, largest first (stable),
/// each placed into the fullest row it fits. Sizes must be `<= cap`.
pub fn best_fit_decreasing(sizes: &[usize], order: &[usize], cap: usize) -> Vec<Vec<usize>> {
    let mut sorted: Vec<usize> = order.to_vec();
    sorted.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]));
    let mut rows: Vec<Vec<usize>> = Vec::new();
    // remaining capacity -> rows with that much room
    let mut free: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in sorted {
        let s = sizes[i];
        let slot = free
            .range_mut(s..)
            .next()
            .map(|(&rem, rows)| (rem, rows.pop()));
        let (row, rem) = match slot {
            Some((rem, Some(row))) => {
                if free.get(&rem).is_some_and(Vec::is_empty) {
                    free.remove(&rem);
                }
                (row, rem)
            }
            _ => {
                rows.push(Vec::new());
                (rows.len() - 1, cap)
            }
        };
        rows[row].push(i);
        free.entry(rem - s).or_default().push(row);
    }
    rows
}

/// The loader's cursor: enough to continue exactly where a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    /// Batches already yielded in this epoch.
    pub index: u64,
    /// RNG state the epoch's shuffle started from (derived from the seed and the epoch).
    pub rng: u64,
    /// Checks that the cursor is restored against the same data.
    pub n_examples: u64,
    pub fingerprint: u64,
}

/// Yields batches epoch after epoch, deterministically from the seed.
#[derive(Debug, Clone)]
pub struct Loader {
    examples: Examples,
    cfg: BatchConfig,
    epoch: u64,
    index: usize,
    plan: Vec<Vec<Vec<usize>>>,
    fingerprint: u64,
}

fn epoch_rng(seed: u64, epoch: u64) -> u64 {
    mix(seed ^ mix(epoch.wrapping_add(0x5EED)))
}

impl Loader {
    /// Checks the configuration against the examples: every example needs a supervised
    /// target and (when packing) at most `seq_len + 1` tokens.
    pub fn new(examples: impl Into<Examples>, cfg: BatchConfig) -> Result<Self> {
        let examples = examples.into();
        if cfg.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        if cfg.pack && cfg.seq_len == 0 {
            return Err(DataError::Config("seq_len must be at least 1".into()));
        }
        if examples.is_empty() {
            return Err(DataError::Config("no examples to batch".into()));
        }
        if let Examples::Memory(v) = &examples {
            for (i, e) in v.iter().enumerate() {
                if e.ids.len() != e.loss_mask.len() {
                    return Err(DataError::Config(format!(
                        "example {i}: ids and loss_mask differ in length"
                    )));
                }
            }
        }
        for i in 0..examples.len() {
            let n = examples.n_positions(i);
            if n == 0 {
                return Err(DataError::Config(format!(
                    "example {i} has fewer than 2 tokens"
                )));
            }
            if cfg.pack && n > cfg.seq_len {
                return Err(DataError::Config(format!(
                    "example {i} has {} tokens, more than seq_len + 1 = {}; encode with \
                     max_len = seq_len + 1",
                    n + 1,
                    cfg.seq_len + 1
                )));
            }
        }
        let fingerprint = examples.fingerprint();
        let plan = plan_epoch(&examples, &cfg, 0);
        Ok(Loader {
            examples,
            cfg,
            epoch: 0,
            index: 0,
            plan,
            fingerprint,
        })
    }

    /// The next batch; a new epoch (freshly shuffled and packed) starts after the last.
    pub fn next_batch(&mut self) -> Result<HostBatch> {
        if self.index >= self.plan.len() {
            self.epoch += 1;
            self.index = 0;
            self.plan = plan_epoch(&self.examples, &self.cfg, self.epoch);
        }
        let rows = &self.plan[self.index];
        self.index += 1;
        let seq_len = if self.cfg.pack {
            self.cfg.seq_len
        } else {
            rows.iter()
                .map(|r| r.iter().map(|&i| self.examples.n_positions(i)).sum())
                .max()
                .unwrap_or(0)
        };
        HostBatch::assemble(|i| self.examples.get(i), rows, seq_len, self.cfg.pad_id)
    }

    pub fn state(&self) -> LoaderState {
        LoaderState {
            epoch: self.epoch,
            index: self.index as u64,
            rng: epoch_rng(self.cfg.seed, self.epoch),
            n_examples: self.examples.len() as u64,
            fingerprint: self.fingerprint,
        }
    }

    /// A loader that yields exactly the batches the saved one would have yielded next.
    pub fn restore(
        examples: impl Into<Examples>,
        cfg: BatchConfig,
        state: LoaderState,
    ) -> Result<Self> {
        let mut l = Loader::new(examples, cfg)?;
        if state.n_examples != l.examples.len() as u64 || state.fingerprint != l.fingerprint {
            return Err(DataError::State(format!(
                "the cursor was saved for {} other examples (fingerprint {:016x}), these are \
                 {} (fingerprint {:016x})",
                state.n_examples,
                state.fingerprint,
                l.examples.len(),
                l.fingerprint
            )));
        }
        if state.rng != epoch_rng(l.cfg.seed, state.epoch) {
            return Err(DataError::State(
                "the cursor's RNG state does not match this seed".into(),
            ));
        }
        l.epoch = state.epoch;
        l.plan = plan_epoch(&l.examples, &l.cfg, l.epoch);
        if state.index as usize > l.plan.len() {
            return Err(DataError::State(format!(
                "batch index {} beyond the epoch's {} batches (different batch config?)",
                state.index,
                l.plan.len()
            )));
        }
        l.index = state.index as usize;
        Ok(l)
    }

    /// Batches in the current epoch (with packing it can differ slightly between epochs).
    pub fn steps_per_epoch(&self) -> usize {
        self.plan.len()
    }

    /// Fractional epochs done.
    pub fn epoch(&self) -> f64 {
        self.epoch as f64 + self.index as f64 / self.plan.len().max(1) as f64
    }

    pub fn config(&self) -> &BatchConfig {
        &self.cfg
    }

    pub fn examples(&self) -> &Examples {
        &self.examples
    }
}

/// One epoch's batches, each a list of rows of example indices.
fn plan_epoch(examples: &Examples, cfg: &BatchConfig, epoch: u64) -> Vec<Vec<Vec<usize>>> {
    let mut rng = SplitMix64::new(epoch_rng(cfg.seed, epoch));
    let mut order: Vec<usize> = (0..examples.len()).collect();
    if cfg.shuffle {
        rng.shuffle(&mut order);
    }
    let mut rows: Vec<Vec<usize>> = if cfg.pack {
        let sizes: Vec<usize> = (0..examples.len())
            .map(|i| examples.n_positions(i))
            .collect();
        best_fit_decreasing(&sizes, &order, cfg.seq_len)
    } else {
        order.into_iter().map(|i| vec![i]).collect()
    };
    if cfg.pack && cfg.shuffle {
        rng.shuffle(&mut rows);
    }
    let mut batches: Vec<Vec<Vec<usize>>> =
        rows.chunks(cfg.batch_size).map(<[_]>::to_vec).collect();
    if cfg.drop_last
        && batches.len() > 1
        && batches.last().is_some_and(|b| b.len() < cfg.batch_size)
    {
        batches.pop();
    }
    batches
}

/// One pass over `examples` in order (no shuffle), e.g. for held-out evaluation.
pub fn batches(examples: &[Encoded], cfg: &BatchConfig) -> Result<Vec<HostBatch>> {
    let cfg = BatchConfig {
        shuffle: false,
        drop_last: false,
        ..cfg.clone()
    };
    let mut l = Loader::new(examples.to_vec(), cfg)?;
    (0..l.steps_per_epoch()).map(|_| l.next_batch()).collect()
}

/// Stream packing for pretraining: concatenates documents (with `sep`, e.g. EOS, after each)
/// and cuts rows of `seq_len + 1` tokens with stride `seq_len`, so every token after the
/// first is a target exactly once. Every token is supervised; batch the rows with
/// `pack: false` (one document id per row, positions `0..seq_len`). The tail shorter than a
/// row is left out.
pub fn pack_stream(docs: &[Vec<u32>], sep: Option<u32>, seq_len: usize) -> Vec<Encoded> {
    if seq_len == 0 {
        return Vec::new();
    }
    let total: usize = docs
        .iter()
        .map(|d| d.len() + usize::from(sep.is_some()))
        .sum();
    let mut stream = Vec::with_capacity(total);
    for d in docs {
        stream.extend_from_slice(d);
        stream.extend(sep);
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start + seq_len < stream.len() {
        out.push(Encoded {
            ids: stream[start..start + seq_len + 1].to_vec(),
            loss_mask: vec![true; seq_len + 1],
            mixed: false,
        });
        start += seq_len;
    }
    out
}

/// Seeded train/held-out split: `round(frac * n)` items held out (at least one when
/// `frac > 0` and there are two or more items, never all of them when `frac < 1`). Both
/// parts keep the input order.
pub fn split_heldout<T: Clone>(items: &[T], frac: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    split_heldout_at_most(items, frac, seed, usize::MAX)
}

/// [`split_heldout`] holding out no more than `max` items (the first `max` of the same seeded
/// choice): the rest stay in training.
pub fn split_heldout_at_most<T: Clone>(
    items: &[T],
    frac: f64,
    seed: u64,
    max: usize,
) -> (Vec<T>, Vec<T>) {
    let held = heldout_indices(items.len(), frac, seed, max);
    let mut train = Vec::with_capacity(items.len() - held.len());
    let mut heldout = Vec::with_capacity(held.len());
    for (i, item) in items.iter().enumerate() {
        if held.binary_search(&i).is_ok() {
            heldout.push(item.clone());
        } else {
            train.push(item.clone());
        }
    }
    (train, heldout)
}

/// The indices (sorted) that [`split_heldout_at_most`] holds out of `n` items: for datasets
/// read as a stream, where only the count is known up front.
pub fn heldout_indices(n: usize, frac: f64, seed: u64, max: usize) -> Vec<usize> {
    let frac = if frac.is_finite() {
        frac.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut k = (frac * n as f64).round() as usize;
    if frac > 0.0 && n >= 2 {
        k = k.max(1);
    }
    if frac < 1.0 && n >= 1 {
        k = k.min(n - 1);
    }
    k = k.min(max);
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..n).collect();
    SplitMix64::new(mix(seed ^ 0x0004_E1D0_u64)).shuffle(&mut idx);
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: usize, tag: u32) -> Encoded {
        Encoded {
            ids: (0..n as u32).map(|i| tag * 1000 + i).collect(),
            loss_mask: (0..n).map(|i| i % 2 == 1).collect(),
            mixed: false,
        }
    }

    #[test]
    fn bfd_fills_rows() {
        let sizes = [5, 4, 3, 3, 2, 2, 1];
        let order: Vec<usize> = (0..sizes.len()).collect();
        let rows = best_fit_decreasing(&sizes, &order, 8);
        let mut seen: Vec<usize> = rows.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, order);
        for r in &rows {
            assert!(r.iter().map(|&i| sizes[i]).sum::<usize>() <= 8);
        }
        // 20 units in rows of 8: three rows is optimal.
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn from_rows_shifts_and_pads_by_position() {
        let examples = vec![ex(4, 1), ex(3, 2)];
        let b = HostBatch::from_rows(&examples, &[vec![0, 1]], 7, 50256);
        assert_eq!(&b.inputs[..5], &[1000, 1001, 1002, 2000, 2001]);
        assert_eq!(&b.targets[..5], &[1001, 1002, 1003, 2001, 2002]);
        assert_eq!(&b.positions[..7], &[0, 1, 2, 0, 1, 0, 0]);
        assert_eq!(&b.doc_ids[..7], &[1, 1, 1, 2, 2, 0, 0]);
        assert_eq!(
            &b.loss_mask[..7],
            &[true, false, true, true, false, false, false]
        );
        assert_eq!(b.inputs[5], 50256);
        assert_eq!((b.n_tokens, b.n_supervised), (5, 3));
    }

    #[test]
    fn padding_mode_uses_the_longest_in_batch() {
        let examples = vec![ex(3, 1), ex(6, 2), ex(2, 3)];
        let cfg = BatchConfig {
            batch_size: 3,
            pack: false,
            shuffle: false,
            ..BatchConfig::default()
        };
        let mut l = Loader::new(examples, cfg).unwrap();
        let b = l.next_batch().unwrap();
        assert_eq!((b.batch, b.seq_len), (3, 5));
        assert_eq!(b.n_tokens, 2 + 5 + 1);
    }

    #[test]
    fn stream_rows_overlap_by_one() {
        let rows = pack_stream(&[vec![1, 2, 3], vec![4, 5]], Some(0), 3);
        // stream 1 2 3 0 4 5 0 -> rows [1 2 3 0], [0 4 5 0]
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ids, vec![1, 2, 3, 0]);
        assert_eq!(rows[1].ids, vec![0, 4, 5, 0]);
    }

    #[test]
    fn heldout_split_is_seeded_and_disjoint() {
        let items: Vec<u32> = (0..100).collect();
        let (a, b) = split_heldout(&items, 0.1, 3);
        assert_eq!((a.len(), b.len()), (90, 10));
        assert_eq!(split_heldout(&items, 0.1, 3), (a.clone(), b.clone()));
        assert_ne!(split_heldout(&items, 0.1, 4).1, b);
        let mut all = [a, b.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, items);
        assert_eq!(split_heldout(&items[..3], 0.01, 0).1.len(), 1);
        // Capped: 4 held out, the other 96 train; the 4 are among the uncapped 10.
        let (train, held) = split_heldout_at_most(&items, 0.1, 3, 4);
        assert_eq!((train.len(), held.len()), (96, 4));
        assert!(held.iter().all(|x| b.contains(x)));
        let mut all = [train, held].concat();
        all.sort_unstable();
        assert_eq!(all, items);
    }

    #[test]
    fn restore_rejects_other_data() {
        let cfg = BatchConfig {
            batch_size: 1,
            seq_len: 8,
            ..BatchConfig::default()
        };
        let l = Loader::new(vec![ex(4, 1), ex(3, 2)], cfg.clone()).unwrap();
        let st = l.state();
        assert!(Loader::restore(vec![ex(4, 1), ex(3, 3)], cfg.clone(), st).is_err());
        let other_seed = BatchConfig {
            seed: 9,
            ..cfg.clone()
        };
        assert!(Loader::restore(vec![ex(4, 1), ex(3, 2)], other_seed, st).is_err());
        assert!(Loader::restore(vec![ex(4, 1), ex(3, 2)], cfg, st).is_ok());
    }
}
