//! The local generator: the model actor of this process ([`MODEL_ACTOR`]), found by name so
//! that a restarted actor is found again; messages rendered with the GGUF's own chat template
//! ([`crate::Tokenizer::encode_chat`]), token counts exact.

use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::sync::mpsc;

use super::{ChatRequest, Generator, Ready, ReadyFuture, SubmitError, Submitted};
use crate::{ChatMessage, GenRequest, ModelInfo, ModelMsg, MODEL_ACTOR};

/// The local model (stateless: each [`Generator::ready`] looks the actor up).
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

/// The model actor and what it said about itself.
struct LocalReady {
    model: ActorRef<ModelMsg>,
    info: ModelInfo,
}

impl Generator for Local {
    fn name(&self) -> &str {
        "local"
    }

    fn ready(&self, wait: Duration) -> ReadyFuture<'_> {
        Box::pin(async move {
            let deadline = Instant::now() + wait;
            loop {
                if let Some(cell) = ractor::registry::where_is(MODEL_ACTOR.into()) {
                    let model: ActorRef<ModelMsg> = cell.into();
                    if let Ok(info) = ractor::call!(model, ModelMsg::Info) {
                        return Some(Box::new(LocalReady { model, info }) as Box<dyn Ready>);
                    }
                }
                if Instant::now() >= deadline {
                    return None;
                }
                // A restart takes the model's load time; a short poll keeps the wait small.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}

/// Whether the last few tokens of a rendered prompt open a reasoning block.
fn opens_think(tail: &str) -> bool {
    tail.trim_end().ends_with("<think>")
}

impl Ready for LocalReady {
    fn name(&self) -> &str {
        "local"
    }

    fn context_length(&self) -> usize {
        self.info.context_length
    }

    fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<usize, String> {
        self.info
            .tokenizer
            .encode_chat(messages)
            .map(|v| v.len())
            .map_err(|e| e.to_string())
    }

    fn text_tokens(&self, text: &str) -> usize {
        self.info
            .tokenizer
            .encode_plain(text)
            .map_or(text.len(), |v| v.len())
    }

    fn submit(&self, req: ChatRequest) -> Result<Submitted, SubmitError> {
        let tok = &self.info.tokenizer;
        let prompt = tok
            .encode_chat(&req.messages)
            .map_err(|e| SubmitError::Template(e.to_string()))?;
        let tail_from = prompt.len().saturating_sub(8);
        let opens_think = tok
            .decode(&prompt[tail_from..])
            .is_ok_and(|s| opens_think(&s));
        let prompt_tokens = prompt.len();
        let (tx, events) = mpsc::unbounded_channel();
        let gen = GenRequest {
            prompt,
            params: req.params,
            events: tx,
            cancel: req.cancel,
            submitted: req.submitted,
            cache_key: req.cache_key,
        };
        self.model
            .send_message(ModelMsg::Generate(gen))
            .map_err(|_| SubmitError::Lost)?;
        Ok(Submitted {
            events,
            prompt_tokens,
            opens_think,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_ending_in_think_opens_reasoning() {
        assert!(opens_think("<｜Assistant｜><think>\n"));
        assert!(!opens_think("<｜Assistant｜><think>\n</think>"));
        assert!(!opens_think("<|im_start|>assistant\n"));
    }

    #[tokio::test]
    async fn no_model_actor_is_not_ready() {
        assert!(Local.ready(Duration::from_millis(60)).await.is_none());
        assert_eq!(Local.name(), "local");
    }
}
