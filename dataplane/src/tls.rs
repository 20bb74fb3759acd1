//! TLS with rustls (ring): the client configuration for upstreams (web PKI
//! roots plus an optional CA file, or one pinned certificate for a node
//! agent), and the listener's server configuration,
//! reloaded when its files change. ALPN `http/1.1` both ways.

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use switchboard_shared::KeyHash;

/// Build a client config. Reads the CA file: call it off the workers.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        use rustls::pki_types::pem::PemObject;
        let mut added = 0;
        let pem = read_pem_file(path)?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
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

/// A client config that trusts one certificate: the one whose DER has this
/// SHA-256 (a node agent's, self-signed). Names and dates are not checked —
/// the pin says exactly which certificate — but the handshake signature is,
/// so only the holder of that certificate's key gets through.
pub fn pinned_client_config(pin: KeyHash) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned { sha256: pin, algs: provider.signature_verification_algorithms });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct Pinned {
    sha256: KeyHash,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if KeyHash::of(end_entity.as_ref()) == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Build a server config from a PEM certificate chain and a PEM private key.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let (certs, key) = read_chain_and_key(cert_file, key_file)?;
    server_config_from(certs, key)
}

/// Read a PEM certificate chain (at least one certificate, leaf first) and a
/// PEM private key.
pub fn read_chain_and_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_pem_file(cert_file)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in `{}`: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificates", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read_pem_file(key_file)?)
        .map_err(|e| format!("bad private key in `{}`: {e}", key_file.display()))?;
    Ok((certs, key))
}

/// The most a PEM file (a CA bundle, a certificate chain, a key) may hold.
pub const PEM_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Read a PEM file named in a config or through the admin API: a regular
/// file of at most [`PEM_MAX_BYTES`]. A FIFO, a device (`/dev/zero`) or a
/// directory is refused without being read, so a careless path can neither
/// block the caller (the admin's writer) nor fill its memory.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: &dyn std::fmt::Display| format!("cannot read `{}`: {e}", path.display());
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| cannot(&e))?;
    let meta = file.metadata().map_err(|e| cannot(&e))?;
    if !meta.is_file() {
        return Err(cannot(&"not a regular file"));
    }
    if meta.len() > PEM_MAX_BYTES {
        return Err(cannot(&format_args!("larger than {PEM_MAX_BYTES} bytes")));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(PEM_MAX_BYTES + 1).read_to_end(&mut bytes).map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > PEM_MAX_BYTES {
        return Err(cannot(&format_args!("larger than {PEM_MAX_BYTES} bytes")));
    }
    Ok(bytes)
}

/// Build a server config from a certificate chain (leaf first) and its key.
pub fn server_config_from(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_are_regular_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        let c = rcgen::generate_simple_self_signed(vec!["ca.invalid".to_string()]).unwrap();
        std::fs::write(&good, c.cert.pem()).unwrap();
        assert!(client_config(Some(&good)).is_ok());
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = dir.path().join("fifo.pem");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let huge = dir.path().join("huge.pem");
        std::fs::File::create(&huge).unwrap().set_len(PEM_MAX_BYTES + 1).unwrap();
        for (path, why) in [
            (fifo.as_path(), "not a regular file"),
            (Path::new("/dev/zero"), "not a regular file"),
            (dir.path(), "not a regular file"),
            (huge.as_path(), "larger than"),
            (Path::new("/nonexistent/ca.pem"), "cannot read"),
        ] {
            let e = client_config(Some(path)).err().unwrap_or_else(|| panic!("{path:?} accepted"));
            assert!(e.contains(why), "{path:?}: {e}");
        }
    }

    fn self_signed() -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
        let c = rcgen::generate_simple_self_signed(vec!["node.invalid".to_string()]).unwrap();
        let der = c.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(c.key_pair.serialize_der().into());
        let cfg = server_config_from(vec![der.clone()], key).unwrap();
        (der, cfg)
    }

    /// A whole handshake in memory: the client's bytes to the server and back.
    fn handshake(client: Arc<rustls::ClientConfig>, server: Arc<rustls::ServerConfig>) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut c = rustls::ClientConnection::new(client, name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
            buf.clear();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn a_pinned_client_accepts_its_certificate_and_no_other() {
        let (der, server) = self_signed();
        let (_, impostor) = self_signed();
        let pinned = pinned_client_config(KeyHash::of(der.as_ref())).unwrap();
        handshake(pinned.clone(), server.clone()).expect("the pinned certificate is accepted");
        let e = handshake(pinned, impostor).expect_err("another self-signed certificate is refused");
        assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e:?}");
        // The usual web-PKI client refuses the self-signed certificate: the pin is what lets it through.
        let webpki = client_config(None).unwrap();
        assert!(handshake(webpki, server).is_err());
    }
}
