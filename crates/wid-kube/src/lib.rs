//! The Kubernetes API as wid's parts reach it: an API server found as `kubectl` finds one (a
//! kubeconfig named, `KUBECONFIG`, `~/.kube/config`, the pod's service account), and what it says
//! of the cluster's service-account tokens: their issuer (OIDC discovery) and their keys
//! (`/openid/v1/jwks`). The node agent watches pods through it; `wid iam clusters register
//! --kubeconfig` reads a cluster's issuer and keys through it.

use std::path::Path;

pub use kube::Client;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("reading the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes configuration (a kubeconfig named, KUBECONFIG, ~/.kube/config, or a pod's service account): {0}"
    )]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(kube::Error),
    #[error("reading {what} from the API server at {server}: {source}")]
    Read {
        what: &'static str,
        server: String,
        source: kube::Error,
    },
    #[error("the API server at {server} names no issuer in /.well-known/openid-configuration")]
    NoIssuer { server: String },
}

/// What a cluster's API server says of its service-account tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer {
    /// The issuer (kube-apiserver's `--service-account-issuer`), from its OIDC discovery.
    pub uri: String,
    /// The keys, as the API server publishes them.
    pub jwks_json: String,
}

/// A cluster's API server and a client of it.
#[derive(Clone)]
pub struct ApiServer {
    client: Client,
    url: String,
}

impl ApiServer {
    /// The API server of `kubeconfig`, or as `kubectl` finds one.
    pub async fn find(kubeconfig: Option<&Path>) -> Result<ApiServer, KubeError> {
        let config = match kubeconfig {
            Some(path) => {
                let kubeconfig_error = |source| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                };
                let file = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
                let options = kube::config::KubeConfigOptions::default();
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(kubeconfig_error)?
            }
            None => kube::Config::infer().await?,
        };
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(KubeError::Client)?;
        Ok(ApiServer { client, url })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// GETs `path` of the API server as text; `what` names it in errors.
    async fn get(&self, path: &str, what: &'static str) -> Result<String, KubeError> {
        let read = |source| KubeError::Read {
            what,
            server: self.url.clone(),
            source,
        };
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| read(kube::Error::HttpError(e)))?;
        self.client.request_text(request).await.map_err(read)
    }

    /// The cluster's service-account token issuer, from the API server's OIDC discovery.
    pub async fn issuer_uri(&self) -> Result<String, KubeError> {
        const WHAT: &str = "the issuer (/.well-known/openid-configuration)";
        let text = self.get("/.well-known/openid-configuration", WHAT).await?;
        let document: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| KubeError::Read {
                what: WHAT,
                server: self.url.clone(),
                source: kube::Error::SerdeError(e),
            })?;
        document["issuer"]
            .as_str()
            .filter(|issuer| !issuer.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| KubeError::NoIssuer {
                server: self.url.clone(),
            })
    }

    /// The issuer and the keys of the cluster's service-account tokens. The keys come from
    /// `/openid/v1/jwks`, whatever host the discovery document's `jwks_uri` names: the API server
    /// always serves them there, also when the issuer is published elsewhere.
    pub async fn issuer(&self) -> Result<Issuer, KubeError> {
        let uri = self.issuer_uri().await?;
        let jwks_json = self
            .get("/openid/v1/jwks", "the keys (/openid/v1/jwks)")
            .await?;
        Ok(Issuer { uri, jwks_json })
    }
}
