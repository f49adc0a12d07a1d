//! Chat templates as the GGUFs of Qwen2.5, Qwen3, DeepSeek-R1-Distill-Qwen, Llama-3.2 and
//! Gemma-3 ship them (tests/data/templates/, from llama.cpp's models/templates/ and
//! google/gemma-3-4b-it) render exactly as transformers' `apply_chat_template` renders them
//! with Jinja2 (tests/data/chat-templates.json, made by scripts/fixtures/chat-templates.py),
//! `enable_thinking` on and off included.

mod common;

use serde_json::Value;
use wecom_edge_actors::model::tokenizer::{render_chat_template, ChatContext};
use wecom_edge_actors::model::ChatMessage;

#[test]
fn templates_render_as_transformers() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(common::data("chat-templates.json")).unwrap(),
    )
    .unwrap();
    // The fixture's "today" (Llama-3.2 prints it): 2026-12-05 UTC.
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_428_800);
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 14);
    for c in cases {
        let name = c["template"].as_str().unwrap();
        let template =
            std::fs::read_to_string(common::data(&format!("templates/{name}.jinja"))).unwrap();
        let messages: Vec<ChatMessage> = serde_json::from_value(c["messages"].clone()).unwrap();
        let ctx = ChatContext {
            bos_token: c["bos_token"].as_str().unwrap().into(),
            eos_token: c["eos_token"].as_str().unwrap().into(),
            enable_thinking: c["enable_thinking"].as_bool().unwrap(),
            now,
        };
        let got = render_chat_template(&template, &messages, &ctx).unwrap();
        assert_eq!(
            got,
            c["rendered"].as_str().unwrap(),
            "{name} {}",
            c["conversation"]
        );
    }
}

/// A template that raises (Gemma-3: roles must alternate) is a clear error, not a prompt.
#[test]
fn a_raising_template_is_an_error() {
    let template =
        std::fs::read_to_string(common::data("templates/google-gemma-3-4b-it.jinja")).unwrap();
    let two_users = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
    let ctx = ChatContext {
        bos_token: "<bos>".into(),
        eos_token: "<eos>".into(),
        enable_thinking: true,
        now: std::time::SystemTime::now(),
    };
    let e = render_chat_template(&template, &two_users, &ctx).unwrap_err();
    assert!(e.to_string().contains("must alternate"), "{e}");
}
