//! `wecom-edge model inspect|check|tokenize`: what a GGUF holds and costs, whether this box
//! runs it (the configuration stick's model import asks `check`), and its tokenizer exactly as
//! llama.cpp's `llama_tokenize` (vocab-only GGUFs such as llama.cpp's `ggml-vocab-*.gguf` work
//! too).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use wecom_edge_actors::model::gguf::GgufFile;
use wecom_edge_actors::model::inspect::ModelReport;
use wecom_edge_actors::model::llama::CacheType;
use wecom_edge_actors::model::{Engine, GenerateParams, QuantBackend, SamplingParams, Tokenizer};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Architecture, parameters, quant mix, tokenizer, chat template, and the memory for weights
    /// and KV cache against what this machine has; exits 1 when the box cannot run it.
    Inspect {
        /// The GGUF file.
        file: PathBuf,
        /// Context the KV cache figure is for, tokens (llama.cpp `--ctx-size`).
        #[arg(long, default_value_t = 4096)]
        ctx_size: usize,
        /// KV cache element type: f16 or f32.
        #[arg(long, default_value = "f16", value_parser = super::parse_cache_type)]
        cache_type: CacheType,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// `inspect`'s verdict, then the model loaded and run: the log-likelihood of a short
    /// English + Chinese text must be finite and one token is generated. Exits 1, with the
    /// reason, when the box cannot run it.
    Check(CheckArgs),
    /// Token ids of TEXT as llama.cpp tokenizes it: BOS/EOS as the GGUF's add_bos_token /
    /// add_eos_token say; control tokens are plain text unless --special.
    Tokenize {
        /// The GGUF file (a model or a vocab-only file).
        #[arg(long)]
        model: PathBuf,
        /// Parse control tokens (`<|im_start|>`, `<start_of_turn>`, …) in the text.
        #[arg(long)]
        special: bool,
        /// No BOS/EOS even where the GGUF asks for them.
        #[arg(long)]
        no_bos: bool,
        /// One JSON object (`token_ids`, `pieces`) instead of one `id<TAB>piece` line per token.
        #[arg(long)]
        json: bool,
        /// The text.
        text: String,
    },
}

