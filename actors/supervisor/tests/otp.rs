//! OTP semantics, tested the way ractor tests itself: polled conditions, no fixed sleeps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, SupervisionEvent};
use tokio::sync::mpsc;
use wecom_edge_supervisor::{
    ChildSpec, Restart, Strategy, Supervisor, SupervisorEvent, SupervisorMsg, SupervisorSpec,
};

type Log = Arc<Mutex<Vec<String>>>;

/// A worker that logs its start and stop, and ends on command.
struct Worker;

enum Cmd {
    Panic,
    Fail,
    Exit,
}

impl Actor for Worker {
    type Msg = Cmd;
    type State = (String, Log);
    type Arguments = (String, Log);

    async fn pre_start(
        &self,
        _me: ActorRef<Cmd>,
        args: (String, Log),
    ) -> Result<Self::State, ActorProcessingErr> {
        args.1.lock().unwrap().push(format!("start {}", args.0));
        Ok(args)
    }

    async fn post_stop(
        &self,
        _me: ActorRef<Cmd>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.1.lock().unwrap().push(format!("stop {}", st.0));
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<Cmd>,
        msg: Cmd,
        _st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Cmd::Panic => panic!("worker panicked on purpose"),
            Cmd::Fail => Err("worker failed on purpose".into()),
            Cmd::Exit => {
                me.stop(Some("done".into()));
                Ok(())
            }
        }
    }
}

fn worker(id: &str, log: &Log) -> ChildSpec {
    let (name, log) = (id.to_string(), log.clone());
    ChildSpec::new(id, move |sup: ActorCell| {
        let args = (name.clone(), log.clone());
        async move {
            let (r, _) = Actor::spawn_linked(None, Worker, args, sup).await?;
            Ok(r.get_cell())
        }
    })
}

/// Stands in for a supervisor's parent: records the supervision events it receives.
struct Parent;

impl Actor for Parent {
    type Msg = ();
    type State = mpsc::UnboundedSender<String>;
    type Arguments = mpsc::UnboundedSender<String>;

    async fn pre_start(
        &self,
        _me: ActorRef<()>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<()>,
        evt: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = tx.send(match evt {
            SupervisionEvent::ActorFailed(_, e) => format!("failed: {e}"),
            SupervisionEvent::ActorTerminated(..) => "terminated".into(),
            _ => return Ok(()),
        });
        Ok(())
    }
}

/// Polls `f` every 5 ms until it yields, failing after 10 s.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn children(sup: &ActorRef<SupervisorMsg>) -> Vec<(String, Option<ActorCell>)> {
    ractor::call!(sup, SupervisorMsg::WhichChildren).unwrap()
}

async fn child(sup: &ActorRef<SupervisorMsg>, id: &str) -> ActorRef<Cmd> {
    let c = children(sup)
        .await
        .into_iter()
        .find(|(i, _)| i == id)
        .and_then(|(_, c)| c);
    c.expect("child running").into()
}

async fn wait_restarted(
    events: &mut mpsc::UnboundedReceiver<SupervisorEvent>,
    who: &str,
) -> String {
    match tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap()
    {
        SupervisorEvent::Restarted { child, reason, .. } => {
            assert_eq!(child, who);
            reason
        }
        other => panic!("expected a restart of {who}, got {other:?}"),
    }
}

/// Waits (bounded) until `cond` holds, yielding between checks.
async fn poll(cond: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition within 10 s");
}

fn count(log: &Log, line: &str) -> usize {
    log.lock().unwrap().iter().filter(|l| *l == line).count()
}

#[tokio::test]
async fn start_in_order_stop_in_reverse() {
    let log = Log::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("a", &log))
        .child(worker("b", &log))
        .child(worker("c", &log));
    let (sup, h) = Actor::spawn(
        None,
        Supervisor {
            name: "root".into(),
        },
        spec,
    )
    .await
    .unwrap();
    assert_eq!(*log.lock().unwrap(), ["start a", "start b", "start c"]);
    sup.stop(None);
    h.await.unwrap();
    assert_eq!(log.lock().unwrap()[3..], ["stop c", "stop b", "stop a"]);
}

