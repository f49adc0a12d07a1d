//! WXBizMsgCrypt: the signature and AES scheme WeCom wraps every callback in.
//!
//! Source: WeCom 加解密方案说明 (developer.work.weixin.qq.com/document/path/91144), 回调配置
//! (/document/path/96238), 智能机器人 加解密 (/document/path/101033); error codes from Tencent's
//! official samples (`ierror.py` in sbzhu/weworkapi_python).
//!
//! * `msg_signature = hex(SHA1(concat(sort([token, timestamp, nonce, encrypt]))))`
//! * `encrypt = Base64(AES-256-CBC(key, iv = key[..16], PKCS#7₃₂(random16 ‖ len_be32 ‖ msg ‖ receiveid)))`
//! * `key = Base64Decode(EncodingAESKey + "=")`, 32 bytes.
//!
//! The receiveid is the CorpID for self-built apps and `""` for AI bots (智能机器人).

use std::fmt;

use aes::Aes256;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::xml;

/// Largest base64 `Encrypt` value accepted (bytes). WeCom's own callbacks are far smaller
/// (AI-bot text ≤ a few KiB); anything bigger is rejected as [`CryptError::IllegalBuffer`]
/// before any work is done on it.
pub const MAX_ENCRYPT_LEN: usize = 1 << 20;

/// PKCS#7 block size WeCom pads to (32 bytes, not AES's 16).
const PAD_BLOCK: usize = 32;

/// A WXBizMsgCrypt failure, carrying Tencent's error code ([`CryptError::code`]).
///
/// Codes from the official samples' `ierror.py`: −40001 ValidateSignature_Error …
/// −40011 GenReturnXml_Error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// −40001: `msg_signature` does not match SHA1 over (token, timestamp, nonce, encrypt).
    /// Usually a wrong Token (or a value altered on the way).
    #[error("signature mismatch (-40001): msg_signature does not match the token, timestamp, nonce and encrypt")]
    ValidateSignature,
    /// −40002: the XML or JSON envelope (or decrypted message) could not be parsed.
    #[error("cannot parse the message (-40002): {0}")]
    Parse(String),
    /// −40003: the signature could not be computed (a field is missing).
    #[error("cannot compute the signature (-40003): {0}")]
    ComputeSignature(String),
    /// −40004: the EncodingAESKey is not 43 base64 characters decoding to 32 bytes.
    #[error("illegal EncodingAESKey (-40004): {0}")]
    IllegalAesKey(String),
    /// −40005: the receiveid inside the message is not the configured one.
    #[error("receiveid mismatch (-40005): the message is for {found:?}, configured receiveid is {expected:?}")]
    ValidateReceiveId {
        /// The configured receiveid (CorpID for apps, "" for AI bots).
        expected: String,
        /// The receiveid found at the end of the decrypted buffer.
        found: String,
    },
    /// −40006: encryption failed.
    #[error("AES encryption failed (-40006)")]
    EncryptAes,
    /// −40007: the ciphertext is not a whole number of AES blocks, or the PKCS#7 padding is
    /// invalid after decryption — with a valid signature this means a wrong EncodingAESKey.
    #[error("AES decryption failed (-40007): {0}")]
    DecryptAes(&'static str),
    /// −40008: the decrypted buffer is too short or its length field points past its end, or
    /// the input is over [`MAX_ENCRYPT_LEN`].
    #[error("illegal buffer (-40008): {0}")]
    IllegalBuffer(&'static str),
    /// −40009: base64 encoding failed.
    #[error("base64 encoding failed (-40009)")]
    EncodeBase64,
    /// −40010: the `Encrypt`/`echostr` value is not valid base64.
    #[error("base64 decoding failed (-40010): {0}")]
    DecodeBase64(String),
    /// −40011: the reply envelope could not be generated.
    #[error("cannot generate the reply (-40011): {0}")]
    GenReturnXml(String),
}

impl CryptError {
    /// Tencent's numeric error code (−40001 … −40011).
    pub fn code(&self) -> i32 {
        match self {
            CryptError::ValidateSignature => -40001,
            CryptError::Parse(_) => -40002,
            CryptError::ComputeSignature(_) => -40003,
            CryptError::IllegalAesKey(_) => -40004,
            CryptError::ValidateReceiveId { .. } => -40005,
            CryptError::EncryptAes => -40006,
            CryptError::DecryptAes(_) => -40007,
            CryptError::IllegalBuffer(_) => -40008,
            CryptError::EncodeBase64 => -40009,
            CryptError::DecodeBase64(_) => -40010,
            CryptError::GenReturnXml(_) => -40011,
        }
    }
}

/// Base64 engine for EncodingAESKey: the official keys have non-zero trailing bits in their 43rd
/// character (43 × 6 = 258 bits, 256 used), which Python/Go/Java/Node ignore; padding optional.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes an EncodingAESKey (43 characters of `[A-Za-z0-9]`, as the admin console issues it)
/// into the 32-byte AES-256 key.
///
/// # Errors
/// [`CryptError::IllegalAesKey`] naming what is wrong (length, character, decoded size).
pub fn decode_encoding_aes_key(encoding_aes_key: &str) -> Result<[u8; 32], CryptError> {
    let k = encoding_aes_key.trim();
    if k.len() != 43 {
        return Err(CryptError::IllegalAesKey(format!(
            "EncodingAESKey must be 43 characters, got {}",
            k.chars().count()
        )));
    }
    if let Some(c) = k.chars().find(|c| !c.is_ascii_alphanumeric()) {
        return Err(CryptError::IllegalAesKey(format!(
            "EncodingAESKey may hold only letters and digits, found {c:?}"
        )));
    }
    let bytes = KEY_ENGINE
        .decode(k)
        .map_err(|e| CryptError::IllegalAesKey(e.to_string()))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        CryptError::IllegalAesKey(format!("decodes to {} bytes, not 32", b.len()))
    })
}

