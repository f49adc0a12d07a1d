//! What the console's Audit and Conversations pages read: rows by kind (exact or a prefix,
//! `_` and `%` literal) and time, newest first and limited; the kinds present; messages per
//! channel since a time.

mod common;

use common::{key, TempDir};
use serde_json::json;
use wecom_edge_audit::AuditStore;

#[test]
fn rows_by_kind_prefix_and_time_newest_first() {
    let d = TempDir::new("query");
    let mut s = AuditStore::open(&d.0, key()).unwrap();
    for kind in [
        "console_login",
        "reply_sent",
        "console_logout",
        "consolex",
        "console_login",
    ] {
        s.append(kind, "t", "", &json!({})).unwrap();
    }
    let seqs = |kind: Option<&str>, limit: Option<usize>| -> Vec<(i64, String)> {
        s.query(kind, None, None, limit)
            .unwrap()
            .into_iter()
            .filter(|r| r.actor == "t")
            .map(|r| (r.seq, r.kind))
            .collect()
    };
    let all = seqs(None, None);
    assert_eq!(all.len(), 5);
    assert!(
        all.windows(2).all(|w| w[0].0 > w[1].0),
        "newest first: {all:?}"
    );
    let logins = seqs(Some("console_login"), None);
    assert_eq!(logins.len(), 2);
    let console: Vec<String> = seqs(Some("console_*"), None)
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        console,
        ["console_login", "console_logout", "console_login"]
    );
    // `_` is not a wildcard: "console_*" does not match "consolex".
    assert!(!console.contains(&"consolex".to_string()));
    assert_eq!(seqs(Some("console%"), None), []);
    assert_eq!(seqs(None, Some(2)).len(), 2);

    let newest = s.tail(1).unwrap().remove(0);
    let after = s.query(None, Some(newest.ts_ms + 1), None, None).unwrap();
    assert!(after.is_empty());
    let before = s.query(None, None, Some(newest.ts_ms + 1), None).unwrap();
    assert_eq!(before[0].seq, newest.seq);
    let kinds = s.kinds().unwrap();
    for k in ["console_login", "console_logout", "consolex", "reply_sent"] {
        assert!(kinds.contains(&k.to_string()), "{kinds:?}");
    }
    assert!(kinds.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn messages_are_counted_per_channel_and_conversation() {
    let d = TempDir::new("inbound");
    let mut s = AuditStore::open(&d.0, key()).unwrap();
    for (channel, msgid, conv) in [
        ("aibot/bot-1", "m1", "aibot/bot-1/zhangsan"),
        ("aibot/bot-1", "m2", "aibot/bot-1/zhangsan"),
        ("aibot/bot-1", "m3", "aibot/bot-1/lisi"),
        ("aibot/bot-1", "m3", "aibot/bot-1/lisi"), // a duplicate: not a message
        ("app/1000002", "m4", "app/1000002/wangwu"),
    ] {
        s.accept_inbound(channel, msgid, conv, &json!({})).unwrap();
    }
    assert_eq!(
        s.inbound_counts(0).unwrap(),
        [
            ("aibot/bot-1".to_string(), 3, 2),
            ("app/1000002".to_string(), 1, 1)
        ]
    );
    assert_eq!(s.inbound_counts(i64::MAX).unwrap(), []);
}
