//! The model actor: owns the loaded model and its [`scheduler`](crate::scheduler) thread.
//!
//! Registered under [`MODEL_ACTOR`] so sessions find the current instance after a restart.
//! Start-up loads the GGUF file on the scheduler thread itself (the device never changes
//! threads) and answers only once the model is ready, so a supervisor's ordered start waits for
//! it. When the scheduler thread ends — a panic in a kernel, say — the actor fails, and its
//! supervisor restarts it with a fresh model; the requests it was running see their event
//! channels close without a `Finished` and may resubmit. When the actor is stopped or killed,
//! its state is dropped, which tells the thread to drop its work and exit.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::backend::QuantBackend;
use crate::engine::Engine;
use crate::llama::CacheType;
use crate::scheduler::{self, GenRequest, Progress, SchedulerConfig};
use crate::tokenizer::Tokenizer;

/// The model actor's registered name.
pub const MODEL_ACTOR: &str = "model";

/// What a prompt renderer needs to know about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Tokenizer and chat template.
    pub tokenizer: Arc<Tokenizer>,
    /// Context length in tokens.
    pub context_length: usize,
}

/// Messages to the model actor.
#[derive(Debug)]
pub enum ModelMsg {
    /// Queue a generation; its progress goes to the request's event channel.
    Generate(GenRequest),
    /// The loaded model's tokenizer and context length.
    Info(RpcReplyPort<ModelInfo>),
    /// Sent by the scheduler thread when it ends (the reason).
    SchedulerExited(String),
}

/// Start arguments.
pub struct ModelArgs<B: QuantBackend> {
    /// GGUF file.
    pub path: PathBuf,
    /// Where the model runs.
    pub device: B::Device,
    /// Element type of the KV caches.
    pub cache_type: CacheType,
    /// Batching limits.
    pub scheduler: SchedulerConfig,
    /// Progress reporting (the watchdog's beacon).
    pub progress: Arc<dyn Progress + Sync>,
}

impl<B: QuantBackend> Clone for ModelArgs<B> {
    fn clone(&self) -> Self {
        ModelArgs {
            path: self.path.clone(),
            device: self.device.clone(),
            cache_type: self.cache_type,
            scheduler: self.scheduler,
            progress: self.progress.clone(),
        }
    }
}

/// The actor (generic over the Burn backend).
pub struct ModelActor<B>(PhantomData<fn() -> B>);

impl<B> Default for ModelActor<B> {
    fn default() -> Self {
        ModelActor(PhantomData)
    }
}

/// The actor's state: dropping it stops the scheduler thread.
pub struct ModelState {
    tx: Option<mpsc::Sender<GenRequest>>,
    alive: Arc<AtomicBool>,
    info: ModelInfo,
}

impl Drop for ModelState {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Relaxed);
        self.tx.take();
    }
}

/// Tells the actor that the scheduler thread ended, also when it unwinds.
struct ExitGuard(ActorRef<ModelMsg>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let why = if std::thread::panicking() {
            "the scheduler thread panicked"
        } else {
            "the scheduler thread ended"
        };
        let _ = self.0.send_message(ModelMsg::SchedulerExited(why.into()));
    }
}

impl<B: QuantBackend> Actor for ModelActor<B>
where
    B::Device: Send + Sync,
{
    type Msg = ModelMsg;
    type State = ModelState;
    type Arguments = ModelArgs<B>;

    async fn pre_start(
        &self,
        myself: ActorRef<ModelMsg>,
        args: ModelArgs<B>,
    ) -> Result<ModelState, ActorProcessingErr> {
        let (tx, rx) = mpsc::channel::<GenRequest>();
        let alive = Arc::new(AtomicBool::new(true));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread_alive = alive.clone();
        let path = args.path.clone();
        std::thread::Builder::new()
            .name("model-scheduler".into())
            .spawn(move || {
                let mut engine = match Engine::<B>::load(&args.path, &args.device) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                engine.model.set_cache_type(args.cache_type);
                let info = ModelInfo {
                    tokenizer: engine.tokenizer.clone(),
                    context_length: engine.model.max_positions(),
                };
                if ready_tx.send(Ok(info)).is_err() {
                    return;
                }
                let _guard = ExitGuard(myself);
                scheduler::run(&engine, args.scheduler, rx, &thread_alive, &*args.progress);
            })?;
        let info = ready_rx
            .await
            .map_err(|_| "the model thread ended while loading")?
            .map_err(|e| format!("loading {}: {e}", path.display()))?;
        tracing::info!(model = %path.display(), context = info.context_length, "model loaded; scheduler running");
        Ok(ModelState {
            tx: Some(tx),
            alive,
            info,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ModelMsg>,
        msg: ModelMsg,
        state: &mut ModelState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ModelMsg::Generate(req) => {
                let tx = state.tx.as_ref().ok_or("the scheduler is gone")?;
                tx.send(req).map_err(|_| "the scheduler thread is gone")?;
            }
            ModelMsg::Info(reply) => {
                let _ = reply.send(state.info.clone());
            }
            ModelMsg::SchedulerExited(why) => return Err(why.into()),
        }
        Ok(())
    }
}
