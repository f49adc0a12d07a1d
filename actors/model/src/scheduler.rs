//! The inference scheduler: continuous batching over one loaded model.
//!
//! One OS thread owns the [`Engine`] (the device and its kernels are not shared) and runs this
//! loop:
//!
//! 1. take new [`GenRequest`]s from the queue (blocking only when there is nothing to do);
//! 2. admit waiting requests, oldest first, while there is a free slot (`max_batch`) and their
//!    KV cache fits in the memory budget (`kv_budget_bytes`; a request is always admitted when
//!    nothing else runs, so one long prompt cannot starve);
//! 3. run one step ([`Llama::step`]: the weights are read once per step for all rows): one
//!    token for every decoding sequence, plus up to `prefill_chunk` prompt tokens of the
//!    sequences still prefilling, those with the least left first (chunked prefill: a short
//!    question asked during a long prompt's prefill starts at the next step, not after it).
//!    A sequence whose prompt is complete samples its first token; each decoding one samples
//!    its next; text streams out.
//!
//! New requests therefore join between steps, a long prompt never holds the others' decode for
//! more than one chunk, every step is a progress beat for the watchdog (a 7,600-token prompt is
//! ~30 beats, not one two-minute call), and a finished or cancelled sequence frees its slot at
//! once. Chunking does not change results: [`Llama::step`] computes each row independently, so
//! a prompt prefilled in chunks beside other sequences gives the logits it gets alone.
//!
//! Every request ends with exactly one [`GenEvent::Finished`] or
//! [`GenEvent::Failed`], unless the scheduler itself dies — then its event channel closes
//! without either, and the submitter knows the model went away.
//!
//! Cancellation: setting the request's `cancel` flag, or dropping its event receiver, stops the
//! sequence before its next step (`StopReason::Cancelled`).
//!
//! Prefix cache: a request with a `cache_key` (a session) leaves its KV cache parked when it
//! ends, with the token ids it holds. The next request with that key reuses the cache up to the
//! longest common prefix of those ids and its prompt — a conversation's history is not prefilled
//! again each turn, only the new question. Parked caches count against the memory budget and
//! are evicted least recently used first when a new sequence needs room. New caches are
//! allocated with `slack` spare positions so the next turn usually fits. A parked cache unused
//! for `parked_ttl` (the session's idle time: its conversation has ended) is dropped, also while
//! the scheduler waits for work, and the freed memory is handed back to the OS (glibc's
//! `malloc_trim(0)`), so an idle box returns near its base RSS.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::backend::QuantBackend;
use crate::engine::{Engine, GenerateParams, StopReason};
use crate::error::ModelError;
use crate::llama::{Chunk, KvCache, Llama, Logits};
use crate::sampler::Sampler;
use crate::tokenizer::StreamDecoder;

/// Scheduler limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most sequences decoded together (KV cache slots).
    pub max_batch: usize,
    /// Bytes all KV caches (running and parked) may hold together.
    pub kv_budget_bytes: usize,
    /// Spare positions allocated beyond a request's need, for the conversation's next turn.
    pub slack: usize,
    /// Most prompt tokens prefilled in one step (shared by the prefilling sequences, the
    /// shortest remainder first). Bounds the time between progress beats and the delay a long
    /// prompt adds to the other sequences' next token.
    pub prefill_chunk: usize,
    /// A parked cache unused this long is dropped.
    pub parked_ttl: Duration,
}

impl Default for SchedulerConfig {
    /// 8 slots within 512 MiB (SmolLM2-135M with an f16 cache: 22.5 KiB per position, so
    /// ~23 000 positions: 8 running conversations of ~1400 positions each, plus as many
    /// parked), 256 spare,
    /// prefill in chunks of 128 tokens (about 1 s on 2 cores for SmolLM2-135M), parked caches
    /// kept 10 minutes (the sessions' default idle time).
    fn default() -> Self {
        SchedulerConfig {
            max_batch: 8,
            kv_budget_bytes: 512 << 20,
            slack: 256,
            prefill_chunk: 128,
            parked_ttl: Duration::from_secs(600),
        }
    }
}

