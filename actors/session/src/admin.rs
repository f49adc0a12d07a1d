//! The box-wide commands and who may run them (`[admin] users`): `#status all` (the box's
//! health, every check, the outbox, the filter and the knowledge base) and `#reload` (what
//! SIGHUP does: the content filter's term files read again, `[knowledge] dir` mirrored
//! again). Anyone else is refused politely, and the refusal is audited (`command_refused`).
//!
//! The session crate does not know how the box is wired: the binary hands in the two actions
//! as functions ([`Admin::with_status`], [`Admin::with_reload`]).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What `#reload` runs: a future of its one-paragraph summary.
pub type ReloadFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;
/// What `#status all` adds to the session's own status line.
pub type StatusFn = Arc<dyn Fn() -> String + Send + Sync>;

/// The allow-list and the box-wide actions (cheap to clone).
#[derive(Clone, Default)]
pub struct Admin {
    users: Arc<HashSet<String>>,
    status: Option<StatusFn>,
    reload: Option<ReloadFn>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The WeCom userids (`FromUserName`, `from.userid`) allowed to run admin commands.
    pub fn new(users: impl IntoIterator<Item = String>) -> Admin {
        Admin {
            users: Arc::new(users.into_iter().collect()),
            ..Admin::default()
        }
    }

    /// `#status all` shows `f()` after the session's own line.
    pub fn with_status(mut self, f: StatusFn) -> Admin {
        self.status = Some(f);
        self
    }

    /// `#reload` runs `f` and shows its summary.
    pub fn with_reload(mut self, f: ReloadFn) -> Admin {
        self.reload = Some(f);
        self
    }

    /// Whether `userid` may run admin commands (an empty list: nobody).
    pub fn allows(&self, userid: &str) -> bool {
        self.users.contains(userid)
    }

    /// The box-wide part of `#status all`.
    pub fn status(&self) -> String {
        self.status
            .as_ref()
            .map_or_else(|| "(no box-wide status in this build)".into(), |f| f())
    }

    /// Runs `#reload`; its summary.
    pub async fn reload(&self) -> String {
        match &self.reload {
            Some(f) => f().await,
            None => "(nothing to reload)".into(),
        }
    }
}

/// The answer to a user who is not on the allow-list.
pub const NOT_ADMIN: &str = "此命令仅限管理员使用。(Only the box's admins may use this command.)";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_listed_users_and_the_actions_given() {
        let a = Admin::new(["ann".to_string()]);
        assert!(a.allows("ann") && !a.allows("bob") && !a.allows(""));
        assert!(!Admin::default().allows("ann"), "an empty list: nobody");
        assert!(a.reload().await.contains("nothing"));
        let a = a
            .with_status(Arc::new(|| "healthy".into()))
            .with_reload(Arc::new(|| {
                Box::pin(async { "reloaded 3 terms".to_string() })
            }));
        assert_eq!(a.status(), "healthy");
        assert_eq!(a.reload().await, "reloaded 3 terms");
    }
}
