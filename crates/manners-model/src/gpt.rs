//! GPT-2, written once for every Burn device.
//!
//! Names follow Hugging Face's `GPT2Model` so checkpoints load without a mapping table:
//! `wte`, `wpe`, `h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `ln_f`.
//! Pre-LayerNorm blocks, fused q/k/v projection, GELU (tanh approximation), and an LM head
//! tied to `wte`. `Linear` weights are `[d_in, d_out]`, the same layout as HF's `Conv1D`.

use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use burn::tensor::module::{attention, linear};
use burn::tensor::ops::AttentionModuleOptions;

use crate::cache::KvCache;
use crate::config::{Activation, GptConfig};
use crate::fused::{self, gelu_tanh};

/// Optional inputs of a forward pass beyond the token ids.
#[derive(Clone, Debug, Default)]
pub struct ForwardOptions {
    /// Position ids `[b, t]`. Default: `0..t` for every row. Packed rows restart at 0 for each
    /// document.
    pub positions: Option<Tensor<2, Int>>,
    /// Attention mask `[b, t, t]`, `true` = may NOT attend. Default: causal only. Packed rows
    /// pass a block-diagonal causal mask (see [`crate::document_mask`]).
    pub mask: Option<Tensor<3, Bool>>,
}

/// The whole model.
#[derive(Module, Debug)]
pub struct Gpt {
    /// Token embedding `[vocab, d]`; also the (tied) LM head.
    pub wte: Embedding,
    /// Learned position embedding `[n_positions, d]`.
    pub wpe: Embedding,
    pub drop: Dropout,
    /// The transformer blocks.
    pub h: Vec<Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// The epsilon of every LayerNorm (Burn's `LayerNorm` keeps its own private).
    pub layer_norm_epsilon: f64,
}

/// One pre-LayerNorm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
    pub drop: Dropout,
}

/// Causal self-attention with a fused q/k/v projection.
#[derive(Module, Debug)]
pub struct Attention {
    /// `[d, 3d]`: q, k, v side by side.
    pub c_attn: Linear,
    /// `[d, d]`.
    pub c_proj: Linear,
    pub n_head: usize,
}

/// The feed-forward network.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `[d, 4d]`.
    pub c_fc: Linear,
    /// `[4d, d]`.
    pub c_proj: Linear,
    /// false: GELU tanh approximation (GPT-2); true: exact erf GELU.
    pub exact_gelu: bool,
}

impl GptConfig {
    /// A freshly initialised model, GPT-2 style: weights N(0, 0.02), residual projections
    /// N(0, 0.02/sqrt(2 n_layer)), biases 0, LayerNorm gain 1.
    pub fn init(&self, device: &Device) -> Gpt {
        let d = self.n_embd;
        let normal = |std: f64| Initializer::Normal { mean: 0.0, std };
        let proj_std = 0.02 / ((2 * self.n_layer) as f64).sqrt();
        let linear = |i: usize, o: usize, std: f64| {
            LinearConfig::new(i, o)
                .with_initializer(normal(std))
                .init(device)
                .with_zero_bias(device)
        };
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_epsilon)
                .init(device)
        };
        let drop = || DropoutConfig::new(self.dropout).init();
        let h = (0..self.n_layer)
            .map(|_| Block {
                ln_1: ln(),
                attn: Attention {
                    c_attn: linear(d, 3 * d, 0.02),
                    c_proj: linear(d, d, proj_std),
                    n_head: self.n_head,
                },
                ln_2: ln(),
                mlp: Mlp {
                    c_fc: linear(d, self.inner(), 0.02),
                    c_proj: linear(self.inner(), d, proj_std),
                    exact_gelu: self.activation == Activation::Gelu,
                },
                drop: drop(),
            })
            .collect();
        Gpt {
            wte: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(normal(0.02))
                .init(device),
            wpe: EmbeddingConfig::new(self.n_positions, d)
                .with_initializer(normal(0.02))
                .init(device),
            drop: drop(),
            h,
            ln_f: ln(),
            layer_norm_epsilon: self.layer_norm_epsilon,
        }
    }
}

trait ZeroBias {
    fn with_zero_bias(self, device: &Device) -> Self;
}

impl ZeroBias for Linear {
    fn with_zero_bias(mut self, device: &Device) -> Self {
        if let Some(b) = &self.bias {
            let [n] = b.val().dims();
            self.bias = Some(Initializer::Zeros.init([n], device));
        }
        self
    }
}

