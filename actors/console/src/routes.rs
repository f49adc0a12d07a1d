//! The pages' handlers: every one takes an [`Authed`] session, every POST checks its CSRF
//! token first ([`Authed::allow`]), every backend call that may block runs on the blocking
//! pool. The admin's actions are reported as [`ConsoleEvent::Action`] (the box audits them).

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Form, Multipart, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use crate::backend::{ExportFormat, TryEvent, AUDIT_PAGE_ROWS};
use crate::pages::{self, audit::AuditForm, audit::Verified};
use crate::server::{page, Authed, ConsoleEvent, ConsoleState, CsrfForm};

const CSS: &str = include_str!("../assets/console.css");
const TRY_JS: &str = include_str!("../assets/try.js");

/// The largest request body: an uploaded document (32 MiB, the knowledge base's limit) and
/// its multipart framing.
pub const MAX_UPLOAD_BYTES: usize = (32 << 20) + (64 << 10);

/// The largest question "Try it" takes (bytes); WeCom's own limit for a text message is 2048.
pub const MAX_QUESTION_BYTES: usize = 8192;

/// Adds the pages' routes to `r`.
pub(crate) fn pages(r: Router<ConsoleState>) -> Router<ConsoleState> {
    r.route("/", get(overview))
        .route("/bots", get(bots))
        .route("/conversations", get(conversations))
        .route("/audit", get(audit))
        .route("/audit/verify", post(verify))
        .route("/audit/export", get(export))
        .route("/knowledge", get(knowledge))
        .route(
            "/knowledge/add",
            post(knowledge_add).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/knowledge/remove", post(knowledge_remove))
        .route("/filter", get(filter))
        .route("/filter/test", post(filter_test))
        .route("/model", get(model))
        .route("/model/switch", post(model_switch))
        .route("/try", get(try_page).post(try_ask))
        .route("/static/console.css", get(css))
        .route("/static/try.js", get(try_js))
}

fn ok(markup: maud::Markup) -> Response {
    page(StatusCode::OK, markup)
}

async fn overview(State(s): State<ConsoleState>, a: Authed) -> Response {
    let o = s.blocking(|b| b.overview()).await;
    ok(pages::overview::page(&o, &s.0.fingerprint, &a.csrf))
}

async fn bots(State(s): State<ConsoleState>, a: Authed) -> Response {
    let bots = s.blocking(|b| b.bots()).await;
    ok(pages::bots::bots(&bots, &a.csrf))
}

async fn conversations(State(s): State<ConsoleState>, a: Authed) -> Response {
    let c = s.blocking(|b| b.conversations()).await;
    ok(pages::bots::conversations(&c, &a.csrf))
}

async fn audit_page(s: &ConsoleState, a: &Authed, form: AuditForm, verified: Verified) -> Response {
    let rows = match form.query(Some(AUDIT_PAGE_ROWS)) {
        Ok(q) => s.blocking(move |b| b.audit(&q)).await,
        Err(e) => Err(e),
    };
    ok(pages::audit::page(&form, &rows, &verified, &a.csrf))
}

async fn audit(
    State(s): State<ConsoleState>,
    a: Authed,
    Query(form): Query<AuditForm>,
) -> Response {
    audit_page(&s, &a, form, Verified::NotRun).await
}

async fn verify(State(s): State<ConsoleState>, a: Authed, Form(f): Form<CsrfForm>) -> Response {
    if let Err(r) = a.allow(&s, &f.csrf, "/audit/verify") {
        return r.into_response();
    }
    let v = s.blocking(|b| b.verify()).await;
    s.event(ConsoleEvent::Action {
        from: a.from,
        action: "verify",
        ok: v.is_ok(),
        detail: json!({"result": match &v { Ok(m) | Err(m) => m }}),
    });
    let verified = match v {
        Ok(m) => Verified::Intact(m),
        Err(m) => Verified::Broken(m),
    };
    audit_page(&s, &a, AuditForm::default(), verified).await
}

#[derive(Deserialize)]
struct ExportForm {
    #[serde(default)]
    format: String,
    #[serde(flatten)]
    filter: AuditForm,
}

async fn export(State(s): State<ConsoleState>, a: Authed, Query(f): Query<ExportForm>) -> Response {
    let (format, ext, mime) = match f.format.as_str() {
        "csv" => (ExportFormat::Csv, "csv", "text/csv; charset=utf-8"),
        "jsonl" | "" => (
            ExportFormat::Jsonl,
            "jsonl",
            "application/jsonl; charset=utf-8",
        ),
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!("format {other:?}: jsonl or csv\n"),
            )
                .into_response()
        }
    };
    let q = match f.filter.query(None) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let out = s.blocking(move |b| b.export(&q, format)).await;
    s.event(ConsoleEvent::Action {
        from: a.from,
        action: "export",
        ok: out.is_ok(),
        detail: match &out {
            Ok((_, rows)) => json!({"format": ext, "rows": rows, "kind": f.filter.kind,
                                    "since": f.filter.since, "until": f.filter.until}),
            Err(e) => json!({"format": ext, "error": e}),
        },
    });
    match out {
        Ok((bytes, _)) => {
            let mut r = Body::from(bytes).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"wecom-edge-audit.{ext}\""))
                    .expect("ascii"),
            );
            r
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn knowledge_page(s: &ConsoleState, a: &Authed, done: pages::knowledge::Outcome) -> Response {
    let docs = s.blocking(|b| b.knowledge()).await;
    ok(pages::knowledge::knowledge(&docs, &done, &a.csrf))
}

