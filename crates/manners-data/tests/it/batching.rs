//! Packing, padding, the loader cursor and stream packing.

use std::collections::HashMap;

use manners_data::{
    BatchConfig, Encoded, Examples, HostBatch, Loader, LoaderState, TokenStore, batches,
    pack_stream, split_heldout,
};
use proptest::prelude::*;

/// Example `k` with `n` tokens: id = k * 1000 + position, so a target is always its input + 1
/// within a document; random mask.
fn examples(lens_masks: &[(usize, u64)]) -> Vec<Encoded> {
    lens_masks
        .iter()
        .enumerate()
        .map(|(k, &(n, bits))| {
            let ids: Vec<u32> = (0..n as u32).map(|p| k as u32 * 1000 + p).collect();
            let mut loss_mask: Vec<bool> = (0..n).map(|p| (bits >> (p % 64)) & 1 == 1).collect();
            loss_mask[n - 1] = true; // at least one target
            Encoded {
                ids,
                loss_mask,
                mixed: false,
            }
        })
        .collect()
}

/// Checks one batch's invariants; returns its supervised targets.
fn check_batch(b: &HostBatch, cfg: &BatchConfig) -> Vec<u32> {
    let len = b.batch * b.seq_len;
    for v in [
        b.inputs.len(),
        b.targets.len(),
        b.loss_mask.len(),
        b.positions.len(),
        b.doc_ids.len(),
    ] {
        assert_eq!(v, len);
    }
    if cfg.pack {
        assert_eq!(b.seq_len, cfg.seq_len);
    }
    let mut sup = Vec::new();
    let mut n_tokens = 0;
    for r in 0..b.batch {
        let row = r * b.seq_len..(r + 1) * b.seq_len;
        let mut prev_doc = 0;
        let mut expect_pos = 0;
        for i in row {
            let d = b.doc_ids[i];
            if d == 0 {
                // padding: never supervised, identified by position only
                assert!(!b.loss_mask[i]);
                assert_eq!(b.inputs[i], cfg.pad_id);
                prev_doc = u32::MAX;
                continue;
            }
            assert_ne!(prev_doc, u32::MAX, "document after padding");
            n_tokens += 1;
            if d != prev_doc {
                assert_eq!(d, prev_doc + 1, "doc ids number 1, 2, ... in a row");
                expect_pos = 0;
            }
            assert_eq!(b.positions[i], expect_pos, "positions restart per document");
            expect_pos += 1;
            // no target crosses a document boundary
            assert_eq!(b.targets[i], b.inputs[i] + 1);
            assert_eq!(b.inputs[i] % 1000, b.positions[i]);
            if b.loss_mask[i] {
                sup.push(b.targets[i]);
            }
            prev_doc = d;
        }
    }
    assert_eq!(b.n_tokens, n_tokens);
    assert_eq!(b.n_supervised, sup.len());
    sup
}