/// `model check FILE`.
#[derive(Args)]
pub struct CheckArgs {
    /// The GGUF file.
    pub file: PathBuf,
    /// Context the KV cache figure is for, tokens.
    #[arg(long, default_value_t = 4096)]
    ctx_size: usize,
    /// KV cache element type: f16 or f32.
    #[arg(long, default_value = "f16", value_parser = super::parse_cache_type)]
    cache_type: CacheType,
    /// Where the check runs (as `ask --device`).
    #[arg(long, value_enum, default_value_t = super::DeviceKind::Auto)]
    pub device: super::DeviceKind,
    /// One JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

/// The text `model check` scores: English and Chinese, so that a tokenizer or an embedding
/// table that breaks on either shows.
const CHECK_TEXT: &str = "The meeting is at ten. 会议十点开始。";

/// `model check`: [`ModelReport`]'s verdict, then a load on `device`, a finite mean negative
/// log-likelihood over [`CHECK_TEXT`] and one greedily generated token. Exit 0 when all pass,
/// 1 with the reason otherwise.
pub fn check<B: QuantBackend>(a: CheckArgs, device: &B::Device) -> anyhow::Result<ExitCode> {
    let verdict =
        |ok: bool, reason: String, extra: serde_json::Value| -> anyhow::Result<ExitCode> {
            if a.json {
                let mut obj = serde_json::json!({ "file": a.file, "ok": ok, "reason": reason });
                if let (Some(o), serde_json::Value::Object(e)) = (obj.as_object_mut(), extra) {
                    o.extend(e);
                }
                println!("{obj}");
            } else if ok {
                println!("{}: OK: {reason}", a.file.display());
            } else {
                eprintln!("{}: REJECTED: {reason}", a.file.display());
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        };
    let g = match GgufFile::open(&a.file) {
        Ok(g) => g,
        Err(e) => return verdict(false, format!("not a readable GGUF: {e}"), json!({})),
    };
    let r = ModelReport::from_gguf(&g, a.ctx_size, a.cache_type);
    if let Some(u) = r.unsupported.as_ref().or(r.tokenizer.unsupported.as_ref()) {
        return verdict(false, u.clone(), json!({}));
    }
    if !r.memory.fits {
        return verdict(
            false,
            format!(
                "needs {} MiB (weights and a {}-token KV cache) but {} MiB {} available",
                r.memory.total_bytes >> 20,
                r.memory.ctx_size,
                r.memory
                    .gpu
                    .as_ref()
                    .map_or(r.memory.available_bytes.unwrap_or(0), |g| g.free_bytes)
                    >> 20,
                if r.memory.gpu.is_some() {
                    "of GPU memory are"
                } else {
                    "are"
                }
            ),
            json!({}),
        );
    }
    drop(g);
    let t0 = std::time::Instant::now();
    let engine = match Engine::<B>::load(&a.file, device) {
        Ok(e) => e,
        Err(e) => return verdict(false, format!("does not load: {e}"), json!({})),
    };
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let nll = match engine.perplexity(CHECK_TEXT, 64) {
        Ok(p) if p.mean_nll.is_finite() => p.mean_nll,
        Ok(p) => {
            return verdict(
                false,
                format!("its logits are not finite (mean NLL {})", p.mean_nll),
                json!({}),
            )
        }
        Err(e) => return verdict(false, format!("scoring a text failed: {e}"), json!({})),
    };
    let prompt = engine.tokenizer.tokenize(CHECK_TEXT, true, false)?;
    let params = GenerateParams {
        max_tokens: 1,
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
    };
    let gen = match engine.generate(&prompt, &params, |_| std::ops::ControlFlow::Continue(())) {
        Ok(g) => g,
        Err(e) => return verdict(false, format!("generating a token failed: {e}"), json!({})),
    };
    verdict(
        true,
        format!(
            "{} {}, {}, loaded in {load_ms:.0} ms, mean NLL {nll:.2} over {} tokens, one token generated",
            r.architecture.as_deref().unwrap_or("?"),
            r.file_type.as_deref().unwrap_or("?"),
            if r.tokenizer.chat_template { "chat template" } else { "no chat template (complete only)" },
            prompt.len()
        ),
        json!({
            "architecture": r.architecture,
            "file_type": r.file_type,
            "chat_template": r.tokenizer.chat_template,
            "load_ms": load_ms,
            "mean_nll": nll,
            "token_ids": gen.token_ids,
        }),
    )
}

pub fn run(c: ModelCommand) -> anyhow::Result<ExitCode> {
    match c {
        ModelCommand::Check(_) => unreachable!("main dispatches model check on its backend"),
        ModelCommand::Inspect {
            file,
            ctx_size,
            cache_type,
            json,
        } => {
            let g = GgufFile::open(&file).with_context(|| format!("reading {}", file.display()))?;
            let r = ModelReport::from_gguf(&g, ctx_size, cache_type);
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}", r.to_text());
            }
            let runs =
                r.unsupported.is_none() && r.tokenizer.unsupported.is_none() && r.memory.fits;
            Ok(if runs {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ModelCommand::Tokenize {
            model,
            special,
            no_bos,
            json,
            text,
        } => {
            let g =
                GgufFile::open(&model).with_context(|| format!("reading {}", model.display()))?;
            let tok = Tokenizer::from_gguf(&g)?;
            let ids = tok.tokenize(&text, !no_bos, special)?;
            let pieces: Vec<String> = ids
                .iter()
                .map(|&id| String::from_utf8_lossy(&tok.piece(id)).into_owned())
                .collect();
            let mut out = std::io::stdout().lock();
            if json {
                let obj = serde_json::json!({ "token_ids": ids, "pieces": pieces });
                writeln!(out, "{obj}")?;
            } else {
                for (id, p) in ids.iter().zip(&pieces) {
                    writeln!(out, "{id}\t{p:?}")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
