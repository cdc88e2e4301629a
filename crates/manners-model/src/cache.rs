//! The key/value cache used by generation.

use burn::prelude::*;

use crate::attention::LayerKv;

/// Keys and values of every layer for the tokens seen so far, so a decode step only computes
/// its new token. Rows may be left-padded (batched generation of prompts of different lengths):
/// padded slots are masked out of attention and positions start at 0 after the padding.
///
/// Each layer keeps its keys and values in buffers with room for more positions
/// (`[b, kv_heads, capacity, head_dim]`), and a step writes its new positions into them in
/// place: no step copies the positions already cached (concatenating did, every layer, every
/// token: a quadratic cost over a long output). A buffer that fills up is replaced by one of
/// twice the size; [`KvCache::reserve`] sizes it once for a known length. On an autodiff device
/// (where a write cannot happen in place) the buffers are concatenated as before.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    len: usize,
    pad: Vec<usize>,
    reserve: usize,
}

/// The smallest buffer a layer starts with (positions).
const MIN_CAPACITY: usize = 64;

impl KvCache {
    /// An empty cache for rows without padding.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache for left-padded rows: `pad[r]` slots at the start of row `r` are padding.
    pub fn with_left_padding(pad: Vec<usize>) -> Self {
        KvCache {
            pad,
            ..Self::default()
        }
    }

    /// Makes room for `positions` in all (padding and prompt included) when the buffers are
    /// next allocated, so a generation of known length never grows them.
    pub fn reserve(&mut self, positions: usize) {
        self.reserve = self.reserve.max(positions);
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

    /// The left padding of each of `b` rows, or `None` when no row has any.
    pub(crate) fn pads(&self, b: usize) -> Option<Vec<usize>> {
        let pads: Vec<usize> = (0..b).map(|r| self.pad_of(r)).collect();
        pads.iter().any(|&p| p > 0).then_some(pads)
    }

    pub(crate) fn ensure_layers(&mut self, n: usize) {
        if self.layers.len() < n {
            self.layers.resize_with(n, || None);
        }
    }

    /// Stores layer `layer`'s keys and values of the new positions, `k` and `v`
    /// `[b, kv_heads, t, head_dim]`, after the cached ones, and returns the keys and values of
    /// every position so far, `[b, kv_heads, len + t, head_dim]`. These are views of the
    /// layer's buffers: drop them before the next call for the same layer, or that call copies
    /// the buffer instead of writing into it.
    pub(crate) fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> LayerKv {
        let [b, h, t, hd] = k.dims();
        let (start, end) = (self.len, self.len + t);
        let slot = &mut self.layers[layer];
        if k.device().is_autodiff() {
            let (k, v) = match slot.take() {
                Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
                None => (k, v),
            };
            *slot = Some((k.clone(), v.clone()));
            return (k, v);
        }
        let capacity = slot.as_ref().map_or(0, |(pk, _)| pk.dims()[2]);
        let (bk, bv) = match slot.take() {
            Some(kv) if end <= capacity => kv,
            old => {
                let capacity = end.max(self.reserve).max(2 * capacity).max(MIN_CAPACITY);
                let grown = |old: Option<Tensor<4>>| {
                    let buf = Tensor::<4>::zeros([b, h, capacity, hd], &k.device());
                    match old {
                        Some(o) if start > 0 => {
                            buf.slice_assign([0..b, 0..h, 0..start, 0..hd], o.narrow(2, 0, start))
                        }
                        _ => buf,
                    }
                };
                let (ok, ov) = old.unzip();
                (grown(ok), grown(ov))
            }
        };
        let at = [0..b, 0..h, start..end, 0..hd];
        let (bk, bv) = (bk.slice_assign(at.clone(), k), bv.slice_assign(at, v));
        let kv = (bk.clone().narrow(2, 0, end), bv.clone().narrow(2, 0, end));
        *slot = Some((bk, bv));
        kv
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32")
    }

    #[test]
    fn appends_return_every_position_across_growth_on_both_device_kinds() {
        for dev in [Device::flex(), Device::flex().autodiff()] {
            let mut cache = KvCache::new();
            cache.ensure_layers(2);
            let (mut ks, mut vs) = (Vec::new(), Vec::new());
            // 40 positions, then 30 (past the first buffer's 64: it grows to 128), then single
            // tokens, as a prompt and its decode steps arrive.
            for t in [40, 30, 1, 1] {
                let k = Tensor::<4>::random([2, 3, t, 4], Distribution::Default, &dev);
                let v = Tensor::<4>::random([2, 3, t, 4], Distribution::Default, &dev);
                ks.push(k.clone());
                vs.push(v.clone());
                let (ck, cv) = cache.append(1, k, v);
                cache.advance(t);
                assert_eq!(ck.dims(), [2, 3, cache.len(), 4]);
                assert_eq!(values(ck), values(Tensor::cat(ks.clone(), 2)));
                assert_eq!(values(cv), values(Tensor::cat(vs.clone(), 2)));
            }
            let room = cache.layers[1].as_ref().map(|(k, _)| k.dims()[2]);
            let expected = if dev.is_autodiff() { 72 } else { 128 };
            assert_eq!(room, Some(expected), "autodiff: {}", dev.is_autodiff());
            assert!(cache.layers[0].is_none());
        }
    }

    #[test]
    fn a_reserved_cache_is_allocated_once_at_its_size() {
        let dev = Device::flex();
        let mut cache = KvCache::with_left_padding(vec![0, 2]);
        cache.reserve(100);
        cache.ensure_layers(1);
        assert_eq!(cache.pads(2), Some(vec![0, 2]));
        assert_eq!(KvCache::new().pads(2), None);
        for t in [5, 1] {
            let k = Tensor::<4>::zeros([2, 1, t, 4], &dev);
            let _ = cache.append(0, k.clone(), k);
            cache.advance(t);
            let room = cache.layers[0].as_ref().map(|(k, _)| k.dims()[2]);
            assert_eq!(room, Some(100));
        }
    }
}
