//! The Burn backend extension the model runs on: fused matmul against packed GGUF blocks and an
//! in-place KV-cache write.
//!
//! Burn's generic quantized matmul dequantizes the whole weight on every call; here every linear
//! layer goes through [`QuantBackend::qlinear`], which multiplies activations straight against
//! Q4_0/Q4_1/Q8_0 blocks (CPU: [`crate::kernels::cpu`], SIMD; CUDA: a CubeCL kernel, feature
//! `cuda`). This follows Burn's "custom operations" pattern: a trait over [`Backend`]
//! implemented for each concrete backend.

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use half::{f16, slice::HalfFloatSliceExt};
use memmap2::Mmap;

use crate::arch::FfnAct;
use crate::formats::Acts;
use crate::kernels::cpu::{self, QMatRef};
use crate::kernels::packed::{PackedActs, PackedMatrix};
use crate::kernels::{attention, norm};
use crate::quant::GgmlType;

/// Where a weight's packed bytes live on the host.
#[derive(Clone)]
enum Bytes {
    /// A range of the memory-mapped GGUF file (no copy).
    Mapped(Arc<Mmap>, Range<usize>),
    /// Bytes owned by the process.
    Owned(Arc<[u8]>),
}

/// A weight matrix in its GGUF block format, on the host: `n` output rows × `k` inputs.
#[derive(Clone)]
pub struct HostQWeight {
    /// Block format (any of [`crate::formats`]).
    pub ty: GgmlType,
    /// Output rows (GGUF `ne[1]`).
    pub n: usize,
    /// Inputs per row (GGUF `ne[0]`), a multiple of the format's block size.
    pub k: usize,
    bytes: Bytes,
}

impl Debug for HostQWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostQWeight({} {}×{})", self.ty.name(), self.n, self.k)
    }
}

impl HostQWeight {
    /// A weight borrowing `range` of a memory map.
    pub fn mapped(ty: GgmlType, n: usize, k: usize, map: Arc<Mmap>, range: Range<usize>) -> Self {
        assert_eq!(range.len(), n * k / ty.block_size() * ty.block_bytes());
        Self {
            ty,
            n,
            k,
            bytes: Bytes::Mapped(map, range),
        }
    }

    /// A weight owning its bytes (tests, tools).
    pub fn owned(ty: GgmlType, n: usize, k: usize, bytes: Vec<u8>) -> Self {
        assert_eq!(bytes.len(), n * k / ty.block_size() * ty.block_bytes());
        Self {
            ty,
            n,
            k,
            bytes: Bytes::Owned(bytes.into()),
        }
    }

    /// The packed blocks, row after row.
    pub fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped(map, r) => &map[r.clone()],
            Bytes::Owned(b) => b,
        }
    }

    /// A kernel view of the weight.
    pub fn as_ref(&self) -> QMatRef<'_> {
        QMatRef {
            ty: self.ty,
            n: self.n,
            k: self.k,
            data: self.data(),
        }
    }
}

/// A Burn backend that can run the model: Burn's own ops plus these.
pub trait QuantBackend: Backend {
    /// Whether the weights live in GPU memory (so a load checks the GPU's free memory, not
    /// RAM).
    const ON_GPU: bool = false;

    /// Packed weights resident on the device.
    type QWeight: Clone + Send + Sync + Debug + 'static;

    /// Places a packed weight on `device` (a no-op view on the CPU).
    ///
    /// # Errors
    /// [`crate::ModelError::InvalidParameter`] when the backend has no kernel for the format.
    fn qweight(w: &HostQWeight, device: &Self::Device) -> crate::Result<Self::QWeight>;

    /// `x · Wᵢᵀ` for each weight, sharing one pass over `x`.
    ///
    /// `x`: `[m, k]` f32; each result: `[m, nᵢ]`. All weights take the same `k`.
    fn qlinear(x: FloatTensor<Self>, weights: &[&Self::QWeight]) -> Vec<FloatTensor<Self>>;

    /// Writes `value` (`[heads, m, head_dim]`, f32) into `cache` (`[heads, capacity, head_dim]`,
    /// f32 or f16: [`crate::llama::CacheType`]) at positions `pos..pos + m`, converted to the
    /// cache's type (round to nearest even), in place where the backend allows.
    fn kv_write(
        cache: FloatTensor<Self>,
        value: FloatTensor<Self>,
        pos: usize,
    ) -> FloatTensor<Self> {
        let cache: Tensor<Self, 3> = Tensor::from_primitive(TensorPrimitive::Float(cache));
        let value: Tensor<Self, 3> = Tensor::from_primitive(TensorPrimitive::Float(value));
        let [h, m, d] = value.dims();
        let value = value.cast(cache.dtype());
        cache
            .slice_assign([0..h, pos..pos + m, 0..d], value)
            .into_primitive()
            .tensor()
    }

