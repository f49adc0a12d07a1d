//! Who the assistant is, per bot or app: its system prompt, the language it answers in, its
//! welcome and `#help` text, and its sampling settings.
//!
//! The box-wide `[persona]` is the default; a bot's or app's own `persona` table overrides it
//! field by field. The default persona is a concise workplace assistant that answers in the
//! user's language ([`Persona::default`]).

use wecom_edge_model::GenerateParams;

/// The language a persona answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    /// The language of the user's message.
    #[default]
    Auto,
    /// Simplified Chinese.
    Chinese,
    /// English.
    English,
}

impl Language {
    /// `auto`, `zh` or `en`.
    pub fn parse(s: &str) -> Option<Language> {
        match s {
            "auto" => Some(Language::Auto),
            "zh" | "zh-CN" | "chinese" => Some(Language::Chinese),
            "en" | "english" => Some(Language::English),
            _ => None,
        }
    }

    /// Its config name.
    pub fn name(self) -> &'static str {
        match self {
            Language::Auto => "auto",
            Language::Chinese => "zh",
            Language::English => "en",
        }
    }

    /// The instruction appended to the system prompt.
    fn instruction(self) -> &'static str {
        match self {
            Language::Auto => {
                "Always reply in the language the user writes in (用户用中文提问时用简体中文回答)."
            }
            Language::Chinese => "请始终用简体中文回答。(Always reply in Simplified Chinese.)",
            Language::English => "Always reply in English, whatever language the user writes in.",
        }
    }
}

/// The default system prompt.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are the company's workplace assistant, running on \
     its own server inside the office; conversations never leave it. Answer concisely and \
     accurately, in plain sentences or short lists; say so when you do not know.";

/// The default `#help` description.
pub const DEFAULT_DESCRIPTION: &str =
    "我是部署在公司内部的 AI 助手，对话不会离开本机。直接提问即可（群聊中请 @我）。\n\
     (I am the company's on-prem AI assistant; conversations never leave this box. Ask away — \
     @-mention me in groups.)";

/// The default welcome (WeCom's `enter_chat`).
pub const DEFAULT_WELCOME: &str =
    "你好！我是公司内部的 AI 助手，有问题直接问我。发送 #help 查看用法。\n\
     (Hello! I am the company's on-prem AI assistant — just ask. Send #help for how to use me.)";

/// One persona.
#[derive(Debug, Clone, PartialEq)]
pub struct Persona {
    /// The system prompt (may be Chinese); the language instruction is appended to it.
    pub system_prompt: String,
    /// The answer language.
    pub language: Language,
    /// Shown by `#help`, before the command list.
    pub description: String,
    /// The answer to WeCom's `enter_chat` event (a user opening the chat with the bot).
    pub welcome: String,
    /// max_tokens and sampling.
    pub generate: GenerateParams,
}

impl Default for Persona {
    fn default() -> Self {
        Persona {
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
            language: Language::Auto,
            description: DEFAULT_DESCRIPTION.into(),
            welcome: DEFAULT_WELCOME.into(),
            generate: GenerateParams::default(),
        }
    }
}

impl Persona {
    /// The system message: the system prompt, then the language instruction (empty prompt:
    /// the instruction alone).
    pub fn system_message(&self) -> String {
        let p = self.system_prompt.trim();
        if p.is_empty() {
            self.language.instruction().to_string()
        } else {
            format!("{p}\n{}", self.language.instruction())
        }
    }

    /// The `#help` answer: the description, then the commands.
    pub fn help(&self) -> String {
        format!(
            "{}\n#reset 清空我们的对话 · #status 查看状态 · #stop 停止当前回答 · #help 本帮助\n\
             (#reset forgets our conversation, #status shows the box's state, #stop stops the \
             answer being written.)",
            self.description.trim_end()
        )
    }
}

/// The personas in force: the default and each endpoint's own.
pub type Personas = crate::endpoints::ByEndpoint<Persona>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_override_the_default() {
        let own = Persona {
            system_prompt: "你是财务部的助手。".into(),
            language: Language::Chinese,
            ..Persona::default()
        };
        let ps = Personas::default().with("aibot", "fin", std::sync::Arc::new(own.clone()));
        assert_eq!(*ps.get("aibot", "fin"), own);
        assert_eq!(*ps.get("aibot", "other"), Persona::default());
        assert_eq!(*ps.get("app", "fin"), Persona::default());
        assert_eq!(
            ps.get("aibot", "fin").system_message(),
            "你是财务部的助手。\n请始终用简体中文回答。(Always reply in Simplified Chinese.)"
        );
    }

    #[test]
    fn help_starts_with_the_description() {
        let p = Persona {
            description: "HR bot: leave, payroll.".into(),
            ..Persona::default()
        };
        assert!(p.help().starts_with("HR bot: leave, payroll.\n#reset"));
        assert!(Persona::default().help().contains("#stop"));
        let bare = Persona {
            system_prompt: " ".into(),
            language: Language::English,
            ..Persona::default()
        };
        assert_eq!(bare.system_message(), Language::English.instruction());
    }
}
