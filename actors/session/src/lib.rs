//! What a session needs before the model: whose conversation a message belongs to, whether it
//! is a command the box answers itself, and which part of the history fits the model's context.
//!
//! * [`ConversationKey`] — (channel, bot or agent, chat, user); in a group each member has their
//!   own context by default, or one shared context per group ([`Scope::Group`]).
//! * [`Command`] — `#help`, `#reset`, `#status`, `#stop` (also `/help` …), after the `@bot` mention that
//!   WeCom keeps in group text; answered without the model.
//! * [`fit_history`] — the newest turns whose tokens, with the new question and room for the
//!   answer, fit the context window; whole user/assistant pairs are dropped oldest first.
//!
//! The actors: [`actor::SessionActor`] (one per key), [`router::RouterActor`] (records each
//! message and hands it to its session) and [`reply`] (how an answer reaches WeCom).
#![warn(missing_docs)]

pub mod actor;
pub mod admin;
pub mod endpoints;
pub mod filter;
pub mod knowledge;
pub mod outbox;
pub mod persona;
pub mod reasoning;
pub mod reply;
pub mod router;
pub mod turn;

pub use actor::{Job, SessionActor, SessionArgs, SessionContext, SessionMsg, SessionSettings};
pub use admin::Admin;
pub use endpoints::ByEndpoint;
pub use filter::{Action, ContentFilter, FilterError, FilterHandle, FilterSpec, RegexRule};
pub use knowledge::{KnowledgeBase, KnowledgeSettings};
pub use outbox::{OutboxActor, OutboxArgs, OutboxMsg, OUTBOX_ACTOR};
pub use persona::{Language, Persona, Personas};

/// The generator of each endpoint (`generator` and `fallback` per bot or app, `[model]` the
/// default).
pub type Generators = ByEndpoint<dyn wecom_edge_model::serve::Generator>;
pub use reasoning::ReasoningMode;
pub use reply::{ApiEvent, Origin, Outbound, Replier, ReplyTo, Undelivered};
pub use router::{InboundMsg, RouterActor, RouterArgs, RouterMsg, ROUTER_ACTOR, SESSION_SUP};
pub use turn::{ApiTurn, Stop, TurnCtx};

/// Whose context a group message joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Each member of a group has their own context.
    #[default]
    User,
    /// One shared context per group chat.
    Group,
}

/// The key of one session: (channel, bot or agent, chat, user).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationKey {
    /// `aibot` or `app`.
    pub channel: String,
    /// The bot id or the app's AgentID.
    pub endpoint: String,
    /// The group chat id; `None` for a single (1:1) chat.
    pub chat: Option<String>,
    /// The member, or `*` for a group-shared session.
    pub user: String,
}

impl ConversationKey {
    /// The key for a message from `user` in `chat` under `scope`.
    pub fn new(
        channel: &str,
        endpoint: &str,
        chat: Option<&str>,
        user: &str,
        scope: Scope,
    ) -> Self {
        let shared = scope == Scope::Group && chat.is_some();
        ConversationKey {
            channel: channel.to_string(),
            endpoint: endpoint.to_string(),
            chat: chat.map(str::to_string),
            user: if shared {
                "*".to_string()
            } else {
                user.to_string()
            },
        }
    }
}

/// One component of a key, escaped so that components can be joined with `/` unambiguously:
/// `%` → `%25`, `/` → `%2F`, and a component that is exactly `-` (the "no chat" marker) →
/// `%2D`. Ids without those characters — all of WeCom's in practice — are unchanged, so keys
/// written before the escaping existed stay valid.
pub fn key_component(s: &str) -> std::borrow::Cow<'_, str> {
    if s == "-" {
        return "%2D".into();
    }
    if !s.contains(['%', '/']) {
        return s.into();
    }
    s.replace('%', "%25").replace('/', "%2F").into()
}

