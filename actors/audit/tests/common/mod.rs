//! Helpers shared by the audit store's tests: temporary directories, a fixed key, filled stores.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::json;
use wecom_edge_audit::{AuditKey, AuditStore, DB_FILE};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "wecom-edge-audit-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn db(&self) -> PathBuf {
        self.0.join(DB_FILE)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The box key of these tests.
pub fn key() -> AuditKey {
    AuditKey::from_bytes([7; 32])
}

/// A store in `dir` keyed with [`key`] and `n` `reply_sent` rows.
pub fn filled(dir: &Path, n: i64) -> AuditStore {
    let mut s = AuditStore::open(dir, key()).unwrap();
    append(&mut s, n);
    s
}

/// Appends `n` `reply_sent` rows.
pub fn append(s: &mut AuditStore, n: i64) {
    for i in 0..n {
        s.append(
            "reply_sent",
            "session",
            &format!("msg-{i}"),
            &json!({"tokens": i}),
        )
        .unwrap();
    }
}
