//! What a GGUF file holds and what running it costs (`wecom-edge model inspect`), and the
//! memory check that refuses a model this machine cannot hold.
//!
//! Parameters count every tensor's elements (llama.cpp `llama_model_n_params`); the file type
//! names are llama.cpp's `llama_ftype` (`general.file_type`); the KV cache is ours:
//! `n_layer · 2 · n_head_kv · head_dim · ctx_size` values of the [`CacheType`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::arch::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::llama::{CacheType, MAX_POSITIONS};
use crate::tokenizer::Tokenizer;

/// One tensor type's share of the file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TypeShare {
    /// ggml type name (`Q4_K`, `Q6_K`, `F32`, …).
    pub ty: String,
    /// Tensors of this type.
    pub tensors: usize,
    /// Their elements.
    pub elements: u64,
    /// Their bytes in the file.
    pub bytes: u64,
}

/// Hyper-parameters of a supported architecture (llama.cpp's `llama_hparams` names).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hparams {
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Model width.
    pub n_embd: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// MLP width.
    pub n_ff: usize,
    /// Trained context length (`n_ctx_train`), tokens.
    pub n_ctx_train: usize,
    /// Sliding window of the SWA layers (0: none).
    pub n_swa: usize,
    /// Layers with the sliding window.
    pub n_swa_layers: usize,
    /// RoPE base frequency.
    pub rope_freq_base: f32,
}

/// The tokenizer the file ships.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenizerReport {
    /// `tokenizer.ggml.model` (`gpt2`: byte-level BPE; `llama`: SentencePiece).
    pub model: Option<String>,
    /// `tokenizer.ggml.pre` (the BPE pre-tokenizer).
    pub pre: Option<String>,
    /// Tokens in the vocabulary.
    pub n_tokens: usize,
    /// Whether `tokenizer.chat_template` is present.
    pub chat_template: bool,
    /// Why the box cannot use the tokenizer, when it cannot.
    pub unsupported: Option<String>,
}

/// Memory to run the model, against what the machine has.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemoryReport {
    /// Tensor bytes (the weights as loaded: memory-mapped or repacked, about the same size).
    pub weights_bytes: u64,
    /// Context the KV cache figure is for, tokens.
    pub ctx_size: usize,
    /// Element type of the KV cache.
    pub cache_type: &'static str,
    /// One sequence's KV cache at `ctx_size`, bytes (0 when the architecture is unsupported).
    pub kv_cache_bytes: u64,
    /// `weights_bytes + kv_cache_bytes`.
    pub total_bytes: u64,
    /// `MemAvailable` of /proc/meminfo now (None where there is none).
    pub available_bytes: Option<u64>,
    /// The GPU the model would run on (a `cuda` build with an NVIDIA GPU present), with its
    /// memory.
    pub gpu: Option<GpuMemory>,
    /// Whether `total_bytes` fits where the model would run: the GPU's free memory when `gpu`
    /// is known, else `available_bytes` (true when unknown).
    pub fits: bool,
}

/// One GPU's memory, as `nvidia-smi --query-gpu=name,memory.total,memory.free` reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuMemory {
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total memory, bytes.
    pub total_bytes: u64,
    /// Free memory now, bytes.
    pub free_bytes: u64,
}

/// GPU 0's memory (the device `--device cuda` and `auto` use), from `nvidia-smi` (installed
/// with NVIDIA's driver); `None` without one, or when it does not answer.
pub fn gpu_memory() -> Option<GpuMemory> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,memory.free",
            "--format=csv,noheader,nounits",
            "-i",
            "0",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
}

/// Parses one `name, total MiB, free MiB` line of `nvidia-smi --format=csv,noheader,nounits`.
fn parse_nvidia_smi(text: &str) -> Option<GpuMemory> {
    let line = text.lines().next()?;
    let mut f = line.rsplitn(3, ',').map(str::trim);
    let free: u64 = f.next()?.parse().ok()?;
    let total: u64 = f.next()?.parse().ok()?;
    let name = f.next()?.to_owned();
    Some(GpuMemory {
        name,
        total_bytes: total << 20,
        free_bytes: free << 20,
    })
}

