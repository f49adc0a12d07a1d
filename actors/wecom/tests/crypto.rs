//! WXBizMsgCrypt against Tencent's official vectors, round trips and hostile input.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use wecom_edge_wecom::crypto::{self, EnvelopeKind, MsgCrypt};

fn vectors() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wxbizmsgcrypt-vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("vector field {k}"))
}

fn crypt(v: &serde_json::Value) -> MsgCrypt {
    MsgCrypt::new(s(v, "token"), s(v, "encoding_aes_key"), s(v, "receiveid")).unwrap()
}

#[test]
fn official_vectors_verify_and_decrypt() {
    for v in vectors() {
        let c = crypt(&v);
        let (ts, nonce, sig) = (s(&v, "timestamp"), s(&v, "nonce"), s(&v, "msg_signature"));
        assert_eq!(
            c.signature(ts, nonce, s(&v, "encrypt")),
            sig,
            "{}",
            s(&v, "name")
        );
        let plain = if let Some(body) = v["post_body"].as_str() {
            let d = c.decrypt_body(sig, ts, nonce, body.as_bytes()).unwrap();
            assert_eq!(d.envelope, EnvelopeKind::Xml);
            assert_eq!(d.receive_id, s(&v, "receiveid"));
            d.msg
        } else {
            c.verify_url(sig, ts, nonce, s(&v, "encrypt")).unwrap()
        };
        assert_eq!(
            String::from_utf8(plain.clone()).unwrap(),
            s(&v, "expected_plaintext")
        );
        assert_eq!(plain.len() as u64, v["msg_len"].as_u64().unwrap());

        // Re-encrypting with the vector's own random16 gives WeCom's exact ciphertext back,
        // which pins the framing, the 32-byte PKCS#7 (pad byte checked) and the IV.
        let r: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&s(&v, "random16_hex")[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let again = c.encrypt_with_random(&plain, r.try_into().unwrap());
        assert_eq!(again, s(&v, "encrypt"), "{}", s(&v, "name"));
        let pad = 32 - (20 + plain.len() + s(&v, "receiveid").len()) % 32;
        assert_eq!(pad as u64, v["pad"].as_u64().unwrap());
    }
}

#[test]
fn wrong_token_key_and_receiveid_each_have_their_code() {
    let v = &vectors()[1];
    let (ts, nonce, sig, body) = (
        s(v, "timestamp"),
        s(v, "nonce"),
        s(v, "msg_signature"),
        s(v, "post_body"),
    );
    let key = s(v, "encoding_aes_key");
    let wrong_token = MsgCrypt::new("QDG6eL", key, s(v, "receiveid")).unwrap();
    assert_eq!(
        wrong_token
            .decrypt_body(sig, ts, nonce, body.as_bytes())
            .unwrap_err()
            .code(),
        -40001
    );

    let other_key = crypto::random_encoding_aes_key();
    let wrong_key = MsgCrypt::new(s(v, "token"), &other_key, s(v, "receiveid")).unwrap();
    let e = wrong_key
        .decrypt_body(sig, ts, nonce, body.as_bytes())
        .unwrap_err();
    assert!(matches!(e.code(), -40007 | -40008), "{e}");

    let wrong_rid = MsgCrypt::new(s(v, "token"), key, "ww0000000000000000").unwrap();
    let e = wrong_rid
        .decrypt_body(sig, ts, nonce, body.as_bytes())
        .unwrap_err();
    assert_eq!(e.code(), -40005);
    assert!(e.to_string().contains("wx5823bf96d3bd56c7"), "{e}");

    // An AI bot's crypt (receiveid "") accepts any receiveid, as Tencent's JSON library does.
    let bot = MsgCrypt::new(s(v, "token"), key, "").unwrap();
    assert!(bot.decrypt_body(sig, ts, nonce, body.as_bytes()).is_ok());
}

#[test]
fn json_envelopes_in_both_spellings_and_replies() {
    let c = MsgCrypt::new("tok", &crypto::random_encoding_aes_key(), "").unwrap();
    let msg = br#"{"msgid":"m1","msgtype":"text","text":{"content":"@bot hi"}}"#;
    let enc = c.encrypt(msg);
    for body in [
        format!(r#"{{"encrypt":"{enc}"}}"#),
        format!(r#"{{"ToUserName":"x","Encrypt":"{enc}","AgentID":218}}"#),
        format!(r#"  {{"tousername":"","encrypt":"{enc}","agentid":""}}"#),
    ] {
        let sig = c.signature("1700000000", "n1", &enc);
        let d = c
            .decrypt_body(&sig, "1700000000", "n1", body.as_bytes())
            .unwrap();
        assert_eq!(d.msg, msg);
        assert_eq!(d.envelope, EnvelopeKind::Json);
    }

    let reply: serde_json::Value = serde_json::from_str(&c.encrypt_json_reply(
        b"{\"msgtype\":\"stream\"}",
        "1700000000",
        "n2",
    ))
    .unwrap();
    assert_eq!(reply["timestamp"], 1700000000);
    let enc = reply["encrypt"].as_str().unwrap();
    let sig = reply["msgsignature"].as_str().unwrap();
    assert_eq!(
        c.verify_url(sig, "1700000000", "n2", enc).unwrap(),
        b"{\"msgtype\":\"stream\"}"
    );

    let app = MsgCrypt::new("tok", &crypto::random_encoding_aes_key(), "ww1").unwrap();
    let x = app.encrypt_xml_reply(
        b"<xml><Content><![CDATA[hi]]></Content></xml>",
        "17",
        "n]]>3",
    );
    assert!(x.contains("<TimeStamp>17</TimeStamp>"), "{x}");
    let f = wecom_edge_wecom::xml::parse_flat(x.as_bytes()).unwrap();
    assert_eq!(f["Nonce"], "n]]>3");
    app.verify_url(&f["MsgSignature"], "17", "n]]>3", &f["Encrypt"])
        .unwrap();
}

#[test]
fn malformed_input_gets_its_code() {
    let c = MsgCrypt::new("tok", &crypto::encode_encoding_aes_key(&TEST_KEY), "ww1").unwrap();
    let sig = |e: &str| c.signature("1", "2", e);
    let code = |e: &str| c.verify_url(&sig(e), "1", "2", e).unwrap_err().code();
    assert_eq!(code("not base64!"), -40010);
    assert_eq!(code(""), -40007); // empty ciphertext
    assert_eq!(code(&STANDARD.encode([0u8; 15])), -40007); // not whole blocks
                                                           // Valid AES blocks whose plaintext has a bad pad byte.
    let mut bad = Vec::new();
    for pad in [0u8, 33, 200] {
        bad.push(raw_encrypt(&[[7u8; 31].as_slice(), &[pad]].concat()));
    }
    for b in &bad {
        assert_eq!(code(b), -40007, "bad pad");
    }
    // Pad bytes that disagree with each other.
    let mut p = vec![1u8; 32];
    p[30] = 2;
    p[31] = 3;
    assert_eq!(code(&raw_encrypt(&p)), -40007);
    // Short buffer: 32 bytes minus a 16-byte pad leaves 16 < 20.
    assert_eq!(
        code(&raw_encrypt(&[[0u8; 16].as_slice(), &[16u8; 16]].concat())),
        -40008
    );
    // Length field past the end.
    let mut p = vec![0u8; 64];
    p[16..20].copy_from_slice(&1000u32.to_be_bytes());
    p[32..].fill(32);
    assert_eq!(code(&raw_encrypt(&p)), -40008);
    // Oversized.
    let huge = "A".repeat(crypto::MAX_ENCRYPT_LEN + 4);
    assert_eq!(code(&huge), -40008);
    let big_body = format!(r#"{{"encrypt":"{huge}"}}"#);
    assert_eq!(
        c.decrypt_body("x", "1", "2", big_body.as_bytes())
            .unwrap_err()
            .code(),
        -40008
    );
    // Envelopes.
    for body in [
        &b"<xml><a>1</a></xml>"[..],
        b"{\"x\":1}",
        b"hello",
        b"{\"encrypt\":5}",
        b"<xml><Encrypt>",
    ] {
        assert_eq!(
            c.decrypt_body("x", "1", "2", body).unwrap_err().code(),
            -40002,
            "{body:?}"
        );
    }
    let bomb = br#"<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><xml><Encrypt>&b;</Encrypt></xml>"#;
    assert_eq!(
        c.decrypt_body("x", "1", "2", bomb).unwrap_err().code(),
        -40002
    );
}

const TEST_KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";

/// AES-256-CBC with [`TEST_KEY`] over already-padded bytes (to build bad plaintexts).
fn raw_encrypt(plain: &[u8]) -> String {
    aes_cbc(&TEST_KEY, plain)
}

fn aes_cbc(key: &[u8; 32], plain: &[u8]) -> String {
    use aes::Aes256;
    use cbc::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
    let mut buf = plain.to_vec();
    let len = buf.len();
    cbc::Encryptor::<Aes256>::new(key.into(), key[..16].into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .unwrap();
    STANDARD.encode(buf)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encrypt_decrypt_round_trips(
        msg in proptest::collection::vec(any::<u8>(), 0..600),
        random16 in any::<[u8; 16]>(),
        ek in "[A-Za-z0-9]{43}",
        rid in "[a-z0-9]{0,20}",
        token in "[A-Za-z0-9]{1,32}",
        ts in "[0-9]{1,10}",
        nonce in "[0-9a-z]{1,12}",
    ) {
        let c = MsgCrypt::new(&token, &ek, &rid).unwrap();
        let enc = c.encrypt_with_random(&msg, random16);
        let sig = c.signature(&ts, &nonce, &enc);
        prop_assert_eq!(c.verify_url(&sig, &ts, &nonce, &enc).unwrap(), msg.clone());
        let body = format!("<xml><ToUserName><![CDATA[{rid}]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>");
        prop_assert_eq!(c.decrypt_body(&sig, &ts, &nonce, body.as_bytes()).unwrap().msg, msg);
    }

    #[test]
    fn arbitrary_input_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400), enc in "[A-Za-z0-9+/=]{0,200}") {
        let c = MsgCrypt::new("tok", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "ww1").unwrap();
        let _ = c.decrypt_body("sig", "1", "2", &body);
        let _ = c.decrypt(&enc);
        let _ = wecom_edge_wecom::xml::parse_flat(&body);
    }

    #[test]
    fn any_plaintext_under_the_right_key_decrypts_or_errs(plain in proptest::collection::vec(any::<u8>(), 1..8usize).prop_map(|v| v.repeat(16))) {
        let c = MsgCrypt::new("tok", &crypto::encode_encoding_aes_key(&TEST_KEY), "").unwrap();
        let _ = c.decrypt(&raw_encrypt(&plain));
    }
}
