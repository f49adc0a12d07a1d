//! Erlang/OTP supervision on ractor.
//!
//! ractor links actors and delivers [`SupervisionEvent`]s but leaves the policy to the parent;
//! this crate is that policy, with OTP's semantics (erlang/otp `supervisor` manual and design
//! principles, "Supervisor Behaviour"):
//!
//! * **Strategies** — [`Strategy::OneForOne`] restarts the child that ended;
//!   [`Strategy::OneForAll`] stops all other children (in reverse start order) and restarts all;
//!   [`Strategy::RestForOne`] stops the children started after it (reverse order) and restarts
//!   it and them, in order.
//! * **Restart types** — [`Restart::Permanent`] is always restarted; [`Restart::Transient`] only
//!   when it ended abnormally (a ractor failure: an error or a panic in a handler);
//!   [`Restart::Temporary`] never (and is forgotten).
//! * **Intensity and period** — more than `intensity` restarts within `period` and the supervisor
//!   gives up: it stops all children in reverse start order and fails itself, so its own parent
//!   decides (escalation).
//! * **Order** — children start in spec order; they stop in reverse order, each within its
//!   [`Shutdown`] (a graceful stop, then a kill past the timeout).
//! * **Dynamic children** — [`SupervisorMsg::StartChild`] adds a child at the end (OTP's
//!   `start_child`; with an empty spec list this is `simple_one_for_one`).
//!
//! A panicking handler is a failure like any other: release builds keep `panic = "unwind"`, and
//! ractor turns the unwind into `ActorFailed`.
#![warn(missing_docs)]

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::sync::mpsc;

/// How the siblings of an ended child are treated (OTP restart strategy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Restart only the child that ended.
    OneForOne,
    /// Stop every other child, then restart them all.
    OneForAll,
    /// Stop the children started after the ended one, then restart it and them.
    RestForOne,
}

/// When a child is restarted (OTP restart type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal end (error or panic); a normal stop is final.
    Transient,
    /// Never; the child is removed from the supervisor when it ends.
    Temporary,
}

/// How a child is stopped (OTP shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// A graceful stop (`post_stop` runs), then a kill if it takes longer than this.
    Timeout(Duration),
    /// Killed at once.
    BrutalKill,
}

/// A boxed future that starts a child linked to the given supervisor cell.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// Starts one child linked to the supervisor (the argument): typically
/// `Actor::spawn_linked(None, handler, args, supervisor)` returning the child's cell.
pub type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;

/// A child specification: plain data, so the tree can be read from the specs.
#[derive(Clone)]
pub struct ChildSpec {
    /// The child's id within its supervisor.
    pub id: String,
    /// Restart type.
    pub restart: Restart,
    /// Shutdown.
    pub shutdown: Shutdown,
    /// How to start it.
    pub start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A permanent child with a 5 s shutdown, started by `start`.
    pub fn new<F, Fut>(id: &str, start: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        ChildSpec {
            id: id.to_string(),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            start: Arc::new(move |sup| Box::pin(start(sup))),
        }
    }

    /// Sets the restart type.
    pub fn restart(mut self, r: Restart) -> Self {
        self.restart = r;
        self
    }

    /// Sets the shutdown.
    pub fn shutdown(mut self, s: Shutdown) -> Self {
        self.shutdown = s;
        self
    }

    /// A child that is itself a [`Supervisor`] with `spec` (shutdown: 60 s, as OTP gives
    /// supervisors more time than workers).
    pub fn supervisor(id: &str, spec: SupervisorSpec) -> Self {
        let name = id.to_string();
        ChildSpec::new(id, move |sup| {
            let spec = spec.clone();
            let name = name.clone();
            async move {
                let (r, _) = Actor::spawn_linked(None, Supervisor { name }, spec, sup).await?;
                Ok(r.get_cell())
            }
        })
        .shutdown(Shutdown::Timeout(Duration::from_secs(60)))
    }
}

/// What a supervisor did, for the audit trail and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// A child ended and was restarted (with whatever siblings the strategy took along).
    Restarted {
        /// The supervisor's name.
        supervisor: String,
        /// The child that ended.
        child: String,
        /// Why it ended (the error or panic text; "normal" for a clean stop).
        reason: String,
    },
    /// Restart intensity was exceeded: the supervisor stopped its children and failed.
    Escalated {
        /// The supervisor's name.
        supervisor: String,
        /// The child whose end tipped it over.
        child: String,
    },
}

