//! The console's HTTPS server: the login, the session guard, CSRF, security headers; the
//! pages' handlers are in [`crate::routes`].
//!
//! * HTTPS only ([`serve`]: rustls over each accepted TCP connection, HTTP/1.1 by hyper);
//!   a TLS handshake has 10 s.
//! * Every page needs a session ([`Authed`]): without one, a GET is sent to `/login` (303)
//!   and so is a POST, which does nothing.
//! * `POST /login` goes through [`Throttle`] first (a locked address gets 429 with
//!   `Retry-After` without its password being checked), then Argon2id on a blocking thread.
//!   Each outcome is reported as a [`ConsoleEvent`] (the box audits them). At most
//!   [`MAX_VERIFYING`] passwords are checked at once; a login beyond that is 503 at once.
//! * Every state-changing request of a session carries the session's CSRF token (a form
//!   field `csrf`; [`Authed::allow`]); a missing or wrong one is 403. A POST whose `Origin`
//!   is not this console's own host is 403 too (this also covers the login form, which has
//!   no session yet).
//! * Every answer has the Content-Security-Policy [`CSP`] (scripts only from the console
//!   itself, no inline script or style, no framing), `X-Content-Type-Options: nosniff`,
//!   `X-Frame-Options: DENY`, `Referrer-Policy: same-origin` and `Cache-Control: no-store`.
//!   (Not `no-referrer`: under it browsers send `Origin: null` on the console's own form
//!   posts — the Fetch standard's "append a request `Origin` header" — and the Origin check
//!   would refuse every login; `same-origin` still sends nothing to other sites.)
//! * Routes are fixed strings; the assets are compiled into the binary. No part of a request
//!   is ever used as a file path (an uploaded document's name only picks how it is read).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Extension, Form, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Router;
use serde::Deserialize;

use crate::allow::AllowFrom;
use crate::backend::Backend;
use crate::pages;
use crate::password::StoredPassword;
use crate::session::{Sessions, COOKIE};
use crate::throttle::{Failure, Throttle};

/// The Content-Security-Policy of every answer: scripts and fetches only from the console
/// itself (`/static/try.js`), no inline script or style, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What happened at the console, for the audit trail (never a password or a session id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// A right password: a session started.
    LoggedIn {
        /// The client's address.
        from: IpAddr,
    },
    /// A wrong password.
    LoginFailed {
        /// The client's address.
        from: IpAddr,
        /// Wrong passwords still allowed from it within the minute.
        left: usize,
    },
    /// A wrong password that locked the address (or, `everyone`, every login).
    Locked {
        /// The client's address.
        from: IpAddr,
        /// How long the lock lasts.
        retry_after: Duration,
        /// Every address is locked, not only this one.
        everyone: bool,
    },
    /// A login attempt while locked (its password was not checked).
    LockedOut {
        /// The client's address.
        from: IpAddr,
    },
    /// A session ended by logging out.
    LoggedOut {
        /// The client's address.
        from: IpAddr,
    },
    /// A state-changing request refused: no or a wrong CSRF token, or a foreign `Origin`.
    Forbidden {
        /// The client's address.
        from: IpAddr,
        /// The request's path.
        path: String,
    },
    /// Something the admin did: `verify`, `export`, `knowledge_add`, `knowledge_remove`,
    /// `try` (the question itself is audited by its turn).
    Action {
        /// The client's address.
        from: IpAddr,
        /// What was done.
        action: &'static str,
        /// It worked.
        ok: bool,
        /// What it was done to and what came of it (a document's name, rows exported, the
        /// verification's summary), as JSON.
        detail: serde_json::Value,
    },
}

/// Receives [`ConsoleEvent`]s.
pub type EventFn = Arc<dyn Fn(ConsoleEvent) + Send + Sync>;

/// Everything the handlers share; cheap to clone.
#[derive(Clone)]
pub struct ConsoleState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    password: StoredPassword,
    pub(crate) fingerprint: String,
    sessions: Mutex<Sessions>,
    throttle: Mutex<Throttle>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) events: EventFn,
    /// Password checks running at once (Argon2id takes 19 MiB and tens of ms each).
    verifying: tokio::sync::Semaphore,
}

/// Password checks allowed at once; a login beyond them is answered 503 at once, so a flood
/// of logins cannot queue gigabytes of Argon2 work.
pub const MAX_VERIFYING: usize = 2;

impl ConsoleState {
    /// A console for `password` over `backend`, showing the certificate `fingerprint`.
    pub fn new(
        password: StoredPassword,
        fingerprint: &str,
        backend: Arc<dyn Backend>,
        events: EventFn,
    ) -> Self {
        ConsoleState(Arc::new(Inner {
            password,
            fingerprint: fingerprint.to_string(),
            sessions: Mutex::new(Sessions::new()),
            throttle: Mutex::new(Throttle::new()),
            backend,
            events,
            verifying: tokio::sync::Semaphore::new(MAX_VERIFYING),
        }))
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.0.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.0.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session of this request's cookie: its id and CSRF token.
    fn session(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let id = cookie(headers)?;
        let s = self.sessions().touch(&id, Instant::now())?;
        Some((id, s.csrf))
    }

    /// Reports `e` to the box.
    pub(crate) fn event(&self, e: ConsoleEvent) {
        (self.0.events)(e);
    }

    /// Runs `f` on the backend on tokio's blocking pool (SQLite and file reads).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Backend) -> T + Send + 'static,
    ) -> T {
        let b = self.0.backend.clone();
        tokio::task::spawn_blocking(move || f(b.as_ref()))
            .await
            .expect("a console backend call panicked")
    }
}

