//! The rate-limiter actor: one [`Admission`] for the whole box, behind a mailbox so every
//! session sees the same buckets. Registered under [`LIMITER_ACTOR`].

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::{Admission, Limits, Permit, Refusal};

/// The limiter's registered name.
pub const LIMITER_ACTOR: &str = "limiter";

/// Messages to the limiter.
#[derive(Debug)]
pub enum LimiterMsg {
    /// Admit one question from `user` in `chat` (`None`: a single chat). The permit holds a
    /// queue slot until dropped.
    Admit {
        /// User key (e.g. `aibot/{bot}/{userid}`).
        user: String,
        /// Chat key.
        chat: Option<String>,
        /// The permit, or why not.
        reply: RpcReplyPort<Result<Permit, Refusal>>,
    },
    /// Generations queued or running.
    InFlight(RpcReplyPort<u32>),
}

/// The actor.
#[derive(Debug, Default)]
pub struct LimiterActor;

/// Its state: the admission controller and a counter for periodic pruning.
#[derive(Debug)]
pub struct LimiterState {
    admission: Admission<String, String>,
    since_prune: u32,
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
            admission: Admission::new(limits),
            since_prune: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<LimiterMsg>,
        msg: LimiterMsg,
        st: &mut LimiterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LimiterMsg::Admit { user, chat, reply } => {
                let now = Instant::now();
                let r = st.admission.admit(&user, chat.as_ref(), now);
                let _ = reply.send(r);
                st.since_prune += 1;
                if st.since_prune >= 256 {
                    st.since_prune = 0;
                    st.admission.prune(now);
                }
            }
            LimiterMsg::InFlight(reply) => {
                let _ = reply.send(st.admission.in_flight());
            }
        }
        Ok(())
    }
}
