//! Free space on the data partition, watched so the box degrades before the disk is full.
//!
//! SQLite needs room for its WAL and for the audit rows of every message; on the appliance the
//! data partition may be as small as 512 MiB. Two thresholds, checked every
//! [`CHECK_INTERVAL`] with `statvfs(3)` (`f_bavail · f_frsize`, the space an unprivileged
//! writer may use):
//! - below [`LOW_BYTES`] the `disk` readiness check fails (`/readyz` degraded, an alert line,
//!   `wecom_edge_health_check_failing{check="disk"}`), and
//! - below [`REFUSE_BYTES`] the box stops taking new work: the sessions' `accepting` flag
//!   (`SessionContext::accepting`) turns false and new messages are answered with a polite
//!   "cannot take messages now" instead of being accepted with nowhere to record them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wecom_edge_actors::watchdog::Health;

/// Below this much free space the box is degraded (bytes).
pub const LOW_BYTES: u64 = 64 << 20;

/// Below this much free space new messages are refused politely (bytes).
pub const REFUSE_BYTES: u64 = 16 << 20;

/// How often free space is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Free and total bytes of the filesystem holding `dir`.
///
/// # Errors
/// `statvfs(3)` failed (the directory is gone, …).
pub fn free_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let frsize = s.fragment_size() as u64;
    Ok((
        s.blocks_available() as u64 * frsize,
        s.blocks() as u64 * frsize,
    ))
}

/// The health text and gate state for `free` of `total` bytes.
fn judge(free: u64, total: u64) -> (Result<(), String>, bool) {
    let mib = |b: u64| b >> 20;
    let state = if free < LOW_BYTES {
        Err(format!(
            "{} MiB free of {} MiB{}",
            mib(free),
            mib(total),
            if free < REFUSE_BYTES {
                ": new messages are refused"
            } else {
                ""
            }
        ))
    } else {
        Ok(())
    };
    (state, free >= REFUSE_BYTES)
}

/// Checks `dir`'s free space now and every [`CHECK_INTERVAL`], keeping the `disk` check and
/// `accepting` (false under [`REFUSE_BYTES`]) current. Runs until the task is dropped.
pub async fn watch(dir: PathBuf, health: Health, accepting: Arc<AtomicBool>) {
    let mut last_open = true;
    loop {
        let (state, open) = match free_space(&dir) {
            Ok((free, total)) => judge(free, total),
            Err(e) => (Err(format!("cannot read free space: {e}")), true),
        };
        if open != last_open {
            if open {
                tracing::info!(dir = %dir.display(), "free space is back: taking messages again");
            } else {
                tracing::error!(alert = true, dir = %dir.display(), "the data partition is nearly full: new messages are refused");
            }
            last_open = open;
        }
        accepting.store(open, Ordering::Relaxed);
        health.set("disk", state);
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let total = 512 << 20;
        assert_eq!(judge(100 << 20, total), (Ok(()), true));
        let (s, open) = judge(40 << 20, total);
        assert!(open && s.unwrap_err().starts_with("40 MiB free of 512 MiB"));
        let (s, open) = judge(8 << 20, total);
        assert!(!open && s.unwrap_err().contains("refused"));
        let (free, total) = free_space(Path::new("/")).unwrap();
        assert!(free <= total && total > 0);
    }
}
