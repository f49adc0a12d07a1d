//! Compute kernels on packed GGUF blocks.

pub mod affine;
pub mod attention;
pub mod cpu;
pub mod packed;
pub mod pool;
