//! TLS with rustls (ring): the client configuration for upstreams (web PKI
//! roots plus an optional CA file), and the listener's server configuration,
//! reloaded when its files change. ALPN `http/1.1` both ways.

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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

/// Build a server config from a PEM certificate chain and a PEM private key.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("cannot read `{}`: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in `{}`: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificates", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("bad private key in `{}`: {e}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not work together: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The listener's TLS configuration, swapped whole when the files change.
pub struct ServerTls {
    current: ArcSwap<rustls::ServerConfig>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let md = std::fs::metadata(p).ok()?;
    Some((md.modified().ok()?, md.len()))
}

impl ServerTls {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerTls>, String> {
        let cfg = server_config(cert_file, key_file)?;
        Ok(Arc::new(ServerTls {
            current: ArcSwap::new(cfg),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        }))
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// Load the files again now; on failure the running configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        self.current.store(server_config(&self.cert_file, &self.key_file)?);
        Ok(())
    }

    /// Watch the files every `every`; reload when either changes.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        let me = Arc::downgrade(self);
        let mut last = (stamp(&self.cert_file), stamp(&self.key_file));
        std::thread::Builder::new().name("sb-tls-watch".into()).spawn(move || loop {
            std::thread::sleep(every);
            let Some(tls) = me.upgrade() else { return };
            let now = (stamp(&tls.cert_file), stamp(&tls.key_file));
            if now == last {
                continue;
            }
            match tls.reload() {
                Ok(()) => {
                    last = now;
                    tracing::info!(cert = %tls.cert_file.display(), "TLS certificate reloaded");
                }
                // Keep trying: the two files may be mid-rewrite.
                Err(e) => tracing::warn!(error = %e, "TLS certificate reload failed; keeping the running one"),
            }
        })?;
        Ok(())
    }
}