impl Gpt {
    /// Rows of the token embedding.
    pub fn vocab_size(&self) -> usize {
        self.wte.weight.val().dims()[0]
    }

    /// Rows of the position embedding (longest context).
    pub fn n_positions(&self) -> usize {
        self.wpe.weight.val().dims()[0]
    }

    pub fn n_embd(&self) -> usize {
        self.wte.weight.val().dims()[1]
    }

    /// Logits for every position: `[b, t] -> [b, t, vocab]`, causal attention, positions `0..t`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.head(self.hidden(ids, ForwardOptions::default()))
    }

    /// Logits with explicit positions and attention mask (packed rows).
    pub fn forward_with(&self, ids: Tensor<2, Int>, opts: ForwardOptions) -> Tensor<3> {
        self.head(self.hidden(ids, opts))
    }

    /// Final hidden states after `ln_f`: `[b, t] -> [b, t, d]`. Apply [`Gpt::head`] to the
    /// positions you need (e.g. only supervised ones: the head is the largest matmul).
    pub fn hidden(&self, ids: Tensor<2, Int>, opts: ForwardOptions) -> Tensor<3> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let positions = opts.positions.unwrap_or_else(|| {
            Tensor::<1, Int>::arange(0..t as i64, &device)
                .unsqueeze::<2>()
                .expand([b, t])
        });
        let mask = opts.mask.map(|m| m.unsqueeze_dim::<4>(1)); // [b, 1, t, t]
        // Under autodiff, Burn's `attention` is a decomposed fallback that re-applies the masks
        // and differentiates through the max shift in every layer; build the additive mask once
        // and use the backend's softmax (detached max) instead. Without autodiff the backend's
        // fused attention is faster.
        let mask = if device.is_autodiff() {
            AttnMask::Bias(additive_mask(mask, t, &device))
        } else {
            AttnMask::Bool(mask)
        };
        let mut x = self.wte.forward(ids) + self.wpe.forward(positions); // [b, t, d]
        x = self.drop.forward(x);
        for block in &self.h {
            x = block
                .forward(x, mask.clone(), None, self.layer_norm_epsilon)
                .0;
        }
        fused::layer_norm(&self.ln_f, x, self.layer_norm_epsilon)
    }

    /// The tied LM head: `[..., d] -> [..., vocab]`.
    pub fn head<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        linear(hidden, self.wte.weight.val().transpose(), None)
    }

    /// Runs new tokens through the model, reading and extending `cache`, and returns the
    /// logits of the LAST new position of each row: `[b, t_new] -> [b, vocab]`. Each decode step
    /// costs the compute of its own tokens, not a re-run of the prefix.
    pub fn forward_cached(&self, ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<2> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let past = cache.len();
        let positions = cache.positions(b, t, &device); // [b, t]
        let mask = cache.mask(b, t, &device); // [b, 1, t, past + t] or None
        let mut x = self.wte.forward(ids) + self.wpe.forward(positions);
        cache.ensure_layers(self.h.len());
        let mask = AttnMask::Bool(mask);
        for (i, block) in self.h.iter().enumerate() {
            let (y, kv) = block.forward(
                x,
                mask.clone(),
                Some(cache.layer(i)),
                self.layer_norm_epsilon,
            );
            cache.set_layer(i, kv);
            x = y;
        }
        cache.advance(t);
        debug_assert_eq!(cache.len(), past + t);
        let d = self.n_embd();
        let last = fused::layer_norm(&self.ln_f, x.narrow(1, t - 1, 1), self.layer_norm_epsilon)
            .reshape([b, d]); // [b, d]
        self.head(last)
    }
}

/// Key/value tensors of one layer, `[b, h, t, hd]` each.
pub(crate) type LayerKv = (Tensor<4>, Tensor<4>);

/// How a forward pass masks attention.
#[derive(Clone, Debug)]
enum AttnMask {
    /// `[b, 1, t, t_k]`, `true` = masked, on top of causal masking; for Burn's fused attention.
    Bool(Option<Tensor<4, Bool>>),
    /// `[b or 1, 1, t, t]`: 0 where attention is allowed, -inf elsewhere (causality included).
    Bias(Tensor<4>),
}

/// The additive mask of a training forward: `mask` (which already holds causality, see
/// [`document_mask`]) or plain causal masking.
fn additive_mask(mask: Option<Tensor<4, Bool>>, t: usize, device: &Device) -> Tensor<4> {
    let mask = mask.unwrap_or_else(|| Tensor::<2, Bool>::tril_mask([t, t], 0, device).unsqueeze());
    Tensor::<4>::zeros(mask.dims(), device).mask_fill(mask, f32::NEG_INFINITY)
}