impl std::fmt::Display for ConversationKey {
    /// `channel/endpoint/chat/user`, `-` for a single chat (used as the history key); each
    /// component escaped with [`key_component`], so two different keys never print the same.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            key_component(&self.channel),
            key_component(&self.endpoint),
            self.chat.as_deref().map_or("-".into(), key_component),
            key_component(&self.user)
        )
    }
}

/// A command the box answers without the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// What the bot can do.
    Help,
    /// Forget this conversation (and cancel an answer in progress).
    Reset,
    /// Queue, model and session state.
    Status,
    /// Stop the answer in progress (the conversation is kept).
    Stop,
    /// `#status all`: the whole box (admins only, [`admin`]).
    StatusAll,
    /// `#reload`: the filter's term files and the knowledge folder again (admins only).
    Reload,
}

impl Command {
    /// Whether only `[admin] users` may run it.
    pub fn is_admin(self) -> bool {
        matches!(self, Command::StatusAll | Command::Reload)
    }
}

/// Removes leading `@name` mentions (WeCom keeps `@RobotA ` at the start of group text).
pub fn strip_mentions(text: &str) -> &str {
    let mut t = text.trim_start();
    while let Some(rest) = t.strip_prefix('@').or_else(|| t.strip_prefix('＠')) {
        match rest.find(char::is_whitespace) {
            Some(i) => t = rest[i..].trim_start(),
            None => return "",
        }
    }
    t.trim_end()
}

/// The command in `text`, if it is one: `#help`/`/help`, `#reset`/`/reset`, `#status`/`/status`
/// (`#status all`: [`Command::StatusAll`]), `#stop`/`/stop`, `#reload` (any case, full-width
/// `＃` too), after any leading mentions; other trailing words are ignored. An empty or
/// mention-only message is [`Command::Help`]: there is nothing to ask the model.
pub fn parse_command(text: &str) -> Option<Command> {
    let t = strip_mentions(text);
    if t.trim().is_empty() {
        return Some(Command::Help);
    }
    let rest = t
        .strip_prefix('#')
        .or_else(|| t.strip_prefix('/'))
        .or_else(|| t.strip_prefix('＃'))?;
    let mut words = rest.split_whitespace();
    let word = words.next()?.to_ascii_lowercase();
    match word.as_str() {
        "help" | "帮助" => Some(Command::Help),
        "reset" | "重置" => Some(Command::Reset),
        "status" | "状态" => match words.next().map(str::to_ascii_lowercase).as_deref() {
            Some("all" | "全部") => Some(Command::StatusAll),
            _ => Some(Command::Status),
        },
        "stop" | "停止" => Some(Command::Stop),
        "reload" | "重载" => Some(Command::Reload),
        _ => None,
    }
}

/// One turn of history (`role`: `user` or `assistant`; `content`), as stored in SQLite.
pub use wecom_edge_audit::Turn;

