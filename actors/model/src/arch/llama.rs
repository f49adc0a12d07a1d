//! `llama` (llama.cpp `src/models/llama.cpp`): RoPE on adjacent pairs (ggml's NORM mode; the
//! converter permuted Q/K rows for it), SwiGLU, no biases. Llama-3 stores its RoPE scaling as
//! per-frequency divisors in the tensor `rope_freqs.weight` (`head_dim / 2` f32; θᵢ is divided
//! by them, ggml-cpu `ops.cpp` rope with `freq_factors`), not as keys.

use super::{common, Arch, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// Reads a `llama` model's configuration.
pub fn config(g: &GgufFile) -> Result<LlamaConfig> {
    let mut c = common(g, Arch::Llama)?;
    c.rope_freqs = rope_freqs(g, c.head_dim)?;
    Ok(c)
}

/// `rope_freqs.weight` when present: `head_dim / 2` divisors.
pub(super) fn rope_freqs(g: &GgufFile, head_dim: usize) -> Result<Option<Vec<f32>>> {
    let Ok(info) = g.tensor("rope_freqs.weight") else {
        return Ok(None);
    };
    if info.dims != [head_dim as u64 / 2] || !info.ggml_type.can_dequantize() {
        return Err(ModelError::BadTensor {
            path: g.path().to_owned(),
            tensor: "rope_freqs.weight".into(),
            what: format!("expected [{}] floats, found {:?}", head_dim / 2, info.dims),
        });
    }
    let mut v = Vec::new();
    crate::quant::dequantize(info.ggml_type, g.data(info), head_dim / 2, &mut v);
    Ok(Some(v))
}