fn all_supervised(ex: &[Encoded]) -> Vec<u32> {
    let mut v: Vec<u32> = ex
        .iter()
        .flat_map(|e| {
            e.ids
                .iter()
                .zip(&e.loss_mask)
                .skip(1)
                .filter(|p| *p.1)
                .map(|p| *p.0)
        })
        .collect();
    v.sort_unstable();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_supervised_token_exactly_once_per_epoch(
        lens in prop::collection::vec((2usize..=65, any::<u64>()), 1..80),
        batch_size in 1usize..6,
        pack in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let ex = examples(&lens);
        let cfg = BatchConfig { batch_size, seq_len: 64, pack, shuffle: true, seed, drop_last: false, pad_id: 50256 };
        let want = all_supervised(&ex);
        let mut l = Loader::new(ex.clone(), cfg.clone()).unwrap();
        for _epoch in 0..2 {
            let steps = l.steps_per_epoch();
            let mut got = Vec::new();
            for _ in 0..steps {
                got.extend(check_batch(&l.next_batch().unwrap(), &cfg));
            }
            got.sort_unstable();
            prop_assert_eq!(&got, &want);
        }
        if pack {
            // best-fit-decreasing never needs more rows than twice the optimum bound
            let total: usize = ex.iter().map(Encoded::n_positions).sum();
            let rows: usize = batches(&ex, &cfg).unwrap().iter().map(|b| b.batch).sum();
            prop_assert!(rows <= 2 * total.div_ceil(64) + 1);
        }
    }

    #[test]
    fn resumed_loader_equals_uninterrupted(
        lens in prop::collection::vec((2usize..=33, any::<u64>()), 1..40),
        batch_size in 1usize..5,
        pack in any::<bool>(),
        stop_at in 0usize..40,
        seed in any::<u64>(),
    ) {
        let ex = examples(&lens);
        let cfg = BatchConfig { batch_size, seq_len: 32, pack, shuffle: true, seed, drop_last: true, pad_id: 0 };
        let mut a = Loader::new(ex.clone(), cfg.clone()).unwrap();
        for _ in 0..stop_at {
            a.next_batch().unwrap();
        }
        let json = serde_json::to_string(&a.state()).unwrap();
        let state: LoaderState = serde_json::from_str(&json).unwrap();
        let mut b = Loader::restore(ex.clone(), cfg.clone(), state).unwrap();
        prop_assert_eq!(a.epoch(), b.epoch());
        for _ in 0..25 {
            prop_assert_eq!(a.next_batch().unwrap(), b.next_batch().unwrap());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Examples written to a token store (disk) batch exactly as the same examples in memory,
    /// and a cursor saved by one loader restores the other.
    #[test]
    fn a_store_batches_like_memory(
        lens in prop::collection::vec((2usize..=33, any::<u64>()), 1..40),
        batch_size in 1usize..5,
        pack in any::<bool>(),
        stop_at in 0usize..30,
        seed in any::<u64>(),
    ) {
        let ex = examples(&lens);
        let dir = tempfile::tempdir().unwrap();
        let mut w = TokenStore::create_in(dir.path()).unwrap();
        for e in &ex {
            w.push(e).unwrap();
        }
        let store = Examples::from(w.finish().unwrap());
        let cfg = BatchConfig { batch_size, seq_len: 32, pack, shuffle: true, seed, drop_last: false, pad_id: 7 };
        let mut mem = Loader::new(ex.clone(), cfg.clone()).unwrap();
        let mut disk = Loader::new(store.clone(), cfg.clone()).unwrap();
        prop_assert_eq!(mem.steps_per_epoch(), disk.steps_per_epoch());
        for _ in 0..stop_at {
            prop_assert_eq!(mem.next_batch().unwrap(), disk.next_batch().unwrap());
        }
        let mut restored = Loader::restore(store, cfg, mem.state()).unwrap();
        for _ in 0..10 {
            prop_assert_eq!(mem.next_batch().unwrap(), restored.next_batch().unwrap());
        }
    }
}

#[test]
fn shuffle_is_seeded_and_differs_between_epochs() {
    let ex = examples(&(0..50).map(|k| (3 + k % 7, 0b1010)).collect::<Vec<_>>());
    let cfg = BatchConfig {
        batch_size: 4,
        seq_len: 16,
        ..BatchConfig::default()
    };
    let mut a = Loader::new(ex.clone(), cfg.clone()).unwrap();
    let mut b = Loader::new(ex.clone(), cfg.clone()).unwrap();
    let first: Vec<HostBatch> = (0..a.steps_per_epoch())
        .map(|_| a.next_batch().unwrap())
        .collect();
    let again: Vec<HostBatch> = (0..b.steps_per_epoch())
        .map(|_| b.next_batch().unwrap())
        .collect();
    assert_eq!(first, again);
    assert!((a.epoch() - 1.0).abs() < 1e-9);
    let second: Vec<HostBatch> = (0..a.steps_per_epoch())
        .map(|_| a.next_batch().unwrap())
        .collect();
    assert_ne!(first, second);
    let mut c = Loader::new(ex, BatchConfig { seed: 1, ..cfg }).unwrap();
    assert_ne!(c.next_batch().unwrap(), first[0]);
}

#[test]
fn packing_fills_rows_densely() {
    // 200 examples of 5..=40 tokens into rows of 128 positions.
    let ex = examples(
        &(0..200)
            .map(|k| (5 + (k * 7919) % 36, u64::MAX))
            .collect::<Vec<_>>(),
    );
    let total: usize = ex.iter().map(Encoded::n_positions).sum();
    let cfg = BatchConfig {
        batch_size: 8,
        seq_len: 128,
        ..BatchConfig::default()
    };
    let bs = batches(&ex, &cfg).unwrap();
    let rows: usize = bs.iter().map(|b| b.batch).sum();
    let fill = total as f64 / (rows * 128) as f64;
    assert!(fill > 0.95, "fill {fill}");
}

#[test]
fn loader_rejects_examples_longer_than_a_row() {
    let ex = examples(&[(10, 1)]);
    let cfg = BatchConfig {
        seq_len: 8,
        ..BatchConfig::default()
    };
    let err = Loader::new(ex, cfg).unwrap_err().to_string();
    assert!(err.contains("seq_len + 1"), "{err}");
}

#[test]
fn pad_id_equal_to_eos_is_never_supervised() {
    // Documents ending in EOS (50256) padded with EOS: the mask, not the id, tells them apart.
    let ex = vec![
        Encoded {
            ids: vec![1, 2, 50256],
            loss_mask: vec![false, true, true],
            mixed: false,
        },
        Encoded {
            ids: vec![3, 50256],
            loss_mask: vec![false, true],
            mixed: false,
        },
    ];
    let cfg = BatchConfig {
        batch_size: 2,
        pack: false,
        shuffle: false,
        pad_id: 50256,
        ..BatchConfig::default()
    };
    let b = batches(&ex, &cfg).unwrap().remove(0);
    assert_eq!(b.seq_len, 2);
    assert_eq!(b.targets, vec![2, 50256, 50256, 50256]);
    assert_eq!(b.loss_mask, vec![true, true, true, false]);
    assert_eq!(b.doc_ids, vec![1, 1, 1, 0]);
    assert_eq!((b.n_supervised, b.n_tokens), (3, 3));
}

#[test]
fn stream_packing_targets_every_token_once() {
    let docs: Vec<Vec<u32>> = (0..30)
        .map(|d| (0..(d % 11 + 1)).map(|p| d * 100 + p).collect())
        .collect();
    let rows = pack_stream(&docs, Some(9999), 16);
    let mut stream: Vec<u32> = Vec::new();
    for d in &docs {
        stream.extend(d);
        stream.push(9999);
    }
    let covered = rows.len() * 16 + 1;
    assert!(stream.len() - covered < 16);
    // targets of consecutive rows tile the stream
    let mut targets: Vec<u32> = Vec::new();
    for r in &rows {
        assert_eq!(r.len(), 17);
        targets.extend(&r.ids[1..]);
    }
    assert_eq!(targets, stream[1..covered].to_vec());
    let cfg = BatchConfig {
        batch_size: 4,
        pack: false,
        shuffle: false,
        ..BatchConfig::default()
    };
    let b = batches(&rows, &cfg).unwrap().remove(0);
    assert_eq!(b.seq_len, 16);
    assert!(b.doc_ids.iter().all(|&d| d == 1));
    assert_eq!(b.positions[..16].to_vec(), (0..16).collect::<Vec<u32>>());
}

#[test]
fn heldout_split_has_no_overlap() {
    let items: Vec<String> = (0..1000).map(|i| format!("item {i}")).collect();
    let (train, held) = split_heldout(&items, 0.05, 42);
    assert_eq!(held.len(), 50);
    let set: HashMap<&String, ()> = train.iter().map(|t| (t, ())).collect();
    assert!(held.iter().all(|h| !set.contains_key(h)));
}