/// One generation to run.
#[derive(Debug)]
pub struct GenRequest {
    /// Prompt token ids (the chat template already applied).
    pub prompt: Vec<u32>,
    /// Length and sampling.
    pub params: GenerateParams,
    /// Where the progress goes.
    pub events: UnboundedSender<GenEvent>,
    /// Set to stop the generation before its next token.
    pub cancel: Arc<AtomicBool>,
    /// When it was submitted (the queue time is measured from here).
    pub submitted: Instant,
    /// The conversation this continues (prefix-cache key), if any.
    pub cache_key: Option<String>,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenFailure {
    /// The prompt plus the answer room does not fit the model's context.
    ContextOverflow {
        /// Positions needed.
        needed: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// Anything else (bad parameters, a model error), as text.
    Other(String),
}

impl std::fmt::Display for GenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenFailure::ContextOverflow {
                needed,
                context_length,
            } => write!(
                f,
                "the conversation needs {needed} positions; the model holds {context_length}"
            ),
            GenFailure::Other(s) => f.write_str(s),
        }
    }
}

impl From<ModelError> for GenFailure {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::ContextOverflow {
                needed,
                context_length,
            } => GenFailure::ContextOverflow {
                needed,
                context_length,
            },
            other => GenFailure::Other(other.to_string()),
        }
    }
}

/// Timings and counts of a finished generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenStats {
    /// Why it ended.
    pub stop: StopReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens found in the prefix cache (not prefilled again).
    pub cached_tokens: usize,
    /// Generated tokens (the stop token excluded).
    pub tokens: usize,
    /// Submission to the start of its prefill.
    pub queued: Duration,
    /// Its prefill.
    pub prefill: Duration,
    /// From the end of its prefill to its last token.
    pub decode: Duration,
}

/// Progress of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// Admitted and prefilled (its first token follows).
    Started {
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Of which found in the prefix cache.
        cached_tokens: usize,
        /// Time spent waiting for a slot.
        queued: Duration,
    },
    /// New text (whole UTF-8).
    Text(String),
    /// The end.
    Finished(GenStats),
    /// Refused or failed; nothing more follows.
    Failed(GenFailure),
    /// The generator failed and its fallback takes over ([`crate::serve::failover`]); the
    /// scheduler never sends this.
    Failover {
        /// The generator that failed.
        from: String,
        /// The one that generates now.
        to: String,
        /// Why (a failure's text, `not ready`).
        reason: String,
        /// Text had been sent: drop it, the answer starts again.
        restart: bool,
    },
}

/// Progress reporting for the watchdog: `beat` after each step, `idle` when there is no work.
pub trait Progress: Send {
    /// The scheduler made progress.
    fn beat(&self);
    /// The scheduler has nothing to do (`true`) or work again (`false`).
    fn idle(&self, idle: bool);
    /// Parked caches unused for `parked_ttl` were dropped: how many, and their bytes.
    fn released(&self, _caches: usize, _bytes: usize) {}
}

impl Progress for () {
    fn beat(&self) {}
    fn idle(&self, _: bool) {}
}

/// Drops parked caches unused for `ttl` (reporting them, and handing the memory back to the
/// OS); the time until the next one expires, if any is left.
fn expire_parked<B: QuantBackend>(
    parked: &mut ParkedMap<B>,
    ttl: Duration,
    progress: &dyn Progress,
) -> Option<Duration> {
    let (mut n, mut bytes) = (0, 0);
    parked.retain(|_, p| {
        let keep = p.last_used.elapsed() < ttl;
        if !keep {
            n += 1;
            bytes += p.cache.bytes();
        }
        keep
    });
    if n > 0 {
        release_memory();
        progress.released(n, bytes);
    }
    parked
        .values()
        .map(|p| ttl.saturating_sub(p.last_used.elapsed()))
        .min()
}

/// Returns freed heap memory to the OS (glibc keeps it otherwise; a no-op elsewhere).
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

struct Seq<'t, B: QuantBackend> {
    req: GenRequest,
    cache: KvCache<B>,
    sampler: Sampler,
    history: Vec<u32>,
    decoder: StreamDecoder<'t>,
    generated: usize,
    /// The token to feed at the next step.
    next: u32,
    /// Prompt tokens in the cache so far; the sequence decodes once this reaches the prompt.
    prefilled: usize,
    /// When its prefill began.
    prefill_start: Instant,
    queued: Duration,
    prefill: Duration,
    cached: usize,
    decode_start: Instant,
}

