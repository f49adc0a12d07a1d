//! The `wecom-edge` box as a library: configuration, the supervision tree's wiring, the demo.
//! The binary (`src/main.rs`) is its command line; the end-to-end tests start the same tree.

pub mod alerts;
pub mod app;
pub mod config;
pub mod console;
pub mod demo;
pub mod disk;