/// A supervisor's flags and initial children (OTP `sup_flags` + child specs).
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    /// Restart strategy.
    pub strategy: Strategy,
    /// Most restarts allowed within `period` (OTP default 1).
    pub intensity: u32,
    /// The intensity window (OTP default 5 s).
    pub period: Duration,
    /// Children, in start order.
    pub children: Vec<ChildSpec>,
    /// Where restarts and escalations are reported.
    pub events: Option<mpsc::UnboundedSender<SupervisorEvent>>,
}

impl SupervisorSpec {
    /// `strategy` with OTP's default intensity 1 in 5 s and no children yet.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            intensity: 1,
            period: Duration::from_secs(5),
            children: Vec::new(),
            events: None,
        }
    }

    /// Sets intensity and period.
    pub fn intensity(mut self, intensity: u32, period: Duration) -> Self {
        self.intensity = intensity;
        self.period = period;
        self
    }

    /// Appends a child.
    pub fn child(mut self, c: ChildSpec) -> Self {
        self.children.push(c);
        self
    }

    /// Reports restarts and escalations on `tx`.
    pub fn events(mut self, tx: mpsc::UnboundedSender<SupervisorEvent>) -> Self {
        self.events = Some(tx);
        self
    }
}

/// Requests to a running supervisor.
pub enum SupervisorMsg {
    /// Start a child at the end of the list (OTP `start_child`).
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, String>>),
    /// Stop a child and forget its spec (OTP `terminate_child` + `delete_child`); replies
    /// whether it existed.
    TerminateChild(String, RpcReplyPort<bool>),
    /// The children, in start order, with their live cell (OTP `which_children`).
    WhichChildren(RpcReplyPort<Vec<(String, Option<ActorCell>)>>),
}

/// The supervisor actor. `name` appears in its events and logs.
#[derive(Debug, Clone)]
pub struct Supervisor {
    /// The supervisor's name.
    pub name: String,
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    /// Added by [`SupervisorMsg::StartChild`]: forgotten once it ends for good, as OTP's
    /// `simple_one_for_one` deletes a child that is not restarted.
    dynamic: bool,
}

/// A supervisor's live state.
pub struct SupervisorState {
    spec: SupervisorSpec,
    children: Vec<Child>,
    restarts: VecDeque<Instant>,
}

async fn stop_child(cell: &ActorCell, shutdown: Shutdown) {
    match shutdown {
        Shutdown::BrutalKill => {
            let _ = cell.kill_and_wait(Some(Duration::from_secs(5))).await;
        }
        Shutdown::Timeout(t) => {
            if cell
                .stop_and_wait(Some("shutdown".into()), Some(t))
                .await
                .is_err()
            {
                tracing::warn!(actor = %cell.get_id(), "child did not stop within its shutdown timeout; killing it");
                let _ = cell.kill_and_wait(Some(Duration::from_secs(5))).await;
            }
        }
    }
}

impl SupervisorState {
    /// Stops children `from..` in reverse start order.
    async fn stop_from(&mut self, from: usize) {
        for c in self.children[from..].iter_mut().rev() {
            if let Some(cell) = c.cell.take() {
                stop_child(&cell, c.spec.shutdown).await;
            }
        }
    }

    /// Starts children `from..` that are not running, in order.
    async fn start_from(&mut self, from: usize, myself: &ActorCell) -> Result<(), String> {
        for c in self.children[from..].iter_mut() {
            if c.cell.is_none() {
                let cell = (c.spec.start)(myself.clone())
                    .await
                    .map_err(|e| format!("child {} failed to start: {e}", c.spec.id))?;
                c.cell = Some(cell);
            }
        }
        Ok(())
    }

