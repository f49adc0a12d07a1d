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
        /// The model file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// The model needs more memory than the machine has available.
    #[error(
        "{path}: needs {} MiB but {} MiB of {where_} are available; choose a smaller model or \
         quantization",
        need >> 20,
        available >> 20
    )]
    DoesNotFit {
        /// The model file.
        path: PathBuf,
        /// Bytes needed.
        need: u64,
        /// Bytes available (`MemAvailable`, or the GPU's free memory).
        available: u64,
        /// Which memory: `memory` (RAM) or `GPU memory`.
        where_: &'static str,
    },
    /// The file does not start with the GGUF magic `GGUF`.
    #[error("{path}: not a GGUF file (bad magic {magic:02x?}, expected \"GGUF\")")]
    BadMagic {
        /// The model file.
        path: PathBuf,
        /// The first four bytes found.
        magic: [u8; 4],
    },
    /// A GGUF version this reader does not know (only 2 and 3 exist in the field).
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3)")]
    UnsupportedVersion {
        /// The model file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// The file ends before the structure being read (`what`) does.
    #[error("{path}: truncated file: {what} needs bytes up to offset {needed}, file has {len}")]
    Truncated {
        /// The model file.
        path: PathBuf,
        /// What was being read, or what is wrong.
        what: String,
        /// Offset the read needed to reach (bytes).
        needed: u64,
        /// Length of the file (bytes).
        len: u64,
    },
    /// Structurally invalid content (a bad type tag, an impossible count, a misaligned offset).
    #[error("{path}: malformed GGUF: {what}")]
    Malformed {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A tensor's `ggml_type` is not known (or not supported) by this engine.
    #[error("{path}: tensor '{tensor}': unknown or unsupported tensor type {type_id}")]
    UnknownTensorType {
        /// The model file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The `ggml_type` id found.
        type_id: u32,
    },
    /// A metadata key the model needs is absent.
    #[error("{path}: missing metadata key '{key}'")]
    MissingKey {
        /// The model file.
        path: PathBuf,
        /// The metadata key.
        key: String,
    },
    /// A metadata key has a value of the wrong type or an out-of-range value.
    #[error("{path}: metadata key '{key}': {what}")]
    BadKey {
        /// The model file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What was being read, or what is wrong.
        what: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{path}: missing tensor '{tensor}'")]
    MissingTensor {
        /// The model file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor has the wrong shape or type for the architecture.
    #[error("{path}: tensor '{tensor}': {what}")]
    BadTensor {
        /// The model file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What was being read, or what is wrong.
        what: String,
    },
    /// `general.architecture` names an architecture this engine does not implement.
    #[error("{path}: unsupported architecture '{arch}' (supported: llama)")]
    UnsupportedArchitecture {
        /// The model file.
        path: PathBuf,
        /// The architecture found.
        arch: String,
    },
    /// The tokenizer could not be built from the GGUF metadata.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The prompt plus generated tokens would exceed the model's context length.
    #[error("context length exceeded: {needed} tokens needed, the context holds {context_length}")]
    ContextOverflow {
        /// Positions the prompt and generation need.
        needed: usize,
        /// Positions the context holds.
        context_length: usize,
    },
    /// Invalid generation or sampling parameters.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
}

/// Result alias of the model engine.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
