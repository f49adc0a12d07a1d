//! `wecom-edge audit tail|verify|export` on a real database file.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{json, Value};
use wecom_edge_actors::audit::{AuditKey, AuditStore};

fn audit(dir: &PathBuf, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .arg("audit")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn verify_tail_export_and_a_tampered_row() {
    let dir = std::env::temp_dir().join(format!("wecom-edge-cli-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = AuditKey::load_or_create(&AuditKey::default_path(&dir)).unwrap();
    let mut s = AuditStore::open(&dir, key).unwrap();
    s.append("config_loaded", "main", "edge.toml", &json!({"bots": 1}))
        .unwrap();
    s.append(
        "inbound_received",
        "aibot/demo-bot",
        "m1",
        &json!({"conversation": "g1/u1"}),
    )
    .unwrap();
    s.append(
        "reply_sent",
        "session",
        "m1",
        &json!({"tokens": 42, "note": "a,\"quoted\" value"}),
    )
    .unwrap();

    let out = audit(&dir, &["verify"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "audit chain intact: 3 rows"
    );

    let out = audit(&dir, &["tail", "-n", "2"]);
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows.iter()
            .map(|r| r["seq"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(rows[1]["detail"]["tokens"], 42);

    let out = audit(&dir, &["export", "--format", "csv", "--since", "1h"]);
    let mut r = csv::Reader::from_reader(&out.stdout[..]);
    let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 3);
    assert_eq!(&recs[2][2], "reply_sent");
    let detail: Value = serde_json::from_str(&recs[2][5]).unwrap();
    assert_eq!(detail["note"], "a,\"quoted\" value");
    let out = audit(&dir, &["export", "--since", "2100-01-01T00:00:00Z"]);
    assert!(out.stdout.is_empty());

    // Someone edits row 2 behind the box's back.
    s.connection()
        .execute_batch("DROP TRIGGER audit_no_update")
        .unwrap();
    s.connection()
        .execute("UPDATE audit SET subject = 'm2' WHERE seq = 2", [])
        .unwrap();
    let out = audit(&dir, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken at row 2"), "{err}");
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