    /// RMSNorm of each row: `x / sqrt(mean(x²) + eps) · weight` over the last dimension.
    ///
    /// `x`: `[m, d]`; `weight`: `[d]`; returns `[m, d]`. Each row must be computed on its own
    /// (its result may not depend on the other rows): batched decode and chunked prefill rely
    /// on it for bit-identical results. The default uses Burn's ops.
    fn rms_norm(x: FloatTensor<Self>, weight: &FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let x: Tensor<Self, 2> = Tensor::from_primitive(TensorPrimitive::Float(x));
        let w: Tensor<Self, 1> = Tensor::from_primitive(TensorPrimitive::Float(weight.clone()));
        let inv = x
            .clone()
            .powi_scalar(2)
            .mean_dim(1)
            .add_scalar(eps)
            .sqrt()
            .recip();
        (x * inv * w.unsqueeze::<2>()).into_primitive().tensor()
    }

    /// The gated MLP's activation: `act(gate) ⊙ up`, element by element (`gate`, `up`, the
    /// result: `[m, n_ff]`). SwiGLU: `silu(g) = g / (1 + e^−g)` (ggml `ggml_silu_f32`); GeGLU:
    /// GELU with the tanh approximation as ggml's CPU computes it with `GGML_GELU_FP16` (`g`
    /// rounded to f16, `0.5·r·(1 + tanh(√(2/π)·r·(1 + 0.044715·r²)))` rounded to f16 — its
    /// table `ggml_table_gelu_f16` — except `g ≥ 10` → `g`, `g ≤ −10` → 0). The default uses
    /// Burn's ops.
    fn glu(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: FfnAct) -> FloatTensor<Self> {
        let g: Tensor<Self, 2> = Tensor::from_primitive(TensorPrimitive::Float(gate));
        let u: Tensor<Self, 2> = Tensor::from_primitive(TensorPrimitive::Float(up));
        let a = match act {
            FfnAct::Silu => g.clone() / (g.neg().exp().add_scalar(1.0)),
            FfnAct::GeluTanh => {
                let f16 = |t: Tensor<Self, 2>| t.cast(DType::F16).cast(DType::F32);
                let r = f16(g.clone());
                let inner = (r.clone() * r.clone())
                    .mul_scalar(GELU_COEF_A)
                    .add_scalar(1.0)
                    .mul(r.clone())
                    .mul_scalar(SQRT_2_OVER_PI);
                let y = f16(r.mul_scalar(0.5) * inner.tanh().add_scalar(1.0));
                y.mask_where(g.clone().greater_equal_elem(10.0), g.clone())
                    .mask_fill(g.lower_equal_elem(-10.0), 0.0)
            }
        };
        (a * u).into_primitive().tensor()
    }

    /// Rotary position embedding of each row: `x` `[rows, heads, head_dim]`; `cos`, `sin`
    /// `[rows, head_dim / 2]`, row `r`'s angles. Pairs `(x0, x1)` are `(x[2i], x[2i+1])`
    /// (`RopeKind::Norm`) or `(x[i], x[i + head_dim/2])` (`RopeKind::Neox`, `neox`);
    /// `y0 = x0·cos − x1·sin`, `y1 = x0·sin + x1·cos`, each product rounded to f32 before the
    /// sum (no fused multiply-add), as Burn's ops compute it — the default.
    fn rope(
        x: FloatTensor<Self>,
        cos: &FloatTensor<Self>,
        sin: &FloatTensor<Self>,
        neox: bool,
    ) -> FloatTensor<Self> {
        let x: Tensor<Self, 3> = Tensor::from_primitive(TensorPrimitive::Float(x));
        let cos: Tensor<Self, 2> = Tensor::from_primitive(TensorPrimitive::Float(cos.clone()));
        let sin: Tensor<Self, 2> = Tensor::from_primitive(TensorPrimitive::Float(sin.clone()));
        let [m, h, d] = x.dims();
        let half = d / 2;
        let (cos, sin) = (cos.unsqueeze_dim::<3>(1), sin.unsqueeze_dim::<3>(1));
        let y = if neox {
            let x0 = x.clone().slice([0..m, 0..h, 0..half]);
            let x1 = x.slice([0..m, 0..h, half..d]);
            let y0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
            let y1 = x0 * sin + x1 * cos;
            Tensor::cat(vec![y0, y1], 2)
        } else {
            let pairs = x.reshape([m, h, half, 2]);
            let x0 = pairs
                .clone()
                .slice([0..m, 0..h, 0..half, 0..1])
                .reshape([m, h, half]);
            let x1 = pairs
                .slice([0..m, 0..h, 0..half, 1..2])
                .reshape([m, h, half]);
            let y0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
            let y1 = x0 * sin + x1 * cos;
            Tensor::stack::<4>(vec![y0, y1], 3).reshape([m, h, d])
        };
        y.into_primitive().tensor()
    }

