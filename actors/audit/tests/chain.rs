//! The keyed chain and its head on real SQLite files: what the plain SHA-256 chain missed —
//! rows removed from the end, a chain recomputed without the key, a deleted, emptied, replaced
//! or corrupt database, a WAL cut after a crash — is caught by verify and recorded at start;
//! a legacy database still verifies and continues keyed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{append, filled, key, TempDir};
use hmac::{Hmac, Mac};
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};
use wecom_edge_audit::{
    AuditError, AuditKey, AuditStore, HeadStatus, Incident, RestartReason, StartFinding, DB_FILE,
    HEAD_FILE,
};

/// The row encoding (prev ‖ seq ‖ ts_ms ‖ length-prefixed kind, actor, subject, detail).
fn encode(prev: &[u8], seq: i64, ts: i64, fields: [&str; 4]) -> Vec<u8> {
    let mut m = prev.to_vec();
    m.extend(seq.to_be_bytes());
    m.extend(ts.to_be_bytes());
    for f in fields {
        m.extend((f.len() as u64).to_be_bytes());
        m.extend(f.as_bytes());
    }
    m
}

fn plain(msg: &[u8]) -> Vec<u8> {
    Sha256::digest(msg).to_vec()
}

fn hmac_with(key: [u8; 32]) -> impl Fn(&[u8]) -> Vec<u8> {
    move |msg| {
        let mut m = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }
}

