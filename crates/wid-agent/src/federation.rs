//! Which workload identity pool the node's pods are members of, and so what the agent asks of
//! STS: GKE's fixed pool of the project (each cluster a provider, named by its issuer), or a
//! pool's OIDC provider (Workload Identity Federation: Google Cloud's, or a wid token service's
//! pool). Pure: the names, audiences, subjects and scopes of each.

/// The scope of a federated token that buys service-account tokens in GKE's flow.
const IAM_SCOPE: &str = "https://www.googleapis.com/auth/iam";
/// The scope Google's client libraries ask STS for in Workload Identity Federation.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A workload identity pool provider:
/// `projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderName {
    pub project_number: String,
    pub pool: String,
    pub provider: String,
}

/// The form a provider's name takes, for messages.
pub const PROVIDER_FORM: &str =
    "projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER";

impl ProviderName {
    /// Reads a provider's resource name, bare or with the `//iam.googleapis.com/` prefix.
    pub fn parse(text: &str) -> Result<ProviderName, String> {
        let wrong = || {
            format!(
                "'{text}' is not a workload identity pool provider: give {PROVIDER_FORM} (or //iam.googleapis.com/{PROVIDER_FORM})"
            )
        };
        let path = text.strip_prefix("//iam.googleapis.com/").unwrap_or(text);
        let (number, pool, provider) =
            wid_iam::names::split_provider_name(path).ok_or_else(wrong)?;
        if !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{}: the project is named by its number here",
                wrong()
            ));
        }
        for (kind, id) in [("pool", pool), ("provider", provider)] {
            wid_iam::names::validate_pool_id(kind, id).map_err(|e| format!("{}: {e}", wrong()))?;
        }
        Ok(ProviderName {
            project_number: number.to_owned(),
            pool: pool.to_owned(),
            provider: provider.to_owned(),
        })
    }

    /// `projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
    pub fn path(&self) -> String {
        format!(
            "projects/{}/locations/global/workloadIdentityPools/{}/providers/{}",
            self.project_number, self.pool, self.provider
        )
    }

    /// The provider's canonical name, `//iam.googleapis.com/...`: STS's `audience`, and what a
    /// provider with no `allowedAudiences` accepts as a token's `aud`.
    pub fn canonical(&self) -> String {
        format!("//iam.googleapis.com/{}", self.path())
    }
}

/// The pool of the node's pods, and how its STS is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Federation {
    /// GKE's fixed pool `PROJECT.svc.id.goog`; the cluster is named by its issuer.
    Gke { project_id: String },
    /// A pool's OIDC provider. KSA tokens carry `ksa_audience` (the provider's canonical name
    /// unless the provider was configured with an audience of its own).
    Provider {
        name: ProviderName,
        ksa_audience: String,
    },
}

impl Federation {
    /// Workload Identity Federation through `name`, its KSA tokens' audience `ksa_audience` or
    /// else the provider's canonical name.
    pub fn provider(name: ProviderName, ksa_audience: Option<String>) -> Federation {
        let ksa_audience = ksa_audience.unwrap_or_else(|| name.canonical());
        Federation::Provider { name, ksa_audience }
    }

    /// The pool's id: what `email` answers for a KSA without an account, as GKE answers
    /// `PROJECT.svc.id.goog`.
    pub fn pool(&self) -> String {
        match self {
            Federation::Gke { project_id } => format!("{project_id}.svc.id.goog"),
            Federation::Provider { name, .. } => name.pool.clone(),
        }
    }

    /// The audience of the KSA tokens the agent exchanges.
    pub fn ksa_audience(&self) -> String {
        match self {
            Federation::Gke { .. } => self.pool(),
            Federation::Provider { ksa_audience, .. } => ksa_audience.clone(),
        }
    }

    /// STS's `audience` for KSA tokens of the issuer `issuer`.
    pub fn sts_audience(&self, issuer: &str) -> String {
        match self {
            Federation::Gke { .. } => format!("identitynamespace:{}:{issuer}", self.pool()),
            Federation::Provider { name, .. } => name.canonical(),
        }
    }

    /// The project's number, when the pool's name says it.
    pub fn project_number(&self) -> Option<&str> {
        match self {
            Federation::Gke { .. } => None,
            Federation::Provider { name, .. } => Some(&name.project_number),
        }
    }

