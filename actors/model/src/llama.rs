//! The decoder of every supported architecture (llama, qwen2, qwen3, gemma3 — what differs is
//! in [`crate::arch`]) as Burn modules over a [`QuantBackend`], with one forward path
//! ([`Llama::step`]) for single decode, batched decode and prefill.
//!
//! Tensor names follow llama.cpp's GGUF conventions: `token_embd`, `blk.{i}.{attn_norm,attn_q,
//! attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}` with the optional
//! `attn_{q,k,v}.bias`, `attn_{q,k}_norm`, `post_attention_norm`, `post_ffw_norm`,
//! `output_norm`, `output` (absent: tied to `token_embd`).
//!
//! One block, reading top to bottom (optional parts in brackets):
//! ```text
//! q, k, v = Wq·n(x) [+bq], Wk·n(x) [+bk], Wv·n(x) [+bv]          n = attn_norm
//! q, k    = rope([q_norm] q), rope([k_norm] k)                    (NORM or NEOX pairs)
//! h = x + [post_attention_norm] Wo · attn(q, k, v)                (GQA, causal [, window])
//! y = h + [post_ffw_norm] Wdown · (act(Wgate·n'(h)) ⊙ Wup·n'(h))  act = silu | gelu_tanh
//! ```
//! RoPE angles `θ_i = pos · base^(-2i/n_rot) [/ freq_factor_i]` are accumulated in f32 as
//! ggml's `rope_cache_init` does.

use burn::tensor::{DType, Tensor, TensorData};

use crate::arch::{FfnAct, RopeKind};
use crate::backend::{
    attention_batch, glu, kv_write, qlinear, rms_norm, rope, AttnSpan, HostQWeight, QuantBackend,
};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::quant::dequantize;

pub use crate::arch::LlamaConfig;

/// RMSNorm: `x / sqrt(mean(x²) + ε) · γ` over the last dimension, row by row
/// ([`QuantBackend::rms_norm`]).
#[derive(Debug, Clone)]
pub struct RmsNorm<B: QuantBackend> {
    /// `γ`, `[n_embd]`.
    pub weight: Tensor<B, 1>,
    /// `ε`.
    pub eps: f32,
}

impl<B: QuantBackend> RmsNorm<B> {
    /// `x`: `[m, d]` → `[m, d]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        rms_norm(x, &self.weight, self.eps)
    }
}

/// Rotary position embedding tables, `[capacity, head_dim / 2]` each.
#[derive(Debug, Clone)]
pub struct Rope<B: QuantBackend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    kind: RopeKind,
}

impl<B: QuantBackend> Rope<B> {
    fn new(
        head_dim: usize,
        base: f32,
        factors: Option<&[f32]>,
        kind: RopeKind,
        capacity: usize,
        device: &B::Device,
    ) -> Self {
        let half = head_dim / 2;
        // ggml_rope_cache_init: theta starts at p and is multiplied by theta_scale per pair;
        // a frequency factor divides it.
        let theta_scale = base.powf(-2.0 / head_dim as f32);
        let mut cos = Vec::with_capacity(capacity * half);
        let mut sin = Vec::with_capacity(capacity * half);
        for p in 0..capacity {
            let mut theta = p as f32;
            for i in 0..half {
                let t = factors.map_or(theta, |f| theta / f[i]);
                cos.push(t.cos());
                sin.push(t.sin());
                theta *= theta_scale;
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [capacity, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [capacity, half]), device),
            kind,
        }
    }

    /// The angles of a step's rows: sequence `i`'s `m` rows at positions `pos..pos + m`, for
    /// each `(pos, m)` of `spans`, one after another.
    fn at(&self, spans: &[(usize, usize)]) -> RopeAt<B> {
        let half = self.cos.dims()[1];
        let rows = |t: &Tensor<B, 2>| {
            let parts: Vec<Tensor<B, 2>> = spans
                .iter()
                .map(|&(pos, m)| t.clone().slice([pos..pos + m, 0..half]))
                .collect();
            if parts.len() == 1 {
                parts.into_iter().next().expect("one span")
            } else {
                Tensor::cat(parts, 0)
            }
        };
        RopeAt {
            cos: rows(&self.cos),
            sin: rows(&self.sin),
        }
    }

