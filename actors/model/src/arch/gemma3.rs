//! `gemma3` (llama.cpp `src/models/gemma3.cpp`, `src/llama-hparams.cpp`):
//! - embeddings × `√n_embd`;
//! - `h = x + post_attention_norm(attn(attn_norm(x)))`, `y = h + post_ffw_norm(ffn(ffn_norm(h)))`;
//! - per-head Q/K RMSNorm, NEOX RoPE; Q is scaled by `1/√head_dim` before attention (the 27B
//!   model, 62 layers: `1/√(n_embd / n_head)`), the scores are not scaled again;
//! - GeGLU with tanh-GELU;
//! - sliding-window layers, when `gemma3.attention.sliding_window` (`n_swa`) is present and
//!   non-zero (else no layer is SWA), with the pattern
//!   `gemma3.attention.sliding_window_pattern` (default 6: layer `l` is SWA iff `l % 6 < 5`),
//!   their RoPE base `gemma3.rope.freq_base_swa` (default 10000);
//! - norm weights already include Gemma's `+1` (the converter adds it), the output is tied
//!   unless `output.weight` exists, and `final_logit_softcapping` applies when present.

use super::{common, Arch, FfnAct, LlamaConfig, RopeKind};
use crate::error::Result;
use crate::gguf::GgufFile;

/// Layer `l` is SWA iff `l % pattern < pattern − 1` (llama.cpp `set_swa_pattern`).
const DEFAULT_SWA_PATTERN: usize = 6;

/// Reads a `gemma3` model's configuration.
pub fn config(g: &GgufFile) -> Result<LlamaConfig> {
    let mut c = common(g, Arch::Gemma3)?;
    c.rope = RopeKind::Neox;
    c.qk_norm = true;
    c.post_norms = true;
    c.ffn_act = FfnAct::GeluTanh;
    c.embd_scale = Some((c.n_embd as f32).sqrt());
    c.n_swa = g
        .get_u64("gemma3.attention.sliding_window")
        .map(|v| v as usize)
        .unwrap_or(0);
    let pattern = g
        .get_u64("gemma3.attention.sliding_window_pattern")
        .map(|v| v as usize)
        .unwrap_or(DEFAULT_SWA_PATTERN)
        .max(1);
    c.swa_layers = (0..c.n_layer)
        .map(|l| c.n_swa > 0 && pattern > 1 && l % pattern < pattern - 1)
        .collect();
    // llama.cpp LLM_TYPE_27B is the 62-layer model.
    let scale_dim = if c.n_layer == 62 {
        c.n_embd / c.n_head
    } else {
        c.head_dim
    };
    c.q_scale = Some(1.0 / (scale_dim as f32).sqrt());
    c.attn_scale = 1.0;
    c.rope_base_swa = g.get_f64("gemma3.rope.freq_base_swa").unwrap_or(10000.0) as f32;
    Ok(c)
}
