#![warn(missing_docs)]
//! The local model: GGUF loading, tokenizer and chat template, the llama-family model as Burn
//! modules with fused 4-bit matmul kernels, sampling and generation.
//!
//! The CPU backend is Burn's `Flex` ([`CpuBackend`]); with the `cuda` feature,
//! `gpu::CudaBackend` runs the same model with CubeCL kernels on an NVIDIA GPU, with the
//! `vulkan` feature `gpu::VulkanBackend` runs them on burn-wgpu over Vulkan (SPIR-V).

pub mod actor;
pub mod arch;
pub mod backend;
pub mod device;
pub mod engine;
pub mod error;
pub mod formats;
pub mod gguf;
#[cfg(any(feature = "cuda", feature = "vulkan"))]
pub mod gpu;
pub mod inspect;
pub mod kernels;
pub mod llama;
pub mod quant;
pub mod sampler;
pub mod scheduler;
pub mod serve;
pub mod tokenizer;

pub use actor::{ModelActor, ModelArgs, ModelInfo, ModelMsg, MODEL_ACTOR};
pub use backend::{HostQWeight, QuantBackend};
pub use engine::{Engine, GenerateParams, Generation, Perplexity, StopReason};
pub use error::{ModelError, Result};
pub use sampler::SamplingParams;
pub use scheduler::{GenEvent, GenFailure, GenRequest, GenStats, Progress, SchedulerConfig};
pub use tokenizer::{ChatMessage, Tokenizer};

/// The CPU backend: Burn's pure-Rust `Flex`, with this crate's SIMD kernels.
pub type CpuBackend = burn_flex::Flex;

/// File name of the default model (SmolLM2-135M-Instruct, GGUF Q4_1).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Sets the number of CPU threads the kernels (their spinning pool) and Burn's CPU ops (the
/// global rayon pool) use.
/// Only the first call takes effect; later calls return `false`.
pub fn set_cpu_threads(n: usize) -> bool {
    let kernels = kernels::pool::init(n);
    let burn = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .is_ok();
    kernels && burn
}
