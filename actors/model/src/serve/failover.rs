//! A generator with a fallback (`fallback = "local"` under an upstream, or the reverse): the
//! user gets an answer, not an error, when the primary is down.
//!
//! * The primary not ready (an upstream whose breaker is open, a local model actor that did
//!   not come back within [`PRIMARY_WAIT`]): the fallback generates.
//! * The primary failing before its first text: the same request goes to the fallback, and
//!   the caller sees one answer.
//! * The primary failing mid-answer (an upstream killed, its stream broken): the fallback
//!   generates the answer again from the start; [`GenEvent::Failover`] with `restart` tells
//!   the caller to drop the text it had.
//!
//! Each switch is a [`GenEvent::Failover`] (the turn audits and counts it) and an
//! `alert = true` warning. A context overflow is passed on, not failed over: the prompt was
//! budgeted for the primary, and the fallback would refuse it too.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::{ChatRequest, Generator, Ready, ReadyFuture, SubmitError, Submitted};
use crate::{ChatMessage, GenEvent, GenFailure};

/// The longest wait for a primary that is not ready before the fallback is asked (the turn's
/// own wait, if shorter, applies).
pub const PRIMARY_WAIT: Duration = Duration::from_secs(5);

/// A primary generator and its fallback.
#[derive(Debug, Clone)]
pub struct Failover {
    primary: Arc<dyn Generator>,
    fallback: Arc<dyn Generator>,
}

impl Failover {
    /// `primary`, falling back on `fallback`.
    pub fn new(primary: Arc<dyn Generator>, fallback: Arc<dyn Generator>) -> Self {
        Self { primary, fallback }
    }
}

/// A ready generator with what to do if it fails.
struct FailoverReady {
    inner: Box<dyn Ready>,
    /// Where to go if `inner` fails (`None`: `inner` is the fallback already).
    fallback: Option<Arc<dyn Generator>>,
    /// The failover that already happened (the primary was not ready), announced at submit.
    announced: Option<GenEvent>,
    wait: Duration,
}

impl Generator for Failover {
    fn name(&self) -> &str {
        self.primary.name()
    }

    fn ready(&self, wait: Duration) -> ReadyFuture<'_> {
        Box::pin(async move {
            if let Some(p) = self.primary.ready(wait.min(PRIMARY_WAIT)).await {
                return Some(Box::new(FailoverReady {
                    inner: p,
                    fallback: Some(self.fallback.clone()),
                    announced: None,
                    wait,
                }) as Box<dyn Ready>);
            }
            let f = self.fallback.ready(wait).await?;
            Some(Box::new(FailoverReady {
                inner: f,
                fallback: None,
                announced: Some(switched(
                    self.primary.name(),
                    self.fallback.name(),
                    "not ready".into(),
                    false,
                )),
                wait,
            }) as Box<dyn Ready>)
        })
    }
}

/// The event for a switch, logged as an alert.
fn switched(from: &str, to: &str, reason: String, restart: bool) -> GenEvent {
    tracing::warn!(alert = true, generator = from, fallback = to, reason = %reason, restart, "generation failed over to the fallback");
    GenEvent::Failover {
        from: from.into(),
        to: to.into(),
        reason,
        restart,
    }
}

impl Ready for FailoverReady {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn context_length(&self) -> usize {
        self.inner.context_length()
    }

    fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<usize, String> {
        self.inner.prompt_tokens(messages)
    }

    fn text_tokens(&self, text: &str) -> usize {
        self.inner.text_tokens(text)
    }

    fn submit(&self, req: ChatRequest) -> Result<Submitted, SubmitError> {
        let first = self.inner.submit(req.clone());
        let Some(fallback) = self.fallback.clone() else {
            // Already on the fallback: announce the switch, then its events.
            let mut s = first?;
            if let Some(ev) = self.announced.clone() {
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(ev);
                tokio::spawn(forward(s.events, tx));
                s.events = rx;
            }
            return Ok(s);
        };
        let (prompt_tokens, opens_think, primary) = match first {
            Ok(s) => (s.prompt_tokens, s.opens_think, Ok(s.events)),
            Err(e) => (0, false, Err(e)),
        };
        let (tx, events) = mpsc::unbounded_channel();
        let from = self.inner.name().to_string();
        let wait = self.wait;
        tokio::spawn(async move {
            let (reason, restart) = match primary {
                Err(e) => (format!("{e:?}"), false),
                Ok(rx) => match relay(rx, &tx).await {
                    None => return,
                    Some(r) => r,
                },
            };
            let _ = tx.send(switched(&from, fallback.name(), reason, restart));
            let Some(f) = fallback.ready(wait).await else {
                let _ = tx.send(GenEvent::Failed(GenFailure::Other(format!(
                    "{from} failed and the fallback {} is not ready",
                    fallback.name()
                ))));
                return;
            };
            match f.submit(req) {
                Ok(s) => forward(s.events, tx).await,
                Err(e) => {
                    let _ = tx.send(GenEvent::Failed(GenFailure::Other(format!(
                        "{from} failed and the fallback {} could not start: {e:?}",
                        fallback.name()
                    ))));
                }
            }
        });
        Ok(Submitted {
            events,
            prompt_tokens,
            opens_think,
        })
    }
}

/// Passes the primary's events on until it ends; `None` when it ended well (or the caller
/// left), else why it failed and whether text had been sent.
async fn relay(
    mut rx: UnboundedReceiver<GenEvent>,
    tx: &UnboundedSender<GenEvent>,
) -> Option<(String, bool)> {
    let mut text = false;
    loop {
        let ev = match rx.recv().await {
            None => return Some(("went away mid-answer".into(), text)),
            Some(GenEvent::Failed(f)) if !matches!(f, GenFailure::ContextOverflow { .. }) => {
                return Some((f.to_string(), text))
            }
            Some(ev) => ev,
        };
        text |= matches!(ev, GenEvent::Text(_));
        let end = matches!(ev, GenEvent::Finished(_) | GenEvent::Failed(_));
        if tx.send(ev).is_err() || end {
            return None;
        }
    }
}

/// Passes every event on.
async fn forward(mut rx: UnboundedReceiver<GenEvent>, tx: UnboundedSender<GenEvent>) {
    while let Some(ev) = rx.recv().await {
        if tx.send(ev).is_err() {
            return;
        }
    }
}
