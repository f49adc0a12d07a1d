//! The audit store on real SQLite files: chain verification catches edits, deletions and
//! inserted rows; dedupe and accepted messages survive a reopen.

mod common;

use common::{key, TempDir};
use serde_json::json;
use wecom_edge_audit::{Accepted, AuditStore};

fn filled(dir: &TempDir, n: i64) -> AuditStore {
    common::filled(&dir.0, n)
}

#[test]
fn chain_verifies_and_is_append_only() {
    let d = TempDir::new("chain");
    let s = filled(&d, 5);
    assert_eq!(s.verify(&key()).unwrap().intact(), Ok(5));
    let e = s
        .connection()
        .execute("UPDATE audit SET subject = 'x' WHERE seq = 2", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    assert!(s
        .connection()
        .execute("DELETE FROM audit WHERE seq = 2", [])
        .is_err());
    let mode: String = s
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let rows = s.tail(2).unwrap();
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(rows[1].prev_hash, rows[0].hash);
}

#[test]
fn an_edited_row_is_named() {
    let d = TempDir::new("edit");
    let s = filled(&d, 6);
    // An attacker with the file drops the trigger and edits row 3.
    let c = s.connection();
    c.execute_batch("DROP TRIGGER audit_no_update").unwrap();
    c.execute(
        "UPDATE audit SET detail = '{\"tokens\":999}' WHERE seq = 3",
        [],
    )
    .unwrap();
    let b = s.verify(&key()).unwrap().broken.unwrap();
    assert_eq!(b.seq, 3);
    assert!(b.reason.contains("edited"), "{}", b.reason);
}

#[test]
fn a_deleted_row_and_a_rehashed_row_are_caught() {
    let d = TempDir::new("delete");
    let s = filled(&d, 6);
    s.connection()
        .execute_batch("DROP TRIGGER audit_no_delete")
        .unwrap();
    s.connection()
        .execute("DELETE FROM audit WHERE seq = 4", [])
        .unwrap();
    let b = s.verify(&key()).unwrap().broken.unwrap();
    assert_eq!(b.seq, 5);
    assert!(b.reason.contains("missing"), "{}", b.reason);

    // Re-hashing an edited row does not help: the next row's prev_hash no longer matches.
    let d2 = TempDir::new("rehash");
    let s2 = filled(&d2, 4);
    let c = s2.connection();
    c.execute_batch("DROP TRIGGER audit_no_update").unwrap();
    c.execute("UPDATE audit SET hash = zeroblob(32) WHERE seq = 2", [])
        .unwrap();
    let b = s2.verify(&key()).unwrap().broken.unwrap();
    assert_eq!(b.seq, 2);
}

#[test]
fn inbound_is_deduplicated_and_survives_reopen() {
    let d = TempDir::new("inbound");
    let id = {
        let mut s = AuditStore::open(&d.0, key()).unwrap();
        let Accepted::New(id) = s
            .accept_inbound("aibot/bot-1", "m1", "g1/u1", &json!({"text": "hi"}))
            .unwrap()
        else {
            panic!("first delivery is new")
        };
        assert_eq!(
            s.accept_inbound("aibot/bot-1", "m1", "g1/u1", &json!({}))
                .unwrap(),
            Accepted::Duplicate
        );
        assert!(matches!(
            s.accept_inbound("aibot/bot-2", "m1", "g1/u1", &json!({}))
                .unwrap(),
            Accepted::New(_)
        ));
        id
    };
    // As after a crash: reopen, the message is still pending and still a duplicate.
    let mut s = AuditStore::open(&d.0, key()).unwrap();
    assert!(s.findings().is_empty(), "{:?}", s.findings());
    assert_eq!(
        s.accept_inbound("aibot/bot-1", "m1", "g1/u1", &json!({}))
            .unwrap(),
        Accepted::Duplicate
    );
    let pending = s.pending_inbound().unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(
        (
            pending[0].id,
            pending[0].msgid.as_str(),
            pending[0].payload["text"].as_str()
        ),
        (id, "m1", Some("hi"))
    );
    s.finish_inbound(id, true).unwrap();
    assert_eq!(s.pending_inbound().unwrap().len(), 1);
    let kinds: Vec<String> = s.tail(10).unwrap().into_iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            "inbound_received",
            "duplicate_dropped",
            "inbound_received",
            "duplicate_dropped"
        ]
    );
    assert_eq!(s.verify(&key()).unwrap().intact(), Ok(4));
    // Pruning by age: nothing is older than an hour yet.
    assert_eq!(s.prune(std::time::Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(s.prune(std::time::Duration::ZERO).unwrap(), 2);
}

#[test]
fn history_keeps_the_last_turns_and_resets() {
    let d = TempDir::new("history");
    let mut s = AuditStore::open(&d.0, key()).unwrap();
    for i in 0..5 {
        s.history_push(
            "g1/u1",
            if i % 2 == 0 { "user" } else { "assistant" },
            &format!("t{i}"),
        )
        .unwrap();
    }
    s.history_push("g1/u2", "user", "other").unwrap();
    let h = s.history("g1/u1", 3).unwrap();
    assert_eq!(
        h.iter().map(|t| t.content.as_str()).collect::<Vec<_>>(),
        ["t2", "t3", "t4"]
    );
    assert_eq!(s.history_clear("g1/u1").unwrap(), 5);
    assert!(s.history("g1/u1", 10).unwrap().is_empty());
    assert_eq!(s.history("g1/u2", 10).unwrap().len(), 1);
}

#[test]
fn an_undelivered_answer_moves_from_inbound_to_the_outbox_and_out_again() {
    let d = TempDir::new("outbox");
    let mut s = AuditStore::open(&d.0, key()).unwrap();
    let Accepted::New(a) = s.accept_inbound("aibot/b", "m1", "c", &json!({})).unwrap() else {
        panic!("fresh")
    };
    let Accepted::New(b) = s.accept_inbound("aibot/b", "m2", "c", &json!({})).unwrap() else {
        panic!("fresh")
    };
    let parts = vec!["one".to_string(), "two".to_string()];
    let o1 = s
        .outbox_put(
            a,
            "c",
            &json!({"channel": "aibot"}),
            &parts,
            "socket closed",
            i64::MAX,
        )
        .unwrap();
    let o2 = s
        .outbox_put(b, "c", &json!({}), &parts[..1], "socket closed", i64::MAX)
        .unwrap();
    // Settled: the start-up sweep does not generate them again; the outbox survives a reopen.
    drop(s);
    let mut s = AuditStore::open(&d.0, key()).unwrap();
    assert!(s.pending_inbound().unwrap().is_empty());
    let p = s.outbox_pending().unwrap();
    assert_eq!(p.iter().map(|i| i.id).collect::<Vec<_>>(), [o1, o2]);
    assert_eq!(p[0].parts, parts);
    assert_eq!(p[0].origin["channel"], "aibot");

    s.outbox_progress(o1, &parts[1..], Some(("still down", 42)))
        .unwrap();
    let p = s.outbox_pending().unwrap();
    assert_eq!((p[0].parts.len(), p[0].attempts, p[0].next_ms), (1, 1, 42));
    assert_eq!(p[0].last_error, "still down");

    s.outbox_done(o1).unwrap();
    s.outbox_abandon(o2, "deadline passed").unwrap();
    assert!(s.outbox_pending().unwrap().is_empty());
    let state: String = s
        .connection()
        .query_row("SELECT state FROM inbound WHERE id = ?1", [b], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "failed");
    let kinds: Vec<String> = s.tail(2).unwrap().into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["reply_delivered", "reply_abandoned"]);
    assert!(s.verify(&key()).unwrap().is_intact());
}
