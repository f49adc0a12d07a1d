//! API keys: `Authorization: Bearer KEY` or `X-Api-Key: KEY` (as llama-server takes them),
//! compared in constant time (SHA-256 of the given key against each configured key's, with
//! `subtle`), each key known by an id that audit rows and limits use — never the key.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One configured key.
#[derive(Clone)]
pub struct ApiKey {
    /// Its id (configured, else `key-` and the first 8 hex digits of its SHA-256).
    pub id: String,
    /// Whether the box's default persona answers this key's requests (its system prompt
    /// before the request's own).
    pub persona: bool,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("persona", &self.persona)
            .finish_non_exhaustive()
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl ApiKey {
    /// A key; `id` `None` derives one from the key's digest.
    pub fn new(secret: &str, id: Option<&str>, persona: bool) -> Self {
        let digest = digest(secret);
        let id = id.map_or_else(
            || {
                let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
                format!("key-{hex}")
            },
            str::to_string,
        );
        ApiKey {
            id,
            persona,
            digest,
        }
    }
}

/// The key a request presents, if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(k) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(k.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The configured key the request presents (every key compared, in constant time);
/// `None`: no key, or a wrong one.
pub fn check<'a>(keys: &'a [ApiKey], headers: &HeaderMap) -> Option<&'a ApiKey> {
    let given = digest(presented(headers)?);
    let mut found = None;
    for k in keys {
        if bool::from(k.digest.ct_eq(&given)) {
            found = Some(k);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    #[test]
    fn bearer_and_x_api_key_both_work_and_wrong_keys_do_not() {
        let keys = [
            ApiKey::new("sk-one", Some("dify"), false),
            ApiKey::new("sk-two", None, true),
        ];
        assert_eq!(
            check(&keys, &headers("authorization", "Bearer sk-one"))
                .unwrap()
                .id,
            "dify"
        );
        let two = check(&keys, &headers("x-api-key", "sk-two")).unwrap();
        assert!(two.id.starts_with("key-") && two.id.len() == 12 && two.persona);
        assert!(check(&keys, &headers("authorization", "Bearer sk-three")).is_none());
        assert!(check(&keys, &headers("authorization", "sk-one")).is_none());
        assert!(check(&keys, &HeaderMap::new()).is_none());
        assert!(!format!("{:?}", keys[0]).contains("sk-one"));
    }
}
