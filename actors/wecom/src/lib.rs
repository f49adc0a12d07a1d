//! WeCom I/O for wecom-edge: every receive and send path as Tencent speaks it, and a WeCom
//! simulator that speaks it back.
//!
//! * [`crypto`] — WXBizMsgCrypt (signature, AES-256-CBC, envelopes, −400xx error codes).
//! * [`xml`] — the flat XML of callbacks, hostile documents refused.
#![warn(missing_docs)]

pub mod crypto;
pub mod xml;

pub use crypto::{CryptError, MsgCrypt};
