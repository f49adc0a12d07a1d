//! Requests: `POST /v1/chat/completions` and `POST /v1/completions` bodies (OpenAI API
//! reference, "Create chat completion" / "Create completion"), checked and turned into what
//! a turn needs.
//!
//! Supported: `model`, `messages` (roles `system`/`developer`, `user`, `assistant`; content a
//! string or text parts), `prompt` (a string, or an array of one), `stream`,
//! `stream_options.include_usage`, `max_tokens` / `max_completion_tokens`, `temperature`,
//! `top_p`, `seed`, `stop` (a string or up to 4), `user`. Refused with a 400 rather than
//! ignored: `n` > 1, non-zero `presence_penalty` / `frequency_penalty` (the box's sampler has
//! only a repetition penalty, which is not the same), `logprobs`, a non-empty `logit_bias`,
//! `tools` / `functions`, `response_format` other than `text`, llama.cpp's `grammar` and
//! `json_schema`, image or audio parts, `tool` messages.

use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// Which endpoint: the answer's shape differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `chat.completion` / `chat.completion.chunk`.
    Chat,
    /// `text_completion` (the prompt is answered as one user message, through the chat
    /// template, as Ollama's `/v1/completions` does).
    Completion,
}

#[derive(Debug, Deserialize)]
struct Raw {
    model: Option<String>,
    messages: Option<Vec<RawMessage>>,
    prompt: Option<Value>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    stop: Option<Value>,
    n: Option<i64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logprobs: Option<Value>,
    top_logprobs: Option<Value>,
    logit_bias: Option<Value>,
    /// llama.cpp's server extensions that constrain the output.
    grammar: Option<Value>,
    json_schema: Option<Value>,
    tools: Option<Value>,
    functions: Option<Value>,
    response_format: Option<Value>,
    user: Option<String>,
    best_of: Option<i64>,
    suffix: Option<String>,
    echo: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct RawMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

/// A request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Its endpoint.
    pub shape: Shape,
    /// The `model` asked for (the box's default when absent).
    pub model: Option<String>,
    /// Stream as SSE.
    pub stream: bool,
    /// Send a last chunk with `usage` (`stream_options.include_usage`).
    pub include_usage: bool,
    /// System (and developer) messages, joined.
    pub system: Option<String>,
    /// The messages before the last user message, as (role, content).
    pub history: Vec<(String, String)>,
    /// The last user message.
    pub question: String,
    /// `max_completion_tokens` or `max_tokens`.
    pub max_tokens: Option<usize>,
    /// `temperature` (0..=2).
    pub temperature: Option<f32>,
    /// `top_p` (0..=1].
    pub top_p: Option<f32>,
    /// `seed`.
    pub seed: Option<u64>,
    /// Stop sequences (at most 4, none empty).
    pub stop: Vec<String>,
    /// `user`.
    pub user: Option<String>,
}

/// The text of a message's `content`: a string, or the text of its `text` parts.
fn content_text(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.push_str(p.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some(other) => {
                        return Err(ApiError::unsupported(
                            "messages",
                            format!("content parts of type {other:?} are not supported: this model reads text only"),
                        ))
                    }
                    None => return Err(ApiError::invalid("messages", "a content part has no type")),
                }
            }
            Ok(out)
        }
        _ => Err(ApiError::invalid(
            "messages",
            "content must be a string or an array of parts",
        )),
    }
}

fn stops(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list: Vec<String> = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid("stop", "stop must be a string or an array of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                "stop must be a string or an array of strings",
            ))
        }
    };
    if list.len() > 4 {
        return Err(ApiError::invalid("stop", "at most 4 stop sequences"));
    }
    Ok(list.into_iter().filter(|s| !s.is_empty()).collect())
}