    /// Causal attention of each sequence's new tokens over its own cache: sequence `s`'s `m`
    /// tokens at positions `at.pos..at.pos + m` (the cache filled up to `pos + m`); GQA: query
    /// head `h` reads KV head `h / (n_head / n_head_kv)`; scores `q·k · at.scale`; with
    /// `at.window > 0` (a sliding-window layer, `n_swa`) query `p` sees keys
    /// `p − window < j ≤ p` only.
    ///
    /// `q`: `[Σm, n_head, head_dim]` f32, the sequences' rows one after another; each `k`, `v`:
    /// `[n_head_kv, capacity, head_dim]` in the cache's type; returns `[Σm, n_head · head_dim]`
    /// f32. A sequence's rows may not depend on the other sequences (batched decode is
    /// bit-identical to decoding alone). The default runs Burn's attention on a slice of each
    /// cache read as f32, sequence by sequence.
    fn attention_batch(q: FloatTensor<Self>, seqs: &[AttnSeq<'_, Self>]) -> FloatTensor<Self> {
        let q: Tensor<Self, 3> = Tensor::from_primitive(TensorPrimitive::Float(q));
        let [_, nh, d] = q.dims();
        let mut r0 = 0;
        let parts: Vec<Tensor<Self, 2>> = seqs
            .iter()
            .map(|s| {
                let qs = q.clone().slice([r0..r0 + s.m, 0..nh, 0..d]);
                r0 += s.m;
                attention_cached_burn::<Self>(
                    qs,
                    &Tensor::from_primitive(TensorPrimitive::Float(s.k.clone())),
                    &Tensor::from_primitive(TensorPrimitive::Float(s.v.clone())),
                    s.at,
                )
            })
            .collect();
        Tensor::cat(parts, 0).into_primitive().tensor()
    }
}

/// ggml's `GELU_COEF_A`.
const GELU_COEF_A: f32 = 0.044715;
/// ggml's `SQRT_2_OVER_PI`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// One element of [`QuantBackend::glu`] (the CPU's loop; the same formulas as the default).
#[inline(always)]
fn glu_one(g: f32, u: f32, act: FfnAct) -> f32 {
    let a = match act {
        FfnAct::Silu => g / (1.0 + (-g).exp()),
        FfnAct::GeluTanh => {
            if g >= 10.0 {
                g
            } else if g <= -10.0 {
                0.0
            } else {
                let r = f16::from_f32(g).to_f32();
                let inner = SQRT_2_OVER_PI * (r * (1.0 + GELU_COEF_A * r * r));
                f16::from_f32(0.5 * r * (1.0 + inner.tanh())).to_f32()
            }
        }
    };
    a * u
}

/// One sequence of [`QuantBackend::attention_batch`]: how many query rows it has, its layer's
/// cache and where its queries attend.
pub struct AttnSeq<'a, B: Backend> {
    /// Query rows (new tokens).
    pub m: usize,
    /// Keys, `[n_head_kv, capacity, head_dim]`.
    pub k: &'a FloatTensor<B>,
    /// Values, the same shape.
    pub v: &'a FloatTensor<B>,
    /// Position, window and scale.
    pub at: AttnSpan,
}

/// Where one sequence's new queries attend in a layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnSpan {
    /// Position of the first new token.
    pub pos: usize,
    /// The layer's sliding window in positions (`n_swa`); 0: every earlier position.
    pub window: usize,
    /// Score scale (llama.cpp `kq_scale`: `1/√head_dim`, or the architecture's own).
    pub scale: f32,
}