/// Encodes a 32-byte key as an EncodingAESKey (43 characters, canonical zero trailing bits).
/// Raw keys with `+` or `/` in their base64 cannot be expressed (WeCom's rule is letters and
/// digits only); [`random_encoding_aes_key`] draws keys that can.
pub fn encode_encoding_aes_key(key: &[u8; 32]) -> String {
    let mut s = STANDARD.encode(key);
    s.pop(); // the single '=' of 32 bytes → 44 chars
    s
}

/// A fresh random EncodingAESKey of 43 letters and digits, as the admin console generates.
pub fn random_encoding_aes_key() -> String {
    use rand::Rng;
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..43)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

/// A fresh callback nonce: 10 random decimal digits (WeCom's look like `1372623149`).
pub fn random_nonce() -> String {
    use rand::Rng;
    rand::rng()
        .random_range(1_000_000_000u64..10_000_000_000)
        .to_string()
}

/// `msg_signature`: lowercase hex SHA-1 over the four strings sorted bytewise and concatenated.
/// `timestamp` and `nonce` are used exactly as they appear in the URL query (not reformatted).
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut h = Sha1::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex(&h.finalize())
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Where a callback's `Encrypt` value came from, for [`MsgCrypt::decrypt_body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// `<xml><ToUserName/><AgentID/><Encrypt/></xml>` (self-built apps).
    Xml,
    /// `{"encrypt": "…"}` (AI bots; `Encrypt`, `tousername`, `agentid` also accepted).
    Json,
}

/// A decrypted callback: the message bytes and the envelope it arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The plaintext message (XML for apps, JSON for AI bots), exactly as WeCom encrypted it.
    pub msg: Vec<u8>,
    /// The receiveid that trailed the message.
    pub receive_id: String,
    /// Which envelope carried it.
    pub envelope: EnvelopeKind,
}

/// One callback endpoint's WXBizMsgCrypt: Token, AES key and receiveid.
///
/// `Debug` shows the receiveid only; the Token and key never reach logs.
#[derive(Clone)]
pub struct MsgCrypt {
    token: String,
    key: [u8; 32],
    receive_id: String,
}

impl fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("receive_id", &self.receive_id)
            .finish_non_exhaustive()
    }
}

