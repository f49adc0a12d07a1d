//! `wecom-edge model inspect|tokenize`: what a GGUF holds and costs, and its tokenizer exactly
//! as llama.cpp's `llama_tokenize` (vocab-only GGUFs such as llama.cpp's `ggml-vocab-*.gguf`
//! work too).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use wecom_edge_actors::model::gguf::GgufFile;
use wecom_edge_actors::model::inspect::ModelReport;
use wecom_edge_actors::model::llama::CacheType;
use wecom_edge_actors::model::Tokenizer;

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

pub fn run(c: ModelCommand) -> anyhow::Result<ExitCode> {
    match c {
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
