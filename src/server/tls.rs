//! TLS and mutual TLS on the gRPC listener (`tls.*`), with rustls on the aws-lc-rs provider the
//! registry client already uses.
//!
//! - The certificate chain and key are read again every `tls.reload_interval_secs`; a changed,
//!   valid pair serves every new handshake from then on (cert-manager rotating a Secret needs no
//!   restart), open connections keep theirs, and a broken pair is logged and ignored. The client
//!   CA bundle is read at start only: a new CA takes a restart.
//! - With `tls.client_ca_file`, a client must present a certificate that bundle verifies; with
//!   `tls.allowed_clients`, one of its DNS or URI subject alternative names (a SPIFFE ID) must
//!   also be listed. A refused client fails the handshake; nothing of it reaches the pipeline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::config::TlsConfig;

/// The acceptor's configuration, and the reloader to run beside it.
pub(crate) struct Tls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    certs: Arc<Reloading>,
    every: Duration,
}

impl Tls {
    /// `None` when `tls.cert_file` is not set; an error names the file that did not load.
    pub(crate) fn from_config(tls: &TlsConfig) -> Result<Option<Tls>, String> {
        let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = Arc::new(Reloading::load(cert_file, key_file, &provider)?);
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &tls.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", ca.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("{}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(Arc::new(Allowlisted {
                    inner: verifier,
                    allowed: tls.allowed_clients.clone(),
                }))
            }
        };
        let mut config = builder.with_cert_resolver(certs.clone());
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Tls {
            config: Arc::new(config),
            certs,
            every: tls.reload_interval,
        }))
    }

    /// Rereads the certificate and key every interval, for as long as the runtime runs.
    pub(crate) fn watch(&self) {
        let (certs, every) = (self.certs.clone(), self.every);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                certs.reload();
            }
        });
    }
}

/// The server's certificate and key, swapped when their files change.
struct Reloading {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The file contents the current pair was made from.
    loaded: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl Reloading {
    fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Reloading, String> {
        let (cert_pem, key_pem) = (read(cert_file)?, read(key_file)?);
        let pair = certified(&cert_pem, &key_pem, provider)
            .map_err(|e| format!("{} and {}: {e}", cert_file.display(), key_file.display()))?;
        Ok(Reloading {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider: provider.clone(),
            current: ArcSwap::from_pointee(pair),
            loaded: std::sync::Mutex::new((cert_pem, key_pem)),
        })
    }

    /// Takes the files' pair if they changed and make a valid one; otherwise keeps the current.
    fn reload(&self) {
        let (Ok(cert_pem), Ok(key_pem)) = (read(&self.cert_file), read(&self.key_file)) else {
            tracing::warn!(cert_file = %self.cert_file.display(), "TLS files unreadable; keeping the current certificate");
            return;
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return;
        }
        match certified(&cert_pem, &key_pem, &self.provider) {
            Ok(pair) => {
                self.current.store(Arc::new(pair));
                *loaded = (cert_pem, key_pem);
                tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
            }
            // Mid-rotation the two files may briefly disagree: the next look takes the pair.
            Err(error) => tracing::warn!(
                error,
                cert_file = %self.cert_file.display(),
                "TLS certificate and key do not load; keeping the current ones"
            ),
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

/// A chain and its key, checked to belong together.
fn certified(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| e.to_string())
}

/// The CA's verdict, then the allowlist of identities.
#[derive(Debug)]
struct Allowlisted {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl Allowlisted {
    fn listed(&self, end_entity: &CertificateDer<'_>) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(end_entity) else {
            return false;
        };
        // DNS names compare without case; URIs (SPIFFE IDs) exactly.
        let dns = cert
            .valid_dns_names()
            .any(|name| self.allowed.iter().any(|a| a.eq_ignore_ascii_case(name)));
        dns || cert
            .valid_uri_names()
            .any(|name| self.allowed.iter().any(|a| a == name))
    }
}

impl ClientCertVerifier for Allowlisted {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.allowed.is_empty() || self.listed(end_entity) {
            return Ok(verified);
        }
        tracing::warn!(
            "TLS client refused: its certificate names no identity in tls.allowed_clients"
        );
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