    /// Records a restart; false when intensity is exceeded.
    fn note_restart(&mut self) -> bool {
        let now = Instant::now();
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.spec.period)
        {
            self.restarts.pop_front();
        }
        self.restarts.len() <= self.spec.intensity as usize
    }

    fn report(&self, ev: SupervisorEvent) {
        if let Some(tx) = &self.spec.events {
            let _ = tx.send(ev);
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        spec: SupervisorSpec,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            children: spec
                .children
                .iter()
                .map(|s| Child {
                    spec: s.clone(),
                    cell: None,
                    dynamic: false,
                })
                .collect(),
            spec,
            restarts: VecDeque::new(),
        };
        if let Err(e) = state.start_from(0, &myself.get_cell()).await {
            // A child that cannot start fails the supervisor's start; undo what started.
            state.stop_from(0).await;
            return Err(format!("supervisor {}: {e}", self.name).into());
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_from(0).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartChild(spec, reply) => {
                if state.children.iter().any(|c| c.spec.id == spec.id) {
                    let _ = reply.send(Err(format!("child {} already exists", spec.id)));
                    return Ok(());
                }
                let res = (spec.start)(myself.get_cell())
                    .await
                    .map_err(|e| e.to_string());
                if let Ok(cell) = &res {
                    state.children.push(Child {
                        spec,
                        cell: Some(cell.clone()),
                        dynamic: true,
                    });
                }
                let _ = reply.send(res);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let found = match state.children.iter().position(|c| c.spec.id == id) {
                    Some(i) => {
                        let c = state.children.remove(i);
                        if let Some(cell) = c.cell {
                            stop_child(&cell, c.spec.shutdown).await;
                        }
                        true
                    }
                    None => false,
                };
                let _ = reply.send(found);
            }
            SupervisorMsg::WhichChildren(reply) => {
                let list = state
                    .children
                    .iter()
                    .map(|c| (c.spec.id.clone(), c.cell.clone()))
                    .collect();
                let _ = reply.send(list);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, abnormal, reason) = match evt {
            SupervisionEvent::ActorTerminated(c, _, r) => {
                (c, false, r.unwrap_or_else(|| "normal".into()))
            }
            SupervisionEvent::ActorFailed(c, e) => (c, true, e.to_string()),
            _ => return Ok(()),
        };
        let id = cell.get_id();
        // Events from children this supervisor already stopped or replaced are stale.
        let Some(idx) = state
            .children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|x| x.get_id() == id))
        else {
            return Ok(());
        };
        state.children[idx].cell = None;
        let child = state.children[idx].spec.id.clone();
        let restart = match state.children[idx].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        if !restart {
            tracing::info!(supervisor = %self.name, %child, %reason, "child ended; not restarted");
            if state.children[idx].spec.restart == Restart::Temporary || state.children[idx].dynamic
            {
                state.children.remove(idx);
            }
            return Ok(());
        }
        if !state.note_restart() {
            tracing::error!(
                supervisor = %self.name, %child, %reason,
                intensity = state.spec.intensity, period_s = state.spec.period.as_secs_f64(),
                "restart intensity exceeded; stopping all children and escalating"
            );
            state.stop_from(0).await;
            state.report(SupervisorEvent::Escalated {
                supervisor: self.name.clone(),
                child: child.clone(),
            });
            return Err(format!(
                "supervisor {}: more than {} restarts in {:?} (last: {child}: {reason})",
                self.name, state.spec.intensity, state.spec.period
            )
            .into());
        }
        tracing::warn!(supervisor = %self.name, %child, %reason, "child ended; restarting");
        let from = match state.spec.strategy {
            Strategy::OneForOne => idx,
            Strategy::OneForAll => {
                state.stop_from(0).await;
                0
            }
            Strategy::RestForOne => {
                state.stop_from(idx + 1).await;
                idx
            }
        };
        let started = match state.spec.strategy {
            Strategy::OneForOne => {
                let c = &mut state.children[idx];
                match (c.spec.start)(myself.get_cell()).await {
                    Ok(cell) => {
                        c.cell = Some(cell);
                        Ok(())
                    }
                    Err(e) => Err(format!("child {child} failed to restart: {e}")),
                }
            }
            _ => state.start_from(from, &myself.get_cell()).await,
        };
        if let Err(e) = started {
            state.stop_from(0).await;
            state.report(SupervisorEvent::Escalated {
                supervisor: self.name.clone(),
                child: child.clone(),
            });
            return Err(format!("supervisor {}: {e}", self.name).into());
        }
        state.report(SupervisorEvent::Restarted {
            supervisor: self.name.clone(),
            child,
            reason,
        });
        Ok(())
    }
}
