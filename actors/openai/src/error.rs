//! Errors in OpenAI's body shape: `{"error": {"message", "type", "param", "code"}}` with the
//! HTTP status OpenAI gives them (API reference, "Error codes"; llama-server and Ollama use
//! the same shape, peers notes §6).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// One API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `requests`, `server_error`, …
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<&'static str>,
    /// A machine-readable code (`invalid_api_key`, `context_length_exceeded`, …).
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param),
            code: None,
        }
    }

    /// 400 for a parameter the box does not support (refused rather than ignored).
    pub fn unsupported(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code: Some("unsupported_parameter"),
            ..Self::invalid(param, message)
        }
    }

    /// 401 `invalid_api_key`.
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect or missing API key: send it as `Authorization: Bearer KEY` or \
                      `X-Api-Key: KEY`."
                .into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 404 for a path the API does not have.
    pub fn not_found(path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no such endpoint: {path}"),
            kind: "invalid_request_error",
            param: None,
            code: Some("unknown_url"),
        }
    }

    /// The error for a turn a stage ended (its [`wecom_edge_session::Stop`] reason), with
    /// the notice the WeCom user would have seen as the message.
    pub fn for_stop(reason: &str, notice: &str) -> Self {
        let (status, kind, code) = match reason {
            "user_rate" | "chat_rate" | "queue_full" => (
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
            ),
            "message_too_long" | "context_overflow" => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "context_length_exceeded",
            ),
            "restarting" | "model_lost" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "service_unavailable",
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
        };
        ApiError {
            status,
            message: notice.to_string(),
            kind,
            param: None,
            code: Some(code),
        }
    }

    /// The body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param,
                         "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
