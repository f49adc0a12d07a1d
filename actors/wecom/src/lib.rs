//! WeCom I/O for wecom-edge: every receive and send path as Tencent speaks it, and a WeCom
//! simulator that speaks it back.
//!
//! * [`crypto`] — WXBizMsgCrypt (signature, AES-256-CBC, envelopes, −400xx error codes).
//! * [`xml`] — the flat XML of callbacks, hostile documents refused.
//! * [`api`] — WeCom API transport and errors, access_token cache, `message/send`, `appchat/send`.
//! * [`robot`] — group robot webhook sender (20/min kept client-side).
//! * [`aibot`] — AI-bot (智能机器人) frames and callbacks.
//! * [`callback`] — the box's callback endpoints (self-built app XML, AI-bot webhook JSON).
//! * [`longconn`] — the AI-bot long-connection client (subscribe, heartbeat, reconnect, streams).
//! * [`sim`] — the WeCom simulator.
//! * [`quota`] — WeCom's outbound quotas kept by the sender (per conversation, member, robot).
//! * [`split`] — splitting answers by UTF-8 bytes into ordered `(i/n)` parts.
//! * [`standby`] — the standby role: one owner per bot across boxes, observed over the LAN.
#![warn(missing_docs)]

pub mod aibot;
pub mod api;
pub mod callback;
pub mod crypto;
pub mod longconn;
pub mod quota;
pub mod rejections;
pub mod robot;
pub mod sim;
pub mod split;
pub mod standby;
pub mod xml;

pub use crypto::{CryptError, MsgCrypt};
