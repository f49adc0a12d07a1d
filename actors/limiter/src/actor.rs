//! The rate-limiter actor: one [`Admission`] and one [`FairQueue`] for the whole box, behind a
//! mailbox so every session sees the same buckets and the same queue. Registered under
//! [`LIMITER_ACTOR`].
//!
//! A question gets a [`Permit`] at once while fewer than `max_active` generations hold one;
//! otherwise it waits in the fair queue and its [`Queued`] receives its position each time it
//! changes, then the permit. It is refused ([`Refusal::Busy`]) when `max_queued` questions
//! already wait, or when its estimated wait — its position over `max_active`, times the
//! measured mean time a permit is held — is over `max_wait_seconds`.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use crate::{Admission, FairQueue, Limits, Refusal};

/// The limiter's registered name.
pub const LIMITER_ACTOR: &str = "limiter";

/// Messages to the limiter.
#[derive(Debug)]
pub enum LimiterMsg {
    /// Admit one question from `user` in `chat` (`None`: a single chat).
    Admit {
        /// User key (e.g. `aibot/{bot}/{userid}`).
        user: String,
        /// Chat key.
        chat: Option<String>,
        /// A permit now, a place in the queue, or why not.
        reply: RpcReplyPort<Result<Admitted, Refusal>>,
    },
    /// A permit was dropped after being held this long.
    Released {
        /// How long it was held.
        held: Duration,
    },
    /// A waiter gave up (its [`Queued`] was dropped before its permit came).
    Withdraw {
        /// Its ticket.
        ticket: u64,
    },
    /// `(generations holding a permit, questions waiting)`.
    InFlight(RpcReplyPort<(u32, usize)>),
}

/// A generation slot; released (and the next waiter served) on drop.
#[derive(Debug)]
pub struct Permit {
    limiter: Option<ActorRef<LimiterMsg>>,
    granted: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(l) = self.limiter.take() {
            let _ = l.send_message(LimiterMsg::Released {
                held: self.granted.elapsed(),
            });
        }
    }
}

/// What an admitted question gets.
#[derive(Debug)]
pub enum Admitted {
    /// A slot now.
    Now(Permit),
    /// A place in the queue.
    Queued(Queued),
}

/// What a waiting question hears.
#[derive(Debug)]
pub enum QueueUpdate {
    /// Its new position: questions to be served before it.
    Ahead(usize),
    /// Its turn.
    Granted(Permit),
}

/// A place in the fair queue; dropping it withdraws the question.
#[derive(Debug)]
pub struct Queued {
    /// Questions to be served before this one when it was queued.
    pub ahead: usize,
    ticket: u64,
    rx: mpsc::UnboundedReceiver<QueueUpdate>,
    limiter: ActorRef<LimiterMsg>,
    granted: bool,
}

impl Queued {
    /// The next update (`None`: the limiter went away; the question was lost with it).
    pub async fn next(&mut self) -> Option<QueueUpdate> {
        let u = self.rx.recv().await;
        if matches!(u, Some(QueueUpdate::Granted(_))) {
            self.granted = true;
        }
        u
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.granted {
            let _ = self.limiter.send_message(LimiterMsg::Withdraw {
                ticket: self.ticket,
            });
        }
    }
}

/// The actor.
#[derive(Debug, Default)]
pub struct LimiterActor;

struct Waiter {
    tx: mpsc::UnboundedSender<QueueUpdate>,
    told: usize,
}

/// Its state.
pub struct LimiterState {
    limits: Limits,
    admission: Admission<String, String>,
    queue: FairQueue<String, Waiter>,
    active: u32,
    next_ticket: u64,
    /// Mean time a permit is held (exponentially weighted), once one was released.
    mean_hold: Option<f64>,
    since_prune: u32,
}

