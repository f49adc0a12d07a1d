//! The IT admin's console (issue 15): a browser on the LAN sees and steers the box, over HTTPS,
//! behind a password.
//!
//! * [`password`] — the console password: set with `wecom-edge console set-password`, kept
//!   only as an Argon2id hash (PHC string) in `{data_dir}/console-password.phc`, mode 0600.
//!   Without that file the console stays off.
//! * [`throttle`] — login attempts: 5 wrong passwords a minute from one address, then that
//!   address is locked for 15 minutes; 50 a minute from everywhere, then every login is
//!   locked for a minute (a guess spread over many addresses).
//! * [`allow`] — `allow_from`: the networks that may connect at all (default: the LAN).
//! * [`server`] — the HTTPS server: login, logout, the session guard; throttled,
//!   CSRF-checked, with security headers on every answer. [`routes`] are the pages'
//!   handlers, [`pages`] renders their HTML (maud, everything escaped), [`backend`] is what
//!   the running box provides them.
//! * [`session`] — logged-in sessions (random ids kept only as digests, idle and absolute
//!   expiry, a locked-down cookie) and their CSRF tokens.
//! * [`tls`] — the console's HTTPS certificate: self-signed on first start, kept in the data
//!   directory, shown by its SHA-256 fingerprint.
#![warn(missing_docs)]

pub mod allow;
pub mod backend;
pub mod pages;
pub mod password;
mod private_file;
pub mod routes;
pub mod server;
pub mod session;
pub mod throttle;
pub mod tls;