/// A request of a logged-in session: its client, its CSRF token. Without a live session the
/// request is answered with a redirect to `/login` (for a POST too: nothing is done).
pub struct Authed {
    /// The client's address.
    pub from: IpAddr,
    /// The session's CSRF token (put in the page's forms).
    pub csrf: String,
    id: String,
    same_origin: bool,
}

impl FromRequestParts<ConsoleState> for Authed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        s: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let from = parts
            .extensions
            .get::<Peer>()
            .map(|p| p.0)
            .ok_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
        let (id, csrf) = s.session(&parts.headers).ok_or_else(to_login)?;
        Ok(Authed {
            from,
            csrf,
            id,
            same_origin: same_origin(&parts.headers),
        })
    }
}

impl Authed {
    /// A state-changing request may go on: its `csrf` field is this session's token and its
    /// `Origin` (when sent) is this console. Otherwise the 403 to answer with, reported as
    /// [`ConsoleEvent::Forbidden`].
    ///
    /// # Errors
    /// [`Refused`]: answer with it.
    pub fn allow(&self, s: &ConsoleState, csrf: &str, path: &str) -> Result<(), Refused> {
        if self.same_origin && s.sessions().check_csrf(&self.id, csrf, Instant::now()) {
            return Ok(());
        }
        s.event(ConsoleEvent::Forbidden {
            from: self.from,
            path: path.into(),
        });
        Err(Refused)
    }
}

/// A state-changing request without this session's CSRF token, or from a foreign `Origin`:
/// answered 403.
#[derive(Debug)]
pub struct Refused;

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            "forbidden: missing or wrong CSRF token\n",
        )
            .into_response()
    }
}

/// The client's address, set per connection by [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// The console's routes (see the module docs). The client address comes from a [`Peer`]
/// extension, which [`serve`] adds.
pub fn router(state: ConsoleState) -> Router {
    use axum::routing::{get, post};
    crate::routes::pages(Router::new())
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serves `app` over HTTPS on `listener` until the task is dropped; each connection gets its
/// client address as a [`Peer`]. A connection from outside `allow` is closed at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    allow: AllowFrom,
    app: Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "console: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !allow.allows(peer.ip()) {
            tracing::warn!(from = %peer.ip(), "console: connection from outside allow_from dropped");
            continue;
        }
        let acceptor = acceptor.clone();
        let app = app.clone().layer(Extension(Peer(peer.ip())));
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return; // not TLS, or too slow: nothing to answer
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

/// The session cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// A POST's `Origin`, when sent, names this console's own host (browsers send it on form
/// posts; a page elsewhere cannot make it ours).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("https://"));
    matches!((origin, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

pub(crate) fn page(status: StatusCode, markup: maud::Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

async fn login_page(State(s): State<ConsoleState>, headers: HeaderMap) -> Response {
    if s.session(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    page(StatusCode::OK, pages::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    password: String,
}

async fn login(
    State(s): State<ConsoleState>,
    Extension(Peer(from)): Extension<Peer>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        (s.0.events)(ConsoleEvent::Forbidden {
            from,
            path: "/login".into(),
        });
        return (StatusCode::FORBIDDEN, "forbidden: foreign Origin\n").into_response();
    }
    let locked = |retry_after: Duration| {
        let msg = format!(
            "Too many wrong passwords. Try again in {}.",
            pages::human(retry_after.max(Duration::from_secs(1)))
        );
        let mut r = page(StatusCode::TOO_MANY_REQUESTS, pages::login(Some(&msg)));
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        );
        r
    };
    if let Err(l) = s.throttle().check(from, Instant::now()) {
        (s.0.events)(ConsoleEvent::LockedOut { from });
        return locked(l.retry_after);
    }
    let Ok(_permit) = s.0.verifying.try_acquire() else {
        let mut r = page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::login(Some("Busy checking other logins. Try again in a moment.")),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let stored = s.0.password.clone();
    let right = tokio::task::spawn_blocking(move || stored.verify(&f.password))
        .await
        .unwrap_or(false);
    if !right {
        let failure = s.throttle().failed(from, Instant::now());
        return match failure {
            Failure::Counted { left } => {
                (s.0.events)(ConsoleEvent::LoginFailed { from, left });
                page(
                    StatusCode::UNAUTHORIZED,
                    pages::login(Some("Wrong password.")),
                )
            }
            Failure::NowLocked(l) => {
                (s.0.events)(ConsoleEvent::Locked {
                    from,
                    retry_after: l.retry_after,
                    everyone: l.everyone,
                });
                locked(l.retry_after)
            }
        };
    }
    s.throttle().succeeded(from);
    let (id, _) = s.sessions().login(Instant::now());
    (s.0.events)(ConsoleEvent::LoggedIn { from });
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&Sessions::cookie(Some(&id))).expect("hex id"),
    );
    r
}

/// A form whose only field is the CSRF token.
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

async fn logout(State(s): State<ConsoleState>, a: Authed, Form(f): Form<CsrfForm>) -> Response {
    if let Err(r) = a.allow(&s, &f.csrf, "/logout") {
        return r.into_response();
    }
    s.sessions().logout(&a.id);
    s.event(ConsoleEvent::LoggedOut { from: a.from });
    let mut r = to_login();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&Sessions::cookie(None)).expect("ascii"),
    );
    r
}