    /// Rotates `x` (`[rows, heads, head_dim]`) row by row at the angles `at` gives its rows
    /// ([`QuantBackend::rope`]).
    fn forward(&self, x: Tensor<B, 3>, at: &RopeAt<B>) -> Tensor<B, 3> {
        rope(x, &at.cos, &at.sin, self.kind == RopeKind::Neox)
    }
}

/// [`Rope::at`]: `cos`, `sin` of a step's rows, `[rows, head_dim / 2]` each.
struct RopeAt<B: QuantBackend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

/// One transformer block's weights (optional parts as the architecture has them).
#[derive(Debug, Clone)]
pub struct Block<B: QuantBackend> {
    attn_norm: RmsNorm<B>,
    wq: B::QWeight,
    wk: B::QWeight,
    wv: B::QWeight,
    /// `attn_{q,k,v}.bias` (qwen2).
    qkv_bias: Option<[Tensor<B, 1>; 3]>,
    /// Per-head `attn_q_norm`, `attn_k_norm` (qwen3, gemma3).
    qk_norm: Option<[RmsNorm<B>; 2]>,
    wo: B::QWeight,
    /// `post_attention_norm`, `post_ffw_norm` (gemma3).
    post_norms: Option<[RmsNorm<B>; 2]>,
    ffn_norm: RmsNorm<B>,
    w_gate: B::QWeight,
    w_up: B::QWeight,
    w_down: B::QWeight,
    /// Sliding window of this layer (0: none).
    window: usize,
    /// Whether this layer uses the SWA RoPE table.
    swa: bool,
}

impl<B: QuantBackend> Block<B> {
    /// The block after attention: output projection and residual, then the gated MLP and its
    /// residual. `x` and `attn` are `[m, n_embd]`.
    fn finish(&self, x: Tensor<B, 2>, attn: Tensor<B, 2>, act: FfnAct) -> Tensor<B, 2> {
        let [o]: [Tensor<B, 2>; 1] = qlinear(attn, &[&self.wo]).try_into().expect("one output");
        let o = match &self.post_norms {
            Some([pa, _]) => pa.forward(o),
            None => o,
        };
        let x = x + o;
        let h = self.ffn_norm.forward(x.clone());
        let [g, u]: [Tensor<B, 2>; 2] = qlinear(h, &[&self.w_gate, &self.w_up])
            .try_into()
            .expect("two outputs");
        let [dn]: [Tensor<B, 2>; 1] = qlinear(glu(g, u, act), &[&self.w_down])
            .try_into()
            .expect("one output");
        let dn = match &self.post_norms {
            Some([_, pf]) => pf.forward(dn),
            None => dn,
        };
        x + dn
    }
}

/// Element type of the KV cache (llama.cpp `--cache-type-k` / `--cache-type-v`, ggml type names).
///
/// [`CacheType::F16`] is llama.cpp's default and ours: half the memory of f32, and the same
/// numerics as llama.cpp's (non-flash) attention over an f16 cache, where the query and the
/// softmax weights are also rounded to f16 for the f16 dot products (ggml `vec_dot_f16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheType {
    /// IEEE half precision (2 bytes per value).
    #[default]
    F16,
    /// f32 (4 bytes per value).
    F32,
}

impl CacheType {
    /// The ggml type name (`f16`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            CacheType::F16 => "f16",
            CacheType::F32 => "f32",
        }
    }

    /// Bytes per cached value.
    pub fn bytes(self) -> usize {
        match self {
            CacheType::F16 => 2,
            CacheType::F32 => 4,
        }
    }

    /// Parses a ggml type name (`f16`, `f32`).
    ///
    /// # Errors
    /// [`ModelError::InvalidParameter`] for any other name.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "f16" => Ok(CacheType::F16),
            "f32" => Ok(CacheType::F32),
            other => Err(ModelError::InvalidParameter(format!(
                "cache type {other:?} (supported: f16, f32)"
            ))),
        }
    }

    fn dtype(self) -> DType {
        match self {
            CacheType::F16 => DType::F16,
            CacheType::F32 => DType::F32,
        }
    }
}

