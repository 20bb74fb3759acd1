//! Client TLS configuration (rustls with ring): the web PKI roots, plus the
//! CA certificates of a PEM file when one is given. ALPN `http/1.1`.

use std::path::Path;
use std::sync::Arc;

/// Build a client config. Reads the CA file: call it off the workers.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))? {
            let cert = cert.map_err(|e| format!("bad PEM in `{}`: {e}", path.display()))?;
            roots.add(cert).map_err(|e| format!("bad CA certificate in `{}`: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("`{}` holds no certificates", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