impl std::fmt::Debug for LimiterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimiterState")
            .field("active", &self.active)
            .field("waiting", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl LimiterState {
    fn permit(&mut self, myself: &ActorRef<LimiterMsg>) -> Permit {
        self.active += 1;
        Permit {
            limiter: Some(myself.clone()),
            granted: Instant::now(),
        }
    }

    /// Estimated wait for a question with `ahead` questions before it.
    fn estimate(&self, ahead: usize) -> Option<Duration> {
        let per_round = f64::from(self.limits.max_active.max(1));
        self.mean_hold
            .map(|h| Duration::from_secs_f64(h * ((ahead as f64 / per_round).floor() + 1.0)))
    }

    fn admit(
        &mut self,
        myself: &ActorRef<LimiterMsg>,
        user: String,
        chat: Option<String>,
    ) -> Result<Admitted, Refusal> {
        let now = Instant::now();
        if self.active < self.limits.max_active && self.queue.is_empty() {
            self.admission.admit(&user, chat.as_ref(), now)?;
            return Ok(Admitted::Now(self.permit(myself)));
        }
        let waiting = self.queue.len();
        if waiting >= self.limits.max_queued as usize {
            return Err(Refusal::Busy {
                waiting,
                estimate: None,
            });
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        self.queue
            .push(user.clone(), ticket, Waiter { tx, told: 0 });
        let ahead = self
            .queue
            .positions()
            .into_iter()
            .find_map(|(t, a)| (t == ticket).then_some(a))
            .expect("just pushed");
        let estimate = self.estimate(ahead);
        let refused = if estimate
            .is_some_and(|e| e > Duration::from_secs(self.limits.max_wait_seconds.into()))
        {
            Some(Refusal::Busy { waiting, estimate })
        } else {
            self.admission.admit(&user, chat.as_ref(), now).err()
        };
        if let Some(r) = refused {
            self.queue.remove(ticket);
            return Err(r);
        }
        if let Some(w) = self.queue.items_mut().find(|(t, _)| *t == ticket) {
            w.1.told = ahead;
        }
        // Those it went ahead of (later questions of users with more waiting) hear so.
        self.tell_positions();
        Ok(Admitted::Queued(Queued {
            ahead,
            ticket,
            rx,
            limiter: myself.clone(),
            granted: false,
        }))
    }

    /// Hands free slots to the next waiters, then tells the rest their new positions.
    fn serve(&mut self, myself: &ActorRef<LimiterMsg>) {
        while self.active < self.limits.max_active {
            let Some((_, w)) = self.queue.pop() else {
                break;
            };
            let p = self.permit(myself);
            if let Err(mpsc::error::SendError(QueueUpdate::Granted(mut p))) =
                w.tx.send(QueueUpdate::Granted(p))
            {
                // The waiter is gone: the slot was never used.
                p.limiter = None;
                self.active -= 1;
            }
        }
        self.tell_positions();
    }

    /// Tells every waiter whose position changed its new one.
    fn tell_positions(&mut self) {
        let positions: std::collections::HashMap<u64, usize> =
            self.queue.positions().into_iter().collect();
        let mut gone = Vec::new();
        for (t, w) in self.queue.items_mut() {
            let ahead = positions[&t];
            if ahead != w.told {
                w.told = ahead;
                if w.tx.send(QueueUpdate::Ahead(ahead)).is_err() {
                    gone.push(t);
                }
            }
        }
        for t in gone {
            self.queue.remove(t);
        }
    }
}

impl Actor for LimiterActor {
    type Msg = LimiterMsg;
    type State = LimiterState;
    type Arguments = Limits;

    async fn pre_start(
        &self,
        _myself: ActorRef<LimiterMsg>,
        limits: Limits,
    ) -> Result<LimiterState, ActorProcessingErr> {
        Ok(LimiterState {
            limits,
            admission: Admission::new(limits),
            queue: FairQueue::default(),
            active: 0,
            next_ticket: 0,
            mean_hold: None,
            since_prune: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<LimiterMsg>,
        msg: LimiterMsg,
        st: &mut LimiterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LimiterMsg::Admit { user, chat, reply } => {
                let r = st.admit(&myself, user, chat);
                // A caller that went away drops its permit or place, which releases it.
                let _ = reply.send(r);
                st.since_prune += 1;
                if st.since_prune >= 256 {
                    st.since_prune = 0;
                    st.admission.prune(Instant::now());
                }
            }
            LimiterMsg::Released { held } => {
                st.active = st.active.saturating_sub(1);
                let h = held.as_secs_f64();
                st.mean_hold = Some(match st.mean_hold {
                    None => h,
                    Some(m) => 0.8 * m + 0.2 * h,
                });
                st.serve(&myself);
            }
            LimiterMsg::Withdraw { ticket } => {
                if st.queue.remove(ticket).is_some() {
                    st.serve(&myself);
                }
            }
            LimiterMsg::InFlight(reply) => {
                let _ = reply.send((st.active, st.queue.len()));
            }
        }
        Ok(())
    }
}
