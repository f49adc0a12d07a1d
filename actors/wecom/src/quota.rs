//! WeCom's outbound quotas, kept by the sender: every new message waits, in order, until it
//! fits all of its key's sliding windows, so WeCom never has to refuse it (45009) or drop it
//! silently.
//!
//! | sender | key | quota | source |
//! |---|---|---|---|
//! | AI bot (long connection) | conversation (chatid or userid) | 30/min and 1000/h, replies and proactive messages combined | /document/path/101463 |
//! | self-built app | member (touser) or app chat | 30/min and 1000/h per member; excess silently dropped | /document/path/90236, /90454 |
//! | group robot | the robot (webhook key) | 20/min | /document/path/91770 |
//!
//! What counts as one message: a proactive message, a continuation part, and one *stream*
//! (its first frame; the updates and the final frame of the same `stream.id` edit that one
//! message and do not count again).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// One sliding window: at most `max` messages in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Messages allowed per window (≥ 1).
    pub max: usize,
    /// The window's length.
    pub window: Duration,
}

impl Window {
    /// `max` per `window`.
    pub const fn new(max: usize, window: Duration) -> Self {
        Window { max, window }
    }
}

/// AI-bot messages per conversation: 30 a minute and 1000 an hour (/document/path/101463).
pub const AIBOT_CONVERSATION: [Window; 2] = [
    Window::new(30, Duration::from_secs(60)),
    Window::new(1000, Duration::from_secs(3600)),
];

/// App messages per member: 30 a minute and 1000 an hour (/document/path/90236).
pub const APP_MEMBER: [Window; 2] = AIBOT_CONVERSATION;

/// The window the sender keeps for a quota window of `w`: 5 % longer. The sender records a
/// message when it leaves, WeCom counts it when it arrives; with unequal transit times two
/// messages can arrive closer together than they left, so a window kept exactly would let
/// the server see one message too many now and then (45009).
pub fn kept_window(w: Duration) -> Duration {
    w + w / 20
}

/// The send times of one key within its longest window.
#[derive(Debug, Default)]
struct Log(VecDeque<Instant>);

impl Log {
    /// How long a message sent at `now` must wait to fit every window (zero: now).
    fn wait(&mut self, windows: &[Window], now: Instant) -> Duration {
        let longest = windows
            .iter()
            .map(|w| kept_window(w.window))
            .max()
            .unwrap_or_default();
        while self
            .0
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= longest)
        {
            self.0.pop_front();
        }
        let mut wait = Duration::ZERO;
        for w in windows {
            let max = w.max.max(1);
            let window = kept_window(w.window);
            // Sends within this window, newest last; the one `max` from the end must leave it.
            let inside = self
                .0
                .iter()
                .rev()
                .take_while(|t| now.saturating_duration_since(**t) < window)
                .count();
            if inside >= max {
                let oldest_that_counts = self.0[self.0.len() - max];
                wait = wait.max(window - now.saturating_duration_since(oldest_that_counts));
            }
        }
        wait
    }
}

/// Paces messages per key: [`Pacer::acquire`] returns when one more message for the key fits
/// its windows, recording it. Callers for one key are served in the order they called (a
/// FIFO lock per key); keys are independent. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Pacer {
    windows: Arc<[Window]>,
    keys: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<Log>>>>>,
}

impl Pacer {
    /// A pacer keeping `windows` for every key.
    pub fn new(windows: &[Window]) -> Self {
        Pacer {
            windows: windows.into(),
            keys: Arc::default(),
        }
    }

    /// The windows kept.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// Waits until one more message for `key` fits, records it and returns how long it waited.
    pub async fn acquire(&self, key: &str) -> Duration {
        let log = {
            let mut keys = self.keys.lock().expect("pacer map");
            if keys.len() >= 1024 {
                self.forget_idle(&mut keys);
            }
            keys.entry(key.to_string()).or_default().clone()
        };
        let start = Instant::now();
        let mut log = log.lock().await;
        loop {
            let now = Instant::now();
            let wait = log.wait(&self.windows, now);
            if wait.is_zero() {
                log.0.push_back(now);
                let waited = now - start;
                if waited >= Duration::from_millis(100) {
                    tracing::debug!(
                        waited_ms = waited.as_millis() as u64,
                        "outbound message paced to WeCom's quota"
                    );
                }
                return waited;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Keys tracked now (tests; idle ones are forgotten as the map grows).
    pub fn keys(&self) -> usize {
        self.keys.lock().expect("pacer map").len()
    }

    fn forget_idle(&self, keys: &mut HashMap<String, Arc<tokio::sync::Mutex<Log>>>) {
        let longest = self
            .windows
            .iter()
            .map(|w| kept_window(w.window))
            .max()
            .unwrap_or_default();
        let now = Instant::now();
        keys.retain(|_, log| {
            // In use by a caller, or locked: keep.
            if Arc::strong_count(log) > 1 {
                return true;
            }
            match log.try_lock() {
                Ok(l) => {
                    l.0.back()
                        .is_some_and(|t| now.saturating_duration_since(*t) < longest)
                }
                Err(_) => true,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn thirty_a_minute_then_waits_for_the_oldest_to_leave() {
        let p = Pacer::new(&AIBOT_CONVERSATION);
        let t0 = Instant::now();
        for i in 0..30 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(p.acquire("g1").await, Duration::ZERO, "message {i}");
        }
        // The 31st (at t0+30 s) waits until the first (t0+1 s) is a minute old, plus the 5 %
        // kept for transit (3 s).
        let waited = p.acquire("g1").await;
        assert_eq!(waited, Duration::from_secs(34));
        assert_eq!(Instant::now() - t0, Duration::from_secs(64));
        // Another conversation is not affected.
        assert_eq!(p.acquire("g2").await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_hourly_window_binds_too() {
        let p = Pacer::new(&[
            Window::new(3, Duration::from_secs(1)),
            Window::new(5, Duration::from_secs(100)),
        ]);
        let t0 = Instant::now();
        for _ in 0..5 {
            p.acquire("k").await;
        }
        // 3 in the first second, 2 in the next (each window kept 5 % longer), then the 100-s
        // window is full.
        assert_eq!(Instant::now() - t0, Duration::from_millis(1050));
        p.acquire("k").await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(105));
    }

    #[tokio::test(start_paused = true)]
    async fn callers_of_one_key_are_served_in_order() {
        let p = Pacer::new(&[Window::new(1, Duration::from_secs(1))]);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (p, order) = (p.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                p.acquire("k").await;
                order.lock().unwrap().push(i);
            }));
            // Each caller arrives after the previous one queued.
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_forgotten_as_the_map_grows() {
        let p = Pacer::new(&[Window::new(1, Duration::from_secs(1))]);
        for i in 0..1024 {
            p.acquire(&format!("k{i}")).await;
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        p.acquire("new").await;
        assert_eq!(p.keys(), 1);
    }
}
