//! Architectures, one file each: what an architecture reads from the GGUF and how its forward
//! differs from llama's. The forward itself is one path ([`crate::llama::Llama::step`]) built
//! from shared blocks — RMSNorm, RoPE (normal or NEOX, with frequency factors), GQA attention
//! with causal and sliding-window masks, SwiGLU/GeGLU, optional biases and per-head norms —
//! switched by the [`LlamaConfig`] an architecture's file fills in.
//!
//! Sources: llama.cpp `src/llama-arch.cpp` (tensor names), `src/llama-model.cpp` (keys, defaults),
//! `src/llama-hparams.h`, and `src/models/{llama,qwen2,qwen3,gemma3}.cpp`.

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

mod gemma3;
mod llama;
mod qwen2;
mod qwen3;

/// A supported `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama` (Llama 1–3, SmolLM2, TinyLlama, …).
    Llama,
    /// `qwen2` (Qwen2/2.5, DeepSeek-R1-Distill-Qwen).
    Qwen2,
    /// `qwen3`.
    Qwen3,
    /// `gemma3`.
    Gemma3,
}

impl Arch {
    /// The GGUF name (`general.architecture`, the key prefix).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// How RoPE pairs the dimensions of a head (ggml `GGML_ROPE_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeKind {
    /// Adjacent pairs `(2i, 2i+1)` (llama: the converter permuted Q/K for it).
    Norm,
    /// Halves `(i, i + head_dim/2)` (qwen2, qwen3, gemma3).
    Neox,
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnAct {
    /// SwiGLU: `silu(gate) ⊙ up`.
    Silu,
    /// GeGLU with the tanh approximation of GELU: `gelu_tanh(gate) ⊙ up`.
    GeluTanh,
}

/// Hyper-parameters and forward switches of a model, from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// The architecture.
    pub arch: Arch,
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Model width (`{arch}.embedding_length`).
    pub n_embd: usize,
    /// Number of blocks (`{arch}.block_count`).
    pub n_layer: usize,
    /// Query heads (`{arch}.attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`{arch}.attention.head_count_kv`; GQA when fewer than `n_head`).
    pub n_head_kv: usize,
    /// Width of one head (`{arch}.attention.key_length`, default `n_embd / n_head`).
    pub head_dim: usize,
    /// Hidden width of the MLP (`{arch}.feed_forward_length`).
    pub n_ff: usize,
    /// Trained context length in tokens (`{arch}.context_length`).
    pub context_length: usize,
    /// RMSNorm epsilon (`{arch}.attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// RoPE base frequency (`{arch}.rope.freq_base`, default 10000).
    pub rope_base: f32,
    /// RoPE pairing.
    pub rope: RopeKind,
    /// Per-frequency divisors (`rope_freqs.weight`, Llama-3's scaling), `head_dim / 2` values.
    pub rope_freqs: Option<Vec<f32>>,
    /// Sliding window of the SWA layers (`n_swa`); 0: none.
    pub n_swa: usize,
    /// Which layers use the sliding window.
    pub swa_layers: Vec<bool>,
    /// RoPE base of the SWA layers (`{arch}.rope.freq_base_swa`).
    pub rope_base_swa: f32,
    /// Embeddings are multiplied by this (Gemma: `√n_embd`).
    pub embd_scale: Option<f32>,
    /// The MLP's activation.
    pub ffn_act: FfnAct,
    /// `attn_q/k/v.bias` present (qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm of Q and K before RoPE (`attn_q_norm`, `attn_k_norm`: qwen3, gemma3).
    pub qk_norm: bool,
    /// RMSNorm of the attention and MLP outputs before their residuals (`post_attention_norm`,
    /// `post_ffw_norm`: gemma3).
    pub post_norms: bool,
    /// Attention score scale (llama.cpp `kq_scale` of `build_attn`): `1/√head_dim`; 1 where
    /// the architecture scales Q itself ([`LlamaConfig::q_scale`]).
    pub attn_scale: f32,
    /// Q is multiplied by this after RoPE, before attention (llama.cpp gemma3's
    /// `f_attention_scale`: `1/√head_dim`, for the 27B model `1/√(n_embd / n_head)`).
    pub q_scale: Option<f32>,
    /// `c·tanh(logits / c)` on the output (`{arch}.final_logit_softcapping`).
    pub logit_softcap: Option<f32>,
}