/// A finished sequence's cache, kept for its conversation's next turn.
struct Parked<B: QuantBackend> {
    /// The token ids at the cache's positions `0..cache.len()`.
    tokens: Vec<u32>,
    cache: KvCache<B>,
    last_used: Instant,
}

type ParkedMap<B> = std::collections::HashMap<String, Parked<B>>;

impl<B: QuantBackend> Seq<'_, B> {
    fn finish(mut self, stop: StopReason, parked: &mut ParkedMap<B>) {
        let stats = GenStats {
            stop,
            prompt_tokens: self.req.prompt.len(),
            cached_tokens: self.cached,
            tokens: self.generated,
            queued: self.queued,
            prefill: self.prefill,
            decode: self.decode_start.elapsed(),
        };
        let _ = self.req.events.send(GenEvent::Finished(stats));
        if let Some(key) = self.req.cache_key.take() {
            self.history.truncate(self.cache.len());
            parked.insert(
                key,
                Parked {
                    tokens: self.history,
                    cache: self.cache,
                    last_used: Instant::now(),
                },
            );
        }
    }

    fn abandoned(&self) -> bool {
        self.req.cancel.load(Ordering::Relaxed) || self.req.events.is_closed()
    }

    fn prefilling(&self) -> bool {
        self.prefilled < self.req.prompt.len()
    }
}

/// Bytes of a KV cache for `positions` positions (K and V of every layer, in the model's [`crate::llama::CacheType`]).
pub fn kv_cache_bytes<B: QuantBackend>(model: &Llama<B>, positions: usize) -> usize {
    let c = &model.config;
    c.n_layer
        * 2
        * c.n_head_kv
        * c.head_dim
        * positions.min(c.context_length)
        * model.cache_type().bytes()
}

