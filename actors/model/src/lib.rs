//! The local model: GGUF loading, tokenizer and chat template, the llama-family model as Burn
//! modules with fused 4-bit matmul kernels, sampling and generation.

pub mod error;
pub mod gguf;
pub mod kernels;
pub mod quant;
pub mod tokenizer;

pub use error::{ModelError, Result};
