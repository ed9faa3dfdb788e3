//! TLS for a listener: a certificate chain and its key from PEM files, read again when they
//! change (cert-manager and kubelet renew them in place) so that new connections get the new
//! certificate and connections already open keep theirs; HTTP/2 and HTTP/1.1 offered by ALPN.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The PEM files of a listener's certificate chain and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("the key in {path} cannot be used: {reason}")]
    Key { path: String, reason: String },
    #[error("cannot configure TLS: {0}")]
    Config(String),
}

/// The files' bytes, as last read: what a change is told by.
#[derive(Clone, Default, PartialEq, Eq)]
struct Read {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl TlsFiles {
    fn read(&self) -> Result<Read, TlsError> {
        Ok(Read {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
        })
    }

    /// The certificate and key of `read`, checked to belong together.
    fn parse(&self, read: &Read) -> Result<CertifiedKey, TlsError> {
        let shown = |path: &Path| path.display().to_string();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read.cert)
            .collect::<Result<_, _>>()
            .ok()
            .filter(|chain: &Vec<_>| !chain.is_empty())
            .ok_or_else(|| TlsError::NoCertificate {
                path: shown(&self.cert),
            })?;
        let key = PrivateKeyDer::from_pem_slice(&read.key).map_err(|_| TlsError::NoKey {
            path: shown(&self.key),
        })?;
        let unusable = |reason: String| TlsError::Key {
            path: shown(&self.key),
            reason,
        };
        let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
            .map_err(|e| unusable(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signer);
        certified
            .keys_match()
            .map_err(|e| unusable(format!("it is not the certificate's key ({e})")))?;
        Ok(certified)
    }
}

/// The certificates (DER) of a PEM file of CAs a client trusts besides the system's
/// (`--ca-file`): at least one, or an error that names the file.
pub fn ca_certificates(path: &Path) -> Result<Vec<Vec<u8>>, TlsError> {
    let pem = read(path)?;
    let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .ok()
        .filter(|all: &Vec<_>| !all.is_empty())
        .ok_or_else(|| TlsError::NoCertificate {
            path: path.display().to_string(),
        })?;
    Ok(certificates)
}

/// The certificate a listener presents, replaced when its files change.
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    last: Mutex<Read>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// The certificate of `files`; an error if they hold none usable.
    pub fn load(files: TlsFiles) -> Result<Arc<ReloadingCert>, TlsError> {
        let read = files.read()?;
        let certified = files.parse(&read)?;
        Ok(Arc::new(ReloadingCert {
            files,
            current: RwLock::new(Arc::new(certified)),
            last: Mutex::new(read),
        }))
    }

    /// Reads the files; when they changed and hold a usable certificate, it is the one presented
    /// from now on. `Ok(false)`: nothing changed. A broken pair (a key written before its
    /// certificate, say) keeps the previous certificate and says why.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let read = self.files.read()?;
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if *last == read {
            return Ok(false);
        }
        let certified = self.files.parse(&read)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        *last = read;
        Ok(true)
    }

    /// Looks at the files every `period` until the task is aborted, and logs what it finds.
    pub fn watch(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(period).await;
                match this.reload() {
                    Ok(true) => {
                        failing = false;
                        tracing::info!(cert = %this.files.cert.display(), "TLS certificate reloaded");
                    }
                    Ok(false) => failing = false,
                    // Said once per failure, not every period: a renewal in progress mends itself.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "TLS certificate not reloaded: the previous one is still presented");
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// The TLS acceptor presenting this certificate, with HTTP/2 and HTTP/1.1 by ALPN.
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}
