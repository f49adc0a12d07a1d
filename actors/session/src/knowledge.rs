//! The company knowledge base as the sessions see it: one shared SQLite connection
//! ([`wecom_edge_audit::knowledge::Knowledge`]) behind a mutex, searched off the async
//! runtime, with the settings of the turn's **retrieve** stage ([`crate::turn`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use wecom_edge_audit::knowledge::{
    Added, Document, Hit, Knowledge, KnowledgeError, SyncReport, MIN_RELATIVE_SCORE,
};

/// `[knowledge]`: how much of the knowledge base a turn uses.
#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeSettings {
    /// Most chunks retrieved per question (`top_k`, default 3).
    pub top_k: usize,
    /// Most tokens of excerpts put into one prompt (`max_tokens`, default 512; counted with
    /// the model's tokenizer). Excerpts that do not fit are left out, the last first.
    pub max_tokens: usize,
    /// A chunk is kept when its BM25 score is at least this fraction of the best one's
    /// (default [`MIN_RELATIVE_SCORE`], see [`Knowledge::retrieve`]).
    pub min_relative_score: f64,
    /// The folder mirrored into the knowledge base at start and at each SIGHUP
    /// (`[knowledge] dir`, relative to the configuration's directory); `None`: only what
    /// `wecom-edge kb add` stored.
    pub dir: Option<PathBuf>,
}

impl Default for KnowledgeSettings {
    fn default() -> Self {
        KnowledgeSettings {
            top_k: 3,
            max_tokens: 512,
            min_relative_score: MIN_RELATIVE_SCORE,
            dir: None,
        }
    }
}

/// The shared knowledge base (cheap to clone).
#[derive(Clone)]
pub struct KnowledgeBase {
    store: Arc<Mutex<Knowledge>>,
    /// How turns use it.
    pub settings: Arc<KnowledgeSettings>,
}

impl std::fmt::Debug for KnowledgeBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeBase")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KnowledgeBase {
    /// Shares `store` with `settings`.
    pub fn new(store: Knowledge, settings: KnowledgeSettings) -> KnowledgeBase {
        KnowledgeBase {
            store: Arc::new(Mutex::new(store)),
            settings: Arc::new(settings),
        }
    }

    /// The chunks for `question`, best first ([`Knowledge::retrieve`] with these settings).
    /// Runs on tokio's blocking pool (SQLite).
    ///
    /// # Errors
    /// [`KnowledgeError::Sqlite`] (a corrupt or locked file), or the search task failing.
    pub async fn retrieve(&self, question: &str) -> Result<Vec<Hit>, KnowledgeError> {
        let (kb, q) = (self.clone(), question.to_string());
        let (top_k, floor) = (self.settings.top_k, self.settings.min_relative_score);
        tokio::task::spawn_blocking(move || kb.lock().retrieve(&q, top_k, floor))
            .await
            .map_err(|e| KnowledgeError::Io {
                path: "the knowledge search task".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// Mirrors the configured folder into the knowledge base ([`Knowledge::sync_dir`]);
    /// `None` when no folder is configured. Blocking (call it off the async runtime).
    ///
    /// # Errors
    /// [`KnowledgeError`] when the folder cannot be listed or the store fails.
    pub fn sync(&self) -> Option<Result<SyncReport, KnowledgeError>> {
        let dir = self.settings.dir.as_ref()?;
        Some(self.lock().sync_dir(dir))
    }

    /// How many documents are stored ([`Knowledge::len`]).
    ///
    /// # Errors
    /// [`KnowledgeError::Sqlite`].
    pub fn documents(&self) -> Result<usize, KnowledgeError> {
        self.lock().len()
    }

    /// The stored documents ([`Knowledge::list`]). Blocking.
    ///
    /// # Errors
    /// [`KnowledgeError::Sqlite`].
    pub fn list(&self) -> Result<Vec<Document>, KnowledgeError> {
        self.lock().list()
    }

    /// Stores an uploaded document ([`Knowledge::add_bytes`], source `console`). Blocking.
    ///
    /// # Errors
    /// [`KnowledgeError`]: unsupported or unreadable, no text, SQLite.
    pub fn add_upload(&self, name: &str, bytes: &[u8]) -> Result<Added, KnowledgeError> {
        self.lock().add_bytes(name, bytes, "console")
    }

    /// Removes document `name` ([`Knowledge::remove`]). Blocking.
    ///
    /// # Errors
    /// [`KnowledgeError::NoSuchDocument`]; SQLite.
    pub fn remove(&self, name: &str) -> Result<(), KnowledgeError> {
        self.lock().remove(name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Knowledge> {
        // A panic while holding the lock cannot leave SQLite half-written (each change is
        // one transaction): the connection is still good.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_folder_is_mirrored_and_retrieve_keeps_top_k() {
        let root = std::env::temp_dir().join(format!("wecom-edge-kbs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let folder = root.join("knowledge");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join("travel.md"),
            "# 差旅制度\n\n## 住宿\n\n一线城市住宿每晚不超过六百元。\n\n## 交通\n\n住宿地到机场的出租车费用可以报销。\n",
        )
        .unwrap();
        let store = Knowledge::open(&root.join("data")).unwrap();
        let none = KnowledgeBase::new(
            Knowledge::open(&root.join("data")).unwrap(),
            KnowledgeSettings::default(),
        );
        assert!(none.sync().is_none(), "no folder configured");
        let kb = KnowledgeBase::new(
            store,
            KnowledgeSettings {
                top_k: 1,
                dir: Some(folder.clone()),
                ..KnowledgeSettings::default()
            },
        );
        let r = kb.sync().unwrap().unwrap();
        assert_eq!(r.added, ["travel.md"]);
        let hits = kb.retrieve("住宿标准是多少？").await.unwrap();
        assert_eq!(hits.len(), 1, "top_k = 1: {hits:?}");
        assert_eq!(
            (hits[0].title.as_str(), hits[0].section.as_str()),
            ("差旅制度", "住宿")
        );
        assert!(kb.retrieve("量子计算").await.unwrap().is_empty());
        // Another connection to the same file (the `kb` command) sees the mirrored document.
        assert_eq!(none.retrieve("出租车").await.unwrap()[0].section, "交通");
        std::fs::remove_dir_all(root).ok();
    }
}
