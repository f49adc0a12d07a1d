//! The console's HTTPS certificate: self-signed on first start, kept in the data directory,
//! recognised by its SHA-256 fingerprint.
//!
//! * Files: `{data_dir}/console-cert.pem` ([`CERT_FILE`]) and `{data_dir}/console-key.pem`
//!   ([`KEY_FILE`], mode 0600; refused when others can read it). Made once (rcgen: an ECDSA
//!   P-256 key, valid from 2026-01-01 to 2036-01-01, the names given as subject alternative names) and reused,
//!   so the fingerprint an admin noted stays true across restarts and updates.
//! * The fingerprint is SHA-256 over the certificate's DER, as browsers show it
//!   (`AB:CD:…`, 32 pairs); the Overview page, tty1 and the journal print it, so the admin can
//!   check what the browser's warning shows before accepting the certificate.
//! * A company may give its own certificate instead ([`from_pem`]: the certificate with its
//!   chain, and its key).
//! * [`server_config`] is a rustls server configuration (TLS 1.2 and 1.3, ring's safe
//!   defaults) for that certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::private_file;

/// The certificate's file name in the data directory.
pub const CERT_FILE: &str = "console-cert.pem";
/// The private key's file name in the data directory (mode 0600).
pub const KEY_FILE: &str = "console-key.pem";

/// What went wrong with the console's certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The key file is accessible to others.
    #[error("{path} is accessible to others (mode {mode:03o}); it must be 600")]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file is not the PEM it should be, or rustls refused the pair.
    #[error("{0}")]
    Invalid(String),
}

/// The console's certificate (with the chain up to its CA, for a company's own) and key.
pub struct ConsoleCert {
    cert: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// SHA-256 over the certificate's DER, `AB:CD:…`.
    pub fingerprint: String,
}

impl std::fmt::Debug for ConsoleCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleCert")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ConsoleCert {
    /// The certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }
}

/// SHA-256 of `der` as uppercase hex pairs joined by colons.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fingerprint of the (first) certificate in PEM text `pem`.
///
/// # Errors
/// [`TlsError::Invalid`] when there is no certificate in it.
pub fn pem_fingerprint(pem: &[u8]) -> Result<String, TlsError> {
    CertificateDer::from_pem_slice(pem)
        .map(|c| fingerprint(&c))
        .map_err(|e| TlsError::Invalid(format!("certificate PEM: {e}")))
}

/// The certificate in `data_dir`, made first when there is none (`names`: its subject
/// alternative names — host names or IP addresses the console is reached by). The bool says
/// whether it was made now.
///
/// # Errors
/// [`TlsError`]: unreadable or unwritable files, an exposed key, PEM that does not parse.
pub fn load_or_create(data_dir: &Path, names: &[String]) -> Result<(ConsoleCert, bool), TlsError> {
    let (cert_path, key_path) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    let created = if cert_path.exists() && key_path.exists() {
        false
    } else {
        let mut params = rcgen::CertificateParams::new(names.to_vec())
            .map_err(|e| TlsError::Invalid(format!("certificate names {names:?}: {e}")))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wecom-edge console");
        // A fixed start in the past, not the clock: a box that boots before its clock is set
        // (no RTC battery, no NTP yet) would otherwise make a certificate "not yet valid".
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = rcgen::KeyPair::generate()
            .map_err(|e| TlsError::Invalid(format!("key generation: {e}")))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Invalid(format!("self-signing: {e}")))?;
        // The key first: a certificate without its key would be useless.
        private_file::write(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        true
    };
    if let Some(mode) = private_file::exposed(&key_path).map_err(io(&key_path))? {
        return Err(TlsError::Exposed {
            path: key_path,
            mode,
        });
    }
    let cert = CertificateDer::from_pem_file(&cert_path)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", key_path.display())))?;
    let fingerprint = fingerprint(&cert);
    Ok((
        ConsoleCert {
            cert,
            chain: Vec::new(),
            key,
            fingerprint,
        },
        created,
    ))
}

