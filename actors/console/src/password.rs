//! The console password, stored as an Argon2id hash in the data directory.
//!
//! * Hash: Argon2id v1.3 (RFC 9106), m = 19 MiB, t = 2, p = 1 (OWASP's password storage
//!   cheat sheet minimum; the `argon2` crate's defaults), a fresh 16-byte salt from the OS,
//!   written as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
//! * File: `{data_dir}/console-password.phc` ([`PASSWORD_FILE`]), mode 0600, replaced
//!   atomically (written beside it, then renamed). A file that others can read is refused.
//! * The password itself is never written, logged or kept after hashing.

use std::path::{Path, PathBuf};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use password_hash::{PasswordHashString, SaltString};

use crate::private_file;

/// The password file's name in the data directory.
pub const PASSWORD_FILE: &str = "console-password.phc";

/// The shortest password accepted, in characters.
pub const MIN_CHARS: usize = 12;

/// The longest password accepted, in bytes (Argon2 takes more; a login form does not need it).
pub const MAX_BYTES: usize = 1024;

/// What went wrong with the console password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The new password is too short, too long or blank.
    #[error("{0}")]
    Weak(String),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The password file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is readable or writable by others than its owner.
    #[error("{path} is accessible to others (mode {mode:03o}); it must be 600: chmod 600 it or set the password again")]
    Exposed {
        /// The password file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold an Argon2id PHC string.
    #[error("{path} does not hold an Argon2id hash: set the password again")]
    Malformed {
        /// The password file.
        path: PathBuf,
    },
}

/// The stored hash of the console password.
#[derive(Clone)]
pub struct StoredPassword(PasswordHashString);

impl std::fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredPassword(argon2id, …)")
    }
}

impl StoredPassword {
    /// Hashes `password` (checked by [`check_strength`] first) with a fresh salt.
    ///
    /// # Errors
    /// [`PasswordError::Weak`].
    pub fn hash(password: &str) -> Result<Self, PasswordError> {
        check_strength(password)?;
        let salt = SaltString::generate(&mut password_hash::rand_core::OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .expect("Argon2 with its default parameters hashes any password up to MAX_BYTES");
        Ok(StoredPassword(hash.serialize()))
    }

    /// Whether `candidate` is the password (Argon2id recomputed, the tags compared in
    /// constant time by `password-hash`).
    pub fn verify(&self, candidate: &str) -> bool {
        candidate.len() <= MAX_BYTES
            && Argon2::default()
                .verify_password(candidate.as_bytes(), &self.0.password_hash())
                .is_ok()
    }

    /// The PHC string (`$argon2id$v=19$…`): the salt and the hash, never the password.
    pub fn phc(&self) -> &str {
        self.0.as_str()
    }
}

/// Refuses passwords shorter than [`MIN_CHARS`] characters, longer than [`MAX_BYTES`] bytes,
/// or made of whitespace.
///
/// # Errors
/// [`PasswordError::Weak`] saying which.
pub fn check_strength(password: &str) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    if password.trim().is_empty() {
        return Err(PasswordError::Weak("the password is empty".into()));
    }
    if chars < MIN_CHARS {
        return Err(PasswordError::Weak(format!(
            "the password has {chars} characters; at least {MIN_CHARS} are needed"
        )));
    }
    if password.len() > MAX_BYTES {
        return Err(PasswordError::Weak(format!(
            "the password is {} bytes; at most {MAX_BYTES} are accepted",
            password.len()
        )));
    }
    Ok(())
}

/// `{data_dir}/console-password.phc`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(PASSWORD_FILE)
}

/// Hashes `password` and stores it in `data_dir` (created if missing), replacing any earlier
/// one; the file's path.
///
/// # Errors
/// [`PasswordError::Weak`], [`PasswordError::Io`].
pub fn set(data_dir: &Path, password: &str) -> Result<PathBuf, PasswordError> {
    let stored = StoredPassword::hash(password)?;
    let file = path(data_dir);
    let io = |source| PasswordError::Io {
        path: file.clone(),
        source,
    };
    private_file::write(&file, format!("{}\n", stored.phc()).as_bytes()).map_err(io)?;
    Ok(file)
}

/// The stored password of `data_dir`; `None` when none was set (the console stays off).
///
/// # Errors
/// [`PasswordError::Io`], [`PasswordError::Exposed`] (mode other than 600 or 400),
/// [`PasswordError::Malformed`].
pub fn load(data_dir: &Path) -> Result<Option<StoredPassword>, PasswordError> {
    load_file(path(data_dir))
}

/// The console password's file as the appliance keeps it: imported from the configuration
/// stick into `/etc/wecom-edge/console/`, handed to the service by systemd as this
/// credential (`LoadCredential=wecom-edge-console:/etc/wecom-edge/console`).
pub const CREDENTIAL: &str = "wecom-edge-console_console-password.phc";

/// The stored password in `file` (`None`: no such file); as [`load`].
///
/// # Errors
/// As [`load`].
pub fn load_file(file: PathBuf) -> Result<Option<StoredPassword>, PasswordError> {
    match private_file::exposed(&file) {
        Ok(None) => {}
        Ok(Some(mode)) => return Err(PasswordError::Exposed { path: file, mode }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PasswordError::Io { path: file, source }),
    }
    let text = std::fs::read_to_string(&file).map_err(|source| PasswordError::Io {
        path: file.clone(),
        source,
    })?;
    let malformed = || PasswordError::Malformed { path: file.clone() };
    let hash = PasswordHashString::new(text.trim()).map_err(|_| malformed())?;
    if hash.algorithm().as_str() != "argon2id" {
        return Err(malformed());
    }
    Ok(Some(StoredPassword(hash)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_password_is_stored_as_an_argon2id_hash_only_its_owner_reads() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            load(dir.path()).unwrap().is_none(),
            "no file: the console is off"
        );
        let secret = "correct horse battery staple";
        let file = set(dir.path(), secret).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{text}"
        );
        assert!(!text.contains(secret));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let stored = load(dir.path()).unwrap().unwrap();
        assert!(stored.verify(secret));
        assert!(!stored.verify("correct horse battery stapl"));
        assert!(!stored.verify(""));
        assert!(!stored.verify(&"x".repeat(MAX_BYTES + 1)));
        assert!(!format!("{stored:?}").contains('$'), "Debug shows no hash");

        // Set again: a new salt, the old password no longer works.
        set(dir.path(), "another long passphrase").unwrap();
        let again = load(dir.path()).unwrap().unwrap();
        assert_ne!(again.phc(), stored.phc());
        assert!(!again.verify(secret));
        assert!(again.verify("another long passphrase"));
    }

    #[test]
    fn weak_exposed_and_malformed_are_refused() {
        for (p, why) in [
            ("", "empty"),
            ("            ", "empty"),
            ("short pass", "10 characters"),
        ] {
            let e = check_strength(p).unwrap_err().to_string();
            assert!(e.contains(why), "{p:?}: {e}");
        }
        assert!(
            check_strength("密码密码密码密码密码密码").is_ok(),
            "12 characters"
        );
        assert!(check_strength(&"a".repeat(MAX_BYTES + 1)).is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = set(dir.path(), "a long enough password").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(
            matches!(e, PasswordError::Exposed { mode: 0o644, .. }),
            "{e}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&file, "plain text password\n").unwrap();
        assert!(matches!(
            load(dir.path()).unwrap_err(),
            PasswordError::Malformed { .. }
        ));
        std::fs::write(&file, "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA\n").unwrap();
        assert!(matches!(
            load(dir.path()).unwrap_err(),
            PasswordError::Malformed { .. }
        ));
    }
}