/// Where a model would run on this build and machine: the GPU in a `cuda` build with one
/// present (`/dev/nvidia0`, as `--device auto` decides), else the CPU (`None`).
pub fn target_gpu() -> Option<GpuMemory> {
    if cfg!(feature = "cuda") && Path::new("/dev/nvidia0").exists() {
        gpu_memory()
    } else {
        None
    }
}

/// Everything `model inspect` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelReport {
    /// The file.
    pub file: PathBuf,
    /// Its size, bytes.
    pub file_bytes: u64,
    /// GGUF version.
    pub gguf_version: u32,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.file_type` as llama.cpp names it (`Q4_K_M`, …).
    pub file_type: Option<String>,
    /// Elements of all tensors.
    pub n_params: u64,
    /// `weights_bytes · 8 / n_params`.
    pub bits_per_weight: f64,
    /// Per tensor type, most bytes first.
    pub tensor_types: Vec<TypeShare>,
    /// Hyper-parameters, when the architecture is supported.
    pub hparams: Option<Hparams>,
    /// Why the box cannot run the model, when it cannot (architecture, tensor types).
    pub unsupported: Option<String>,
    /// The tokenizer.
    pub tokenizer: TokenizerReport,
    /// Memory needed and available.
    pub memory: MemoryReport,
}

/// llama.cpp's `llama_ftype` names (`include/llama.h`), for `general.file_type`.
pub fn file_type_name(ftype: u64) -> Option<&'static str> {
    Some(match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        21 => "Q2_K_S",
        32 => "BF16",
        _ => return None,
    })
}

/// `MemAvailable` from /proc/meminfo, bytes.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// KV cache bytes of one sequence at `ctx_size` positions (capped as the model caps them).
pub fn kv_cache_bytes(c: &LlamaConfig, ctx_size: usize, cache_type: CacheType) -> u64 {
    let positions = ctx_size.min(c.context_length).min(MAX_POSITIONS);
    (c.n_layer * 2 * c.n_head_kv * c.head_dim * positions * cache_type.bytes()) as u64
}

/// Refuses a load of `need` bytes onto the GPU when it has less free memory.
///
/// # Errors
/// [`ModelError::DoesNotFit`] with both numbers.
pub fn check_fits_gpu(path: &Path, need: u64, gpu: &GpuMemory) -> Result<()> {
    if need > gpu.free_bytes {
        return Err(ModelError::DoesNotFit {
            path: path.to_owned(),
            need,
            available: gpu.free_bytes,
            where_: "GPU memory",
        });
    }
    Ok(())
}

/// Refuses a load of `need` bytes when the machine has less available.
///
/// # Errors
/// [`ModelError::DoesNotFit`] with both numbers.
pub fn check_fits(path: &Path, need: u64, available: Option<u64>) -> Result<()> {
    match available {
        Some(a) if need > a => Err(ModelError::DoesNotFit {
            path: path.to_owned(),
            need,
            available: a,
            where_: "memory",
        }),
        _ => Ok(()),
    }
}

impl ModelReport {
    /// Reads the report of `g`, with the KV cache at `ctx_size` positions of `cache_type`.
    pub fn from_gguf(g: &GgufFile, ctx_size: usize, cache_type: CacheType) -> Self {
        let mut shares: BTreeMap<&'static str, TypeShare> = BTreeMap::new();
        for t in g.tensors() {
            let s = shares
                .entry(t.ggml_type.name())
                .or_insert_with(|| TypeShare {
                    ty: t.ggml_type.name().into(),
                    tensors: 0,
                    elements: 0,
                    bytes: 0,
                });
            s.tensors += 1;
            s.elements += t.n_elements();
            s.bytes += t.n_bytes;
        }
        let mut tensor_types: Vec<TypeShare> = shares.into_values().collect();
        tensor_types.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.ty.cmp(&b.ty)));
        let n_params: u64 = tensor_types.iter().map(|s| s.elements).sum();
        let weights_bytes: u64 = tensor_types.iter().map(|s| s.bytes).sum();
        let config = LlamaConfig::from_gguf(g);
        let unsupported = match &config {
            Err(e) => Some(e.to_string()),
            Ok(_) => g
                .tensors()
                .iter()
                .find(|t| {
                    t.name.ends_with(".weight")
                        && t.dims.len() == 2
                        && !t.ggml_type.is_matmul_weight()
                })
                .map(|t| {
                    format!(
                        "tensor {} has type {}, which has no kernel",
                        t.name,
                        t.ggml_type.name()
                    )
                }),
        };
        let hparams = config.as_ref().ok().map(|c| Hparams {
            n_vocab: c.n_vocab,
            n_embd: c.n_embd,
            n_layer: c.n_layer,
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            n_ff: c.n_ff,
            n_ctx_train: c.context_length,
            n_swa: c.n_swa,
            n_swa_layers: c.swa_layers.iter().filter(|&&s| s).count(),
            rope_freq_base: c.rope_base,
        });
        let kv = config
            .as_ref()
            .map_or(0, |c| kv_cache_bytes(c, ctx_size, cache_type));
        let ctx = config.as_ref().map_or(ctx_size, |c| {
            ctx_size.min(c.context_length).min(MAX_POSITIONS)
        });
        let available = mem_available();
        let gpu = target_gpu();
        let total = weights_bytes + kv;
        let tok = Tokenizer::from_gguf(g);
        let text = |key: &str| g.get_str(key).ok().map(str::to_owned);
        ModelReport {
            file: g.path().to_owned(),
            file_bytes: g.map().len() as u64,
            gguf_version: g.version(),
            name: text("general.name"),
            architecture: text("general.architecture"),
            file_type: g
                .get_u64("general.file_type")
                .ok()
                .map(|f| file_type_name(f).map_or(format!("ftype {f}"), str::to_owned)),
            n_params,
            bits_per_weight: if n_params == 0 {
                0.0
            } else {
                weights_bytes as f64 * 8.0 / n_params as f64
            },
            tensor_types,
            hparams,
            unsupported,
            tokenizer: TokenizerReport {
                model: text("tokenizer.ggml.model"),
                pre: text("tokenizer.ggml.pre"),
                n_tokens: g
                    .get_str_array("tokenizer.ggml.tokens")
                    .map_or(0, |t| t.len()),
                chat_template: g.get_str("tokenizer.chat_template").is_ok(),
                unsupported: tok.as_ref().err().map(|e| e.to_string()),
            },
            memory: MemoryReport {
                weights_bytes,
                ctx_size: ctx,
                cache_type: cache_type.name(),
                kv_cache_bytes: kv,
                total_bytes: total,
                available_bytes: available,
                fits: match &gpu {
                    Some(g) => total <= g.free_bytes,
                    None => available.is_none_or(|a| total <= a),
                },
                gpu,
            },
        }
    }

    /// The report as lines for a person.
    pub fn to_text(&self) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
        let mut out = Vec::new();
        out.push(format!(
            "file           {} ({}, GGUF v{})",
            self.file.display(),
            mib(self.file_bytes),
            self.gguf_version
        ));
        if let Some(n) = &self.name {
            out.push(format!("name           {n}"));
        }
        out.push(format!(
            "architecture   {}{}",
            self.architecture.as_deref().unwrap_or("(none)"),
            match &self.unsupported {
                Some(why) => format!(" — NOT SUPPORTED: {why}"),
                None => String::new(),
            }
        ));
        out.push(format!(
            "parameters     {:.1} M, {:.2} bits per weight{}",
            self.n_params as f64 / 1e6,
            self.bits_per_weight,
            self.file_type
                .as_ref()
                .map_or(String::new(), |t| format!(", file type {t}"))
        ));
        if let Some(h) = &self.hparams {
            out.push(format!(
                "hparams        n_vocab {} n_embd {} n_layer {} n_head {} n_head_kv {} head_dim {} n_ff {}",
                h.n_vocab, h.n_embd, h.n_layer, h.n_head, h.n_head_kv, h.head_dim, h.n_ff
            ));
            out.push(format!(
                "context        n_ctx_train {}, rope base {}{}",
                h.n_ctx_train,
                h.rope_freq_base,
                if h.n_swa > 0 {
                    format!(
                        ", n_swa {} on {} of {} layers",
                        h.n_swa, h.n_swa_layers, h.n_layer
                    )
                } else {
                    String::new()
                }
            ));
        }
        out.push("tensor types".into());
        for s in &self.tensor_types {
            out.push(format!(
                "  {:<6} {:>4} tensors {:>12} elements {:>12}",
                s.ty,
                s.tensors,
                s.elements,
                mib(s.bytes)
            ));
        }
        let t = &self.tokenizer;
        out.push(format!(
            "tokenizer      {}, pre-tokenizer {}, {} tokens, chat template {}{}",
            t.model.as_deref().unwrap_or("(none)"),
            t.pre.as_deref().unwrap_or("(none)"),
            t.n_tokens,
            if t.chat_template { "present" } else { "absent" },
            match &t.unsupported {
                Some(why) => format!(" — NOT SUPPORTED: {why}"),
                None => String::new(),
            }
        ));
        let m = &self.memory;
        out.push(format!(
            "memory         weights {} + {} KV cache at {} tokens {} = {}; available {}: {}",
            mib(m.weights_bytes),
            m.cache_type,
            m.ctx_size,
            mib(m.kv_cache_bytes),
            mib(m.total_bytes),
            m.available_bytes.map_or("unknown".into(), mib),
            match (&m.gpu, m.fits) {
                (Some(_), _) => "runs on the GPU",
                (None, true) => "fits",
                (None, false) => "DOES NOT FIT",
            }
        ));
        if let Some(g) = &m.gpu {
            out.push(format!(
                "gpu            {}: {} free of {}: {}",
                g.name,
                mib(g.free_bytes),
                mib(g.total_bytes),
                if m.fits { "fits" } else { "DOES NOT FIT" }
            ));
        }
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_with_both_numbers_only_when_short() {
        let p = Path::new("m.gguf");
        assert!(check_fits(p, 10 << 20, Some(11 << 20)).is_ok());
        assert!(check_fits(p, 10 << 20, None).is_ok());
        let e = check_fits(p, 300 << 20, Some(200 << 20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("300 MiB") && e.contains("200 MiB"), "{e}");
    }

    #[test]
    fn gpu_memory_is_parsed_from_nvidia_smi_and_checked() {
        let g = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559, 80982\n").unwrap();
        assert_eq!(g.name, "NVIDIA H100 80GB HBM3");
        assert_eq!(g.total_bytes, 81559 << 20);
        assert_eq!(g.free_bytes, 80982 << 20);
        // A comma in the product name stays in the name.
        let g = parse_nvidia_smi("Tesla T4, PCIe, 15360, 100").unwrap();
        assert_eq!(
            (g.name.as_str(), g.free_bytes),
            ("Tesla T4, PCIe", 100 << 20)
        );
        assert_eq!(parse_nvidia_smi("No devices were found"), None);
        assert_eq!(parse_nvidia_smi(""), None);
        let p = Path::new("m.gguf");
        assert!(check_fits_gpu(p, 50 << 20, &g).is_ok());
        let e = check_fits_gpu(p, 300 << 20, &g).unwrap_err().to_string();
        assert!(
            e.contains("300 MiB") && e.contains("100 MiB of GPU memory"),
            "{e}"
        );
    }

    #[test]
    fn file_types_use_llama_cpp_names() {
        assert_eq!(file_type_name(15), Some("Q4_K_M"));
        assert_eq!(file_type_name(17), Some("Q5_K_M"));
        assert_eq!(file_type_name(7), Some("Q8_0"));
        assert_eq!(file_type_name(99), None);
    }

    #[test]
    fn available_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(mem_available().is_some_and(|b| b > 0));
        }
    }
}