async fn knowledge(State(s): State<ConsoleState>, a: Authed) -> Response {
    knowledge_page(&s, &a, None).await
}

/// An upload's fields: `csrf` and `file` (its file name and bytes).
async fn upload(mut m: Multipart) -> Result<(String, Option<(String, Vec<u8>)>), String> {
    let (mut csrf, mut file) = (String::new(), None);
    while let Some(field) = m.next_field().await.map_err(|e| e.body_text())? {
        match field.name() {
            Some("csrf") => csrf = field.text().await.map_err(|e| e.body_text())?,
            Some("file") => {
                let name = field.file_name().unwrap_or("").to_string();
                let bytes = field.bytes().await.map_err(|e| e.body_text())?;
                file = Some((name, bytes.to_vec()));
            }
            _ => {}
        }
    }
    Ok((csrf, file))
}

/// The name a document is stored under: the uploaded file's own name without any folder
/// part (it names the document and picks how it is read; it never becomes a path).
fn document_name(file_name: &str) -> Option<String> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let clean: String = base.chars().filter(|c| !c.is_control()).collect();
    (!clean.is_empty() && clean != "." && clean != "..").then_some(clean)
}

async fn knowledge_add(State(s): State<ConsoleState>, a: Authed, m: Multipart) -> Response {
    let (csrf, file) = match upload(m).await {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    if let Err(r) = a.allow(&s, &csrf, "/knowledge/add") {
        return r.into_response();
    }
    let Some((name, bytes)) = file.and_then(|(n, b)| Some((document_name(&n)?, b))) else {
        return knowledge_page(&s, &a, Some(Err("Choose a file to upload.".into()))).await;
    };
    let size = bytes.len();
    let doc = name.clone();
    let done = s.blocking(move |b| b.knowledge_add(&doc, &bytes)).await;
    s.event(ConsoleEvent::Action {
        from: a.from,
        action: "knowledge_add",
        ok: done.is_ok(),
        detail: match &done {
            Ok(m) => json!({"doc": name, "bytes": size, "result": m}),
            Err(e) => json!({"doc": name, "bytes": size, "error": e}),
        },
    });
    knowledge_page(&s, &a, Some(done)).await
}

#[derive(Deserialize)]
struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    doc: String,
}

async fn knowledge_remove(
    State(s): State<ConsoleState>,
    a: Authed,
    Form(f): Form<RemoveForm>,
) -> Response {
    if let Err(r) = a.allow(&s, &f.csrf, "/knowledge/remove") {
        return r.into_response();
    }
    let doc = f.doc.clone();
    let done = s.blocking(move |b| b.knowledge_remove(&doc)).await;
    s.event(ConsoleEvent::Action {
        from: a.from,
        action: "knowledge_remove",
        ok: done.is_ok(),
        detail: match &done {
            Ok(()) => json!({"doc": f.doc}),
            Err(e) => json!({"doc": f.doc, "error": e}),
        },
    });
    let done = done.map(|()| format!("Removed {}.", f.doc));
    knowledge_page(&s, &a, Some(done)).await
}

