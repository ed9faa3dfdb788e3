//! A certificate authority made by a test, and HTTPS servers with its certificates: what wid
//! must trust only when told to (`--ca-file` for the agent, `SSL_CERT_FILE` for the token
//! service). A test tool: a failure to make a key or a certificate panics.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A test CA: its certificate in PEM (to hand to the process under test) and its key, to sign
/// server certificates.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
}

/// A server certificate and its key, in DER.
pub struct ServerCert {
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wid test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `dir` and returns its path.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, &self.cert_pem).expect("write CA");
        path
    }

    /// A server certificate for loopback (`127.0.0.1`, `::1`, `localhost`).
    pub fn server_cert(&self) -> ServerCert {
        self.server_cert_for(&[])
    }

    /// A server certificate for loopback and `names` (host names or IP addresses).
    pub fn server_cert_for(&self, names: &[String]) -> ServerCert {
        let (cert, key) = self.signed(names);
        ServerCert {
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    /// A server certificate for loopback and `names`, and its key, in PEM: the files a server
    /// is given.
    pub fn server_pem(&self, names: &[String]) -> (String, String) {
        let (cert, key) = self.signed(names);
        (cert.pem(), key.serialize_pem())
    }

    fn signed(&self, names: &[String]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("server key");
        let mut all = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        all.extend(
            names
                .iter()
                .filter(|n| !all.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let params = rcgen::CertificateParams::new(all).expect("server params");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        (cert, key)
    }
}

/// Serves `router` over HTTPS on a loopback port of its own; returns its base URL
/// (`https://127.0.0.1:PORT`) and the task, which stops serving when aborted.
pub async fn serve_https(
    router: axum::Router,
    cert: ServerCert,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = base_url(&listener);
    (url, serve_https_on(listener, router, cert))
}

/// `https://HOST:PORT` of a listener.
pub fn base_url(listener: &tokio::net::TcpListener) -> String {
    let addr = listener.local_addr().expect("addr");
    format!("https://{addr}")
}

/// Serves `router` over HTTPS on `listener` until the task is aborted.
pub fn serve_https_on(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    cert: ServerCert,
) -> tokio::task::JoinHandle<()> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(cert.chain, cert.key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}
