//! `wecom-edge audit verify` with the key and the head file: a missing key is a clear error
//! (and is not created), rows removed from the end and a deleted database exit 1.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;
use wecom_edge_actors::audit::{AuditKey, AuditStore, DB_FILE, HEAD_FILE};

fn verify(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .arg("audit")
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .arg("verify")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn verify_uses_the_key_and_the_head() {
    let dir =
        std::env::temp_dir().join(format!("wecom-edge-cli-audit-head-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key_path = dir.join("elsewhere/audit-key");
    let mut s = AuditStore::open(&dir, AuditKey::load_or_create(&key_path).unwrap()).unwrap();
    for i in 0..5 {
        s.append("reply_sent", "session", &format!("m{i}"), &json!({}))
            .unwrap();
    }

    // No key at the default place: a clear error, and none is made.
    let out = verify(&dir, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no audit key"), "{}", stderr(&out));
    assert!(!AuditKey::default_path(&dir).exists());

    let key = ["--key", key_path.to_str().unwrap()];
    let out = verify(&dir, &key);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "audit chain intact: 5 rows"
    );

    // The last two rows go: the head says 5.
    s.connection()
        .execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq >= 4")
        .unwrap();
    let out = verify(&dir, &key);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    drop(s);

    // The database goes.
    std::fs::remove_file(dir.join(DB_FILE)).unwrap();
    let out = verify(&dir, &key);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("replaced"), "{}", stderr(&out));
    assert!(!dir.join(DB_FILE).exists(), "verify creates nothing");

    // Neither database nor head: an error naming the directory.
    std::fs::remove_file(dir.join(HEAD_FILE)).unwrap();
    let out = verify(&dir, &key);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no audit database"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
