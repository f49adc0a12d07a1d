//! The audit actor makes the key, anchors the head after its writes, and answers its start
//! findings.

mod common;

use std::sync::Arc;

use common::TempDir;
use ractor::Actor;
use serde_json::json;
use wecom_edge_audit::{AuditActor, AuditArgs, AuditKey, AuditMsg, AuditStore, StartFinding};

async fn run_once(dir: &TempDir, rows: usize) -> Vec<StartFinding> {
    let args = AuditArgs {
        dir: dir.0.clone(),
        key: AuditKey::default_path(&dir.0),
        on_write_error: Arc::new(|| panic!("no write fails here")),
    };
    let (a, h) = Actor::spawn(None, AuditActor, args).await.unwrap();
    for i in 0..rows {
        a.send_message(AuditMsg::Append {
            kind: "reply_sent".into(),
            actor: "session".into(),
            subject: format!("m{i}"),
            detail: json!({}),
        })
        .unwrap();
    }
    let findings = ractor::call!(a, AuditMsg::Findings).unwrap();
    // Probe is answered after the appends above (one mailbox).
    ractor::call!(a, AuditMsg::Probe).unwrap().unwrap();
    a.stop(None);
    h.await.unwrap();
    findings
}

#[tokio::test]
async fn the_actor_keys_anchors_and_reports() {
    let d = TempDir::new("actor");
    assert!(run_once(&d, 3).await.is_empty());
    let key = AuditKey::load(&AuditKey::default_path(&d.0)).unwrap();
    assert_eq!(AuditStore::verify_dir(&d.0, &key).unwrap().intact(), Ok(3));
    // The database goes; the next start says so.
    std::fs::remove_file(d.db()).unwrap();
    let f = run_once(&d, 0).await;
    assert!(
        matches!(f.as_slice(), [StartFinding::ChainRestarted { .. }]),
        "{f:?}"
    );
    assert!(f[0].is_alert());
}
