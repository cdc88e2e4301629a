//! The key/value cache used by generation.

use burn::prelude::*;

use crate::attention::LayerKv;

/// Keys and values of every layer for the tokens seen so far, so a decode step only computes
/// its new token. Rows may be left-padded (batched generation of prompts of different lengths):
/// padded slots are masked out of attention and positions start at 0 after the padding.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    len: usize,
    pad: Vec<usize>,
}

impl KvCache {
    /// An empty cache for rows without padding.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache for left-padded rows: `pad[r]` slots at the start of row `r` are padding.
    pub fn with_left_padding(pad: Vec<usize>) -> Self {
        KvCache {
            layers: Vec::new(),
            len: 0,
            pad,
        }
    }

    /// Positions stored so far (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops everything (keeps the padding layout).
    pub fn clear(&mut self) {
        self.layers.clear();
        self.len = 0;
    }

    fn pad_of(&self, row: usize) -> usize {
        self.pad.get(row).copied().unwrap_or(0)
    }

    /// Position ids `[b, t]` of the next `t` tokens.
    pub(crate) fn positions(&self, b: usize, t: usize, device: &Device) -> Tensor<2, Int> {
        let mut p = Vec::with_capacity(b * t);
        for r in 0..b {
            let pad = self.pad_of(r);
            for i in 0..t {
                p.push((self.len + i).saturating_sub(pad) as i64);
            }
        }
        Tensor::from_data(TensorData::new(p, [b, t]), device)
    }

    /// Attention mask `[b, 1, t, len + t]` hiding the padding slots, or `None` without padding.
    /// A padding query may still see itself, so no row of the softmax is empty.
    pub(crate) fn mask(&self, b: usize, t: usize, device: &Device) -> Option<Tensor<4, Bool>> {
        if (0..b).all(|r| self.pad_of(r) == 0) {
            return None;
        }
        let tk = self.len + t;
        let mut m = vec![false; b * t * tk];
        for r in 0..b {
            let pad = self.pad_of(r);
            for i in 0..t {
                let qi = self.len + i;
                for j in 0..pad.min(tk) {
                    m[(r * t + i) * tk + j] = j != qi;
                }
            }
        }
        Some(Tensor::from_data(TensorData::new(m, [b, 1, t, tk]), device))
    }

    pub(crate) fn ensure_layers(&mut self, n: usize) {
        if self.layers.len() < n {
            self.layers.resize_with(n, || None);
        }
    }

    pub(crate) fn layer(&self, i: usize) -> Option<LayerKv> {
        self.layers.get(i).cloned().flatten()
    }

    pub(crate) fn set_layer(&mut self, i: usize, kv: Option<LayerKv>) {
        self.layers[i] = kv;
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