/// Runs the scheduler until `requests` is closed and all work is done, or `alive` is cleared
/// (the owner is gone: running sequences are dropped, their event channels close).
pub fn run<B: QuantBackend>(
    engine: &Engine<B>,
    cfg: SchedulerConfig,
    requests: Receiver<GenRequest>,
    alive: &AtomicBool,
    progress: &dyn Progress,
) {
    let mut waiting: VecDeque<GenRequest> = VecDeque::new();
    let mut running: Vec<Seq<'_, B>> = Vec::new();
    let mut parked: ParkedMap<B> = ParkedMap::new();
    let mut open = true;
    loop {
        if !alive.load(Ordering::Relaxed) {
            return;
        }
        if running.is_empty() && waiting.is_empty() {
            if !open {
                return;
            }
            progress.idle(true);
            let next = loop {
                let r = match expire_parked(&mut parked, cfg.parked_ttl, progress) {
                    Some(wait) => requests
                        .recv_timeout(wait)
                        .map_err(|e| matches!(e, std::sync::mpsc::RecvTimeoutError::Disconnected)),
                    None => requests.recv().map_err(|_| true),
                };
                match r {
                    Ok(r) => break Some(r),
                    Err(true) => break None,
                    Err(false) => {}
                }
            };
            progress.idle(false);
            match next {
                Some(r) => waiting.push_back(r),
                None => return,
            }
        }
        expire_parked(&mut parked, cfg.parked_ttl, progress);
        while open {
            match requests.try_recv() {
                Ok(r) => waiting.push_back(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        admit(engine, cfg, &mut waiting, &mut running, &mut parked);
        progress.beat();
        if !running.is_empty() {
            step(engine, cfg, &mut running, &mut parked);
            progress.beat();
        }
    }
}

fn positions(r: &GenRequest) -> usize {
    r.prompt.len() + r.params.max_tokens
}

fn admit<'t, B: QuantBackend>(
    engine: &'t Engine<B>,
    cfg: SchedulerConfig,
    waiting: &mut VecDeque<GenRequest>,
    running: &mut Vec<Seq<'t, B>>,
    parked: &mut ParkedMap<B>,
) {
    let model = &engine.model;
    let ctx = model.max_positions();
    while let Some(front) = waiting.front() {
        if front.cancel.load(Ordering::Relaxed) || front.events.is_closed() {
            let req = waiting.pop_front().expect("front exists");
            let _ = req.events.send(GenEvent::Finished(GenStats {
                stop: StopReason::Cancelled,
                prompt_tokens: req.prompt.len(),
                cached_tokens: 0,
                tokens: 0,
                queued: req.submitted.elapsed(),
                prefill: Duration::ZERO,
                decode: Duration::ZERO,
            }));
            continue;
        }
        if !running.is_empty() && running.len() >= cfg.max_batch.max(1) {
            return;
        }
        // Its own parked cache: reused in place when it can hold the new request, else grown
        // (its prefix copied into a larger cache).
        let own_parked = front.cache_key.as_ref().and_then(|k| parked.get(k));
        let reuse = own_parked.is_some_and(|p| p.cache.capacity() >= positions(front));
        let bytes = |p: usize| kv_cache_bytes(model, p);
        let need = if reuse {
            0
        } else {
            bytes((positions(front) + cfg.slack).min(ctx))
        };
        let own = front.cache_key.as_deref().filter(|_| own_parked.is_some());
        let used = |running: &[Seq<'t, B>], parked: &ParkedMap<B>| -> usize {
            running
                .iter()
                .map(|s| bytes(s.cache.capacity()))
                .sum::<usize>()
                + parked
                    .values()
                    .map(|p| bytes(p.cache.capacity()))
                    .sum::<usize>()
        };
        // Evict parked caches, least recently used first (never the one about to be reused).
        while used(running, parked) + need > cfg.kv_budget_bytes {
            let victim = parked
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != own)
                .min_by_key(|(_, p)| p.last_used)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    parked.remove(&k);
                }
                None => break,
            }
        }
        if !running.is_empty() && used(running, parked) + need > cfg.kv_budget_bytes {
            return;
        }
        let req = waiting.pop_front().expect("front exists");
        let fail = |req: &GenRequest, f: GenFailure| {
            let _ = req.events.send(GenEvent::Failed(f));
        };
        if req.prompt.is_empty() {
            fail(&req, GenFailure::Other("empty prompt".into()));
            continue;
        }
        if positions(&req) > ctx {
            fail(
                &req,
                GenFailure::ContextOverflow {
                    needed: positions(&req),
                    context_length: ctx,
                },
            );
            continue;
        }
        let sampler = match Sampler::new(req.params.sampling.clone()) {
            Ok(s) => s,
            Err(e) => {
                fail(&req, e.into());
                continue;
            }
        };
        let queued = req.submitted.elapsed();
        let t0 = Instant::now();
        let old = req.cache_key.as_ref().and_then(|k| parked.remove(k));
        let (cache, cached) = match old {
            Some(p) => {
                // Keep the common prefix; at least one prompt token is fed for its logits.
                let same = p
                    .tokens
                    .iter()
                    .zip(&req.prompt)
                    .take_while(|(a, b)| a == b)
                    .count()
                    .min(req.prompt.len() - 1);
                let mut cache = p.cache;
                if cache.capacity() < positions(&req) {
                    let capacity = (positions(&req) + cfg.slack).min(ctx);
                    cache = model.grow_cache(cache, capacity, same);
                }
                cache.truncate(same);
                (cache, same)
            }
            None => (model.new_cache((positions(&req) + cfg.slack).min(ctx)), 0),
        };
        running.push(Seq {
            history: req.prompt.clone(),
            req,
            cache,
            sampler,
            decoder: engine.tokenizer.stream_decoder(),
            generated: 0,
            next: 0,
            prefilled: cached,
            prefill_start: t0,
            queued,
            prefill: Duration::ZERO,
            cached,
            decode_start: Instant::now(),
        });
    }
}

