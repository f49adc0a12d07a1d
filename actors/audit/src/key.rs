//! The box's audit key: 32 random bytes kept outside the database. It keys the row chain
//! (HMAC-SHA256) and the head file, so neither can be recomputed by someone who only has the
//! database. The key never reaches a log; only its id ([`AuditKey::id`]) does.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{hex, sync_dir, AuditError};

/// The key's default place, relative to the data directory (the directory is made 0700, the
/// file 0600).
pub const KEY_FILE: &str = "keys/audit.key";

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// A 32-byte HMAC-SHA256 key and its public id. `Debug` shows the id only.
#[derive(Clone)]
pub struct AuditKey {
    bytes: [u8; 32],
    id: String,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey").field("id", &self.id).finish()
    }
}

impl AuditKey {
    /// `data_dir/keys/audit.key`.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join(KEY_FILE)
    }

    /// A key from its bytes (tests; a key provisioned by other means).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let id = hex(&Sha256::digest(bytes)[..8]);
        AuditKey { bytes, id }
    }

    /// The key's id: the first 8 bytes of SHA-256 of the key, as 16 hex digits. Stored in the
    /// database and the head file to tell which key made them; it does not reveal the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads an existing key file (e.g. a systemd credential, or the file
    /// [`AuditKey::load_or_create`] made): exactly 32 bytes, or 64 hex digits (surrounding
    /// whitespace ignored). Never creates anything (for the read-only CLI). Warns when the file
    /// is readable by group or others.
    ///
    /// # Errors
    /// [`AuditError::Key`]: the file is missing (`io::ErrorKind::NotFound`), unreadable, or not
    /// a key.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let err = |source| AuditError::Key {
            path: path.display().to_string(),
            source,
        };
        let data = std::fs::read(path).map_err(err)?;
        let bytes = parse(&data).ok_or_else(|| {
            err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an audit key: expected 32 bytes, or 64 hex digits",
            ))
        })?;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the audit key is readable by group or others");
            }
        }
        Ok(Self::from_bytes(bytes))
    }

    /// [`AuditKey::load`], or, when the file does not exist, makes a new key from the OS's
    /// random source: the directory is created (and set) 0700, the file written 0600 through a
    /// temporary file, fsynced and renamed into place.
    ///
    /// # Errors
    /// [`AuditError::Key`] (I/O, or an existing file that is not a key);
    /// [`AuditError::Random`].
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        match Self::load(path) {
            Err(AuditError::Key { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                create(path)
            }
            r => r,
        }
    }

    pub(crate) fn mac(&self) -> HmacSha256 {
        <HmacSha256 as Mac>::new_from_slice(&self.bytes).expect("HMAC takes keys of any length")
    }
}

fn parse(data: &[u8]) -> Option<[u8; 32]> {
    if let Ok(b) = <[u8; 32]>::try_from(data) {
        return Some(b);
    }
    let text = data.trim_ascii();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(text.chunks(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn create(path: &Path) -> Result<AuditKey, AuditError> {
    let err = |source| AuditError::Key {
        path: path.display().to_string(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(AuditError::Random)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    sync_dir(dir).map_err(err)?;
    let key = AuditKey::from_bytes(bytes);
    tracing::info!(path = %path.display(), key_id = key.id(), "audit key created");
    Ok(key)
}