/// A sequence's key/value cache: per layer `[n_head_kv, capacity, head_dim]` for K and V in
/// the model's [`CacheType`], allocated once at `capacity` positions.
#[derive(Debug)]
pub struct KvCache<B: QuantBackend> {
    k: Vec<Option<Tensor<B, 3>>>,
    v: Vec<Option<Tensor<B, 3>>>,
    len: usize,
    capacity: usize,
    ty: CacheType,
}

impl<B: QuantBackend> KvCache<B> {
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions this cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets positions from `len` on (the next forward writes there).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes held by this cache (K and V of every layer).
    pub fn bytes(&self) -> usize {
        self.k.len()
            * 2
            * self
                .k
                .first()
                .and_then(|t| t.as_ref())
                .map_or(0, |t| t.shape().num_elements() * self.ty.bytes())
    }

    /// The element type of its keys and values.
    pub fn cache_type(&self) -> CacheType {
        self.ty
    }
}

/// One sequence's part of a [`Llama::step`]: its next tokens (a whole prompt, a prefill chunk,
/// or one decode token) and its cache.
#[derive(Debug)]
pub struct Chunk<'a, B: QuantBackend> {
    /// Tokens to run, at positions `cache.len()..`.
    pub tokens: &'a [u32],
    /// The sequence's KV cache (its keys and values are appended).
    pub cache: &'a mut KvCache<B>,
    /// Which of its positions' logits to return.
    pub logits: Logits,
}

/// Which positions' logits [`Llama::forward`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's (generation).
    Last,
    /// Every position's (perplexity, teacher forcing).
    All,
}

/// The llama-family model on backend `B`.
#[derive(Debug)]
pub struct Llama<B: QuantBackend> {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    tok_embd: HostQWeight,
    blocks: Vec<Block<B>>,
    output_norm: RmsNorm<B>,
    output: B::QWeight,
    rope: Rope<B>,
    /// The SWA layers' table (its own base), when the model has such layers.
    rope_swa: Option<Rope<B>>,
    cache_type: CacheType,
    device: B::Device,
}

/// Most positions a RoPE table (and so a cache) covers: long-context models (32k–128k) would
/// otherwise spend hundreds of MB on tables no conversation on the box reaches.
pub const MAX_POSITIONS: usize = 32768;

fn qweight_info(g: &GgufFile, name: &str, k: usize, n: usize) -> Result<HostQWeight> {
    let info = g.tensor(name)?;
    let bad = |what: String| ModelError::BadTensor {
        path: g.path().to_owned(),
        tensor: name.into(),
        what,
    };
    if info.dims != [k as u64, n as u64] {
        return Err(bad(format!("shape {:?}, expected [{k}, {n}]", info.dims)));
    }
    if !info.ggml_type.is_matmul_weight() {
        return Err(bad(format!(
            "type {} is not supported for matmul weights (supported: Q4_0, Q4_1, Q5_0, Q5_1, \
             Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, F16, BF16, F32)",
            info.ggml_type.name()
        )));
    }
    if !k.is_multiple_of(info.ggml_type.block_size()) {
        return Err(bad(format!(
            "rows of {k} are not whole {} blocks",
            info.ggml_type.name()
        )));
    }
    let start = info.file_offset as usize;
    Ok(HostQWeight::mapped(
        info.ggml_type,
        n,
        k,
        g.map().clone(),
        start..start + info.n_bytes as usize,
    ))
}

