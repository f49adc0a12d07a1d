//! Fuzzes the callback path an attacker reaches first: envelope extraction, signature check,
//! base64, AES-CBC, PKCS#7 and framing, then the XML/JSON parse of the plaintext. The same input
//! is also encrypted under the fuzz key so the post-decryption parsers see arbitrary plaintext.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wecom_edge_wecom::aibot::Callback;
use wecom_edge_wecom::callback::AppMessage;
use wecom_edge_wecom::crypto::MsgCrypt;

const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

fuzz_target!(|data: &[u8]| {
    let c = MsgCrypt::new("QDG6eK", KEY, "wx5823bf96d3bd56c7").unwrap();
    // Attacker-controlled body with a signature that happens to match (skip the SHA-1 gate).
    if let Ok((enc, _)) = wecom_edge_wecom::crypto::extract_encrypt(data) {
        let sig = c.signature("1", "2", &enc);
        if let Ok(d) = c.decrypt_body(&sig, "1", "2", data) {
            let _ = AppMessage::parse(&d.msg);
            let _ = serde_json::from_slice::<Callback>(&d.msg);
        }
    }
    // Arbitrary plaintext through encrypt → decrypt → parse.
    let enc = c.encrypt(data);
    let plain = c.decrypt(&enc).expect("round trip");
    assert_eq!(plain, data);
    let _ = AppMessage::parse(&plain);
    let _ = serde_json::from_slice::<Callback>(&plain);
});
