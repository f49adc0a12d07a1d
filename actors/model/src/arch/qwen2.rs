//! `qwen2` (llama.cpp `src/models/qwen2.cpp`; Qwen2/2.5 and DeepSeek-R1-Distill-Qwen): llama
//! with NEOX RoPE (no Q/K permutation) and biases on the Q, K and V projections.

use super::{common, Arch, LlamaConfig, RopeKind};
use crate::error::Result;
use crate::gguf::GgufFile;

/// Reads a `qwen2` model's configuration.
pub fn config(g: &GgufFile) -> Result<LlamaConfig> {
    let mut c = common(g, Arch::Qwen2)?;
    c.rope = RopeKind::Neox;
    c.qkv_bias = true;
    c.rope_freqs = super::llama::rope_freqs(g, c.head_dim)?;
    Ok(c)
}