/// The suffix of `history` to send with a new question: the newest turns such that
/// `tokens(history suffix) + question_tokens + answer_reserve ≤ context`. Turns are dropped
/// oldest first, a user turn together with the assistant turn that answered it, so the model
/// never sees an answer without its question. `tokens` counts a turn's tokens as the chat
/// template renders it.
pub fn fit_history(
    history: &[Turn],
    question_tokens: usize,
    answer_reserve: usize,
    context: usize,
    tokens: impl Fn(&Turn) -> usize,
) -> &[Turn] {
    let budget = context.saturating_sub(question_tokens + answer_reserve);
    let mut used = 0;
    let mut start = history.len();
    while start > 0 {
        // Take the newest remaining unit: an assistant turn with its user turn, or a lone turn.
        let unit = if history[start - 1].role == "assistant"
            && start >= 2
            && history[start - 2].role == "user"
        {
            2
        } else {
            1
        };
        let cost: usize = history[start - unit..start].iter().map(&tokens).sum();
        if used + cost > budget {
            break;
        }
        used += cost;
        start -= unit;
    }
    &history[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_per_user_or_per_group() {
        let a = ConversationKey::new("aibot", "bot1", Some("g1"), "u1", Scope::User);
        let b = ConversationKey::new("aibot", "bot1", Some("g1"), "u2", Scope::User);
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "aibot/bot1/g1/u1");
        let g1 = ConversationKey::new("aibot", "bot1", Some("g1"), "u1", Scope::Group);
        let g2 = ConversationKey::new("aibot", "bot1", Some("g1"), "u2", Scope::Group);
        assert_eq!(g1, g2);
        // A single chat is always per user.
        let s = ConversationKey::new("aibot", "bot1", None, "u1", Scope::Group);
        assert_eq!(s.to_string(), "aibot/bot1/-/u1");
        // Ids containing the separator cannot make two conversations share a key (issue 11
        // item 12): user `b/u1` in chat `a` and user `u1` in chat `a/b`; chat `-` and no chat.
        let k = |chat: Option<&str>, user: &str| {
            ConversationKey::new("aibot", "bot1", chat, user, Scope::User).to_string()
        };
        assert_ne!(k(Some("a"), "b/u1"), k(Some("a/b"), "u1"));
        assert_ne!(k(Some("-"), "u1"), k(None, "u1"));
        assert_ne!(k(Some("a%2Fb"), "u1"), k(Some("a/b"), "u1"));
        assert_eq!(k(Some("a/b"), "u1"), "aibot/bot1/a%2Fb/u1");
    }

    #[test]
    fn commands_after_mentions() {
        assert_eq!(parse_command("@RobotA #reset"), Some(Command::Reset));
        assert_eq!(
            parse_command("@RobotA  @other /STATUS please"),
            Some(Command::Status)
        );
        assert_eq!(parse_command("＃帮助"), Some(Command::Help));
        assert_eq!(parse_command("#resetting"), None);
        assert_eq!(parse_command("@RobotA /Stop"), Some(Command::Stop));
        assert_eq!(parse_command("#status ALL"), Some(Command::StatusAll));
        assert_eq!(parse_command("#状态 全部"), Some(Command::StatusAll));
        assert_eq!(parse_command("#status now"), Some(Command::Status));
        assert_eq!(parse_command("@RobotA #reload"), Some(Command::Reload));
        assert!(Command::Reload.is_admin() && !Command::Status.is_admin());
        assert_eq!(parse_command("what is #reset?"), None);
        // Nothing but mentions, or nothing at all: the help, not the model.
        assert_eq!(parse_command("@RobotA"), Some(Command::Help));
        assert_eq!(parse_command("  @RobotA \u{3000} "), Some(Command::Help));
        assert_eq!(parse_command(""), Some(Command::Help));
        assert_eq!(strip_mentions("@RobotA hello robot"), "hello robot");
        assert_eq!(strip_mentions("  plain  "), "plain");
    }

    fn turn(role: &str, n: usize) -> Turn {
        Turn {
            role: role.into(),
            content: "x".repeat(n),
        }
    }

    #[test]
    fn history_is_trimmed_by_whole_pairs() {
        let h = vec![
            turn("user", 10),
            turn("assistant", 30),
            turn("user", 10),
            turn("assistant", 30),
            turn("user", 5),
            turn("assistant", 5),
        ];
        let len = |t: &Turn| t.content.len();
        assert_eq!(fit_history(&h, 10, 20, 1000, len).len(), 6);
        // Budget 60: the newest pair (10) and the middle pair (40) fit, the oldest does not.
        assert_eq!(fit_history(&h, 10, 20, 90, len).len(), 4);
        // Budget 45: only the newest pair; the middle pair would split, so it goes whole.
        assert_eq!(fit_history(&h, 10, 20, 75, len), &h[4..]);
        assert!(fit_history(&h, 100, 20, 90, len).is_empty());
    }
}
