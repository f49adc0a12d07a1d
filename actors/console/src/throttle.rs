//! Login throttling for the console: guessing the password from the LAN takes years, not
//! minutes.
//!
//! * Per address: [`PER_SOURCE`] (5) wrong passwords within [`WINDOW`] (1 minute) lock that
//!   address for [`SOURCE_LOCK`] (15 minutes). The attempt after the fifth wrong one — the
//!   sixth — is refused without looking at the password, right or wrong.
//! * Everywhere: [`GLOBAL`] (50) wrong passwords within a minute, from any addresses, lock
//!   every login for [`GLOBAL_LOCK`] (1 minute), so a guess spread over many addresses gains
//!   nothing.
//! * A right password clears its address's count.
//!
//! Time is passed in (`now`), so the rules are tested without waiting. The state is bounded:
//! addresses whose failures and lock have expired are forgotten.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How far back wrong passwords count.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Wrong passwords from one address within [`WINDOW`] that lock it.
pub const PER_SOURCE: usize = 5;
/// How long a locked address stays locked.
pub const SOURCE_LOCK: Duration = Duration::from_secs(15 * 60);
/// Wrong passwords from all addresses within [`WINDOW`] that lock every login.
pub const GLOBAL: usize = 50;
/// How long every login stays locked after [`GLOBAL`].
pub const GLOBAL_LOCK: Duration = Duration::from_secs(60);

/// A login refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// How long until a login from this address is considered again.
    pub retry_after: Duration,
    /// Whether every address is locked (too many failures overall), not just this one.
    pub everyone: bool,
}

/// What a wrong password led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; `left` more wrong passwords within the window lock the address.
    Counted {
        /// Wrong passwords still allowed within the window.
        left: usize,
    },
    /// This failure locked the address (or everyone): audit and alert it.
    NowLocked(Locked),
}

#[derive(Default)]
struct Source {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

/// The login attempts seen (one per console).
#[derive(Default)]
pub struct Throttle {
    sources: HashMap<IpAddr, Source>,
    all: VecDeque<Instant>,
    everyone_until: Option<Instant>,
}

fn expire(q: &mut VecDeque<Instant>, now: Instant) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        q.pop_front();
    }
}

impl Throttle {
    /// No attempts seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Before checking a password from `from`: `Err` while it (or everyone) is locked.
    ///
    /// # Errors
    /// [`Locked`] with the time left.
    pub fn check(&mut self, from: IpAddr, now: Instant) -> Result<(), Locked> {
        if let Some(until) = self.everyone_until.filter(|u| *u > now) {
            return Err(Locked {
                retry_after: until - now,
                everyone: true,
            });
        }
        match self.sources.get(&from).and_then(|s| s.locked_until) {
            Some(until) if until > now => Err(Locked {
                retry_after: until - now,
                everyone: false,
            }),
            _ => Ok(()),
        }
    }

    /// A wrong password from `from` at `now`.
    pub fn failed(&mut self, from: IpAddr, now: Instant) -> Failure {
        self.forget_expired(now);
        self.all.push_back(now);
        let s = self.sources.entry(from).or_default();
        s.failures.push_back(now);
        if s.failures.len() >= PER_SOURCE {
            s.failures.clear();
            s.locked_until = Some(now + SOURCE_LOCK);
            return Failure::NowLocked(Locked {
                retry_after: SOURCE_LOCK,
                everyone: false,
            });
        }
        let left = PER_SOURCE - s.failures.len();
        if self.all.len() >= GLOBAL {
            self.all.clear();
            self.everyone_until = Some(now + GLOBAL_LOCK);
            return Failure::NowLocked(Locked {
                retry_after: GLOBAL_LOCK,
                everyone: true,
            });
        }
        Failure::Counted { left }
    }

    /// A right password from `from`: its count starts again.
    pub fn succeeded(&mut self, from: IpAddr) {
        self.sources.remove(&from);
    }

    /// Addresses tracked now (failures in the window or a lock running).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    fn forget_expired(&mut self, now: Instant) {
        expire(&mut self.all, now);
        self.sources.retain(|_, s| {
            expire(&mut s.failures, now);
            !s.failures.is_empty() || s.locked_until.is_some_and(|u| u > now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_sixth_attempt_after_five_wrong_passwords_in_a_minute_is_locked_out() {
        let mut t = Throttle::new();
        let t0 = Instant::now();
        for i in 0..4u64 {
            let now = t0 + Duration::from_secs(i * 10);
            assert_eq!(t.check(ip(1), now), Ok(()));
            assert_eq!(
                t.failed(ip(1), now),
                Failure::Counted {
                    left: PER_SOURCE - 1 - i as usize
                }
            );
        }
        let fifth = t0 + Duration::from_secs(50);
        assert_eq!(t.check(ip(1), fifth), Ok(()));
        assert_eq!(
            t.failed(ip(1), fifth),
            Failure::NowLocked(Locked {
                retry_after: SOURCE_LOCK,
                everyone: false
            })
        );
        // The sixth, right or wrong, is refused for 15 minutes; other addresses are not.
        let sixth = fifth + Duration::from_secs(5);
        let e = t.check(ip(1), sixth).unwrap_err();
        assert_eq!(e.retry_after, SOURCE_LOCK - Duration::from_secs(5));
        assert!(!e.everyone);
        assert_eq!(t.check(ip(2), sixth), Ok(()));
        assert!(t
            .check(ip(1), fifth + SOURCE_LOCK - Duration::from_millis(1))
            .is_err());
        assert_eq!(t.check(ip(1), fifth + SOURCE_LOCK), Ok(()));
    }

    #[test]
    fn failures_older_than_a_minute_and_a_right_password_do_not_count() {
        let mut t = Throttle::new();
        let t0 = Instant::now();
        for i in 0..4u64 {
            t.failed(ip(1), t0 + Duration::from_secs(i));
        }
        // A minute after the first four, they have expired.
        let later = t0 + Duration::from_secs(64);
        assert_eq!(t.failed(ip(1), later), Failure::Counted { left: 4 });
        for _ in 0..3 {
            t.failed(ip(1), later);
        }
        t.succeeded(ip(1));
        assert_eq!(t.failed(ip(1), later), Failure::Counted { left: 4 });
        // Expired addresses are forgotten.
        t.failed(ip(9), later + WINDOW * 20);
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn fifty_failures_from_many_addresses_lock_every_login_for_a_minute() {
        let mut t = Throttle::new();
        let t0 = Instant::now();
        let mut last = Failure::Counted { left: 0 };
        for i in 0..GLOBAL {
            // Two wrong passwords from each of 25 addresses: none reaches its own limit.
            last = t.failed(
                ip((i / 2) as u8),
                t0 + Duration::from_millis(i as u64 * 100),
            );
        }
        let now = t0 + Duration::from_secs(5);
        assert_eq!(
            last,
            Failure::NowLocked(Locked {
                retry_after: GLOBAL_LOCK,
                everyone: true
            })
        );
        let e = t.check(ip(200), now).unwrap_err();
        assert!(e.everyone);
        assert!(e.retry_after <= GLOBAL_LOCK);
        assert_eq!(
            t.check(ip(200), t0 + Duration::from_millis(4900) + GLOBAL_LOCK),
            Ok(())
        );
    }
}