fn vector<B: QuantBackend>(
    g: &GgufFile,
    name: &str,
    len: usize,
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    let info = g.tensor(name)?;
    if info.dims != [len as u64] || !info.ggml_type.can_dequantize() {
        return Err(ModelError::BadTensor {
            path: g.path().to_owned(),
            tensor: name.into(),
            what: format!(
                "expected [{len}] floats, found {:?} {}",
                info.dims,
                info.ggml_type.name()
            ),
        });
    }
    let mut v = Vec::with_capacity(len);
    dequantize(info.ggml_type, g.data(info), len, &mut v);
    Ok(Tensor::from_data(TensorData::new(v, [len]), device))
}

impl<B: QuantBackend> Llama<B> {
    /// Builds the model from a GGUF file; weights stay in their GGUF blocks (memory-mapped on
    /// the CPU, uploaded as blocks on a GPU).
    ///
    /// # Errors
    /// Missing or mis-shaped tensors and keys, unsupported architecture or types.
    pub fn from_gguf(g: &GgufFile, device: &B::Device) -> Result<Self> {
        let c = LlamaConfig::from_gguf(g)?;
        let (d, qd, kv, ff) = (
            c.n_embd,
            c.n_head * c.head_dim,
            c.n_head_kv * c.head_dim,
            c.n_ff,
        );
        let q = |name: &str, k: usize, n: usize| -> Result<B::QWeight> {
            let w = B::qweight(&qweight_info(g, name, k, n)?, device)?;
            // The backend copied what it needs (a weight kept mapped faults back in on use).
            g.release_tensor_pages(g.tensor(name)?);
            Ok(w)
        };
        let norm_of = |name: &str, len: usize| -> Result<RmsNorm<B>> {
            Ok(RmsNorm {
                weight: vector::<B>(g, name, len, device)?,
                eps: c.rms_eps,
            })
        };
        let norm = |name: &str| norm_of(name, d);
        let mut blocks = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let b = |s: &str| format!("blk.{i}.{s}.bias");
            let qkv_bias = if c.qkv_bias {
                Some([
                    vector::<B>(g, &b("attn_q"), qd, device)?,
                    vector::<B>(g, &b("attn_k"), kv, device)?,
                    vector::<B>(g, &b("attn_v"), kv, device)?,
                ])
            } else {
                None
            };
            let qk_norm = if c.qk_norm {
                Some([
                    norm_of(&n("attn_q_norm"), c.head_dim)?,
                    norm_of(&n("attn_k_norm"), c.head_dim)?,
                ])
            } else {
                None
            };
            let post_norms = if c.post_norms {
                Some([norm(&n("post_attention_norm"))?, norm(&n("post_ffw_norm"))?])
            } else {
                None
            };
            let swa = c.is_swa(i);
            blocks.push(Block {
                attn_norm: norm(&n("attn_norm"))?,
                wq: q(&n("attn_q"), d, qd)?,
                wk: q(&n("attn_k"), d, kv)?,
                wv: q(&n("attn_v"), d, kv)?,
                qkv_bias,
                qk_norm,
                wo: q(&n("attn_output"), qd, d)?,
                post_norms,
                ffn_norm: norm(&n("ffn_norm"))?,
                w_gate: q(&n("ffn_gate"), d, ff)?,
                w_up: q(&n("ffn_up"), d, ff)?,
                w_down: q(&n("ffn_down"), ff, d)?,
                window: if swa { c.n_swa } else { 0 },
                swa,
            });
        }
        let tok_embd = qweight_info(g, "token_embd.weight", d, c.n_vocab)?;
        let output = match g.tensor("output.weight") {
            Ok(_) => q("output.weight", d, c.n_vocab)?,
            Err(_) => {
                // Tied embeddings. Lookups read single rows of the map afterwards.
                let w = B::qweight(&tok_embd, device)?;
                g.release_tensor_pages(g.tensor("token_embd.weight")?);
                w
            }
        };
        let positions = c.context_length.min(MAX_POSITIONS);
        let factors = c.rope_freqs.as_deref();
        let rope = Rope::new(c.head_dim, c.rope_base, factors, c.rope, positions, device);
        // SWA layers use their own base and no frequency factors (llama.cpp freq_scale_swa).
        let rope_swa = blocks
            .iter()
            .any(|b| b.swa)
            .then(|| Rope::new(c.head_dim, c.rope_base_swa, None, c.rope, positions, device));
        Ok(Self {
            output_norm: norm("output_norm.weight")?,
            rope,
            rope_swa,
            config: c,
            tok_embd,
            blocks,
            output,
            cache_type: CacheType::default(),
            device: device.clone(),
        })
    }

    /// The device the model runs on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Positions a sequence can reach: the context length, at most [`MAX_POSITIONS`].
    pub fn max_positions(&self) -> usize {
        self.config.context_length.min(MAX_POSITIONS)
    }

    /// The element type of the caches [`Llama::new_cache`] makes.
    pub fn cache_type(&self) -> CacheType {
        self.cache_type
    }

    /// Sets the element type of the caches made from now on (default [`CacheType::F16`]).
    pub fn set_cache_type(&mut self, ty: CacheType) {
        self.cache_type = ty;
    }

    /// A cache for up to `capacity` positions (at most [`Llama::max_positions`]).
    pub fn new_cache(&self, capacity: usize) -> KvCache<B> {
        let c = &self.config;
        let capacity = capacity.min(self.max_positions());
        let shape = [c.n_head_kv, capacity, c.head_dim];
        let zeros = || {
            Some(Tensor::zeros(
                shape,
                (&self.device, self.cache_type.dtype()),
            ))
        };
        KvCache {
            k: (0..c.n_layer).map(|_| zeros()).collect(),
            v: (0..c.n_layer).map(|_| zeros()).collect(),
            len: 0,
            capacity,
            ty: self.cache_type,
        }
    }

    /// `cache` moved into a new cache of `capacity` positions (at most the context length),
    /// keeping its first `keep` positions: a conversation outgrowing its cache keeps its
    /// prefix instead of prefilling it again.
    pub fn grow_cache(&self, mut cache: KvCache<B>, capacity: usize, keep: usize) -> KvCache<B> {
        let c = &self.config;
        let keep = keep.min(cache.len);
        let mut new = self.new_cache(capacity.max(keep));
        let (h, d) = (c.n_head_kv, c.head_dim);
        for (dst, src) in [(&mut new.k, &mut cache.k), (&mut new.v, &mut cache.v)] {
            for (nt, ot) in dst.iter_mut().zip(src.iter_mut()) {
                if let (Some(n), Some(o)) = (nt.take(), ot.take()) {
                    let prefix = o.slice([0..h, 0..keep, 0..d]).cast(n.dtype());
                    *nt = Some(n.slice_assign([0..h, 0..keep, 0..d], prefix));
                }
            }
        }
        new.len = keep;
        new
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor<B, 2>> {
        let d = self.config.n_embd;
        let w = &self.tok_embd;
        let row_bytes = d / w.ty.block_size() * w.ty.block_bytes();
        let mut x = Vec::with_capacity(tokens.len() * d);
        for &t in tokens {
            let t = t as usize;
            if t >= self.config.n_vocab {
                return Err(ModelError::InvalidParameter(format!(
                    "token id {t} is outside the vocabulary ({})",
                    self.config.n_vocab
                )));
            }
            dequantize(
                w.ty,
                &w.data()[t * row_bytes..(t + 1) * row_bytes],
                d,
                &mut x,
            );
        }
        let x = Tensor::from_data(TensorData::new(x, [tokens.len(), d]), &self.device);
        Ok(match self.config.embd_scale {
            Some(s) => x.mul_scalar(s),
            None => x,
        })
    }

    /// Runs `tokens` at positions `cache.len()..`, appending their keys and values to `cache`:
    /// a [`Llama::step`] with one chunk.
    ///
    /// Returns logits `[1, n_vocab]` ([`Logits::Last`]) or `[tokens.len(), n_vocab]`.
    ///
    /// # Errors
    /// As [`Llama::step`].
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache<B>,
        logits: Logits,
    ) -> Result<Tensor<B, 2>> {
        self.step(&mut [Chunk {
            tokens,
            cache,
            logits,
        }])
    }

    /// One decode step for several sequences at once (continuous batching): `tokens[i]` is
    /// the next token of the sequence whose cache is `caches[i]`: a [`Llama::step`] with one
    /// one-token chunk per sequence.
    ///
    /// Returns logits `[n, n_vocab]`; row `i` equals, bit for bit,
    /// `forward(&[tokens[i]], caches[i], Last)`.
    ///
    /// # Errors
    /// [`ModelError::InvalidParameter`] for a length mismatch; otherwise as [`Llama::step`].
    pub fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache<B>],
    ) -> Result<Tensor<B, 2>> {
        if tokens.len() != caches.len() {
            return Err(ModelError::InvalidParameter(format!(
                "forward_batch: {} tokens for {} caches",
                tokens.len(),
                caches.len()
            )));
        }
        let mut chunks: Vec<Chunk<'_, B>> = tokens
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, c)| Chunk {
                tokens: std::slice::from_ref(t),
                cache: &mut **c,
                logits: Logits::Last,
            })
            .collect();
        self.step(&mut chunks)
    }

    /// The one forward path: single decode, batched decode, prefill and chunked prefill mixed
    /// with other sequences' decode steps are all this.
    ///
    /// Chunk `c` runs its tokens at positions `c.cache.len()..` and appends their keys and
    /// values to `c.cache`. The rows of all chunks go through the norms, the projections and
    /// the MLP together (`[Σm, ·]`, so the weights are read once per step for every sequence);
    /// RoPE, the cache write and attention are per chunk. Every operation is computed row by
    /// row in a fixed order (the quantized matmul per token, RMSNorm per row, attention per
    /// query), so a row's result does not depend on the other rows in the step: a chunk's
    /// logits are bit-identical to running it alone, and a prompt prefilled in several chunks
    /// gives the same logits as in one.
    ///
    /// Returns the logits of each chunk in order — its last position's ([`Logits::Last`]) or
    /// every position's ([`Logits::All`]) — as `[rows, n_vocab]`.
    ///
    /// # Errors
    /// [`ModelError::InvalidParameter`] for no chunks, an empty chunk or an id outside the
    /// vocabulary; [`ModelError::ContextOverflow`] if a chunk does not fit its cache. Nothing
    /// is written to any cache then.
    pub fn step(&self, chunks: &mut [Chunk<'_, B>]) -> Result<Tensor<B, 2>> {
        let c = &self.config;
        if chunks.is_empty() || chunks.iter().any(|ch| ch.tokens.is_empty()) {
            return Err(ModelError::InvalidParameter(
                "forward: a step needs at least one token per sequence".into(),
            ));
        }
        if let Some(full) = chunks
            .iter()
            .find(|ch| ch.cache.len + ch.tokens.len() > ch.cache.capacity)
        {
            return Err(ModelError::ContextOverflow {
                needed: full.cache.len + full.tokens.len(),
                context_length: full.cache.capacity,
            });
        }
        let (nh, nkv, hd) = (c.n_head, c.n_head_kv, c.head_dim);
        let all: Vec<u32> = chunks
            .iter()
            .flat_map(|ch| ch.tokens.iter().copied())
            .collect();
        // Row ranges of the chunks in the step's `[Σm, ·]` tensors.
        let mut spans = Vec::with_capacity(chunks.len());
        let mut r0 = 0;
        for ch in chunks.iter() {
            spans.push(r0..r0 + ch.tokens.len());
            r0 += ch.tokens.len();
        }
        let positions: Vec<(usize, usize)> = chunks
            .iter()
            .map(|ch| (ch.cache.len, ch.tokens.len()))
            .collect();
        let rope_at = self.rope.at(&positions);
        let rope_swa_at = self.rope_swa.as_ref().map(|r| r.at(&positions));
        let mut x = self.embed(&all)?;
        for (l, b) in self.blocks.iter().enumerate() {
            let h = b.attn_norm.forward(x.clone());
            let [q, k, v]: [Tensor<B, 2>; 3] = qlinear(h, &[&b.wq, &b.wk, &b.wv])
                .try_into()
                .expect("three outputs");
            let [q, k, v] = match &b.qkv_bias {
                Some([bq, bk, bv]) => [
                    q + bq.clone().unsqueeze::<2>(),
                    k + bk.clone().unsqueeze::<2>(),
                    v + bv.clone().unsqueeze::<2>(),
                ],
                None => [q, k, v],
            };
            // Per-head norms on `[rows · heads, head_dim]` (row by row, so still per token).
            let rows = q.dims()[0];
            let [q, k] = match &b.qk_norm {
                Some([qn, kn]) => [
                    qn.forward(q.reshape([rows * nh, hd]))
                        .reshape([rows, nh * hd]),
                    kn.forward(k.reshape([rows * nkv, hd]))
                        .reshape([rows, nkv * hd]),
                ],
                None => [q, k],
            };
            let (rope, at) = match (&self.rope_swa, &rope_swa_at, b.swa) {
                (Some(r), Some(at), true) => (r, at),
                _ => (&self.rope, &rope_at),
            };
            let q = rope.forward(q.reshape([rows, nh, hd]), at);
            let q = match c.q_scale {
                Some(s) => q.mul_scalar(s),
                None => q,
            };
            let k = rope.forward(k.reshape([rows, nkv, hd]), at);
            let v = v.reshape([rows, nkv, hd]);
            // Each sequence's new keys and values into its cache, then one attention for all.
            let whole = chunks.len() == 1;
            for (ch, span) in chunks.iter_mut().zip(&spans) {
                let part = |t: &Tensor<B, 3>| {
                    if whole {
                        t.clone()
                    } else {
                        t.clone().slice([span.clone(), 0..nkv, 0..hd])
                    }
                };
                let pos = ch.cache.len;
                let cache = &mut *ch.cache;
                for (c, t) in [(&mut cache.k[l], &k), (&mut cache.v[l], &v)] {
                    let written = kv_write(
                        c.take().expect("cache present"),
                        part(t).swap_dims(0, 1),
                        pos,
                    );
                    *c = Some(written);
                }
            }
            let seqs: Vec<_> = chunks
                .iter()
                .map(|ch| {
                    (
                        ch.tokens.len(),
                        ch.cache.k[l].as_ref().expect("cache present"),
                        ch.cache.v[l].as_ref().expect("cache present"),
                        AttnSpan {
                            pos: ch.cache.len,
                            window: b.window,
                            scale: c.attn_scale,
                        },
                    )
                })
                .collect();
            let attn = attention_batch(q, &seqs);
            x = b.finish(x, attn, c.ffn_act);
        }
        for ch in chunks.iter_mut() {
            ch.cache.len += ch.tokens.len();
        }
        // The rows whose logits are wanted.
        let wanted: Vec<std::ops::Range<usize>> = chunks
            .iter()
            .zip(&spans)
            .map(|(ch, rows)| match ch.logits {
                Logits::All => rows.clone(),
                Logits::Last => rows.end - 1..rows.end,
            })
            .collect();
        if wanted.iter().map(|r| r.len()).sum::<usize>() != all.len() {
            let parts: Vec<Tensor<B, 2>> = wanted
                .into_iter()
                .map(|r| x.clone().slice([r, 0..c.n_embd]))
                .collect();
            x = Tensor::cat(parts, 0);
        }
        let x = self.output_norm.forward(x);
        let [out]: [Tensor<B, 2>; 1] = qlinear(x, &[&self.output]).try_into().expect("one output");
        Ok(match c.logit_softcap {
            Some(cap) => out.div_scalar(cap).tanh().mul_scalar(cap),
            None => out,
        })
    }
}