impl MsgCrypt {
    /// Builds the crypt for one endpoint.
    ///
    /// * `token` — the callback Token (letters/digits, ≤ 32 chars; not checked beyond non-empty).
    /// * `encoding_aes_key` — the 43-character EncodingAESKey (decoded leniently, see
    ///   [`decode_encoding_aes_key`]).
    /// * `receive_id` — CorpID for self-built apps, `""` for AI bots.
    ///
    /// # Errors
    /// [`CryptError::IllegalAesKey`]; [`CryptError::ComputeSignature`] for an empty token.
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<Self, CryptError> {
        if token.is_empty() {
            return Err(CryptError::ComputeSignature("the Token is empty".into()));
        }
        Ok(MsgCrypt {
            token: token.to_string(),
            key: decode_encoding_aes_key(encoding_aes_key)?,
            receive_id: receive_id.to_string(),
        })
    }

    /// The configured receiveid.
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// This endpoint's `msg_signature` over (Token, timestamp, nonce, encrypt).
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        signature(&self.token, timestamp, nonce, encrypt)
    }

    /// Checks `msg_signature` in constant time (case-insensitive hex).
    ///
    /// # Errors
    /// [`CryptError::ValidateSignature`].
    pub fn verify_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<(), CryptError> {
        let expected = self.signature(timestamp, nonce, encrypt);
        let given = msg_signature.trim().to_ascii_lowercase();
        if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            Ok(())
        } else {
            Err(CryptError::ValidateSignature)
        }
    }

    /// URL verification (the GET a callback URL receives when it is saved): checks the
    /// signature over `echostr` and returns the plaintext to answer with — HTTP 200, that body
    /// only, within 1 s (/document/path/96238 §3.1).
    ///
    /// # Errors
    /// As [`MsgCrypt::verify_signature`] and [`MsgCrypt::decrypt`].
    pub fn verify_url(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        echostr: &str,
    ) -> Result<Vec<u8>, CryptError> {
        self.verify_signature(msg_signature, timestamp, nonce, echostr)?;
        self.decrypt(echostr)
    }

    /// Verifies and decrypts a callback POST body, XML or JSON envelope (told apart by its first
    /// non-space byte).
    ///
    /// # Errors
    /// [`CryptError::Parse`] for an envelope without `Encrypt`, then as
    /// [`MsgCrypt::verify_signature`] and [`MsgCrypt::decrypt`].
    pub fn decrypt_body(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
    ) -> Result<Decrypted, CryptError> {
        let (encrypt, envelope) = extract_encrypt(body)?;
        if encrypt.len() > MAX_ENCRYPT_LEN {
            return Err(CryptError::IllegalBuffer("encrypted value is over 1 MiB"));
        }
        self.verify_signature(msg_signature, timestamp, nonce, &encrypt)?;
        let (msg, receive_id) = self.decrypt_any_receiver(&encrypt)?;
        self.check_receive_id(&receive_id)?;
        Ok(Decrypted {
            msg,
            receive_id,
            envelope,
        })
    }

    /// Decrypts one base64 `Encrypt`/`echostr` value and checks its receiveid (no signature).
    ///
    /// # Errors
    /// [`CryptError::IllegalBuffer`] (oversized, or length field past the end),
    /// [`CryptError::DecodeBase64`], [`CryptError::DecryptAes`] (bad block length or padding —
    /// usually a wrong key), [`CryptError::ValidateReceiveId`].
    pub fn decrypt(&self, encrypt: &str) -> Result<Vec<u8>, CryptError> {
        let (msg, receive_id) = self.decrypt_any_receiver(encrypt)?;
        self.check_receive_id(&receive_id)?;
        Ok(msg)
    }

    fn check_receive_id(&self, found: &str) -> Result<(), CryptError> {
        // Like Tencent's JSON library and the AI-bot SDK, an empty configured receiveid accepts
        // any (AI bots send ""; a misconfigured app CorpID shows up in diagnostics instead).
        if self.receive_id.is_empty() || found == self.receive_id {
            Ok(())
        } else {
            Err(CryptError::ValidateReceiveId {
                expected: self.receive_id.clone(),
                found: found.to_string(),
            })
        }
    }

    /// Decrypts without checking the receiveid: `(msg, receiveid)`. For diagnostics, which want
    /// to say which receiveid a message carried.
    ///
    /// # Errors
    /// As [`MsgCrypt::decrypt`], less the receiveid check.
    pub fn decrypt_any_receiver(&self, encrypt: &str) -> Result<(Vec<u8>, String), CryptError> {
        let encrypt = encrypt.trim();
        if encrypt.len() > MAX_ENCRYPT_LEN {
            return Err(CryptError::IllegalBuffer("encrypted value is over 1 MiB"));
        }
        let mut buf = STANDARD
            .decode(encrypt)
            .map_err(|e| CryptError::DecodeBase64(e.to_string()))?;
        if buf.is_empty() || buf.len() % 16 != 0 {
            return Err(CryptError::DecryptAes(
                "ciphertext is not a whole number of 16-byte AES blocks",
            ));
        }
        let iv: [u8; 16] = self.key[..16].try_into().expect("32-byte key");
        cbc::Decryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| CryptError::DecryptAes("block decryption failed"))?;
        let pad = *buf.last().expect("non-empty") as usize;
        if pad == 0 || pad > PAD_BLOCK || pad > buf.len() {
            return Err(CryptError::DecryptAes(
                "invalid PKCS#7 padding (wrong EncodingAESKey?)",
            ));
        }
        if buf[buf.len() - pad..].iter().any(|&b| b as usize != pad) {
            return Err(CryptError::DecryptAes(
                "invalid PKCS#7 padding (wrong EncodingAESKey?)",
            ));
        }
        buf.truncate(buf.len() - pad);
        if buf.len() < 20 {
            return Err(CryptError::IllegalBuffer(
                "decrypted buffer shorter than 20 bytes",
            ));
        }
        let msg_len = u32::from_be_bytes(buf[16..20].try_into().expect("4 bytes")) as usize;
        if msg_len > buf.len() - 20 {
            return Err(CryptError::IllegalBuffer(
                "message length field points past the end of the buffer",
            ));
        }
        let receive_id = String::from_utf8_lossy(&buf[20 + msg_len..]).into_owned();
        buf.truncate(20 + msg_len);
        buf.drain(..20);
        Ok((buf, receive_id))
    }

    /// Encrypts `msg` with a fresh random16 (any bytes, from the OS-seeded CSPRNG) and this
    /// endpoint's receiveid; returns the base64 `Encrypt` value.
    pub fn encrypt(&self, msg: &[u8]) -> String {
        self.encrypt_with_random(msg, rand::random())
    }

    /// [`MsgCrypt::encrypt`] with a given random16 (for test vectors).
    pub fn encrypt_with_random(&self, msg: &[u8], random16: [u8; 16]) -> String {
        self.encrypt_for(msg, random16, &self.receive_id)
    }

    /// Encrypts for an explicit receiveid (the simulator and diagnostics use it).
    pub fn encrypt_for(&self, msg: &[u8], random16: [u8; 16], receive_id: &str) -> String {
        let mut plain = Vec::with_capacity(20 + msg.len() + receive_id.len() + PAD_BLOCK);
        plain.extend_from_slice(&random16);
        plain.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        plain.extend_from_slice(msg);
        plain.extend_from_slice(receive_id.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.resize(plain.len() + pad, pad as u8);
        let iv: [u8; 16] = self.key[..16].try_into().expect("32-byte key");
        let len = plain.len();
        cbc::Encryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, len)
            .expect("length is a multiple of the block size");
        STANDARD.encode(plain)
    }

    /// The encrypted passive reply in Tencent's XML template (`<Encrypt>`, `<MsgSignature>`,
    /// `<TimeStamp>`, `<Nonce>`), signed over (Token, timestamp, nonce, encrypt).
    /// Use the request's timestamp and nonce.
    pub fn encrypt_xml_reply(&self, msg: &[u8], timestamp: &str, nonce: &str) -> String {
        let encrypt = self.encrypt(msg);
        let sig = self.signature(timestamp, nonce, &encrypt);
        format!(
            "<xml>\n<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n<MsgSignature><![CDATA[{sig}]]></MsgSignature>\n<TimeStamp>{}</TimeStamp>\n<Nonce><![CDATA[{}]]></Nonce>\n</xml>",
            xml::escape_text(timestamp),
            xml::escape_cdata(nonce)
        )
    }

    /// The encrypted passive reply as JSON: `{"encrypt","msgsignature","timestamp","nonce"}`
    /// (key `msgsignature`, no underscore; timestamp numeric when it parses as one) — the AI-bot
    /// form (/document/path/101033).
    pub fn encrypt_json_reply(&self, msg: &[u8], timestamp: &str, nonce: &str) -> String {
        let encrypt = self.encrypt(msg);
        let sig = self.signature(timestamp, nonce, &encrypt);
        let ts = match timestamp.parse::<u64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::from(timestamp),
        };
        serde_json::json!({"encrypt": encrypt, "msgsignature": sig, "timestamp": ts, "nonce": nonce})
            .to_string()
    }
}

