//! Compute kernels on packed GGUF blocks.

pub mod attention;
pub mod cpu;