/// Checks a body for `shape`.
///
/// # Errors
/// The 400 to answer with.
pub fn parse(shape: Shape, body: &[u8]) -> Result<Request, ApiError> {
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("the body is not a valid request: {e}")))?;
    if raw.n.is_some_and(|n| n != 1) || raw.best_of.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported(
            "n",
            "only one choice per request (n = 1) is supported",
        ));
    }
    for (name, v) in [
        ("presence_penalty", raw.presence_penalty),
        ("frequency_penalty", raw.frequency_penalty),
    ] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(ApiError::unsupported(
                if name == "presence_penalty" {
                    "presence_penalty"
                } else {
                    "frequency_penalty"
                },
                format!(
                    "{name} is not supported (the box's sampler has no such penalty); leave it 0"
                ),
            ));
        }
    }
    let truthy = |v: &Option<Value>| {
        v.as_ref()
            .is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false)))
    };
    if truthy(&raw.logprobs) || truthy(&raw.top_logprobs) {
        return Err(ApiError::unsupported(
            "logprobs",
            "logprobs are not supported",
        ));
    }
    if raw
        .logit_bias
        .as_ref()
        .is_some_and(|b| b.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(ApiError::unsupported(
            "logit_bias",
            "logit_bias is not supported",
        ));
    }
    for (param, v) in [("grammar", &raw.grammar), ("json_schema", &raw.json_schema)] {
        if truthy(v) {
            return Err(ApiError::unsupported(
                param,
                format!("{param} (constrained output) is not supported"),
            ));
        }
    }
    if raw
        .tools
        .as_ref()
        .is_some_and(|t| t.as_array().is_none_or(|a| !a.is_empty()))
        || truthy(&raw.functions)
    {
        return Err(ApiError::unsupported(
            "tools",
            "tool calls are not supported",
        ));
    }
    if let Some(f) = &raw.response_format {
        if f.get("type").and_then(Value::as_str) != Some("text") {
            return Err(ApiError::unsupported(
                "response_format",
                "only response_format {\"type\": \"text\"} is supported",
            ));
        }
    }
    if raw.suffix.as_deref().is_some_and(|s| !s.is_empty()) || raw.echo == Some(true) {
        return Err(ApiError::unsupported(
            "suffix",
            "suffix and echo are not supported",
        ));
    }
    let max_tokens = match raw.max_completion_tokens.or(raw.max_tokens) {
        Some(n) if n < 1 => {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1",
            ))
        }
        n => n.map(|n| n as usize),
    };
    let temperature = match raw.temperature {
        Some(t) if !(0.0..=2.0).contains(&t) => {
            return Err(ApiError::invalid(
                "temperature",
                "temperature must be between 0 and 2",
            ))
        }
        t => t.map(|t| t as f32),
    };
    let top_p = match raw.top_p {
        Some(p) if !(p > 0.0 && p <= 1.0) => {
            return Err(ApiError::invalid("top_p", "top_p must be in (0, 1]"))
        }
        p => p.map(|p| p as f32),
    };
    let (system, history, question) = match shape {
        Shape::Chat => {
            let messages = raw
                .messages
                .ok_or_else(|| ApiError::invalid("messages", "messages is required"))?;
            let mut system: Vec<String> = Vec::new();
            let mut turns: Vec<(String, String)> = Vec::new();
            for m in &messages {
                let text = content_text(&m.content)?;
                match m.role.as_str() {
                    "system" | "developer" => system.push(text),
                    "user" | "assistant" => turns.push((m.role.clone(), text)),
                    "tool" | "function" => {
                        return Err(ApiError::unsupported(
                            "messages",
                            "tool messages are not supported",
                        ))
                    }
                    other => {
                        return Err(ApiError::invalid(
                            "messages",
                            format!("unknown role {other:?}"),
                        ))
                    }
                }
            }
            match turns.pop() {
                Some((role, q)) if role == "user" => {
                    ((!system.is_empty()).then(|| system.join("\n\n")), turns, q)
                }
                _ => {
                    return Err(ApiError::invalid(
                        "messages",
                        "the last message must be the user's",
                    ))
                }
            }
        }
        Shape::Completion => {
            let prompt = match raw.prompt {
                Some(Value::String(s)) => s,
                Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                    a[0].as_str().unwrap_or_default().to_string()
                }
                Some(Value::Array(_)) => {
                    return Err(ApiError::unsupported(
                        "prompt",
                        "one prompt (a string) per request",
                    ))
                }
                _ => return Err(ApiError::invalid("prompt", "prompt is required (a string)")),
            };
            (None, Vec::new(), prompt)
        }
    };
    if question.trim().is_empty() {
        return Err(ApiError::invalid(
            if shape == Shape::Chat {
                "messages"
            } else {
                "prompt"
            },
            "the question is empty",
        ));
    }
    Ok(Request {
        shape,
        model: raw.model,
        stream: raw.stream,
        include_usage: raw.stream_options.is_some_and(|o| o.include_usage),
        system,
        history,
        question,
        max_tokens,
        temperature,
        top_p,
        seed: raw.seed.map(|s| s as u64),
        stop: stops(raw.stop.as_ref())?,
        user: raw.user.filter(|u| !u.trim().is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<Request, ApiError> {
        parse(Shape::Chat, body.as_bytes())
    }

    #[test]
    fn a_chat_request_is_split_into_system_history_and_question() {
        let r = chat(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":50,
                "messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},
                {"role":"assistant","content":"Hello!"},{"role":"user","content":[{"type":"text","text":"你好"}]}],
                "stop":"\n\n","seed":7,"temperature":0}"#,
        )
        .unwrap();
        assert_eq!(r.system.as_deref(), Some("Be brief."));
        assert_eq!(
            r.history,
            vec![
                ("user".into(), "Hi".into()),
                ("assistant".into(), "Hello!".into())
            ]
        );
        assert_eq!(r.question, "你好");
        assert!(r.stream && r.include_usage);
        assert_eq!(
            (r.max_tokens, r.seed, r.temperature),
            (Some(50), Some(7), Some(0.0))
        );
        assert_eq!(r.stop, vec!["\n\n".to_string()]);
    }

    #[test]
    fn what_is_not_supported_is_refused_by_name() {
        let m = r#""messages":[{"role":"user","content":"x"}]"#;
        for (extra, param) in [
            (r#""n":2"#, "n"),
            (r#""presence_penalty":0.5"#, "presence_penalty"),
            (r#""frequency_penalty":1"#, "frequency_penalty"),
            (r#""logprobs":true"#, "logprobs"),
            (r#""logit_bias":{"15043":-100}"#, "logit_bias"),
            (r#""grammar":"root ::= x""#, "grammar"),
            (r#""json_schema":{"type":"string"}"#, "json_schema"),
            (r#""tools":[{"type":"function"}]"#, "tools"),
            (
                r#""response_format":{"type":"json_object"}"#,
                "response_format",
            ),
            (r#""temperature":3"#, "temperature"),
            (r#""max_tokens":0"#, "max_tokens"),
            (r#""stop":["a","b","c","d","e"]"#, "stop"),
        ] {
            let e = chat(&format!("{{{m},{extra}}}")).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.param),
                (400, Some(param)),
                "{extra}: {e:?}"
            );
        }
        // Zero penalties and n = 1 are what OpenAI's own defaults send.
        assert!(chat(&format!(r#"{{{m},"n":1,"presence_penalty":0,"frequency_penalty":0,"logprobs":false,"logit_bias":{{}},"tools":[]}}"#)).is_ok());
        for body in [
            r#"{"messages":[]}"#,
            r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
            r#"{"messages":[{"role":"tool","content":"x"},{"role":"user","content":"q"}]}"#,
            r#"{"model":"m"}"#,
            "not json",
        ] {
            assert_eq!(chat(body).unwrap_err().status.as_u16(), 400, "{body}");
        }
    }

    #[test]
    fn a_completion_takes_one_prompt() {
        let r = parse(
            Shape::Completion,
            br#"{"prompt":["Once upon a time"],"max_tokens":5}"#,
        )
        .unwrap();
        assert_eq!(
            (r.question.as_str(), r.system.clone(), r.max_tokens),
            ("Once upon a time", None, Some(5))
        );
        assert!(parse(Shape::Completion, br#"{"prompt":["a","b"]}"#).is_err());
        assert!(parse(Shape::Completion, br#"{"prompt":"x","echo":true}"#).is_err());
    }
}