    /// The subject of a KSA in the pool: GKE's `ns/NS/sa/KSA`, or what a generic provider's
    /// mapping `google.subject=assertion.sub` makes of a Kubernetes token,
    /// `system:serviceaccount:NS:KSA`.
    pub fn subject(&self, namespace: &str, ksa: &str) -> String {
        match self {
            Federation::Gke { .. } => wid_iam::member::gke_subject(namespace, ksa),
            Federation::Provider { .. } => format!("system:serviceaccount:{namespace}:{ksa}"),
        }
    }

    /// The principal of a KSA, `principal://iam.googleapis.com/projects/N/...`, given the
    /// project's number.
    pub fn principal(&self, project_number: &str, namespace: &str, ksa: &str) -> String {
        let subject = self.subject(namespace, ksa);
        wid_iam::member::principal_name(project_number, &self.pool(), &subject)
    }

    /// The scopes the exchange asks for: of a federated token that buys a service account's
    /// tokens (`impersonating`), or of one a pod uses itself with `asked`.
    pub fn exchange_scopes(&self, impersonating: bool, asked: &[String]) -> Vec<String> {
        match self {
            Federation::Gke { .. } if impersonating => vec![IAM_SCOPE.to_owned()],
            Federation::Gke { .. } => asked.to_vec(),
            // As Google's own client libraries ask STS.
            Federation::Provider { .. } => vec![CLOUD_PLATFORM.to_owned()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str =
        "projects/123/locations/global/workloadIdentityPools/eks-pool/providers/prod";

    #[test]
    fn provider_names_parse_bare_or_prefixed() {
        let name = ProviderName::parse(NAME).expect("bare");
        assert_eq!(
            ProviderName::parse(&format!("//iam.googleapis.com/{NAME}")),
            Ok(name.clone())
        );
        assert_eq!(name.path(), NAME);
        assert_eq!(name.canonical(), format!("//iam.googleapis.com/{NAME}"));
        for bad in [
            "",
            "projects/123/locations/global/workloadIdentityPools/eks-pool",
            "projects/my-project/locations/global/workloadIdentityPools/eks-pool/providers/prod",
            "projects/123/locations/us/workloadIdentityPools/eks-pool/providers/prod",
            "https://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/eks-pool/providers/prod",
            "projects/123/locations/global/workloadIdentityPools/Eks-pool/providers/prod",
            "projects/123/locations/global/workloadIdentityPools/eks-pool/providers/prod/extra",
        ] {
            let error = ProviderName::parse(bad).expect_err(bad);
            assert!(error.contains(PROVIDER_FORM), "{error}");
        }
    }

    #[test]
    fn each_federation_asks_sts_its_own_way() {
        let gke = Federation::Gke {
            project_id: "p".into(),
        };
        assert_eq!(gke.pool(), "p.svc.id.goog");
        assert_eq!(gke.ksa_audience(), "p.svc.id.goog");
        assert_eq!(
            gke.sts_audience("https://issuer"),
            "identitynamespace:p.svc.id.goog:https://issuer"
        );
        assert_eq!(gke.project_number(), None);
        assert_eq!(
            gke.principal("1", "ns", "ksa"),
            "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p.svc.id.goog/subject/ns/ns/sa/ksa"
        );
        assert_eq!(gke.exchange_scopes(true, &[]), vec![IAM_SCOPE]);

        let name = ProviderName::parse(NAME).expect("name");
        let wif = Federation::provider(name.clone(), None);
        assert_eq!(wif.pool(), "eks-pool");
        assert_eq!(wif.ksa_audience(), name.canonical());
        assert_eq!(wif.sts_audience("https://issuer"), name.canonical());
        assert_eq!(wif.project_number(), Some("123"));
        assert_eq!(
            wif.principal("123", "ns", "ksa"),
            "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/eks-pool/subject/system:serviceaccount:ns:ksa"
        );
        assert_eq!(wif.exchange_scopes(true, &[]), vec![CLOUD_PLATFORM]);
        assert_eq!(
            wif.exchange_scopes(false, &["s".into()]),
            vec![CLOUD_PLATFORM]
        );
        let audience = Federation::provider(name, Some("sts.example".into()));
        assert_eq!(audience.ksa_audience(), "sts.example");
    }
}
