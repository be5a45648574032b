//! TLS for Nexus's outgoing clients (cluster backends, LLM and embedding endpoints): rustls with
//! the ring provider, the system's roots plus the certificates of a `ca_file` setting;
//! certificates are always verified.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// A client configuration trusting the system's roots and `ca_file`'s PEM certificates;
/// `setting` names the configuration section in errors (`store.text`).
pub fn client_config(setting: &str, ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let invalid = |what: String| Error::config(format!("invalid configuration: `{setting}.ca_file` {what}"));
        let pem = std::fs::read(path).map_err(|e| invalid(format!("{}: cannot read it: {e}", path.display())))?;
        let mut added = 0;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls::pki_types::CertificateDer<'static> =
                cert.map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid(format!("{} holds no PEM certificate", path.display())));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal("tls", e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