async fn filter(State(s): State<ConsoleState>, a: Authed) -> Response {
    let v = s.blocking(|b| b.filter()).await;
    ok(pages::knowledge::filter(&v, None, &a.csrf))
}

#[derive(Deserialize)]
struct PhraseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    phrase: String,
}

async fn filter_test(
    State(s): State<ConsoleState>,
    a: Authed,
    Form(f): Form<PhraseForm>,
) -> Response {
    if let Err(r) = a.allow(&s, &f.csrf, "/filter/test") {
        return r.into_response();
    }
    let phrase = f.phrase.clone();
    let (v, t) = s
        .blocking(move |b| (b.filter(), b.filter_test(&phrase)))
        .await;
    ok(pages::knowledge::filter(&v, Some((&f.phrase, &t)), &a.csrf))
}

async fn model(State(s): State<ConsoleState>, a: Authed) -> Response {
    let m = s.blocking(|b| b.models()).await;
    ok(pages::model::page(&m, &None, &a.csrf))
}

#[derive(Deserialize)]
struct SwitchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    model: String,
}

async fn model_switch(
    State(s): State<ConsoleState>,
    a: Authed,
    Form(f): Form<SwitchForm>,
) -> Response {
    if let Err(r) = a.allow(&s, &f.csrf, "/model/switch") {
        return r.into_response();
    }
    let name = f.model.clone();
    let (done, m) = s
        .blocking(move |b| (b.switch_model(&name), b.models()))
        .await;
    s.event(ConsoleEvent::Action {
        from: a.from,
        action: "model_switch",
        ok: done.is_ok(),
        detail: match &done {
            Ok(_) => json!({"model": f.model}),
            Err(e) => json!({"model": f.model, "error": e}),
        },
    });
    ok(pages::model::page(&m, &Some(done), &a.csrf))
}

async fn try_page(a: Authed) -> Response {
    ok(pages::try_it::page(None, &a.csrf))
}

#[derive(Deserialize)]
struct QuestionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    question: String,
}

/// `POST /try`: with `Accept: text/event-stream` (the page's script) the answer streams as
/// server-sent events — `event: text` with the answer so far, then `event: final` — each
/// `data` a JSON string; otherwise the page comes back with the whole answer.
async fn try_ask(
    State(s): State<ConsoleState>,
    a: Authed,
    headers: HeaderMap,
    Form(f): Form<QuestionForm>,
) -> Response {
    if let Err(r) = a.allow(&s, &f.csrf, "/try") {
        return r.into_response();
    }
    let question = f.question.trim().to_string();
    if question.is_empty() || question.len() > MAX_QUESTION_BYTES {
        return (
            StatusCode::BAD_REQUEST,
            format!("a question of 1 to {MAX_QUESTION_BYTES} bytes\n"),
        )
            .into_response();
    }
    s.event(ConsoleEvent::Action {
        from: a.from,
        action: "try",
        ok: true,
        detail: json!({"bytes": question.len()}),
    });
    let mut rx = s.0.backend.ask(&a.from.to_string(), &question);
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if streaming {
        let events = futures_util::stream::unfold(rx, |mut rx| async move {
            let (name, text) = match rx.recv().await? {
                TryEvent::Text(t) => ("text", t),
                TryEvent::Final(t) => ("final", t),
            };
            let e = Event::default()
                .event(name)
                .data(serde_json::to_string(&text).expect("a string"));
            Some((Ok::<_, std::convert::Infallible>(e), rx))
        });
        return Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response();
    }
    let mut answer = String::new();
    while let Some(e) = rx.recv().await {
        match e {
            TryEvent::Text(t) => answer = t,
            TryEvent::Final(t) => {
                answer = t;
                break;
            }
        }
    }
    ok(pages::try_it::page(Some((&question, &answer)), &a.csrf))
}

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

async fn try_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        TRY_JS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uploaded_name_loses_its_folders_and_never_climbs() {
        assert_eq!(document_name("手册.md").as_deref(), Some("手册.md"));
        assert_eq!(
            document_name("../../etc/passwd.txt").as_deref(),
            Some("passwd.txt")
        );
        assert_eq!(
            document_name(r"C:\Users\it\规章.docx").as_deref(),
            Some("规章.docx")
        );
        assert_eq!(document_name("a\u{0}b.md").as_deref(), Some("ab.md"));
        for bad in ["", "..", "dir/", " "] {
            assert_eq!(document_name(bad), None, "{bad:?}");
        }
    }
}