/// A certificate the company issued (`[console] certificate` and `key`): `cert_pem` holds
/// the console's certificate first, then any intermediate CA certificates; `key_pem` its
/// private key (PKCS #8, SEC 1 or PKCS #1). Checked by building the server configuration:
/// a key that does not match the certificate is refused.
///
/// # Errors
/// [`TlsError::Invalid`]: no certificate, no key, or a pair rustls refuses.
pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ConsoleCert, TlsError> {
    let mut certs = CertificateDer::pem_slice_iter(cert_pem);
    let cert = certs
        .next()
        .ok_or_else(|| TlsError::Invalid("no certificate in the certificate file".into()))?
        .map_err(|e| TlsError::Invalid(format!("certificate PEM: {e}")))?;
    let chain = certs
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("certificate chain PEM: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Invalid(format!("private key PEM: {e}")))?;
    let c = ConsoleCert {
        fingerprint: fingerprint(&cert),
        cert,
        chain,
        key,
    };
    server_config(&c)?;
    Ok(c)
}

/// A rustls server configuration serving `c` (no client certificates; HTTP/1.1 by ALPN).
///
/// # Errors
/// [`TlsError::Invalid`] when rustls refuses the certificate and key.
pub fn server_config(c: &ConsoleCert) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(
            std::iter::once(c.cert.clone())
                .chain(c.chain.iter().cloned())
                .collect(),
            c.key.clone_key(),
        )
        .map_err(|e| TlsError::Invalid(format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn the_certificate_is_made_once_and_its_key_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["wecom-edge.lan".to_string(), "127.0.0.1".to_string()];
        let (first, created) = load_or_create(dir.path(), &names).unwrap();
        assert!(created);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        assert!(first.fingerprint.split(':').all(|p| p.len() == 2
            && p.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())));
        let key = dir.path().join(KEY_FILE);
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!format!("{first:?}").contains("PRIVATE"));

        let (again, created) = load_or_create(dir.path(), &names).unwrap();
        assert!(!created, "reused");
        assert_eq!(again.fingerprint, first.fingerprint);
        let pem = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        assert_eq!(pem_fingerprint(&pem).unwrap(), first.fingerprint);
        assert!(pem_fingerprint(b"not a certificate").is_err());

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load_or_create(dir.path(), &names),
            Err(TlsError::Exposed { mode: 0o640, .. })
        ));
    }

    /// A company's own certificate: used as given (its fingerprint, not a new one); a key
    /// that is not the certificate's is refused.
    #[test]
    fn a_company_certificate_is_taken_with_its_key_only() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        load_or_create(a.path(), &["console.corp.example".to_string()]).unwrap();
        load_or_create(b.path(), &["other".to_string()]).unwrap();
        let read = |d: &tempfile::TempDir, f: &str| std::fs::read(d.path().join(f)).unwrap();
        let c = from_pem(&read(&a, CERT_FILE), &read(&a, KEY_FILE)).unwrap();
        assert_eq!(
            c.fingerprint,
            pem_fingerprint(&read(&a, CERT_FILE)).unwrap()
        );
        let wrong = from_pem(&read(&a, CERT_FILE), &read(&b, KEY_FILE)).unwrap_err();
        assert!(wrong.to_string().contains("certificate and key"), "{wrong}");
        assert!(from_pem(b"", &read(&a, KEY_FILE)).is_err());
        assert!(from_pem(&read(&a, CERT_FILE), b"").is_err());
    }

    /// A real TLS handshake on loopback: a client that trusts exactly this certificate
    /// connects to `server_config` by one of its names and exchanges bytes.
    #[tokio::test]
    async fn a_client_trusting_the_certificate_completes_a_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = load_or_create(dir.path(), &["localhost".to_string()]).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&cert).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            tls.write_all(b"pong").await.unwrap();
            tls.shutdown().await.unwrap();
            buf
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert_der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"pong");
        assert_eq!(&server.await.unwrap(), b"ping");
    }
}
