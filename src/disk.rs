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
//!
//! A filesystem that turned read-only (ext4's `errors=remount-ro` after an I/O error; the
//! `ST_RDONLY` flag of `statvfs(3)`) is treated as full: degraded, with the reason, and new
//! messages refused, however much space is free. Because ext4's emergency read-only state
//! does not show in those flags, each check also creates, writes and removes a small file
//! (`.disk-probe`) in the data directory: the OS's error (`Read-only file system`, an I/O
//! error) is the reason shown.

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
    let (free, total, _) = stat(dir)?;
    Ok((free, total))
}

/// Free bytes, total bytes and whether the filesystem holding `dir` is mounted read-only.
fn stat(dir: &Path) -> std::io::Result<(u64, u64, bool)> {
    use nix::sys::statvfs::FsFlags;
    let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let frsize = s.fragment_size() as u64;
    Ok((
        s.blocks_available() as u64 * frsize,
        s.blocks() as u64 * frsize,
        s.flags().contains(FsFlags::ST_RDONLY),
    ))
}

/// Creates, writes and removes `.disk-probe` in `dir`: whether the filesystem takes writes.
fn touch(dir: &Path) -> std::io::Result<()> {
    let p = dir.join(".disk-probe");
    std::fs::write(&p, b"probe")?;
    std::fs::remove_file(&p)
}

/// The health text and gate state for `free` of `total` bytes on a filesystem that is
/// read-only or not.
fn judge(free: u64, total: u64, read_only: bool) -> (Result<(), String>, bool) {
    let mib = |b: u64| b >> 20;
    if read_only {
        return (
            Err("the data filesystem is read-only: new messages are refused".into()),
            false,
        );
    }
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
        let (state, open) = match (stat(&dir), touch(&dir)) {
            (Err(e), _) => (Err(format!("cannot read free space: {e}")), true),
            (Ok((free, total, read_only)), Ok(())) => judge(free, total, read_only),
            (Ok((free, _, read_only)), Err(e)) if free >= REFUSE_BYTES && !read_only => (
                Err(format!(
                    "cannot write to the data partition ({e}): new messages are refused"
                )),
                false,
            ),
            // Full or read-only: that is the reason to show.
            (Ok((free, total, read_only)), Err(_)) => judge(free, total, read_only),
        };
        if open != last_open {
            if open {
                tracing::info!(dir = %dir.display(), "the data partition is writable again: taking messages");
            } else {
                tracing::error!(alert = true, dir = %dir.display(), reason = %state.as_ref().err().map(String::as_str).unwrap_or(""), "the data partition cannot take writes: new messages are refused");
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
        assert_eq!(judge(100 << 20, total, false), (Ok(()), true));
        let (s, open) = judge(40 << 20, total, false);
        assert!(open && s.unwrap_err().starts_with("40 MiB free of 512 MiB"));
        let (s, open) = judge(8 << 20, total, false);
        assert!(!open && s.unwrap_err().contains("refused"));
        let (s, open) = judge(400 << 20, total, true);
        assert!(!open && s.unwrap_err().contains("read-only"));
        let (free, total) = free_space(Path::new("/")).unwrap();
        assert!(free <= total && total > 0);
    }
}