impl Block {
    /// Returns the block output and, when a cache is in use, the layer's full keys/values.
    fn forward(
        &self,
        x: Tensor<3>,
        mask: AttnMask,
        past: Option<Option<LayerKv>>,
        eps: f64,
    ) -> (Tensor<3>, Option<LayerKv>) {
        let (a, kv) = self
            .attn
            .forward(fused::layer_norm(&self.ln_1, x.clone(), eps), mask, past);
        let x = x + self.drop.forward(a);
        let m = self
            .mlp
            .forward(fused::layer_norm(&self.ln_2, x.clone(), eps));
        (x + self.drop.forward(m), kv)
    }
}

impl Attention {
    fn forward(
        &self,
        x: Tensor<3>,
        mask: AttnMask,
        past: Option<Option<LayerKv>>,
    ) -> (Tensor<3>, Option<LayerKv>) {
        let [b, t, d] = x.dims();
        let nh = self.n_head;
        let hd = d / nh;
        let qkv = self.c_attn.forward(x); // [b, t, 3d]
        let qkv = qkv.reshape([b, t, 3, nh, hd]).permute([2, 0, 3, 1, 4]); // [3, b, nh, t, hd]
        let take = |i: usize| qkv.clone().narrow(0, i, 1).squeeze_dim::<4>(0); // [b, nh, t, hd]
        let (q, mut k, mut v) = (take(0), take(1), take(2));
        let using_cache = past.is_some();
        if let Some(Some((pk, pv))) = past {
            k = Tensor::cat(vec![pk, k], 2); // [b, nh, past + t, hd]
            v = Tensor::cat(vec![pv, v], 2);
        }
        let t_k = k.dims()[2];
        let y = match mask {
            AttnMask::Bool(mask) => {
                let mask = mask.map(|m| m.expand([b, nh, t, t_k]));
                // Causal alignment is bottom-right, so it stays right with a cache (t_q < t_k).
                let opts = AttentionModuleOptions {
                    is_causal: true,
                    ..Default::default()
                };
                attention(q, k.clone(), v.clone(), mask, None, opts)
            }
            AttnMask::Bias(bias) => {
                // softmax(q k^T / sqrt(hd) + bias) v, scaling q (hd wide) rather than the scores.
                let q = q * (1.0 / (hd as f64).sqrt());
                let scores = q.matmul(k.clone().swap_dims(2, 3)); // [b, nh, t, t]
                fused::softmax_with_bias(scores, bias).matmul(v.clone())
            }
        }; // [b, nh, t, hd]
        let y = y.swap_dims(1, 2).reshape([b, t, d]); // [b, t, d]
        (self.c_proj.forward(y), using_cache.then_some((k, v)))
    }
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hdn = self.c_fc.forward(x); // [b, t, 4d]
        let hdn = if self.exact_gelu {
            gelu(hdn)
        } else {
            gelu_tanh(hdn)
        };
        self.c_proj.forward(hdn) // [b, t, d]
    }
}

/// The attention mask for packed rows: position `i` may attend to `j` only when `j <= i` and both
/// belong to the same document. `doc_ids` is row-major `[b, t]`; returns `[b, t, t]` with
/// `true` = masked. Padding (doc id 0) attends only to padding, so no row is fully masked.
pub fn document_mask(doc_ids: &[u32], b: usize, t: usize, device: &Device) -> Tensor<3, Bool> {
    assert_eq!(doc_ids.len(), b * t, "doc_ids must be [b, t]");
    let mut m = vec![false; b * t * t];
    for r in 0..b {
        let row = &doc_ids[r * t..(r + 1) * t];
        for i in 0..t {
            for j in 0..t {
                m[(r * t + i) * t + j] = j > i || row[j] != row[i];
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [b, t, t]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_matches_the_tanh_formula() {
        let dev = Device::flex();
        let xs: Vec<f32> = (-60..=60).map(|i| i as f32 * 0.1).collect();
        let x = Tensor::<1>::from_floats(xs.as_slice(), &dev);
        let fused = gelu_tanh(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let composite = fused::gelu_tanh_composite(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (x, g) in xs.iter().chain(&xs).zip(fused.into_iter().chain(composite)) {
            let x = f64::from(*x);
            let want = 0.5
                * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!((f64::from(g) - want).abs() < 2e-6, "x {x}: {g} vs {want}");
        }
    }
}
