//! Admission: who may ask now, and a fair queue for those who must wait.
//!
//! * [`Admission`] — a question is admitted when its user's token bucket (default 10 a minute)
//!   and its chat's bucket (default 30 a minute) both allow it; nothing is consumed unless both
//!   do. A refusal says which limit and when to retry, in words a user reads
//!   ([`Refusal::message`]).
//! * [`FairQueue`] — questions beyond the `max_active` generations running wait here, served
//!   round-robin by user (a user with three questions waiting gets one per round), so one busy
//!   user cannot starve the others. [`FairQueue::positions`] gives each waiter how many
//!   questions will be served before it ("queued, N ahead").
//! * The [`actor`] puts them together: a question gets a [`Permit`] at once, or a place in the
//!   queue with position updates until its permit arrives, or — past `max_queued` waiting, or a
//!   wait estimated over `max_wait_seconds` — a polite "busy".
//!
//! WeCom's outbound quotas are kept by the senders themselves (`wecom_edge_wecom::quota`).
//! Time is passed in (`now`), so the logic is deterministic under test; maps are bounded by
//! forgetting idle keys ([`Admission::prune`]).
#![warn(missing_docs)]

pub mod actor;
pub use actor::{Admitted, LimiterActor, LimiterMsg, Permit, QueueUpdate, Queued, LIMITER_ACTOR};

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A token bucket: `capacity` tokens, refilled continuously at `capacity` per `per`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64, // tokens per second
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens per `per`.
    pub fn new(capacity: u32, per: Duration, now: Instant) -> Self {
        TokenBucket {
            capacity: f64::from(capacity),
            rate: f64::from(capacity) / per.as_secs_f64(),
            tokens: f64::from(capacity),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        self.last = now;
    }

    /// Time until one token is available (zero when one is).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

/// Why a question was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This user asked too often.
    User {
        /// When a question would be admitted.
        retry_after: Duration,
    },
    /// This chat asked too often.
    Chat {
        /// When a question would be admitted.
        retry_after: Duration,
    },
    /// The queue is full (`waiting` questions), or this one would wait longer than the bound.
    Busy {
        /// Questions waiting now.
        waiting: usize,
        /// The estimated wait for this one, when known.
        estimate: Option<Duration>,
    },
}

impl Refusal {
    /// The polite reply a user sees (Chinese, then English).
    pub fn message(&self) -> String {
        match self {
            Refusal::User { retry_after } => {
                let s = retry_after.as_secs().max(1);
                format!("提问有点快，请 {s} 秒后再试。\n(You are asking faster than I can answer — please try again in {s} s.)")
            }
            Refusal::Chat { retry_after } => {
                let s = retry_after.as_secs().max(1);
                format!("这个群里的提问有点多，请 {s} 秒后再试。\n(This chat is asking a lot right now — please try again in {s} s.)")
            }
            Refusal::Busy { waiting, .. } => {
                format!("我正忙着回答其他问题（{waiting} 个在排队），请过几分钟再试。\n(I am busy: {waiting} questions are waiting — please try again in a few minutes.)")
            }
        }
    }

    /// A short name for audit rows and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::User { .. } => "user_rate",
            Refusal::Chat { .. } => "chat_rate",
            Refusal::Busy { .. } => "queue_full",
        }
    }
}

/// Admission limits (the `[limits]` table of edge.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Questions per user per minute.
    pub per_user_per_minute: u32,
    /// Questions per chat per minute.
    pub per_chat_per_minute: u32,
    /// Generations handed to the model at once, box-wide (its batch: 8 slots).
    pub max_active: u32,
    /// Questions waiting for a generation slot, box-wide; more are refused politely.
    pub max_queued: u32,
    /// A question whose estimated wait (from the measured time per answer) is longer than this
    /// is refused rather than queued; kept well inside WeCom's 6-minute stream window.
    pub max_wait_seconds: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_user_per_minute: 10,
            per_chat_per_minute: 30,
            max_active: 8,
            max_queued: 256,
            max_wait_seconds: 240,
        }
    }
}

/// The rate part of admission. Keys are whatever identifies a user and a chat (e.g.
/// `(bot, userid)` and `(bot, chatid)`).
#[derive(Debug)]
pub struct Admission<U, C> {
    limits: Limits,
    users: HashMap<U, TokenBucket>,
    chats: HashMap<C, TokenBucket>,
}

impl<U: Hash + Eq + Clone, C: Hash + Eq + Clone> Admission<U, C> {
    /// An admission controller with `limits`.
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            users: HashMap::new(),
            chats: HashMap::new(),
        }
    }

    /// Takes one question from `user` in `chat` (`None` for a single chat) from their buckets,
    /// or says why not. Nothing is consumed on a refusal.
    ///
    /// # Errors
    /// The first limit that refuses, checked in the order user, chat.
    pub fn admit(&mut self, user: &U, chat: Option<&C>, now: Instant) -> Result<(), Refusal> {
        let minute = Duration::from_secs(60);
        let (per_user, per_chat) = (
            self.limits.per_user_per_minute,
            self.limits.per_chat_per_minute,
        );
        let ub = self
            .users
            .entry(user.clone())
            .or_insert_with(|| TokenBucket::new(per_user, minute, now));
        let wait = ub.wait(now);
        if !wait.is_zero() {
            return Err(Refusal::User { retry_after: wait });
        }
        if let Some(chat) = chat {
            let cb = self
                .chats
                .entry(chat.clone())
                .or_insert_with(|| TokenBucket::new(per_chat, minute, now));
            let wait = cb.wait(now);
            if !wait.is_zero() {
                return Err(Refusal::Chat { retry_after: wait });
            }
            cb.take();
        }
        self.users.get_mut(user).expect("inserted above").take();
        Ok(())
    }

    /// Forgets buckets that are full again (equivalent to never having been used); returns how
    /// many keys are still tracked.
    pub fn prune(&mut self, now: Instant) -> usize {
        self.users.retain(|_, b| !b.is_full(now));
        self.chats.retain(|_, b| !b.is_full(now));
        self.users.len() + self.chats.len()
    }
}

