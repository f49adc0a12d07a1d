//! wecom-edge actors: one module (or sub-crate) per concern.
pub use wecom_edge_audit as audit;
pub use wecom_edge_console as console;
pub use wecom_edge_limiter as limiter;
pub use wecom_edge_model as model;
pub use wecom_edge_openai as openai;
pub use wecom_edge_session as session;
pub use wecom_edge_supervisor as supervisor;
pub use wecom_edge_watchdog as watchdog;
pub use wecom_edge_wecom as wecom;