/// Takes the `Encrypt` value out of an XML or JSON callback envelope.
///
/// # Errors
/// [`CryptError::Parse`] when the body is neither, or has no `Encrypt`/`encrypt`;
/// [`CryptError::IllegalBuffer`] when it is over [`MAX_ENCRYPT_LEN`] + 4 KiB.
pub fn extract_encrypt(body: &[u8]) -> Result<(String, EnvelopeKind), CryptError> {
    if body.len() > MAX_ENCRYPT_LEN + 4096 {
        return Err(CryptError::IllegalBuffer("callback body is over 1 MiB"));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'<') => {
            let fields = xml::parse_flat(body).map_err(|e| CryptError::Parse(e.to_string()))?;
            let enc = fields
                .get("Encrypt")
                .ok_or_else(|| CryptError::Parse("XML envelope has no <Encrypt>".into()))?;
            Ok((enc.clone(), EnvelopeKind::Xml))
        }
        Some(b'{') => {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
                .map_err(|e| CryptError::Parse(format!("JSON envelope: {e}")))?;
            let enc = v
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("encrypt"))
                .and_then(|(_, v)| v.as_str())
                .ok_or_else(|| {
                    CryptError::Parse("JSON envelope has no \"encrypt\" string".into())
                })?;
            Ok((enc.to_string(), EnvelopeKind::Json))
        }
        _ => Err(CryptError::Parse(
            "callback body is neither an XML nor a JSON envelope".into(),
        )),
    }
}