/// Waiting items served round-robin by user: each round serves the oldest waiting item of
/// every user with one, in the order the users first joined the rotation.
#[derive(Debug)]
pub struct FairQueue<U, T> {
    queues: HashMap<U, VecDeque<(u64, T)>>,
    /// Users with waiting items; the front one is served next.
    rotation: VecDeque<U>,
    len: usize,
}

impl<U, T> Default for FairQueue<U, T> {
    fn default() -> Self {
        FairQueue {
            queues: HashMap::new(),
            rotation: VecDeque::new(),
            len: 0,
        }
    }
}

impl<U: Hash + Eq + Clone, T> FairQueue<U, T> {
    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `item` for `user` under `ticket` (unique; the caller's).
    pub fn push(&mut self, user: U, ticket: u64, item: T) {
        let q = self.queues.entry(user.clone()).or_default();
        if q.is_empty() {
            self.rotation.push_back(user);
        }
        q.push_back((ticket, item));
        self.len += 1;
    }

    /// The next item to serve, with its ticket.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let user = self.rotation.pop_front()?;
        let q = self
            .queues
            .get_mut(&user)
            .expect("rotation users have queues");
        let item = q.pop_front().expect("rotation users have items");
        if q.is_empty() {
            self.queues.remove(&user);
        } else {
            self.rotation.push_back(user);
        }
        self.len -= 1;
        Some(item)
    }

    /// Takes out the item under `ticket` (a waiter that gave up).
    pub fn remove(&mut self, ticket: u64) -> Option<T> {
        let (user, i) = self.queues.iter().find_map(|(u, q)| {
            q.iter()
                .position(|(t, _)| *t == ticket)
                .map(|i| (u.clone(), i))
        })?;
        let q = self.queues.get_mut(&user).expect("found above");
        let (_, item) = q.remove(i).expect("found above");
        if q.is_empty() {
            self.queues.remove(&user);
            self.rotation.retain(|u| *u != user);
        }
        self.len -= 1;
        Some(item)
    }

    /// Every waiting ticket with the number of items that will be served before it, in
    /// serving order.
    pub fn positions(&self) -> Vec<(u64, usize)> {
        let mut out = Vec::with_capacity(self.len);
        let mut round = 0;
        while out.len() < self.len {
            for u in &self.rotation {
                if let Some((t, _)) = self.queues[u].get(round) {
                    out.push((*t, out.len()));
                }
            }
            round += 1;
        }
        out
    }

    /// The items, in no particular order (to tell each its position).
    pub fn items_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        self.queues
            .values_mut()
            .flat_map(|q| q.iter_mut().map(|(t, i)| (*t, i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn user_bucket_refills_continuously() {
        let now = t0();
        let mut a: Admission<&str, &str> = Admission::new(Limits {
            per_user_per_minute: 2,
            ..Default::default()
        });
        a.admit(&"u1", None, now).unwrap();
        a.admit(&"u1", None, now).unwrap();
        match a.admit(&"u1", None, now) {
            Err(Refusal::User { retry_after }) => assert_eq!(retry_after.as_secs(), 30),
            other => panic!("{other:?}"),
        }
        // Another user is not affected; 30 s later u1 has one token again.
        assert!(a.admit(&"u2", None, now).is_ok());
        assert!(a.admit(&"u1", None, now + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn chat_bound_consumes_nothing_on_refusal() {
        let now = t0();
        let mut a: Admission<&str, &str> = Admission::new(Limits {
            per_user_per_minute: 10,
            per_chat_per_minute: 3,
            ..Default::default()
        });
        for u in ["a", "b", "c"] {
            a.admit(&u, Some(&"g1"), now).unwrap();
        }
        let r = a.admit(&"d", Some(&"g1"), now).unwrap_err();
        assert_eq!(r.kind(), "chat_rate");
        assert!(r.message().contains("try again in 20 s"), "{}", r.message());
        // The refusal consumed nothing from d's own bucket: d can ask elsewhere.
        a.admit(&"d", Some(&"g2"), now).unwrap();
    }

    #[test]
    fn the_queue_serves_users_round_robin_and_knows_positions() {
        let mut q: FairQueue<&str, char> = FairQueue::default();
        // a asks three times, then b and c once each.
        for (t, (u, c)) in [("a", 'x'), ("a", 'y'), ("a", 'z'), ("b", 'p'), ("c", 'q')]
            .into_iter()
            .enumerate()
        {
            q.push(u, t as u64, c);
        }
        assert_eq!(q.positions(), vec![(0, 0), (3, 1), (4, 2), (1, 3), (2, 4)]);
        // b gives up; d arrives.
        assert_eq!(q.remove(3), Some('p'));
        q.push("d", 5, 'r');
        let served: Vec<char> = std::iter::from_fn(|| q.pop().map(|(_, c)| c)).collect();
        assert_eq!(served, vec!['x', 'q', 'r', 'y', 'z']);
        assert!(q.is_empty());
        assert!(q.positions().is_empty());
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let now = t0();
        let mut a: Admission<String, String> = Admission::new(Limits::default());
        for i in 0..100 {
            a.admit(&format!("u{i}"), Some(&format!("g{i}")), now)
                .unwrap();
        }
        assert_eq!(a.prune(now), 200);
        assert_eq!(a.prune(now + Duration::from_secs(60)), 0);
    }
}
