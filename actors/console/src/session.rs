//! Console sessions: who is logged in, for how long, and the CSRF token of each.
//!
//! * A session id is 32 random bytes from the OS (hex), sent only as the cookie
//!   [`COOKIE`]` = id; HttpOnly; Secure; SameSite=Strict; Path=/` ([`Sessions::cookie`]).
//!   The store keeps SHA-256 of the id, not the id: a dump of its memory cannot be replayed.
//! * A session ends [`IDLE`] (30 min) after its last request, [`ABSOLUTE`] (12 h) after
//!   login, or at logout, whichever comes first; at most [`MAX_SESSIONS`] are kept (the
//!   oldest login goes first).
//! * Each session has its own CSRF token (32 random bytes, hex), put in every form; a
//!   state-changing request must carry it ([`Sessions::check_csrf`], compared in constant
//!   time). The token is not the cookie, and the cookie cannot be read by page scripts.
//!
//! Time is passed in (`now`), so expiry is tested without waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "wecom_edge_console";
/// A session ends this long after its last request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after its login, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once.
pub const MAX_SESSIONS: usize = 32;

fn random_hex() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

struct Entry {
    csrf: String,
    started: Instant,
    last: Instant,
}

/// A live session, as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
    /// When it will end if no request comes (idle expiry or the absolute limit).
    pub expires_in: Duration,
}

/// The console's sessions.
#[derive(Default)]
pub struct Sessions {
    by_digest: HashMap<[u8; 32], Entry>,
}

impl Sessions {
    /// No sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new session after a right password; its id (for the cookie only) and its view.
    pub fn login(&mut self, now: Instant) -> (String, Session) {
        self.expire(now);
        while self.by_digest.len() >= MAX_SESSIONS {
            let oldest = self
                .by_digest
                .iter()
                .min_by_key(|(_, e)| e.started)
                .map(|(k, _)| *k)
                .expect("not empty");
            self.by_digest.remove(&oldest);
        }
        let id = random_hex();
        let e = Entry {
            csrf: random_hex(),
            started: now,
            last: now,
        };
        let view = Session {
            csrf: e.csrf.clone(),
            expires_in: IDLE,
        };
        self.by_digest.insert(digest(&id), e);
        (id, view)
    }

    /// The session of cookie value `id`, its idle time restarted; `None` when unknown or
    /// expired (then forgotten).
    pub fn touch(&mut self, id: &str, now: Instant) -> Option<Session> {
        let key = digest(id);
        let e = self.by_digest.get_mut(&key)?;
        if now.duration_since(e.last) >= IDLE || now.duration_since(e.started) >= ABSOLUTE {
            self.by_digest.remove(&key);
            return None;
        }
        e.last = now;
        Some(Session {
            csrf: e.csrf.clone(),
            expires_in: IDLE.min(ABSOLUTE - now.duration_since(e.started)),
        })
    }

    /// Whether `token` is the CSRF token of live session `id` (constant-time comparison).
    pub fn check_csrf(&mut self, id: &str, token: &str, now: Instant) -> bool {
        self.touch(id, now)
            .is_some_and(|s| bool::from(s.csrf.as_bytes().ct_eq(token.as_bytes())))
    }

    /// Ends session `id` (logout); whether it was live.
    pub fn logout(&mut self, id: &str) -> bool {
        self.by_digest.remove(&digest(id)).is_some()
    }

    /// Sessions alive now.
    pub fn live(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.by_digest.len()
    }

    /// The `Set-Cookie` value for session `id` (`None`: the one that clears it).
    pub fn cookie(id: Option<&str>) -> String {
        match id {
            Some(id) => format!("{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/"),
            None => format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"),
        }
    }

    fn expire(&mut self, now: Instant) {
        self.by_digest.retain(|_, e| {
            now.duration_since(e.last) < IDLE && now.duration_since(e.started) < ABSOLUTE
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_idle_absolute_expiry_or_logout() {
        let mut s = Sessions::new();
        let t0 = Instant::now();
        let (id, view) = s.login(t0);
        assert_eq!(id.len(), 64);
        assert_eq!(view.csrf.len(), 64);
        assert_ne!(id, view.csrf);
        assert_eq!(s.touch(&id, t0 + IDLE / 2).unwrap().csrf, view.csrf);
        // Idle: 30 minutes after the last request, not after the login.
        assert!(s
            .touch(&id, t0 + IDLE / 2 + IDLE - Duration::from_secs(1))
            .is_some());
        let (busy, _) = s.login(t0);
        let mut now = t0;
        while now + IDLE / 2 < t0 + ABSOLUTE {
            now += IDLE / 2;
            assert!(s.touch(&busy, now).is_some(), "busy at {:?}", now - t0);
        }
        assert!(s.touch(&busy, t0 + ABSOLUTE).is_none(), "absolute expiry");
        assert!(s.touch(&busy, t0 + ABSOLUTE).is_none(), "forgotten");
        assert!(s.touch(&id, t0 + 3 * IDLE).is_none(), "idle expiry");

        let (id, _) = s.login(t0);
        assert!(s.logout(&id));
        assert!(s.touch(&id, t0).is_none());
        assert!(!s.logout(&id));
        assert!(s.touch("not a session", t0).is_none());
    }

    #[test]
    fn csrf_tokens_are_per_session_and_checked() {
        let mut s = Sessions::new();
        let t0 = Instant::now();
        let (a, va) = s.login(t0);
        let (b, vb) = s.login(t0);
        assert_ne!(va.csrf, vb.csrf);
        assert!(s.check_csrf(&a, &va.csrf, t0));
        assert!(!s.check_csrf(&a, &vb.csrf, t0), "another session's token");
        assert!(!s.check_csrf(&a, "", t0));
        assert!(!s.check_csrf(&b, &vb.csrf[..63], t0));
        assert!(!s.check_csrf(&a, &va.csrf, t0 + IDLE), "expired session");
    }

    #[test]
    fn the_store_is_bounded_and_the_cookie_is_locked_down() {
        let mut s = Sessions::new();
        let t0 = Instant::now();
        let (first, _) = s.login(t0);
        for i in 1..=MAX_SESSIONS as u64 {
            s.login(t0 + Duration::from_secs(i));
        }
        assert_eq!(s.live(t0 + Duration::from_secs(40)), MAX_SESSIONS);
        assert!(
            s.touch(&first, t0 + Duration::from_secs(40)).is_none(),
            "oldest dropped"
        );
        let c = Sessions::cookie(Some("abc"));
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(Sessions::cookie(None).contains("Max-Age=0"));
    }
}
