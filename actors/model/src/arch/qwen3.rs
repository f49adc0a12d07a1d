//! `qwen3` (llama.cpp `src/models/qwen3.cpp`): NEOX RoPE, no biases, and a per-head RMSNorm
//! of Q and K (`attn_q_norm`, `attn_k_norm`, `[head_dim]`) after the projections and before
//! RoPE. `head_dim` comes from `qwen3.attention.key_length` and may differ from
//! `n_embd / n_head` (Qwen3-0.6B: 1024 wide, 16 heads × 128).

use super::{common, Arch, LlamaConfig, RopeKind};
use crate::error::Result;
use crate::gguf::GgufFile;

/// Reads a `qwen3` model's configuration.
pub fn config(g: &GgufFile) -> Result<LlamaConfig> {
    let mut c = common(g, Arch::Qwen3)?;
    c.rope = RopeKind::Neox;
    c.qk_norm = true;
    Ok(c)
}
