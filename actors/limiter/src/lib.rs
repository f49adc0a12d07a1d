//! Admission and outbound pacing.
//!
//! * [`Admission`] — a question is admitted when its user's token bucket (default 10 a minute),
//!   its chat's bucket (default 30 a minute) and the box-wide bound on queued or running
//!   generations (default 32) all allow it. Nothing is consumed unless all three do. A refusal
//!   says which limit and when to retry, in words a user reads ([`Refusal::message`]).
//! * [`SlidingWindow`] — WeCom's outbound quotas (30 messages a minute per AI-bot conversation,
//!   20 a minute per group robot; /document/path/101463, /91770): how long the next send must
//!   wait so the window is never exceeded.
//!
//! Time is passed in (`now`), so the logic is deterministic under test; maps are bounded by
//! forgetting idle keys ([`Admission::prune`]).
#![warn(missing_docs)]

pub mod actor;
pub use actor::{LimiterActor, LimiterMsg, LIMITER_ACTOR};

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
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
    /// The box has `max_queued` generations queued or running.
    Busy {
        /// The bound.
        max_queued: u32,
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
            Refusal::Busy { .. } => {
                "我正忙着回答其他问题，请稍后再试。\n(I am busy answering other questions — please try again in a minute.)".to_string()
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

/// A slot among the queued or running generations; freed on drop.
#[derive(Debug)]
pub struct Permit {
    in_flight: Arc<AtomicU32>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
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
    /// Generations queued or running, box-wide.
    pub max_queued: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_user_per_minute: 10,
            per_chat_per_minute: 30,
            max_queued: 32,
        }
    }
}

/// The admission controller. Keys are whatever identifies a user and a chat (e.g.
/// `(bot, userid)` and `(bot, chatid)`).
#[derive(Debug)]
pub struct Admission<U, C> {
    limits: Limits,
    users: HashMap<U, TokenBucket>,
    chats: HashMap<C, TokenBucket>,
    in_flight: Arc<AtomicU32>,
}

impl<U: Hash + Eq + Clone, C: Hash + Eq + Clone> Admission<U, C> {
    /// An admission controller with `limits`.
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            users: HashMap::new(),
            chats: HashMap::new(),
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Admits one question from `user` in `chat` (`None` for a single chat), or says why not.
    /// Nothing is consumed on a refusal.
    ///
    /// # Errors
    /// The first limit that refuses, checked in the order queue, user, chat.
    pub fn admit(&mut self, user: &U, chat: Option<&C>, now: Instant) -> Result<Permit, Refusal> {
        if self.in_flight.load(Ordering::SeqCst) >= self.limits.max_queued {
            return Err(Refusal::Busy {
                max_queued: self.limits.max_queued,
            });
        }
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
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(Permit {
            in_flight: self.in_flight.clone(),
        })
    }

    /// Generations queued or running now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Forgets buckets that are full again (equivalent to never having been used); returns how
    /// many keys are still tracked.
    pub fn prune(&mut self, now: Instant) -> usize {
        self.users.retain(|_, b| !b.is_full(now));
        self.chats.retain(|_, b| !b.is_full(now));
        self.users.len() + self.chats.len()
    }
}

/// At most `max` events per `window` (a sliding log): WeCom's outbound quotas.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    max: usize,
    window: Duration,
    sent: VecDeque<Instant>,
}

impl SlidingWindow {
    /// `max` events per `window`.
    pub fn new(max: usize, window: Duration) -> Self {
        SlidingWindow {
            max: max.max(1),
            window,
            sent: VecDeque::new(),
        }
    }

    /// How long the next event must wait (zero: now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.max {
            Duration::ZERO
        } else {
            self.window - now.saturating_duration_since(self.sent[0])
        }
    }

    /// Records an event at `now` (call when [`SlidingWindow::wait`] said zero).
    pub fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
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
        let p1 = a.admit(&"u1", None, now).unwrap();
        let p2 = a.admit(&"u1", None, now).unwrap();
        match a.admit(&"u1", None, now) {
            Err(Refusal::User { retry_after }) => assert_eq!(retry_after.as_secs(), 30),
            other => panic!("{other:?}"),
        }
        // Another user is not affected; 30 s later u1 has one token again.
        assert!(a.admit(&"u2", None, now).is_ok());
        assert!(a.admit(&"u1", None, now + Duration::from_secs(30)).is_ok());
        drop((p1, p2));
    }

    #[test]
    fn chat_bound_and_queue_bound() {
        let now = t0();
        let mut a: Admission<&str, &str> = Admission::new(Limits {
            per_user_per_minute: 10,
            per_chat_per_minute: 3,
            max_queued: 4,
        });
        let mut permits = Vec::new();
        for u in ["a", "b", "c"] {
            permits.push(a.admit(&u, Some(&"g1"), now).unwrap());
        }
        let r = a.admit(&"d", Some(&"g1"), now).unwrap_err();
        assert_eq!(r.kind(), "chat_rate");
        assert!(r.message().contains("try again in 20 s"), "{}", r.message());
        // The refusal consumed nothing from d's own bucket: d can ask elsewhere.
        permits.push(a.admit(&"d", Some(&"g2"), now).unwrap());
        assert_eq!(a.in_flight(), 4);
        assert_eq!(
            a.admit(&"e", None, now).unwrap_err(),
            Refusal::Busy { max_queued: 4 }
        );
        permits.pop();
        assert_eq!(a.in_flight(), 3);
        assert!(a.admit(&"e", None, now).is_ok());
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let now = t0();
        let mut a: Admission<String, String> = Admission::new(Limits::default());
        for i in 0..100 {
            drop(
                a.admit(&format!("u{i}"), Some(&format!("g{i}")), now)
                    .unwrap(),
            );
        }
        assert_eq!(a.prune(now), 200);
        assert_eq!(a.prune(now + Duration::from_secs(60)), 0);
    }

    #[test]
    fn sliding_window_paces_sends() {
        let now = t0();
        let mut w = SlidingWindow::new(30, Duration::from_secs(60));
        for i in 0..30 {
            let t = now + Duration::from_secs(i);
            assert_eq!(w.wait(t), Duration::ZERO);
            w.record(t);
        }
        // The 31st waits until the first leaves the window.
        assert_eq!(
            w.wait(now + Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(w.wait(now + Duration::from_secs(60)), Duration::ZERO);
    }
}