/// [`QuantBackend::attention_cached`] in Burn's own ops (the default of every backend without
/// a fused version): a slice of the cache and `burn::tensor::module::attention`.
pub fn attention_cached_burn<B: Backend>(
    q: Tensor<B, 3>,
    k: &Tensor<B, 3>,
    v: &Tensor<B, 3>,
    at: AttnSpan,
) -> Tensor<B, 2> {
    let AttnSpan { pos, window, scale } = at;
    let [m, nh, d] = q.dims();
    let nkv = k.dims()[0];
    let (t, group) = (pos + m, nh / nkv);
    // An f16 cache is read as f32 (the CPU's own kernel also rounds q and the weights).
    let read = |c: &Tensor<B, 3>| {
        c.clone()
            .slice([0..nkv, 0..t, 0..d])
            .cast(q.dtype())
            .unsqueeze::<4>()
    };
    let (keys, vals) = (read(k), read(v));
    if window > 0 && t > window {
        // Sliding window: explicit scores with −∞ outside `p − window < j ≤ p`.
        let q = q.swap_dims(0, 1).unsqueeze::<4>(); // [1, nh, m, d]
        let expand = |kv: Tensor<B, 4>| {
            kv.reshape([1, nkv, 1, t, d])
                .expand([1, nkv, group, t, d])
                .reshape([1, nh, t, d])
        };
        let mut mask = Vec::with_capacity(m * t);
        for i in 0..m {
            let p = pos + i;
            mask.extend((0..t).map(|j| {
                if j <= p && p - j < window {
                    0.0f32
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
        let mask =
            Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(mask, [m, t]), &q.device())
                .reshape([1, 1, m, t]);
        let scores = q.matmul(expand(keys).swap_dims(2, 3)).mul_scalar(scale) + mask;
        let p = burn::tensor::activation::softmax(scores, 3);
        return p
            .matmul(expand(vals))
            .reshape([nh, m, d])
            .swap_dims(0, 1)
            .reshape([m, nh * d]);
    }
    if m == 1 {
        // The query heads sharing a KV head become rows of one attention problem.
        let q = q.reshape([1, nkv, group, d]);
        let opts = burn::tensor::ops::AttentionModuleOptions {
            scale: Some(scale as f64),
            ..Default::default()
        };
        burn::tensor::module::attention(q, keys, vals, None, None, opts).reshape([1, nh * d])
    } else {
        let q = q.swap_dims(0, 1).unsqueeze::<4>();
        let expand = |kv: Tensor<B, 4>| {
            kv.reshape([1, nkv, 1, t, d])
                .expand([1, nkv, group, t, d])
                .reshape([1, nh, t, d])
        };
        let opts = burn::tensor::ops::AttentionModuleOptions {
            is_causal: true,
            scale: Some(scale as f64),
            ..Default::default()
        };
        burn::tensor::module::attention(q, expand(keys), expand(vals), None, None, opts)
            .reshape([nh, m, d])
            .swap_dims(0, 1)
            .reshape([m, nh * d])
    }
}

/// Runs [`QuantBackend::rms_norm`] on high-level tensors.
pub fn rms_norm<B: QuantBackend>(x: Tensor<B, 2>, weight: &Tensor<B, 1>, eps: f32) -> Tensor<B, 2> {
    let w = weight.clone().into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::rms_norm(
        x.into_primitive().tensor(),
        &w,
        eps,
    )))
}

/// Runs [`QuantBackend::attention_batch`] on high-level tensors: `q` `[Σm, n_head, head_dim]`,
/// each sequence's `(m, k, v, span)`; returns `[Σm, n_head · head_dim]`.
pub fn attention_batch<B: QuantBackend>(
    q: Tensor<B, 3>,
    seqs: &[(usize, &Tensor<B, 3>, &Tensor<B, 3>, AttnSpan)],
) -> Tensor<B, 2> {
    let prims: Vec<(usize, FloatTensor<B>, FloatTensor<B>, AttnSpan)> = seqs
        .iter()
        .map(|&(m, k, v, at)| {
            (
                m,
                k.clone().into_primitive().tensor(),
                v.clone().into_primitive().tensor(),
                at,
            )
        })
        .collect();
    let seqs: Vec<AttnSeq<'_, B>> = prims
        .iter()
        .map(|(m, k, v, at)| AttnSeq {
            m: *m,
            k,
            v,
            at: *at,
        })
        .collect();
    Tensor::from_primitive(TensorPrimitive::Float(B::attention_batch(
        q.into_primitive().tensor(),
        &seqs,
    )))
}

/// Runs [`QuantBackend::qlinear`] on high-level tensors.
pub fn qlinear<B: QuantBackend>(x: Tensor<B, 2>, weights: &[&B::QWeight]) -> Vec<Tensor<B, 2>> {
    B::qlinear(x.into_primitive().tensor(), weights)
        .into_iter()
        .map(|t| Tensor::from_primitive(TensorPrimitive::Float(t)))
        .collect()
}

/// Runs [`QuantBackend::glu`] on high-level tensors.
pub fn glu<B: QuantBackend>(gate: Tensor<B, 2>, up: Tensor<B, 2>, act: FfnAct) -> Tensor<B, 2> {
    Tensor::from_primitive(TensorPrimitive::Float(B::glu(
        gate.into_primitive().tensor(),
        up.into_primitive().tensor(),
        act,
    )))
}

/// Runs [`QuantBackend::rope`] on high-level tensors.
pub fn rope<B: QuantBackend>(
    x: Tensor<B, 3>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
    neox: bool,
) -> Tensor<B, 3> {
    let (cos, sin) = (
        cos.clone().into_primitive().tensor(),
        sin.clone().into_primitive().tensor(),
    );
    Tensor::from_primitive(TensorPrimitive::Float(B::rope(
        x.into_primitive().tensor(),
        &cos,
        &sin,
        neox,
    )))
}

/// Runs [`QuantBackend::kv_write`] on high-level tensors.
pub fn kv_write<B: QuantBackend>(
    cache: Tensor<B, 3>,
    value: Tensor<B, 3>,
    pos: usize,
) -> Tensor<B, 3> {
    Tensor::from_primitive(TensorPrimitive::Float(B::kv_write(
        cache.into_primitive().tensor(),
        value.into_primitive().tensor(),
        pos,
    )))
}

/// The elements of a contiguous f32 tensor, in order (its storage may be a larger buffer that
/// the tensor views a part of).
fn f32_elems(t: &FlexTensor) -> &[f32] {
    elems::<f32>(t)
}

/// [`f32_elems`] for any element type.
fn elems<E: burn::tensor::Element + bytemuck::Pod>(t: &FlexTensor) -> &[E] {
    let (start, end) = t
        .layout()
        .contiguous_offsets()
        .expect("a contiguous tensor");
    &t.storage::<E>()[start..end]
}

fn flex_f32(shape: Vec<usize>, data: Vec<f32>) -> FlexTensor {
    FlexTensor::from_data(burn::tensor::TensorData::new(data, shape))
}

/// A weight as the CPU kernels take it: repacked for AVX2 where the CPU has it, else the GGUF
/// blocks in place (memory-mapped).
#[derive(Debug, Clone)]
pub enum CpuQWeight {
    /// Repacked for the AVX2 kernels ([`PackedMatrix`]).
    Packed(Arc<PackedMatrix>),
    /// GGUF blocks, read by the portable kernels.
    Blocks(HostQWeight),
}

impl CpuQWeight {
    /// Output rows.
    pub fn n(&self) -> usize {
        match self {
            CpuQWeight::Packed(p) => p.n,
            CpuQWeight::Blocks(b) => b.n,
        }
    }

    /// Inputs per row.
    pub fn k(&self) -> usize {
        match self {
            CpuQWeight::Packed(p) => p.k,
            CpuQWeight::Blocks(b) => b.k,
        }
    }
}

impl QuantBackend for Flex {
    type QWeight = CpuQWeight;

    fn qweight(w: &HostQWeight, _device: &Self::Device) -> crate::Result<CpuQWeight> {
        if cpu::has_avx2() {
            if let Some(p) = PackedMatrix::from_gguf(w.as_ref()) {
                return Ok(CpuQWeight::Packed(Arc::new(p)));
            }
        }
        Ok(CpuQWeight::Blocks(w.clone()))
    }

    fn qlinear(x: FlexTensor, weights: &[&CpuQWeight]) -> Vec<FlexTensor> {
        let x = x.to_contiguous();
        let dims = x.layout().shape().to_vec();
        let k = *dims.last().expect("qlinear: x has a shape");
        let xs = f32_elems(&x);
        let acts = Acts::new(xs, k);
        let m = acts.m;
        let packed_acts = weights
            .iter()
            .any(|w| matches!(w, CpuQWeight::Packed(_)))
            .then(|| PackedActs::new(acts.q8(), m, k));
        weights
            .iter()
            .map(|w| {
                assert_eq!(
                    w.k(),
                    k,
                    "qlinear: x has {k} columns, weight {w:?} takes {}",
                    w.k()
                );
                let mut out = vec![0.0f32; m * w.n()];
                match w {
                    CpuQWeight::Packed(p) => cpu::qmatmul_packed(
                        p,
                        packed_acts.as_ref().expect("packed activations"),
                        &mut out,
                    ),
                    CpuQWeight::Blocks(b) => cpu::qmatmul_acts(&acts, b.as_ref(), &mut out),
                }
                flex_f32(vec![m, w.n()], out)
            })
            .collect()
    }

    fn glu(gate: FlexTensor, up: FlexTensor, act: FfnAct) -> FlexTensor {
        let (g, u) = (gate.to_contiguous(), up.to_contiguous());
        let shape = g.layout().shape().to_vec();
        assert_eq!(
            shape,
            u.layout().shape().to_vec(),
            "glu: gate and up shapes"
        );
        let out = f32_elems(&g)
            .iter()
            .zip(f32_elems(&u))
            .map(|(&g, &u)| glu_one(g, u, act))
            .collect();
        flex_f32(shape, out)
    }

    fn rope(x: FlexTensor, cos: &FlexTensor, sin: &FlexTensor, neox: bool) -> FlexTensor {
        let x = x.to_contiguous();
        let shape = x.layout().shape().to_vec();
        let [rows, heads, d]: [usize; 3] = shape.clone().try_into().expect("x is [rows, heads, d]");
        let (cos, sin) = (cos.clone().to_contiguous(), sin.clone().to_contiguous());
        let (xs, cs, ss) = (f32_elems(&x), f32_elems(&cos), f32_elems(&sin));
        let half = d / 2;
        assert!(
            cs.len() == rows * half && ss.len() == rows * half,
            "rope: angles for {rows} rows of {half}"
        );
        let mut out = vec![0.0f32; xs.len()];
        for r in 0..rows {
            let (c, s) = (&cs[r * half..(r + 1) * half], &ss[r * half..(r + 1) * half]);
            for h in 0..heads {
                let o = (r * heads + h) * d;
                let (x, y) = (&xs[o..o + d], &mut out[o..o + d]);
                for i in 0..half {
                    let (i0, i1) = if neox {
                        (i, i + half)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (x0, x1) = (x[i0], x[i1]);
                    y[i0] = x0 * c[i] - x1 * s[i];
                    y[i1] = x0 * s[i] + x1 * c[i];
                }
            }
        }
        flex_f32(shape, out)
    }

    fn rms_norm(x: FlexTensor, weight: &FlexTensor, eps: f32) -> FlexTensor {
        let x = x.to_contiguous();
        let shape = x.layout().shape().to_vec();
        let w = weight.clone().to_contiguous();
        let (xs, ws) = (f32_elems(&x), f32_elems(&w));
        let mut out = vec![0.0f32; xs.len()];
        norm::rms_norm(xs, ws, eps, &mut out);
        flex_f32(shape, out)
    }

    fn attention_batch(q: FlexTensor, seqs: &[AttnSeq<'_, Self>]) -> FlexTensor {
        let q = q.to_contiguous();
        let [rows, nh, d]: [usize; 3] = q
            .layout()
            .shape()
            .to_vec()
            .try_into()
            .expect("q is [Σm, n_head, head_dim]");
        let caches: Vec<(FlexTensor, FlexTensor)> = seqs
            .iter()
            .map(|s| (s.k.clone().to_contiguous(), s.v.clone().to_contiguous()))
            .collect();
        fn run<E: attention::KvElem + burn::tensor::Element + bytemuck::Pod>(
            q: &[f32],
            seqs: &[AttnSeq<'_, Flex>],
            caches: &[(FlexTensor, FlexTensor)],
            (nh, d): (usize, usize),
        ) -> Vec<f32> {
            let kv: Vec<_> = seqs
                .iter()
                .zip(caches)
                .map(|(s, (k, v))| {
                    let kshape = k.layout().shape();
                    attention::SeqKv {
                        k: elems::<E>(k),
                        v: elems::<E>(v),
                        shape: attention::AttnShape {
                            m: s.m,
                            n_head: nh,
                            n_head_kv: kshape[0],
                            head_dim: d,
                            capacity: kshape[1],
                            pos: s.at.pos,
                            window: s.at.window,
                            scale: s.at.scale,
                        },
                    }
                })
                .collect();
            attention::attention_batch(q, &kv)
        }
        // The caches of one model share its cache type (`CacheType`).
        let all = |t: DType| caches.iter().all(|(k, v)| k.dtype() == t && v.dtype() == t);
        let out = if all(DType::F16) {
            run::<f16>(f32_elems(&q), seqs, &caches, (nh, d))
        } else {
            assert!(
                all(DType::F32),
                "attention: the caches of one step share one type, f16 or f32"
            );
            run::<f32>(f32_elems(&q), seqs, &caches, (nh, d))
        };
        flex_f32(vec![rows, nh * d], out)
    }

    fn kv_write(mut cache: FlexTensor, value: FlexTensor, pos: usize) -> FlexTensor {
        let cshape = cache.layout().shape().to_vec();
        let vshape = value.layout().shape().to_vec();
        let (h, cap, d) = (cshape[0], cshape[1], cshape[2]);
        let m = vshape[1];
        assert!(
            vshape[0] == h && vshape[2] == d && pos + m <= cap,
            "kv_write: {vshape:?} at {pos} into {cshape:?}"
        );
        let contiguous = cache.layout().contiguous_offsets() == Some((0, h * cap * d));
        if contiguous {
            let value = value.to_contiguous();
            let src = f32_elems(&value);
            let rows = |head: usize| {
                (
                    (head * cap + pos) * d,
                    &src[head * m * d..(head + 1) * m * d],
                )
            };
            match cache.dtype() {
                DType::F32 => {
                    if let Some(dst) = cache.try_storage_mut::<f32>() {
                        for head in 0..h {
                            let (at, s) = rows(head);
                            dst[at..at + m * d].copy_from_slice(s);
                        }
                        return cache;
                    }
                }
                DType::F16 => {
                    if let Some(dst) = cache.try_storage_mut::<f16>() {
                        for head in 0..h {
                            let (at, s) = rows(head);
                            dst[at..at + m * d].convert_from_f32_slice(s);
                        }
                        return cache;
                    }
                }
                _ => {}
            }
        }
        // Shared or strided: Burn's copy-on-write slice assignment.
        let cache: Tensor<Flex, 3> = Tensor::from_primitive(TensorPrimitive::Float(cache));
        let value: Tensor<Flex, 3> = Tensor::from_primitive(TensorPrimitive::Float(value));
        let value = value.cast(cache.dtype());
        cache
            .slice_assign([0..h, pos..pos + m, 0..d], value)
            .into_primitive()
            .tensor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_q4_1;

    #[test]
    fn flex_qlinear_shapes_and_values() {
        let (n, k) = (5, 64);
        let w: Vec<f32> = (0..n * k).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
        let hw = HostQWeight::owned(GgmlType::Q4_1, n, k, quantize_q4_1(&w));
        let dev = Default::default();
        let qw = Flex::qweight(&hw, &dev).unwrap();
        let blocks = CpuQWeight::Blocks(hw.clone());
        let x = Tensor::<Flex, 2>::ones([2, k], &dev);
        let out = qlinear::<Flex>(x, &[&qw, &blocks]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].dims(), [2, n]);
        let got: Vec<f32> = [out[0].clone(), out[1].clone()]
            .into_iter()
            .flat_map(|t| t.into_data().to_vec::<f32>().unwrap())
            .collect();
        let mut wd = Vec::new();
        crate::quant::dequantize(GgmlType::Q4_1, hw.data(), n * k, &mut wd);
        for r in 0..n {
            let want: f32 = wd[r * k..(r + 1) * k].iter().sum();
            assert!((got[r] - want).abs() < 0.05, "{} vs {want}", got[r]);
            assert!((got[r] - got[2 * n + r]).abs() < 1e-4, "packed vs blocks");
        }
    }

    /// The fused CPU attention of several sequences at once agrees with the Burn-ops default
    /// the GPU backend uses, sequence by sequence.
    #[test]
    fn fused_attention_matches_burn_default() {
        let dev = Default::default();
        let f = |n: usize, s: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + s) % 97) as f32 - 48.0) / 40.0)
                .collect()
        };
        let (nh, nkv, d, cap) = (6, 2, 16, 12);
        let k = Tensor::<Flex, 3>::from_data(
            burn::tensor::TensorData::new(f(nkv * cap * d, 1), [nkv, cap, d]),
            &dev,
        );
        let v = Tensor::<Flex, 3>::from_data(
            burn::tensor::TensorData::new(f(nkv * cap * d, 2), [nkv, cap, d]),
            &dev,
        );
        // Five sequences over the same cache, in one call, against Burn's attention one by one.
        let spans = [(1, 7, 0), (4, 0, 0), (3, 5, 0), (1, 7, 3), (4, 5, 2)];
        let mut qs = Vec::new();
        let mut want = Vec::new();
        for (i, &(m, pos, window)) in spans.iter().enumerate() {
            let q = Tensor::<Flex, 3>::from_data(
                burn::tensor::TensorData::new(f(m * nh * d, 3 + i), [m, nh, d]),
                &dev,
            );
            let at = AttnSpan {
                pos,
                window,
                scale: 0.3,
            };
            want.extend(
                attention_cached_burn(q.clone(), &k, &v, at)
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap(),
            );
            qs.push((q, (m, at)));
        }
        let seqs: Vec<_> = qs.iter().map(|(_, (m, at))| (*m, &k, &v, *at)).collect();
        let q = Tensor::cat(qs.iter().map(|(q, _)| q.clone()).collect(), 0);
        let fused = attention_batch(q, &seqs)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(fused.len(), want.len());
        for (i, (a, b)) in fused.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-4, "[{i}] of {spans:?}: {a} vs {b}");
        }
    }

    /// The CPU's gated activations: SwiGLU as f64 math says, GeGLU as ggml's f16-table GELU
    /// (within its f16 rounding) with its clamps at ±10.
    #[test]
    fn flex_glu_silu_and_gelu_tanh() {
        let dev = Default::default();
        let g: Vec<f32> = (0..64).map(|i| i as f32 * 0.4 - 12.8).collect();
        let u: Vec<f32> = (0..64).map(|i| 1.0 + i as f32 * 0.01).collect();
        let t = |v: &[f32]| {
            Tensor::<Flex, 2>::from_data(burn::tensor::TensorData::new(v.to_vec(), [4, 16]), &dev)
        };
        for act in [FfnAct::Silu, FfnAct::GeluTanh] {
            let y = glu(t(&g), t(&u), act).into_data().to_vec::<f32>().unwrap();
            for ((&g, &u), y) in g.iter().zip(&u).zip(y) {
                let (g64, u64) = (g as f64, u as f64);
                let (want, tol) = match act {
                    FfnAct::Silu => (g64 / (1.0 + (-g64).exp()) * u64, 1e-5),
                    FfnAct::GeluTanh if g >= 10.0 => ((g * u) as f64, 0.0),
                    FfnAct::GeluTanh if g <= -10.0 => (0.0, 0.0),
                    FfnAct::GeluTanh => {
                        let inner =
                            (2.0 / std::f64::consts::PI).sqrt() * (g64 + 0.044715 * g64.powi(3));
                        (
                            0.5 * g64 * (1.0 + inner.tanh()) * u64,
                            1e-2 * (1.0 + g64.abs()),
                        )
                    }
                };
                assert!(
                    (y as f64 - want).abs() <= tol,
                    "{act:?}({g}) · {u}: {y} vs {want}"
                );
            }
        }
    }

    /// The CPU's RoPE rotates each pair by its row's angle, NORM and NEOX pairing.
    #[test]
    fn flex_rope_rotates_each_pair() {
        let dev = Default::default();
        let (rows, heads, d) = (3, 2, 8);
        let x: Vec<f32> = (0..rows * heads * d)
            .map(|i| i as f32 * 0.37 - 4.0)
            .collect();
        let angle = |r: usize, i: usize| (r + 1) as f64 * 0.5 / (i + 1) as f64;
        let (mut c, mut s) = (Vec::new(), Vec::new());
        for r in 0..rows {
            for i in 0..d / 2 {
                c.push(angle(r, i).cos() as f32);
                s.push(angle(r, i).sin() as f32);
            }
        }
        let t2 = |v: Vec<f32>| {
            Tensor::<Flex, 2>::from_data(burn::tensor::TensorData::new(v, [rows, d / 2]), &dev)
        };
        let (ct, st) = (t2(c), t2(s));
        for neox in [false, true] {
            let xt = Tensor::<Flex, 3>::from_data(
                burn::tensor::TensorData::new(x.clone(), [rows, heads, d]),
                &dev,
            );
            let y = rope(xt, &ct, &st, neox)
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            for r in 0..rows {
                for h in 0..heads {
                    for i in 0..d / 2 {
                        let (i0, i1) = if neox {
                            (i, i + d / 2)
                        } else {
                            (2 * i, 2 * i + 1)
                        };
                        let o = (r * heads + h) * d;
                        let (x0, x1) = (x[o + i0] as f64, x[o + i1] as f64);
                        let (cs, sn) = (angle(r, i).cos(), angle(r, i).sin());
                        let want = [x0 * cs - x1 * sn, x0 * sn + x1 * cs];
                        for (got, want) in [y[o + i0], y[o + i1]].iter().zip(want) {
                            assert!(
                                (*got as f64 - want).abs() < 1e-5,
                                "neox {neox}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn flex_kv_write_in_place_matches_slice_assign() {
        let dev = Default::default();
        let cache = Tensor::<Flex, 3>::zeros([2, 8, 4], &dev);
        let v = Tensor::<Flex, 3>::from_data(
            burn::tensor::TensorData::new(
                (0..2 * 3 * 4).map(|i| i as f32 + 1.0).collect::<Vec<_>>(),
                [2, 3, 4],
            ),
            &dev,
        );
        let want = cache.clone().slice_assign([0..2, 5..8, 0..4], v.clone());
        let got = kv_write(cache, v, 5);
        assert_eq!(got.into_data(), want.into_data());
    }

    /// An f16 cache stores the values rounded to nearest f16, in place and when shared alike.
    #[test]
    fn flex_kv_write_into_f16_cache_rounds() {
        let dev = Default::default();
        let cache = Tensor::<Flex, 3>::zeros([2, 8, 4], (&dev, DType::F16));
        let vals: Vec<f32> = (0..2 * 3 * 4).map(|i| 1.0 + i as f32 / 3000.0).collect();
        let v = Tensor::<Flex, 3>::from_data(
            burn::tensor::TensorData::new(vals.clone(), [2, 3, 4]),
            &dev,
        );
        let shared = cache.clone();
        let copied = kv_write(shared, v.clone(), 5); // `cache` still holds the storage
        let in_place = kv_write(cache, v, 5);
        for got in [in_place, copied] {
            assert_eq!(got.dtype(), DType::F16);
            let got: Vec<f32> = got.cast(DType::F32).into_data().to_vec().unwrap();
            for h in 0..2 {
                for p in 0..8 {
                    for e in 0..4 {
                        let want = if p >= 5 {
                            f16::from_f32(vals[(h * 3 + p - 5) * 4 + e]).to_f32()
                        } else {
                            0.0
                        };
                        assert_eq!(got[(h * 8 + p) * 4 + e], want, "[{h}, {p}, {e}]");
                    }
                }
            }
        }
    }
}
