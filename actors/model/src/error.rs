//! Errors of the model engine.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
///
/// Errors about a file name the file; errors about a metadata key or a tensor name it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic `GGUF`.
    #[error("{path}: not a GGUF file (bad magic {magic:02x?}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, magic: [u8; 4] },
    /// A GGUF version this reader does not know (only 2 and 3 exist in the field).
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    /// The file ends before the structure being read (`what`) does.
    #[error("{path}: truncated file: {what} needs bytes up to offset {needed}, file has {len}")]
    Truncated {
        path: PathBuf,
        what: String,
        needed: u64,
        len: u64,
    },
    /// Structurally invalid content (a bad type tag, an impossible count, a misaligned offset).
    #[error("{path}: malformed GGUF: {what}")]
    Malformed { path: PathBuf, what: String },
    /// A tensor's `ggml_type` is not known (or not supported) by this engine.
    #[error("{path}: tensor '{tensor}': unknown or unsupported tensor type {type_id}")]
    UnknownTensorType {
        path: PathBuf,
        tensor: String,
        type_id: u32,
    },
    /// A metadata key the model needs is absent.
    #[error("{path}: missing metadata key '{key}'")]
    MissingKey { path: PathBuf, key: String },
    /// A metadata key has a value of the wrong type or an out-of-range value.
    #[error("{path}: metadata key '{key}': {what}")]
    BadKey {
        path: PathBuf,
        key: String,
        what: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{path}: missing tensor '{tensor}'")]
    MissingTensor { path: PathBuf, tensor: String },
    /// A tensor has the wrong shape or type for the architecture.
    #[error("{path}: tensor '{tensor}': {what}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        what: String,
    },
    /// `general.architecture` names an architecture this engine does not implement.
    #[error("{path}: unsupported architecture '{arch}' (supported: llama)")]
    UnsupportedArchitecture { path: PathBuf, arch: String },
    /// The tokenizer could not be built from the GGUF metadata.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The prompt plus generated tokens would exceed the model's context length.
    #[error("context length exceeded: {needed} tokens needed, the context holds {context_length}")]
    ContextOverflow {
        needed: usize,
        context_length: usize,
    },
    /// Invalid generation or sampling parameters.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
}

/// Result alias of the model engine.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