#[tokio::test]
async fn one_for_one_restarts_a_panicking_child_alone() {
    let log = Log::default();
    let (tx, mut events) = mpsc::unbounded_channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(3, Duration::from_secs(5))
        .events(tx)
        .child(worker("a", &log))
        .child(worker("b", &log));
    let (sup, _h) = Actor::spawn(None, Supervisor { name: "s".into() }, spec)
        .await
        .unwrap();
    let a = child(&sup, "a").await;
    let b = child(&sup, "b").await;
    a.send_message(Cmd::Panic).unwrap();
    let reason = wait_restarted(&mut events, "a").await;
    assert!(reason.contains("panicked on purpose"), "{reason}");
    let a2 = child(&sup, "a").await;
    assert_ne!(a2.get_id(), a.get_id());
    assert_eq!(child(&sup, "b").await.get_id(), b.get_id());
    assert_eq!(b.get_status(), ActorStatus::Running);
    assert_eq!(count(&log, "start a"), 2);
    assert_eq!(count(&log, "start b"), 1);
    sup.stop(None);
}

#[tokio::test]
async fn rest_for_one_restarts_the_later_siblings_in_order() {
    let log = Log::default();
    let (tx, mut events) = mpsc::unbounded_channel();
    let spec = SupervisorSpec::new(Strategy::RestForOne)
        .intensity(3, Duration::from_secs(5))
        .events(tx)
        .child(worker("a", &log))
        .child(worker("b", &log))
        .child(worker("c", &log));
    let (sup, _h) = Actor::spawn(None, Supervisor { name: "s".into() }, spec)
        .await
        .unwrap();
    let a = child(&sup, "a").await;
    child(&sup, "b").await.send_message(Cmd::Fail).unwrap();
    wait_restarted(&mut events, "b").await;
    assert_eq!(log.lock().unwrap()[3..], ["stop c", "start b", "start c"]);
    assert_eq!(child(&sup, "a").await.get_id(), a.get_id());
    sup.stop(None);
}

#[tokio::test]
async fn one_for_all_restarts_everyone() {
    let log = Log::default();
    let (tx, mut events) = mpsc::unbounded_channel();
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .intensity(3, Duration::from_secs(5))
        .events(tx)
        .child(worker("a", &log))
        .child(worker("b", &log));
    let (sup, _h) = Actor::spawn(None, Supervisor { name: "s".into() }, spec)
        .await
        .unwrap();
    child(&sup, "b").await.send_message(Cmd::Panic).unwrap();
    wait_restarted(&mut events, "b").await;
    assert_eq!(log.lock().unwrap()[2..], ["stop a", "start a", "start b"]);
    sup.stop(None);
}

#[tokio::test]
async fn restart_types_decide_who_comes_back() {
    let log = Log::default();
    let (tx, mut events) = mpsc::unbounded_channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(5))
        .events(tx)
        .child(worker("transient", &log).restart(Restart::Transient))
        .child(worker("temporary", &log).restart(Restart::Temporary))
        .child(worker("permanent", &log));
    let (sup, _h) = Actor::spawn(None, Supervisor { name: "s".into() }, spec)
        .await
        .unwrap();

    // A transient child's failure is restarted; its normal exit is not.
    child(&sup, "transient")
        .await
        .send_message(Cmd::Fail)
        .unwrap();
    wait_restarted(&mut events, "transient").await;
    child(&sup, "transient")
        .await
        .send_message(Cmd::Exit)
        .unwrap();
    until("transient down", || async {
        children(&sup)
            .await
            .iter()
            .any(|(id, cell)| id == "transient" && cell.is_none())
            .then_some(())
    })
    .await;
    // A permanent child's normal exit is restarted.
    child(&sup, "permanent")
        .await
        .send_message(Cmd::Exit)
        .unwrap();
    assert_eq!(wait_restarted(&mut events, "permanent").await, "done");
    // A temporary child is never restarted, and is forgotten.
    child(&sup, "temporary")
        .await
        .send_message(Cmd::Panic)
        .unwrap();
    until("temporary forgotten", || async {
        children(&sup)
            .await
            .iter()
            .all(|(id, _)| id != "temporary")
            .then_some(())
    })
    .await;
    let kids = children(&sup).await;
    let transient = kids.iter().find(|(id, _)| id == "transient").unwrap();
    assert!(
        transient.1.is_none(),
        "transient after a normal exit stays down"
    );
    assert_eq!(count(&log, "start transient"), 2);
    assert_eq!(count(&log, "start temporary"), 1);
    sup.stop(None);
}

