//! Compute kernels on packed GGUF blocks.

pub mod cpu;
