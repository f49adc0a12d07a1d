//! The limiter actor's fair queue (issue 11 item 11): beyond `max_active` a question waits and
//! hears its position, slots go round-robin by user, a withdrawn waiter frees its place, and
//! only past `max_queued` (or a wait estimated over `max_wait_seconds`) is it refused.

use std::time::Duration;

use ractor::{Actor, ActorRef};
use wecom_edge_limiter::{
    Admitted, LimiterActor, LimiterMsg, Limits, QueueUpdate, Queued, Refusal,
};

async fn admit(l: &ActorRef<LimiterMsg>, user: &str) -> Result<Admitted, Refusal> {
    ractor::call!(l, |reply| LimiterMsg::Admit {
        user: user.into(),
        chat: None,
        reply
    })
    .unwrap()
}

async fn queued(l: &ActorRef<LimiterMsg>, user: &str) -> Queued {
    match admit(l, user).await {
        Ok(Admitted::Queued(q)) => q,
        other => panic!("expected a place in the queue, got {other:?}"),
    }
}

async fn next(q: &mut Queued) -> QueueUpdate {
    tokio::time::timeout(Duration::from_secs(10), q.next())
        .await
        .expect("an update")
        .expect("the limiter is alive")
}

/// Reads position updates until `ahead` is announced (later arrivals of other users move a
/// waiter back, served ones move it up: each change is told).
async fn until_ahead(q: &mut Queued, ahead: usize) {
    loop {
        match next(q).await {
            QueueUpdate::Ahead(n) if n == ahead => return,
            QueueUpdate::Ahead(_) => {}
            QueueUpdate::Granted(_) => panic!("granted while waiting for position {ahead}"),
        }
    }
}

async fn until_granted(q: &mut Queued) -> wecom_edge_limiter::Permit {
    loop {
        if let QueueUpdate::Granted(p) = next(q).await {
            return p;
        }
    }
}

#[tokio::test]
async fn waiters_hear_their_position_and_are_served_round_robin() {
    let limits = Limits {
        max_active: 2,
        max_queued: 4,
        ..Default::default()
    };
    let (l, h) = Actor::spawn(None, LimiterActor, limits).await.unwrap();
    let Ok(Admitted::Now(p1)) = admit(&l, "a").await else {
        panic!()
    };
    let Ok(Admitted::Now(p2)) = admit(&l, "a").await else {
        panic!()
    };
    // a asks twice more, then b and c: b and c are not behind both of a's.
    let mut a3 = queued(&l, "a").await;
    let mut a4 = queued(&l, "a").await;
    let mut b = queued(&l, "b").await;
    let c = queued(&l, "c").await;
    // At queueing time a4 was second; b and c, each a first question, went ahead of it.
    assert_eq!((a3.ahead, a4.ahead, b.ahead, c.ahead), (0, 1, 1, 2));
    until_ahead(&mut a4, 3).await;
    // The queue is full.
    match admit(&l, "d").await {
        Err(Refusal::Busy { waiting: 4, .. }) => {}
        other => panic!("expected busy, got {other:?}"),
    }
    // c gives up: a4 moves up.
    drop(c);
    until_ahead(&mut a4, 2).await;
    // A slot frees: a3 gets it, b is next.
    drop(p1);
    let p3 = until_granted(&mut a3).await;
    until_ahead(&mut b, 0).await;
    until_ahead(&mut a4, 1).await;
    drop(p2);
    let _pb = until_granted(&mut b).await;
    until_ahead(&mut a4, 0).await;
    let (active, waiting) = ractor::call!(l, LimiterMsg::InFlight).unwrap();
    assert_eq!((active, waiting), (2, 1));
    drop(p3);
    until_granted(&mut a4).await;
    l.stop(None);
    h.await.unwrap();
}

#[tokio::test]
async fn a_wait_longer_than_the_bound_is_refused_not_queued() {
    let limits = Limits {
        max_active: 1,
        max_wait_seconds: 0,
        ..Default::default()
    };
    let (l, h) = Actor::spawn(None, LimiterActor, limits).await.unwrap();
    // No answer time measured yet: queued.
    let Ok(Admitted::Now(p)) = admit(&l, "a").await else {
        panic!()
    };
    let mut q = queued(&l, "b").await;
    drop(p);
    let QueueUpdate::Granted(p) = next(&mut q).await else {
        panic!()
    };
    // Now a permit was held for a measured time: any wait exceeds 0 s.
    match admit(&l, "c").await {
        Err(Refusal::Busy {
            estimate: Some(_), ..
        }) => {}
        other => panic!("expected busy with an estimate, got {other:?}"),
    }
    drop(p);
    l.stop(None);
    h.await.unwrap();
}
