//! HTTPS with rustls (ring): certificate and key from PEM files, HTTP/2 and HTTP/1.1 offered by
//! ALPN, and the files read again on SIGHUP without dropping connections.

use std::path::{Path, PathBuf};

use axum_server::tls_rustls::RustlsConfig;

use crate::config::TlsConfig;
use crate::error::{Error, ErrorCode, Result};

/// ring is the one crypto provider in this build; install it before any TLS configuration.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn tls_error(cert: &Path, key: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorCode::ConfigInvalid,
        format!(
            "cannot load the TLS certificate {} and key {}: {e}; check server.tls.cert_file and key_file \
             (PEM files readable by nexus)",
            cert.display(),
            key.display()
        ),
    )
}

/// A loaded certificate and the files it came from.
pub struct Tls {
    pub config: RustlsConfig,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS configuration when `server.tls` is set; fails on unreadable or invalid files.
pub async fn load(config: &TlsConfig) -> Result<Option<Tls>> {
    let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else { return Ok(None) };
    install_crypto_provider();
    let rustls = RustlsConfig::from_pem_file(cert, key).await.map_err(|e| tls_error(cert, key, e))?;
    Ok(Some(Tls { config: rustls, cert: cert.clone(), key: key.clone() }))
}

/// On every SIGHUP, reads the certificate and key again. New connections get the new certificate;
/// a file that fails to load leaves the previous one in service.
pub async fn reload_certificate_on_sighup(config: RustlsConfig, cert: PathBuf, key: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS certificates will not be reloaded");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match config.reload_from_pem_file(&cert, &key).await {
            Ok(()) => tracing::info!(cert = %cert.display(), "TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %tls_error(&cert, &key, e), "TLS reload failed; keeping the previous certificate")
            }
        }
    }
}