#[tokio::test]
async fn restart_storm_escalates_to_the_parent() {
    let log = Log::default();
    let (tx, mut events) = mpsc::unbounded_channel();
    let (ptx, mut parent_events) = mpsc::unbounded_channel();
    let (parent, _ph) = Actor::spawn(None, Parent, ptx).await.unwrap();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(2, Duration::from_secs(60))
        .events(tx)
        .child(worker("a", &log))
        .child(worker("flaky", &log));
    let (sup, h) = Actor::spawn_linked(
        None,
        Supervisor {
            name: "storm".into(),
        },
        spec,
        parent.get_cell(),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        child(&sup, "flaky").await.send_message(Cmd::Panic).unwrap();
        wait_restarted(&mut events, "flaky").await;
    }
    child(&sup, "flaky").await.send_message(Cmd::Panic).unwrap();
    match tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap()
    {
        SupervisorEvent::Escalated { supervisor, child } => {
            assert_eq!((supervisor.as_str(), child.as_str()), ("storm", "flaky"))
        }
        other => panic!("expected escalation, got {other:?}"),
    }
    h.await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), parent_events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        got.starts_with("failed:") && got.contains("more than 2 restarts"),
        "{got}"
    );
    // All children were stopped, the survivor included, in reverse order.
    assert!(count(&log, "stop a") == 1);
    let l = log.lock().unwrap();
    assert_eq!(l.last().unwrap(), "stop a");
}

#[tokio::test]
async fn dynamic_children_start_and_terminate() {
    let log = Log::default();
    let (sup, _h) = Actor::spawn(
        None,
        Supervisor {
            name: "sessions".into(),
        },
        SupervisorSpec::new(Strategy::OneForOne),
    )
    .await
    .unwrap();
    let spec = worker("chat-1/user-1", &log).restart(Restart::Transient);
    let cell = ractor::call!(sup, SupervisorMsg::StartChild, spec.clone())
        .unwrap()
        .unwrap();
    assert_eq!(cell.get_status(), ActorStatus::Running);
    assert!(
        ractor::call!(sup, SupervisorMsg::StartChild, spec)
            .unwrap()
            .is_err(),
        "duplicate id refused"
    );
    assert!(ractor::call!(sup, SupervisorMsg::TerminateChild, "chat-1/user-1".into()).unwrap());
    assert_eq!(count(&log, "stop chat-1/user-1"), 1);
    assert!(children(&sup).await.is_empty());

    // A dynamic transient child: restarted after a failure, forgotten after a normal exit
    // (simple_one_for_one), so the same id can be started again.
    let spec = worker("chat-2/user-1", &log).restart(Restart::Transient);
    ractor::call!(sup, SupervisorMsg::StartChild, spec.clone())
        .unwrap()
        .unwrap();
    child(&sup, "chat-2/user-1")
        .await
        .send_message(Cmd::Fail)
        .unwrap();
    poll(|| count(&log, "start chat-2/user-1") == 2).await;
    let c = child(&sup, "chat-2/user-1").await;
    c.send_message(Cmd::Exit).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !children(&sup).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the ended child is forgotten");
    assert_eq!(
        count(&log, "start chat-2/user-1"),
        2,
        "a normal exit is not restarted"
    );
    ractor::call!(sup, SupervisorMsg::StartChild, spec)
        .unwrap()
        .expect("the id is free again");
    sup.stop(None);
}