impl LlamaConfig {
    /// Reads the configuration of any supported architecture.
    ///
    /// # Errors
    /// [`ModelError::UnsupportedArchitecture`], [`ModelError::MissingKey`],
    /// [`ModelError::BadKey`].
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.get_str("general.architecture")?;
        match arch {
            "llama" => llama::config(g),
            "qwen2" => qwen2::config(g),
            "qwen3" => qwen3::config(g),
            "gemma3" => gemma3::config(g),
            other => Err(ModelError::UnsupportedArchitecture {
                path: g.path().to_owned(),
                arch: other.into(),
            }),
        }
    }

    /// Whether layer `l` uses the sliding window.
    pub fn is_swa(&self, l: usize) -> bool {
        self.n_swa > 0 && self.swa_layers.get(l).copied().unwrap_or(false)
    }
}

/// The keys every architecture shares, with llama's forward (the arch files change what
/// differs).
pub(crate) fn common(g: &GgufFile, arch: Arch) -> Result<LlamaConfig> {
    let p = arch.name();
    let u = |k: &str| g.get_u64(&format!("{p}.{k}")).map(|v| v as usize);
    let bad = |key: &str, what: String| ModelError::BadKey {
        path: g.path().to_owned(),
        key: format!("{p}.{key}"),
        what,
    };
    let n_embd = u("embedding_length")?;
    let n_head = u("attention.head_count")?;
    let n_head_kv = u("attention.head_count_kv").unwrap_or(n_head);
    if n_head == 0 {
        return Err(bad("attention.head_count", "0 heads".into()));
    }
    if n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(bad(
            "attention.head_count_kv",
            format!("{n_head_kv} does not divide {n_head}"),
        ));
    }
    let head_dim = match u("attention.key_length") {
        Ok(k) => k,
        Err(_) if n_embd.is_multiple_of(n_head) => n_embd / n_head,
        Err(_) => {
            return Err(bad(
                "attention.head_count",
                format!("{n_head} does not divide {n_embd}"),
            ))
        }
    };
    if let Ok(v) = u("attention.value_length") {
        if v != head_dim {
            return Err(bad(
                "attention.value_length",
                format!("{v} differs from key_length {head_dim}"),
            ));
        }
    }
    if let Ok(rot) = u("rope.dimension_count") {
        if rot != head_dim {
            return Err(bad(
                "rope.dimension_count",
                format!("partial RoPE ({rot} of {head_dim}) is not supported"),
            ));
        }
    }
    if !head_dim.is_multiple_of(2) {
        return Err(bad(
            "attention.key_length",
            format!("odd head width {head_dim}"),
        ));
    }
    if let Ok(s) = g.get_str(&format!("{p}.rope.scaling.type")) {
        if s != "none" && s != "linear" {
            return Err(bad("rope.scaling.type", format!("'{s}' is not supported")));
        }
    }
    let n_layer = u("block_count")?;
    let n_vocab = g.tensor("token_embd.weight")?.dims[1] as usize;
    let rope_base = g.get_f64(&format!("{p}.rope.freq_base")).unwrap_or(10000.0) as f32;
    Ok(LlamaConfig {
        arch,
        n_vocab,
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        head_dim,
        n_ff: u("feed_forward_length")?,
        context_length: u("context_length")?,
        rms_eps: g.get_f64(&format!("{p}.attention.layer_norm_rms_epsilon"))? as f32,
        rope_base,
        rope: RopeKind::Norm,
        rope_freqs: None,
        n_swa: 0,
        swa_layers: vec![false; n_layer],
        rope_base_swa: rope_base,
        embd_scale: None,
        ffn_act: FfnAct::Silu,
        qkv_bias: false,
        qk_norm: false,
        post_norms: false,
        attn_scale: 1.0 / (head_dim as f32).sqrt(),
        q_scale: None,
        logit_softcap: g
            .get_f64(&format!("{p}.final_logit_softcapping"))
            .ok()
            .map(|c| c as f32),
    })
}
