//! TLS to PostgreSQL (managed databases usually require it).
//!
//! Chosen by the connection URL's libpq-style `sslmode`:
//!
//! * absent, `disable`, `allow` or `prefer`: plain TCP (or a unix socket), as before. libpq's
//!   `prefer` would try TLS without checking the certificate, which protects against a
//!   passive listener only; hooklane does not pretend to that.
//! * `require`, `verify-ca` or `verify-full`: TLS or no connection, and the server's
//!   certificate is always verified: its chain must end at a trusted root and it must name
//!   the host connected to. (Stricter than libpq's `require` and `verify-ca`, which check
//!   less: an unverified certificate lets anyone on the path read the traffic.) The trusted
//!   roots are, as with libpq, only the certificates of the PEM file that `sslrootcert`
//!   names (a cloud provider's CA bundle, a private CA); without `sslrootcert`, or with
//!   `sslrootcert=system`, the Mozilla set (`webpki-roots`, compiled in).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{StoreError, StoreResult};

/// How connections to PostgreSQL are protected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PgTls {
    /// No TLS.
    #[default]
    Off,
    /// TLS required, the server's certificate verified against the certificates of
    /// `root_cert` (a PEM file), or the built-in roots when it is `None` or `system`.
    Verified { root_cert: Option<PathBuf> },
}

impl PgTls {
    /// The setting an `sslmode` value asks for (`sslrootcert` given as `root_cert`).
    pub fn from_sslmode(mode: Option<&str>, root_cert: Option<PathBuf>) -> StoreResult<PgTls> {
        match mode.unwrap_or("disable") {
            "disable" | "allow" | "prefer" => Ok(PgTls::Off),
            "require" | "verify-ca" | "verify-full" => Ok(PgTls::Verified { root_cert }),
            other => Err(StoreError::Database(format!(
                "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full; not {other:?}"
            ))),
        }
    }

    /// The driver's mode for this setting.
    pub(super) fn ssl_mode(&self) -> SslMode {
        match self {
            PgTls::Off => SslMode::Disable,
            PgTls::Verified { .. } => SslMode::Require,
        }
    }

    /// The connector handed to the driver (used only when [`PgTls::ssl_mode`] asks for TLS).
    pub(super) fn connector(&self) -> StoreResult<MakeRustlsConnect> {
        let roots = self.roots()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Database(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// The certificates a server's chain must end at.
    fn roots(&self) -> StoreResult<rustls::RootCertStore> {
        let path = match self {
            PgTls::Verified { root_cert: Some(path) } if path.as_os_str() != "system" => path,
            _ => return Ok(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }),
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certificates(path)? {
            roots.add(cert).map_err(|e| {
                StoreError::Database(format!("sslrootcert {}: unusable certificate: {e}", path.display()))
            })?;
        }
        Ok(roots)
    }
}

/// The certificates of a PEM file; an error when it holds none.
fn read_certificates(path: &Path) -> StoreResult<Vec<CertificateDer<'static>>> {
    let unreadable = |e: &dyn std::fmt::Display| StoreError::Database(format!("sslrootcert {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(unreadable(&"no PEM certificate in the file"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_values() {
        assert_eq!(PgTls::from_sslmode(None, None).unwrap(), PgTls::Off);
        for off in ["disable", "allow", "prefer"] {
            assert_eq!(PgTls::from_sslmode(Some(off), None).unwrap(), PgTls::Off);
        }
        for on in ["require", "verify-ca", "verify-full"] {
            let root = Some(PathBuf::from("/ca.pem"));
            assert_eq!(PgTls::from_sslmode(Some(on), root.clone()).unwrap(), PgTls::Verified { root_cert: root });
        }
        assert!(PgTls::from_sslmode(Some("required"), None).is_err());
    }

    #[cfg(feature = "testing")]
    #[test]
    fn a_root_file_replaces_the_built_in_roots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).unwrap();
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let own = PgTls::Verified { root_cert: Some(path) }.roots().unwrap();
        assert_eq!(own.len(), 1, "only the file's certificate is trusted");
        let system = PgTls::Verified { root_cert: Some(PathBuf::from("system")) }.roots().unwrap();
        assert_eq!(system.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert_eq!(PgTls::Verified { root_cert: None }.roots().unwrap().len(), system.len());
    }

    #[test]
    fn a_root_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let tls = PgTls::Verified { root_cert: Some(path) };
        let err = tls.connector().err().expect("refused").to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let missing = PgTls::Verified { root_cert: Some(dir.path().join("missing.pem")) };
        assert!(missing.connector().is_err());
    }
}
