//! Loading a model file and running it: chat prompts, streaming generation, perplexity.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::QuantBackend;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::llama::{KvCache, Llama, Logits};
use crate::sampler::{argmax, log_prob, Sampler, SamplingParams};
use crate::tokenizer::{ChatMessage, Tokenizer};

/// Generation parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Most tokens to generate (stop tokens excluded).
    pub max_tokens: usize,
    /// Sampling chain settings.
    pub sampling: SamplingParams,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampling: SamplingParams::default(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-turn token (EOS, `<|im_end|>`).
    EndOfTurn,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The token callback asked to stop.
    Cancelled,
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Prompt token ids, as fed to the model.
    pub prompt_token_ids: Vec<u32>,
    /// Generated token ids (the stop token excluded).
    pub token_ids: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// Why it stopped.
    pub stop: StopReason,
    /// Time spent on the prompt (one batched forward pass).
    pub prefill: Duration,
    /// Time spent generating after the prompt.
    pub decode: Duration,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_token_ids.len() as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second after the first (each needs one forward pass).
    pub fn decode_tokens_per_s(&self) -> f64 {
        let steps = self.token_ids.len().saturating_sub(1).max(1);
        steps as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// Perplexity of a token sequence (natural log).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Perplexity {
    /// Tokens evaluated (the first one is only context).
    pub n_tokens: usize,
    /// Mean negative log-likelihood per predicted token.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
}

/// A loaded model with its tokenizer.
#[derive(Debug)]
pub struct Engine<B: QuantBackend> {
    /// The network.
    pub model: Llama<B>,
    /// Tokenizer and chat template (shared with the sessions that render prompts).
    pub tokenizer: Arc<Tokenizer>,
}

impl<B: QuantBackend> Engine<B> {
    /// Opens a GGUF file and builds the model on `device`.
    ///
    /// # Errors
    /// Any [`ModelError`] of the reader, the tokenizer or the model;
    /// [`ModelError::DoesNotFit`] when the weights exceed the memory available (`MemAvailable`;
    /// on a GPU backend its free memory, as `nvidia-smi` reports it, against the weights' size
    /// in the GPU form, [`crate::kernels::affine::gpu_bytes`]).
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let gguf = GgufFile::open(path)?;
        // Refuse before touching the weights what this machine cannot hold.
        let weights: u64 = gguf.tensors().iter().map(|t| t.n_bytes).sum();
        if B::ON_GPU {
            let on_gpu = gguf
                .tensors()
                .iter()
                .map(|t| crate::kernels::affine::gpu_bytes(t.ggml_type, t.n_elements()))
                .sum();
            if let Some(gpu) = crate::inspect::gpu_memory() {
                crate::inspect::check_fits_gpu(gguf.path(), on_gpu, &gpu)?;
            }
        } else {
            crate::inspect::check_fits(gguf.path(), weights, crate::inspect::mem_available())?;
        }
        let model = Llama::from_gguf(&gguf, device)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        // Weights the backend copied (repacked or uploaded) no longer need the mapped pages.
        gguf.release_resident_pages();
        if tokenizer.vocab_size() > model.config.n_vocab {
            return Err(ModelError::BadTensor {
                path: gguf.path().to_owned(),
                tensor: "token_embd.weight".into(),
                what: format!(
                    "{} rows for {} tokens",
                    model.config.n_vocab,
                    tokenizer.vocab_size()
                ),
            });
        }
        Ok(Self {
            model,
            tokenizer: Arc::new(tokenizer),
        })
    }

    /// Renders the chat template over `messages` and tokenizes it (no BOS is added; the
    /// template writes whatever special tokens it wants; message contents never produce
    /// control tokens: [`Tokenizer::encode_chat`]).
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.tokenizer.encode_chat(messages)
    }

    /// Generates from `prompt` (token ids), calling `on_text` with each new piece of text as
    /// soon as it forms whole UTF-8; `on_text` returning `Break` stops generation.
    ///
    /// # Errors
    /// [`ModelError::ContextOverflow`] when `prompt + max_tokens` exceeds the context length;
    /// [`ModelError::InvalidParameter`] for bad sampling settings or an empty prompt.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let mut sampler = Sampler::new(params.sampling.clone())?;
        let ctx = self.model.max_positions();
        let needed = prompt.len() + params.max_tokens;
        if needed > ctx {
            return Err(ModelError::ContextOverflow {
                needed,
                context_length: ctx,
            });
        }
        let mut cache = self.model.new_cache(needed);
        let mut history = prompt.to_vec();
        let mut out = Vec::new();
        let mut text = String::new();
        let mut stream = self.tokenizer.stream_decoder();
        let t0 = Instant::now();
        let mut logits = self.logits_last(prompt, &mut cache)?;
        let prefill = t0.elapsed();
        let t1 = Instant::now();
        let mut stop = StopReason::MaxTokens;
        while out.len() < params.max_tokens {
            let tok = sampler.sample(&mut logits, &history);
            if self.tokenizer.stop_ids.contains(&tok) {
                stop = StopReason::EndOfTurn;
                break;
            }
            out.push(tok);
            history.push(tok);
            if let Some(piece) = stream.step(tok)? {
                text.push_str(&piece);
                if on_text(&piece).is_break() {
                    stop = StopReason::Cancelled;
                    break;
                }
            }
            if out.len() == params.max_tokens {
                break;
            }
            logits = self.logits_last(&[tok], &mut cache)?;
        }
        Ok(Generation {
            prompt_token_ids: prompt.to_vec(),
            token_ids: out,
            text,
            stop,
            prefill,
            decode: t1.elapsed(),
        })
    }

    /// Feeds `tokens` and returns the last position's logits.
    pub fn logits_last(&self, tokens: &[u32], cache: &mut KvCache<B>) -> Result<Vec<f32>> {
        let logits = self.model.forward(tokens, cache, Logits::Last)?;
        Ok(logits
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 logits"))
    }

    /// Teacher-forced pass over `tokens` (one batched forward): the log-likelihood of each
    /// token given those before it, and the argmax at each position.
    ///
    /// Returns `(log_probs, top1)`, both of length `tokens.len() - 1`.
    pub fn score(&self, tokens: &[u32]) -> Result<(Vec<f64>, Vec<u32>)> {
        if tokens.len() < 2 {
            return Err(ModelError::InvalidParameter(
                "scoring needs at least two tokens".into(),
            ));
        }
        let mut cache = self.model.new_cache(tokens.len());
        let n_vocab = self.model.config.n_vocab;
        let logits = self.model.forward(tokens, &mut cache, Logits::All)?;
        let all = logits
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 logits");
        let mut lp = Vec::with_capacity(tokens.len() - 1);
        let mut top = Vec::with_capacity(tokens.len() - 1);
        for (i, row) in all.chunks_exact(n_vocab).take(tokens.len() - 1).enumerate() {
            lp.push(log_prob(row, tokens[i + 1]));
            top.push(argmax(row));
        }
        Ok((lp, top))
    }

    /// Perplexity over the first `max_tokens` tokens of `text`, tokenized as llama.cpp's
    /// perplexity tool does (BOS/EOS as the GGUF's `add_bos_token` / `add_eos_token` say,
    /// control tokens in the text not parsed): `exp(mean(-log p(tᵢ | t<ᵢ)))` over `i = 1..n`.
    pub fn perplexity(&self, text: &str, max_tokens: usize) -> Result<Perplexity> {
        let mut ids = self.tokenizer.tokenize(text, true, false)?;
        ids.truncate(max_tokens.min(self.model.max_positions()));
        let (lp, _) = self.score(&ids)?;
        let mean_nll = -lp.iter().sum::<f64>() / lp.len() as f64;
        Ok(Perplexity {
            n_tokens: ids.len(),
            mean_nll,
            perplexity: mean_nll.exp(),
        })
    }
}