/// Samples `seq`'s next token from `logits` and streams it; `Some` when the sequence ends.
fn take_token<B: QuantBackend>(
    engine: &Engine<B>,
    seq: &mut Seq<'_, B>,
    logits: &mut [f32],
) -> Option<StopReason> {
    if seq.abandoned() {
        return Some(StopReason::Cancelled);
    }
    let tok = seq.sampler.sample(logits, &seq.history);
    if engine.tokenizer.stop_ids.contains(&tok) {
        return Some(StopReason::EndOfTurn);
    }
    seq.generated += 1;
    seq.history.push(tok);
    match seq.decoder.step(tok) {
        Ok(Some(piece)) => {
            if seq.req.events.send(GenEvent::Text(piece)).is_err() {
                return Some(StopReason::Cancelled);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "detokenizing a generated token failed"),
    }
    if seq.generated >= seq.req.params.max_tokens {
        return Some(StopReason::MaxTokens);
    }
    seq.next = tok;
    None
}

/// One step for all running sequences — a decode token for each decoding one, prompt chunks
/// for the prefilling ones within `cfg.prefill_chunk` tokens — then sampling; finished ones
/// leave `running`.
fn step<B: QuantBackend>(
    engine: &Engine<B>,
    cfg: SchedulerConfig,
    running: &mut Vec<Seq<'_, B>>,
    parked: &mut ParkedMap<B>,
) {
    // Drop the abandoned before spending a step on them.
    let mut i = 0;
    while i < running.len() {
        if running[i].abandoned() {
            running.remove(i).finish(StopReason::Cancelled, parked);
        } else {
            i += 1;
        }
    }
    if running.is_empty() {
        return;
    }
    // What each sequence feeds: (start, end) of its prompt, or its next token (0, 0). The
    // prefill budget goes to the prompts with the least left first (ties: the oldest), so a
    // short question is not queued behind a long prompt's whole prefill.
    let mut plan: Vec<Option<(usize, usize)>> = running
        .iter()
        .map(|s| (!s.prefilling()).then_some((0, 0)))
        .collect();
    let mut order: Vec<usize> = (0..running.len())
        .filter(|&i| running[i].prefilling())
        .collect();
    order.sort_by_key(|&i| running[i].req.prompt.len() - running[i].prefilled);
    let mut budget = cfg.prefill_chunk.max(1);
    for i in order {
        let s = &running[i];
        let take = budget.min(s.req.prompt.len() - s.prefilled);
        budget -= take;
        if take > 0 {
            plan[i] = Some((s.prefilled, s.prefilled + take));
        }
    }
    let result = {
        let mut chunks: Vec<Chunk<'_, B>> = running
            .iter_mut()
            .zip(&plan)
            .filter_map(|(s, p)| {
                let (a, b) = (*p)?;
                let tokens = if a == b {
                    std::slice::from_ref(&s.next)
                } else {
                    &s.req.prompt[a..b]
                };
                Some(Chunk {
                    tokens,
                    cache: &mut s.cache,
                    logits: Logits::Last,
                })
            })
            .collect();
        engine.model.step(&mut chunks)
    };
    let logits = match result {
        Ok(t) => t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 logits"),
        Err(e) => {
            let f = GenFailure::from(e);
            for s in running.drain(..) {
                let _ = s.req.events.send(GenEvent::Failed(f.clone()));
            }
            return;
        }
    };
    let n_vocab = engine.model.config.n_vocab;
    let mut logits = logits;
    let mut rows = logits.chunks_exact_mut(n_vocab);
    let mut keep = Vec::with_capacity(running.len());
    for (mut seq, p) in running.drain(..).zip(plan) {
        let Some((a, b)) = p else {
            keep.push(seq); // prefilling, no room in this step's chunk
            continue;
        };
        let row = rows.next().expect("one logits row per chunk");
        if a != b {
            seq.prefilled = b;
            if seq.prefilling() {
                keep.push(seq);
                continue;
            }
            // Prompt complete: this row holds its last position's logits.
            seq.prefill = seq.prefill_start.elapsed();
            seq.decode_start = Instant::now();
            let _ = seq.req.events.send(GenEvent::Started {
                prompt_tokens: seq.req.prompt.len(),
                cached_tokens: seq.cached,
                queued: seq.queued,
            });
        }
        match take_token(engine, &mut seq, row) {
            Some(stop) => seq.finish(stop, parked),
            None => keep.push(seq),
        }
    }
    *running = keep;
}