/// What an attacker with the file does: drop the trigger, then recompute `prev_hash` and `hash`
/// of every row from `from` on with `hash`.
fn rechain(c: &Connection, from: i64, hash: impl Fn(&[u8]) -> Vec<u8>) {
    let _ = c.execute_batch("DROP TRIGGER audit_no_update");
    let mut prev: Vec<u8> = if from == 1 {
        vec![0; 32]
    } else {
        c.query_row("SELECT hash FROM audit WHERE seq = ?1", [from - 1], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let rows: Vec<(i64, i64, [String; 4])> = c
        .prepare("SELECT seq, ts_ms, kind, actor, subject, detail FROM audit WHERE seq >= ?1 ORDER BY seq")
        .unwrap()
        .query_map([from], |r| {
            Ok((r.get(0)?, r.get(1)?, [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?]))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (seq, ts, [k, a, s, d]) in rows {
        let h = hash(&encode(&prev, seq, ts, [&k, &a, &s, &d]));
        c.execute(
            "UPDATE audit SET prev_hash = ?2, hash = ?3 WHERE seq = ?1",
            params![seq, prev, h],
        )
        .unwrap();
        prev = h;
    }
}

fn delete_from(s: &AuditStore, seq: i64) {
    let c = s.connection();
    c.execute_batch("DROP TRIGGER audit_no_delete").unwrap();
    c.execute("DELETE FROM audit WHERE seq >= ?1", [seq])
        .unwrap();
}

fn kinds(s: &AuditStore, n: usize) -> Vec<String> {
    s.tail(n).unwrap().into_iter().map(|r| r.kind).collect()
}

#[test]
fn deleting_the_last_row_is_caught_and_recorded_at_start() {
    let d = TempDir::new("last");
    let s = filled(&d.0, 10);
    delete_from(&s, 10);
    let v = s.verify(&key()).unwrap();
    assert_eq!((v.rows, &v.broken), (9, &None));
    assert_eq!(
        v.head,
        HeadStatus::Truncated {
            head_seq: 10,
            last_seq: 9
        }
    );
    assert!(!v.is_intact());
    assert!(v.problems()[0].contains("truncated"), "{:?}", v.problems());
    drop(s);

    let s = AuditStore::open(&d.0, key()).unwrap();
    assert_eq!(
        s.findings(),
        [StartFinding::Truncated {
            head_seq: 10,
            last_seq: 9
        }]
    );
    let row = s.tail(1).unwrap().remove(0);
    assert_eq!(
        (row.seq, row.kind.as_str(), &row.detail["head_seq"]),
        (10, "audit_truncated_detected", &10.into())
    );
    let v = s.verify(&key()).unwrap();
    assert_eq!(v.intact(), Ok(10));
    assert_eq!(
        v.incidents,
        [Incident {
            seq: 10,
            kind: "audit_truncated_detected".into()
        }]
    );
}

#[test]
fn deleting_the_last_12_rows_is_caught() {
    let d = TempDir::new("last12");
    let s = filled(&d.0, 113);
    delete_from(&s, 102);
    let v = s.verify(&key()).unwrap();
    assert_eq!(v.rows, 101);
    assert_eq!(
        v.head,
        HeadStatus::Truncated {
            head_seq: 113,
            last_seq: 101
        }
    );
    assert!(v.intact().unwrap_err().contains("12 rows missing"));
}

#[test]
fn a_chain_recomputed_without_the_key_is_caught() {
    for (tag, hash) in [
        ("sha", Box::new(plain) as Box<dyn Fn(&[u8]) -> Vec<u8>>),
        ("wrongkey", Box::new(hmac_with([9; 32]))),
    ] {
        let d = TempDir::new(tag);
        let s = filled(&d.0, 8);
        let c = s.connection();
        c.execute_batch("DROP TRIGGER audit_no_update").unwrap();
        c.execute(
            "UPDATE audit SET detail = '{\"tokens\":999}' WHERE seq = 3",
            [],
        )
        .unwrap();
        rechain(c, 3, hash);
        let v = s.verify(&key()).unwrap();
        let b = v.broken.clone().unwrap();
        assert_eq!((tag, b.seq), (tag, 3));
        assert!(b.reason.contains("edited"), "{}", b.reason);
        assert!(
            matches!(v.head, HeadStatus::Diverged { head_seq: 8, .. }),
            "{:?}",
            v.head
        );
        assert_eq!(v.problems().len(), 2);
    }
}

#[test]
fn the_right_key_rechaining_is_the_only_way() {
    // Sanity check of the test's encoding: recomputing with the box key itself verifies (the
    // attacker needs the key).
    let d = TempDir::new("rightkey");
    let s = filled(&d.0, 4);
    rechain(s.connection(), 1, hmac_with([7; 32]));
    assert_eq!(s.verify(&key()).unwrap().intact(), Ok(4));
}

#[test]
fn a_deleted_database_is_caught_and_the_new_chain_says_so() {
    let d = TempDir::new("deleted");
    let old = filled(&d.0, 5).head().cloned().unwrap();
    std::fs::remove_file(d.db()).unwrap();
    let v = AuditStore::verify_dir(&d.0, &key()).unwrap();
    assert_eq!(v.rows, 0);
    assert_eq!(
        v.head,
        HeadStatus::ForeignDb {
            head_db_id: old.db_id.clone(),
            db_id: None
        }
    );
    assert!(!v.is_intact());

    let s = AuditStore::open(&d.0, key()).unwrap();
    assert_eq!(
        s.findings(),
        [StartFinding::ChainRestarted {
            reason: RestartReason::DbMissing,
            moved_to: None,
            old_head: Some(old.clone()),
        }]
    );
    let row = s.tail(1).unwrap().remove(0);
    assert_eq!(row.kind, "audit_chain_restarted");
    assert_eq!(row.detail["old_head"]["seq"], 5);
    assert_eq!(row.detail["old_head"]["hash"], old.hash.as_str());
    assert_ne!(s.head().unwrap().db_id, old.db_id);
    let v = s.verify(&key()).unwrap();
    assert_eq!(v.intact(), Ok(1));
    assert_eq!(v.incidents.len(), 1);
}

#[test]
fn a_zero_truncated_database_is_caught() {
    let d = TempDir::new("zero");
    let old = filled(&d.0, 5).head().cloned().unwrap();
    std::fs::File::options()
        .write(true)
        .open(d.db())
        .unwrap()
        .set_len(0)
        .unwrap();
    let v = AuditStore::verify_dir(&d.0, &key()).unwrap();
    assert!(matches!(v.head, HeadStatus::ForeignDb { db_id: None, .. }));
    assert!(!v.is_intact());
    let s = AuditStore::open(&d.0, key()).unwrap();
    assert!(
        matches!(
            s.findings(),
            [StartFinding::ChainRestarted {
                reason: RestartReason::DbEmpty,
                old_head: Some(h),
                ..
            }] if *h == old
        ),
        "{:?}",
        s.findings()
    );
    assert_eq!(kinds(&s, 5), ["audit_chain_restarted"]);
}

#[test]
fn a_replaced_database_is_caught() {
    let a = TempDir::new("replaced-a");
    let b = TempDir::new("replaced-b");
    drop(filled(&a.0, 5));
    let other = filled(&b.0, 3).head().cloned().unwrap();
    std::fs::copy(b.db(), a.db()).unwrap();
    let v = AuditStore::verify_dir(&a.0, &key()).unwrap();
    assert_eq!(v.rows, 3);
    assert!(
        matches!(&v.head, HeadStatus::ForeignDb { db_id: Some(id), .. } if *id == other.db_id),
        "{:?}",
        v.head
    );
    assert!(v.problems()[0].contains("replaced"));
    let s = AuditStore::open(&a.0, key()).unwrap();
    assert!(matches!(
        s.findings(),
        [StartFinding::ChainRestarted {
            reason: RestartReason::ForeignDb { db_id: Some(_) },
            ..
        }]
    ));
    assert_eq!(s.verify(&key()).unwrap().intact(), Ok(4));
}

#[test]
fn a_wal_cut_in_half_after_a_crash_is_caught() {
    let d = TempDir::new("wal");
    let crashed = TempDir::new("wal-crashed");
    let s = filled(&d.0, 47);
    // The files as a SIGKILL leaves them (the connection still open, nothing checkpointed).
    let wal = format!("{DB_FILE}-wal");
    for f in [DB_FILE, wal.as_str(), HEAD_FILE] {
        std::fs::copy(d.0.join(f), crashed.0.join(f)).unwrap();
    }
    drop(s);
    let w = std::fs::File::options()
        .write(true)
        .open(crashed.0.join(&wal))
        .unwrap();
    w.set_len(w.metadata().unwrap().len() / 2).unwrap();
    drop(w);

    let v = AuditStore::verify_dir(&crashed.0, &key()).unwrap();
    assert_eq!(v.broken, None);
    let HeadStatus::Truncated { head_seq, last_seq } = v.head else {
        panic!("{:?}", v.head)
    };
    assert_eq!(head_seq, 47);
    assert!(last_seq < 47 && last_seq == v.rows, "{last_seq}");
    assert!(!v.is_intact());

    let s = AuditStore::open(&crashed.0, key()).unwrap();
    assert_eq!(
        s.findings(),
        [StartFinding::Truncated {
            head_seq: 47,
            last_seq
        }]
    );
    let row = s.tail(1).unwrap().remove(0);
    assert_eq!(row.kind, "audit_truncated_detected");
    assert_eq!(row.detail["last_seq"], last_seq);
    assert_eq!(s.verify(&key()).unwrap().intact(), Ok(last_seq + 1));
}

#[test]
fn a_corrupt_database_is_moved_aside_and_a_new_chain_started() {
    // Not a database at all, and a database with a damaged page.
    for (tag, n, damage) in [
        ("notadb", 5, (0u64, 8192usize)),
        ("badpage", 400, (3 * 4096, 4096)),
    ] {
        let d = TempDir::new(tag);
        let old = filled(&d.0, n).head().cloned().unwrap();
        let mut bytes = std::fs::read(d.db()).unwrap();
        let (at, len) = damage;
        let end = (at as usize + len).min(bytes.len());
        bytes.resize(bytes.len().max(end), 0);
        bytes[at as usize..end].fill(0xA5);
        std::fs::write(d.db(), &bytes).unwrap();

        let s = AuditStore::open(&d.0, key()).unwrap();
        let [StartFinding::ChainRestarted {
            reason: RestartReason::Corrupt { error },
            moved_to: Some(moved),
            old_head: Some(h),
        }] = s.findings()
        else {
            panic!("{tag}: {:?}", s.findings())
        };
        assert_eq!(*h, old);
        assert!(!error.is_empty());
        let name = moved.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("{DB_FILE}.corrupt-")),
            "{tag}: {name}"
        );
        assert_eq!(std::fs::read(moved).unwrap(), bytes, "{tag}: kept as found");
        assert_eq!(kinds(&s, 5), ["audit_chain_restarted"]);
        assert_eq!(s.verify(&key()).unwrap().intact(), Ok(1), "{tag}");
    }
}

/// A database as the plain SHA-256 build wrote it (no meta table, no head file).
fn legacy_db(dir: &Path, n: i64) {
    let c = Connection::open(dir.join(DB_FILE)).unwrap();
    c.execute_batch(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL,
         actor TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL,
         prev_hash BLOB NOT NULL, hash BLOB NOT NULL);",
    )
    .unwrap();
    let mut prev = vec![0u8; 32];
    for seq in 1..=n {
        let (ts, subject, detail) = (1_700_000_000_000 + seq, format!("m{seq}"), "{}");
        let h = plain(&encode(
            &prev,
            seq,
            ts,
            ["reply_sent", "session", &subject, detail],
        ));
        c.execute(
            "INSERT INTO audit VALUES (?1, ?2, 'reply_sent', 'session', ?3, ?4, ?5, ?6)",
            params![seq, ts, subject, detail, prev, h],
        )
        .unwrap();
        prev = h;
    }
}

#[test]
fn a_legacy_database_verifies_and_continues_keyed() {
    let d = TempDir::new("legacy");
    legacy_db(&d.0, 5);
    let v = AuditStore::verify_dir(&d.0, &key()).unwrap();
    assert_eq!(
        (v.rows, v.keyed_from, &v.head),
        (5, None, &HeadStatus::Missing)
    );
    assert!(v.is_intact());
    assert!(v.summary().contains("legacy SHA-256 chain, not keyed"));

    let mut s = AuditStore::open(&d.0, key()).unwrap();
    assert_eq!(s.findings(), [StartFinding::LegacyKeyed { legacy_rows: 5 }]);
    assert!(!s.findings()[0].is_alert());
    append(&mut s, 2);
    let v = s.verify(&key()).unwrap();
    assert_eq!((v.intact(), v.keyed_from), (Ok(8), Some(6)));
    assert_eq!(kinds(&s, 3), ["chain_keyed", "reply_sent", "reply_sent"]);
    assert_eq!(
        v.summary(),
        "audit chain intact: 8 rows (rows 1-5 legacy SHA-256, keyed from row 6)"
    );
    drop(s);
    let s = AuditStore::open(&d.0, key()).unwrap();
    assert!(s.findings().is_empty(), "{:?}", s.findings());

    // The legacy rows are covered by the first keyed row: rewriting them with plain SHA-256
    // breaks the chain there.
    let c = s.connection();
    c.execute_batch("DROP TRIGGER audit_no_update").unwrap();
    c.execute("UPDATE audit SET subject = 'forged' WHERE seq = 2", [])
        .unwrap();
    rechain(c, 2, plain);
    let b = s.verify(&key()).unwrap().broken.unwrap();
    assert_eq!(b.seq, 6);
}

#[test]
fn a_missing_head_file_is_reported_and_recorded() {
    let d = TempDir::new("nohead");
    drop(filled(&d.0, 5));
    std::fs::remove_file(d.0.join(HEAD_FILE)).unwrap();
    let v = AuditStore::verify_dir(&d.0, &key()).unwrap();
    assert_eq!((v.rows, &v.head), (5, &HeadStatus::Missing));
    assert!(!v.is_intact());
    assert!(v.problems()[0].contains("missing"));
    let s = AuditStore::open(&d.0, key()).unwrap();
    assert_eq!(s.findings(), [StartFinding::HeadMissing { last_seq: 5 }]);
    assert_eq!(kinds(&s, 1), ["audit_head_missing"]);
    assert_eq!(s.verify(&key()).unwrap().intact(), Ok(6));
}

#[test]
fn a_forged_head_is_rejected() {
    let d = TempDir::new("forged");
    let s = filled(&d.0, 4);
    let row3 = s.tail(2).unwrap().remove(0);
    drop(s);
    // Truncate to 3 rows and make the head say 3, without the key.
    let c = Connection::open(d.db()).unwrap();
    c.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 4")
        .unwrap();
    drop(c);
    let path = d.0.join(HEAD_FILE);
    let mut head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    head["seq"] = 3.into();
    head["hash"] = row3.hash.into();
    std::fs::write(&path, head.to_string()).unwrap();
    let v = AuditStore::verify_dir(&d.0, &key()).unwrap();
    assert!(
        matches!(&v.head, HeadStatus::Invalid { reason } if reason.contains("MAC")),
        "{:?}",
        v.head
    );
    assert!(!v.is_intact());
    let s = AuditStore::open(&d.0, key()).unwrap();
    assert!(matches!(s.findings(), [StartFinding::HeadInvalid { .. }]));
}

#[test]
fn a_head_behind_the_database_is_fine() {
    // The writer commits, then replaces the head: a reader (or a crash) in between sees the
    // database ahead of the head. The rows past it are keyed, so that is no break.
    let d = TempDir::new("behind");
    let mut s = filled(&d.0, 3);
    let old = std::fs::read(d.0.join(HEAD_FILE)).unwrap();
    append(&mut s, 2);
    std::fs::write(d.0.join(HEAD_FILE), old).unwrap();
    let v = s.verify(&key()).unwrap();
    assert_eq!(v.head, HeadStatus::Matches { newer_rows: 2 });
    assert_eq!(v.intact(), Ok(5));
    assert!(v.summary().contains("2 rows newer"));
    drop(s);
    assert!(AuditStore::open(&d.0, key()).unwrap().findings().is_empty());
}

#[test]
fn another_key_is_named_and_the_old_database_kept() {
    let d = TempDir::new("otherkey");
    drop(filled(&d.0, 5));
    let other = AuditKey::from_bytes([8; 32]);
    let v = AuditStore::verify_dir(&d.0, &other).unwrap();
    let b = v.broken.unwrap();
    assert_eq!(b.seq, 1);
    assert!(b.reason.contains(key().id()), "{}", b.reason);
    assert!(matches!(v.head, HeadStatus::Invalid { .. }));

    let s = AuditStore::open(&d.0, other.clone()).unwrap();
    let [StartFinding::ChainRestarted {
        reason: RestartReason::KeyChanged { db_key_id },
        moved_to: Some(moved),
        old_head: None,
    }] = s.findings()
    else {
        panic!("{:?}", s.findings())
    };
    assert_eq!(db_key_id, key().id());
    assert!(moved
        .to_string_lossy()
        .contains(&format!("{DB_FILE}.key-{}-", key().id())));
    assert_eq!(s.verify(&other).unwrap().intact(), Ok(1));
    // The old database still verifies with its own key.
    let kept = TempDir::new("otherkey-kept");
    std::fs::copy(moved, kept.db()).unwrap();
    let v = AuditStore::verify_dir(&kept.0, &key()).unwrap();
    assert_eq!((v.rows, v.broken), (5, None));
}

#[test]
fn the_key_file_is_made_private_and_reloaded() {
    let d = TempDir::new("keyfile");
    let path = AuditKey::default_path(&d.0);
    let e = AuditKey::load(&path).unwrap_err();
    assert!(
        matches!(&e, AuditError::Key { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e}"
    );
    assert!(!path.exists(), "load never creates");
    let k = AuditKey::load_or_create(&path).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(AuditKey::load_or_create(&path).unwrap().id(), k.id());
    assert_eq!(k.id().len(), 16);
    let hexed: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !format!("{k:?}").contains(&hexed[..16]),
        "Debug hides the key"
    );
    // A credential file in hex works too; anything else is refused.
    let cred = d.0.join("audit-key");
    std::fs::write(&cred, format!("{hexed}\n")).unwrap();
    assert_eq!(AuditKey::load(&cred).unwrap().id(), k.id());
    std::fs::write(&cred, "short").unwrap();
    assert!(AuditKey::load(&cred).is_err());
}

#[test]
fn verify_dir_without_a_database_or_head_is_an_error() {
    let d = TempDir::new("empty");
    assert!(matches!(
        AuditStore::verify_dir(&d.0, &key()),
        Err(AuditError::NoDatabase { .. })
    ));
    assert!(!d.db().exists(), "read-only verify creates nothing");
}
