//! The standby role of an AI bot's long connection: one owner per bot across boxes.
//!
//! WeCom keeps one long connection per bot: a second `aibot_subscribe` kicks the first with
//! `disconnected_event` (/document/path/101463). Two boxes configured with the same bot would
//! kick each other forever, so exactly one box owns the bot and any other is a *standby*:
//!
//! * The standby does not subscribe. Every [`StandbyConfig::poll_interval`] it asks the
//!   owner's admin listener `GET {owner}/readyz/aibot/{bot_id}`. The owner answers 200 only
//!   while its connection for that bot is subscribed.
//! * Once the owner has not been seen holding the bot for `takeover_after` (unreachable,
//!   503, 404 or a timeout — every answer but a 200 counts as absent), the standby subscribes.
//!   The takeover takes `takeover_after`, plus at most one poll interval, plus the time to
//!   connect and subscribe.
//! * When the owner comes back, its subscribe kicks the standby. The standby then waits up to
//!   `takeover_after` to see the owner hold the bot again. If it does, the standby has handed
//!   the bot back ([`crate::longconn::BotEvent::Yielded`]) and goes back to watching. If it
//!   does not, some third connection took the bot (a second standby, a misconfigured box).
//!   The standby then stops for good, as an owner does, so that the two do not take turns
//!   kicking each other.
//!
//! The owner is observed over plain HTTP on the LAN. A shared lease store would need one more
//! service on the network for the boxes to depend on.

use std::time::Duration;

use tokio::time::Instant;

/// How a standby box watches the bot's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyConfig {
    /// The owner box's admin listener, e.g. `http://10.0.0.2:9100` (its `/readyz` is below it).
    pub owner: String,
    /// How long the owner must have been seen not holding the bot before the standby
    /// subscribes (default [`DEFAULT_TAKEOVER_AFTER`]).
    pub takeover_after: Duration,
}

/// The default `takeover_after`: 30 s, which is longer than the owner's longest reconnect
/// backoff (30 s ±20 %, started by its last failure), so a brief WeCom outage on the owner's
/// side does not hand the bot over.
pub const DEFAULT_TAKEOVER_AFTER: Duration = Duration::from_secs(30);

impl StandbyConfig {
    /// A standby watching `owner` with the default takeover time.
    pub fn new(owner: &str) -> Self {
        StandbyConfig {
            owner: owner.trim_end_matches('/').to_string(),
            takeover_after: DEFAULT_TAKEOVER_AFTER,
        }
    }

    /// How often the owner is asked: a tenth of `takeover_after`, between 100 ms and 2 s.
    pub fn poll_interval(&self) -> Duration {
        (self.takeover_after / 10).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// How long one question to the owner may take: at least 1 s, at most 5 s.
    fn request_timeout(&self) -> Duration {
        self.poll_interval()
            .clamp(Duration::from_secs(1), Duration::from_secs(5))
    }

    /// `{owner}/readyz/aibot/{bot_id}`, the bot id as one path segment.
    ///
    /// # Errors
    /// `owner` is not an http(s) URL.
    pub fn check_url(&self, bot_id: &str) -> Result<url::Url, String> {
        let mut u =
            url::Url::parse(&self.owner).map_err(|e| format!("owner {:?}: {e}", self.owner))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!("owner {:?}: not an http(s) URL", self.owner));
        }
        u.path_segments_mut()
            .map_err(|()| format!("owner {:?}: cannot have a path", self.owner))?
            .pop_if_empty()
            .extend(["readyz", "aibot", bot_id]);
        Ok(u)
    }
}

/// What one look at the owner found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The owner answered 200: its connection for the bot is subscribed.
    Holds,
    /// Anything else, with what was seen (`HTTP 503: …`, `unreachable: …`).
    Absent(String),
}

/// Watches one bot's owner (see the module docs).
#[derive(Debug, Clone)]
pub struct OwnerWatch {
    cfg: StandbyConfig,
    url: url::Url,
    http: reqwest::Client,
}

impl OwnerWatch {
    /// A watch of `bot_id`'s owner.
    ///
    /// # Errors
    /// The owner URL is not an http(s) URL.
    pub fn new(cfg: StandbyConfig, bot_id: &str) -> Result<Self, String> {
        let url = cfg.check_url(bot_id)?;
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(OwnerWatch { cfg, url, http })
    }

    /// The settings.
    pub fn config(&self) -> &StandbyConfig {
        &self.cfg
    }

    /// One look at the owner.
    pub async fn look(&self) -> Owner {
        match self.http.get(self.url.clone()).send().await {
            Ok(r) if r.status().is_success() => Owner::Holds,
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                let first = body.lines().next().unwrap_or("").trim();
                Owner::Absent(format!("HTTP {status}: {first}"))
            }
            Err(e) => Owner::Absent(format!("unreachable: {}", without_url(&e))),
        }
    }

    /// Looks every poll interval until the owner has not been seen holding the bot for
    /// `takeover_after` (counted from this call); calls `seen` with every change of what was
    /// seen (the first look included). Returns how long the owner had been absent.
    pub async fn until_absent(&self, mut seen: impl FnMut(&Owner)) -> Duration {
        let mut last_held = Instant::now();
        let mut last: Option<Owner> = None;
        let mut tick = tokio::time::interval(self.cfg.poll_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.look().await;
            if now == Owner::Holds {
                last_held = Instant::now();
            }
            if last.as_ref().is_none_or(|l| changed(l, &now)) {
                seen(&now);
            }
            last = Some(now);
            let gone = last_held.elapsed();
            if gone >= self.cfg.takeover_after {
                return gone;
            }
        }
    }

    /// Looks every poll interval, for at most `takeover_after`, until the owner holds the bot;
    /// whether it did.
    pub async fn until_holds(&self) -> bool {
        let deadline = Instant::now() + self.cfg.takeover_after;
        while Instant::now() < deadline {
            if self.look().await == Owner::Holds {
                return true;
            }
            tokio::time::sleep(self.cfg.poll_interval().min(deadline - Instant::now())).await;
        }
        false
    }
}

/// Whether `b` is a different kind of observation than `a` (holds ↔ absent).
fn changed(a: &Owner, b: &Owner) -> bool {
    matches!(
        (a, b),
        (Owner::Holds, Owner::Absent(_)) | (Owner::Absent(_), Owner::Holds)
    )
}

/// reqwest's error without the URL it repeats.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_url_puts_the_bot_id_in_one_segment() {
        let c = StandbyConfig::new("http://10.0.0.2:9100/");
        assert_eq!(
            c.check_url("aib/x y").unwrap().as_str(),
            "http://10.0.0.2:9100/readyz/aibot/aib%2Fx%20y"
        );
        let c = StandbyConfig::new("http://box-a.lan:9100/admin");
        assert_eq!(
            c.check_url("demo-bot").unwrap().as_str(),
            "http://box-a.lan:9100/admin/readyz/aibot/demo-bot"
        );
        assert!(StandbyConfig::new("ftp://x").check_url("b").is_err());
        assert!(StandbyConfig::new("10.0.0.2:9100").check_url("b").is_err());
    }

    #[test]
    fn the_poll_interval_is_a_tenth_of_the_takeover_time_within_bounds() {
        let mut c = StandbyConfig::new("http://a");
        assert_eq!(c.poll_interval(), Duration::from_secs(2));
        c.takeover_after = Duration::from_secs(5);
        assert_eq!(c.poll_interval(), Duration::from_millis(500));
        c.takeover_after = Duration::from_millis(300);
        assert_eq!(c.poll_interval(), Duration::from_millis(100));
    }
}