/// A failed decryption explained for an admin: the error (with its code) and, where it can be
/// known, which setting is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The first error, as the callback endpoint would report it.
    pub error: CryptError,
    /// What to fix.
    pub hint: String,
}

/// Verifies and decrypts like a callback endpoint, and on failure tells a wrong Token from a
/// wrong EncodingAESKey from a wrong receiveid: the signature does not involve the key, and
/// a wrong key almost never yields valid 32-byte PKCS#7 padding and a consistent length field,
/// so the two checks separate the three settings.
///
/// # Errors
/// A [`Diagnosis`].
pub fn diagnose(
    token: &str,
    encoding_aes_key: &str,
    receive_id: &str,
    msg_signature: &str,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
) -> Result<Vec<u8>, Diagnosis> {
    let fail = |error: CryptError, hint: &str| Diagnosis {
        error,
        hint: hint.to_string(),
    };
    let c = MsgCrypt::new(token, encoding_aes_key, receive_id).map_err(|e| {
        fail(
            e,
            "copy the Token and the 43-character EncodingAESKey from the callback settings page",
        )
    })?;
    let sig_ok = c
        .verify_signature(msg_signature, timestamp, nonce, encrypt)
        .is_ok();
    let url_hint = if encrypt.contains(' ') {
        " The encrypted value contains a space: it was probably URL-decoded twice ('+' became ' ')."
    } else {
        ""
    };
    match (sig_ok, c.decrypt_any_receiver(encrypt)) {
        (true, Ok((msg, found))) => {
            c.check_receive_id(&found).map_err(|e| {
                fail(
                    e,
                    &format!(
                        "Token and EncodingAESKey are right; the message carries receiveid {found:?}: \
                         use the CorpID for a self-built app, \"\" for an AI bot"
                    ),
                )
            })?;
            Ok(msg)
        }
        (false, Ok(_)) => Err(fail(
            CryptError::ValidateSignature,
            &format!(
                "the EncodingAESKey decrypts the message, so the Token is wrong (or msg_signature, \
                 timestamp or nonce were not copied exactly as they appear in the URL).{url_hint}"
            ),
        )),
        (true, Err(e)) => Err(fail(
            e,
            &format!(
                "the signature matches, so the Token is right, but the EncodingAESKey does not \
                 decrypt the message: the EncodingAESKey is wrong.{url_hint}"
            ),
        )),
        (false, Err(_)) => Err(fail(
            CryptError::ValidateSignature,
            &format!(
                "neither the signature nor the decryption works: check the Token and the \
                 EncodingAESKey, and that the values are the URL-decoded ones.{url_hint}"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_with_trailing_bits_decodes_and_canonical_round_trips() {
        // The official sample key: its 43rd char carries non-zero trailing bits.
        let k = decode_encoding_aes_key("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C").unwrap();
        assert!(STANDARD
            .decode("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C=")
            .is_err());
        let canon = encode_encoding_aes_key(&k);
        assert_eq!(canon.len(), 43);
        assert_eq!(decode_encoding_aes_key(&canon).unwrap(), k);
        for bad in [
            "",
            "abc",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C=",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2",
        ] {
            assert_eq!(
                decode_encoding_aes_key(bad).unwrap_err().code(),
                -40004,
                "{bad}"
            );
        }
        let e = decode_encoding_aes_key("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B+C").unwrap_err();
        assert!(e.to_string().contains("letters and digits"), "{e}");
        assert_eq!(random_encoding_aes_key().len(), 43);
        assert_ne!(random_encoding_aes_key(), random_encoding_aes_key());
        decode_encoding_aes_key(&random_encoding_aes_key()).unwrap();
    }

    #[test]
    fn pkcs7_to_32_bytes() {
        let c = MsgCrypt::new("t", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "").unwrap();
        // 20 bytes of framing + 12 of msg = 32 → a whole extra block of 32 × 0x20.
        let enc = c.encrypt_with_random(&[b'x'; 12], [0; 16]);
        assert_eq!(STANDARD.decode(&enc).unwrap().len(), 64);
        let enc = c.encrypt_with_random(&[b'x'; 11], [0; 16]);
        assert_eq!(STANDARD.decode(&enc).unwrap().len(), 32);
        assert_eq!(c.decrypt(&enc).unwrap(), vec![b'x'; 11]);
    }

    #[test]
    fn signature_compare_is_case_insensitive_and_exact() {
        let c = MsgCrypt::new("QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "").unwrap();
        let s = c.signature("1", "2", "3");
        c.verify_signature(&s.to_uppercase(), "1", "2", "3")
            .unwrap();
        assert_eq!(
            c.verify_signature(&s[..39], "1", "2", "3")
                .unwrap_err()
                .code(),
            -40001
        );
        assert_eq!(
            c.verify_signature(&s, "1", "2", "4").unwrap_err().code(),
            -40001
        );
    }
}

#[cfg(test)]
mod diagnose_tests {
    use super::*;

    #[test]
    fn tells_token_key_and_receiveid_apart() {
        let key = random_encoding_aes_key();
        let c = MsgCrypt::new("goodtoken", &key, "ww42").unwrap();
        let enc = c.encrypt(b"hello");
        let sig = c.signature("1", "2", &enc);
        assert_eq!(
            diagnose("goodtoken", &key, "ww42", &sig, "1", "2", &enc).unwrap(),
            b"hello"
        );
        let d = diagnose("badtoken", &key, "ww42", &sig, "1", "2", &enc).unwrap_err();
        assert_eq!(d.error.code(), -40001);
        assert!(d.hint.contains("Token is wrong"), "{}", d.hint);
        let d = diagnose(
            "goodtoken",
            &random_encoding_aes_key(),
            "ww42",
            &sig,
            "1",
            "2",
            &enc,
        )
        .unwrap_err();
        assert!(d.hint.contains("EncodingAESKey is wrong"), "{}", d.hint);
        let d = diagnose("goodtoken", &key, "ww43", &sig, "1", "2", &enc).unwrap_err();
        assert_eq!(d.error.code(), -40005);
        assert!(d.hint.contains("\"ww42\""), "{}", d.hint);
        let d = diagnose(
            "badtoken",
            &random_encoding_aes_key(),
            "ww42",
            &sig,
            "1",
            "2",
            &enc,
        )
        .unwrap_err();
        assert!(d.hint.contains("neither"), "{}", d.hint);
        let plus = std::iter::repeat_with(|| c.encrypt(b"hello"))
            .find(|e| e.contains('+'))
            .unwrap();
        let sig = c.signature("1", "2", &plus);
        let d = diagnose(
            "goodtoken",
            &key,
            "ww42",
            &sig,
            "1",
            "2",
            &plus.replace('+', " "),
        )
        .unwrap_err();
        assert!(d.hint.contains("URL-decoded twice"), "{}", d.hint);
    }
}
