//! `wid metadata google-setup`: the gcloud commands that let a cluster's pods reach Google Cloud
//! through Workload Identity Federation (a pool, the cluster's issuer as its OIDC provider with
//! the cluster's keys, a binding for one KSA), and the agent's flags, printed as a script.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use wid_dev::sh_quote;

#[derive(Args, Debug)]
pub struct GoogleSetupArgs {
    /// The Google Cloud project of the pool and the service account.
    #[arg(long)]
    pub project: String,
    /// The project's number; without it the script asks gcloud (`gcloud projects describe`).
    #[arg(long)]
    pub project_number: Option<String>,
    /// The workload identity pool to create.
    #[arg(long)]
    pub pool: String,
    /// The pool's OIDC provider for this cluster.
    #[arg(long)]
    pub provider: String,
    /// The cluster's API server; default KUBECONFIG's (or ~/.kube/config's), else the
    /// in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the KSA the script binds.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The KSA the script binds.
    #[arg(long, default_value = "default")]
    pub ksa: String,
    /// The service account the KSA acts as; without it the script creates
    /// wid-workload@PROJECT.iam.gserviceaccount.com.
    #[arg(long)]
    pub service_account: Option<String>,
    /// Where the script writes the cluster's keys for gcloud.
    #[arg(long, default_value = "cluster-jwks.json")]
    pub jwks_file: PathBuf,
}

/// The account the script creates when none is named.
const EXAMPLE_ACCOUNT: &str = "wid-workload";

/// The longest `google.subject` Google maps.
const MAX_SUBJECT_BYTES: usize = 127;

/// Refuses, before anything is read, what would make a wrong script: every value that reaches
/// it is checked against its own rules, so none can carry shell syntax.
fn check(args: &GoogleSetupArgs) -> anyhow::Result<()> {
    use wid_iam::names;
    names::validate_project_id(&args.project).map_err(anyhow::Error::msg)?;
    if let Some(number) = &args.project_number {
        names::validate_project_number(number).map_err(anyhow::Error::msg)?;
    }
    names::validate_pool_id("pool", &args.pool).map_err(anyhow::Error::msg)?;
    names::validate_pool_id("provider", &args.provider).map_err(anyhow::Error::msg)?;
    if !names::is_kubernetes_namespace(&args.namespace) {
        bail!(
            "--namespace {:?} is not a Kubernetes namespace",
            args.namespace
        );
    }
    if !names::is_kubernetes_service_account(&args.ksa) {
        bail!(
            "--ksa {:?} is not a Kubernetes service account name",
            args.ksa
        );
    }
    let subject = format!("system:serviceaccount:{}:{}", args.namespace, args.ksa);
    if subject.len() > MAX_SUBJECT_BYTES {
        bail!(
            "the KSA's subject {subject} is {} bytes; Google maps at most {MAX_SUBJECT_BYTES} into google.subject",
            subject.len()
        );
    }
    if let Some(email) = &args.service_account
        && names::parse_service_account_email(email).is_none()
    {
        bail!("--service-account {email:?} is not a service account's email");
    }
    Ok(())
}

/// Reads the cluster's issuer and keys from its API server, then prints the script.
pub async fn google_setup(args: GoogleSetupArgs) -> anyhow::Result<()> {
    check(&args)?;
    let server = wid_kube::ApiServer::find(args.kubeconfig.as_deref())
        .await
        .context("the cluster's issuer and keys are read from its API server: set KUBECONFIG or give --kubeconfig FILE")?;
    eprintln!(
        "Reading the cluster's issuer and keys from the API server at {}.",
        server.url()
    );
    let issuer = server.issuer().await?;
    let keys = wid_jose::jwk::Jwks::parse(&issuer.jwks_json)
        .ok()
        .filter(|keys| !keys.keys.is_empty())
        .with_context(|| format!("the API server at {} served no usable JWKS", server.url()))?;
    // Compact JSON: one line, so it cannot end the script's here-document early.
    let jwks_json = serde_json::to_string(&keys).context("the cluster's keys as JSON")?;
    wid_iam::names::validate_issuer_uri(&issuer.uri).map_err(anyhow::Error::msg)?;
    print!("{}", script(&args, server.url(), &issuer.uri, &jwks_json));
    Ok(())
}

/// The account the script binds: the one given, or the one it creates.
fn account(args: &GoogleSetupArgs) -> String {
    args.service_account
        .clone()
        .unwrap_or_else(|| format!("{EXAMPLE_ACCOUNT}@{}.iam.gserviceaccount.com", args.project))
}

/// The script for `args` (checked), the cluster at `api_server` with its issuer and keys.
fn script(args: &GoogleSetupArgs, api_server: &str, issuer: &str, jwks_json: &str) -> String {
    let (project, pool, provider) = (&args.project, &args.pool, &args.provider);
    let (ns, ksa, account) = (&args.namespace, &args.ksa, account(args));
    let jwks = sh_quote(&args.jwks_file.display().to_string()).into_owned();
    let issuer = sh_quote(issuer);
    let number = match &args.project_number {
        Some(number) => number.clone(),
        None => {
            format!("\"$(gcloud projects describe {project} --format='value(projectNumber)')\"")
        }
    };
    let pool_path =
        format!("projects/${{PROJECT_NUMBER}}/locations/global/workloadIdentityPools/{pool}");
    let in_pool = format!("--project={project} --location=global --workload-identity-pool={pool}");
    let mut out = format!(
        "#!/bin/sh\n\
         # Workload Identity Federation for the Kubernetes cluster at {api_server}: its pods reach\n\
         # Google Cloud with no keys, through the metadata server. Run with gcloud signed in as an\n\
         # owner of the project {project}, its APIs on:\n\
         #   gcloud services enable iam.googleapis.com sts.googleapis.com iamcredentials.googleapis.com --project={project}\n\
         # What exists already is left as it is, so the script can run again.\n\
         set -eu\n\
         PROJECT_NUMBER={number}\n\n\
         # A pool for the cluster's workloads.\n\
         gcloud iam workload-identity-pools describe {pool} --project={project} --location=global >/dev/null 2>&1 ||\n  \
         gcloud iam workload-identity-pools create {pool} --project={project} --location=global\n\n\
         # The cluster's issuer as the pool's OIDC provider, its keys uploaded: the issuer need not be\n\
         # reachable from Google. Upload them again (update-oidc) when the cluster rotates its keys.\n\
         cat > {jwks} <<'JWKS'\n{jwks_json}\nJWKS\n\
         gcloud iam workload-identity-pools providers describe {provider} {in_pool} >/dev/null 2>&1 ||\n  \
         gcloud iam workload-identity-pools providers create-oidc {provider} {in_pool} \\\n    \
         --issuer-uri={issuer} --attribute-mapping=google.subject=assertion.sub --jwk-json-path={jwks}\n\n\
         # The KSA {ns}/{ksa} may act as {account}.\n",
    );
    if args.service_account.is_none() {
        out.push_str(&format!(
            "gcloud iam service-accounts describe {account} --project={project} >/dev/null 2>&1 ||\n  \
             gcloud iam service-accounts create {EXAMPLE_ACCOUNT} --project={project}\n"
        ));
    }
    out.push_str(&format!(
        "# (A new account takes a moment to be seen everywhere: the binding is tried a few times.)\n\
         for attempt in 1 2 3 4 5 6; do\n  \
         gcloud iam service-accounts add-iam-policy-binding {account} --project={project} \\\n    \
         --role=roles/iam.workloadIdentityUser \\\n    \
         --member=\"principal://iam.googleapis.com/{pool_path}/subject/system:serviceaccount:{ns}:{ksa}\" && break\n  \
         [ \"$attempt\" = 6 ] && exit 1\n  \
         sleep 10\n\
         done\n\n\
         # Then annotate the KSA, and run the agent (deploy/kubernetes/) with these flags:\n\
         #   kubectl annotate serviceaccount {ksa} --namespace={ns} iam.gke.io/gcp-service-account={account}\n\
         echo \"wid metadata serve --workload-identity-provider={pool_path}/providers/{provider} --project={project}\"\n",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> GoogleSetupArgs {
        GoogleSetupArgs {
            project: "my-proj".into(),
            project_number: Some("123".into()),
            pool: "kind-pool".into(),
            provider: "kind".into(),
            kubeconfig: None,
            namespace: "team-a".into(),
            ksa: "app".into(),
            service_account: None,
            jwks_file: "keys.json".into(),
        }
    }

    /// Every value that reaches the script is refused unless it is what it claims to be: none
    /// can carry shell syntax.
    #[test]
    fn values_are_checked_before_the_script_is_made() {
        assert!(check(&args()).is_ok());
        let wrong = [
            GoogleSetupArgs {
                namespace: "$(id)".into(),
                ..args()
            },
            GoogleSetupArgs {
                ksa: "a\nrm -rf x".into(),
                ..args()
            },
            GoogleSetupArgs {
                project: "my proj".into(),
                ..args()
            },
            GoogleSetupArgs {
                project_number: Some("12a".into()),
                ..args()
            },
            GoogleSetupArgs {
                pool: "p".into(),
                ..args()
            },
            GoogleSetupArgs {
                service_account: Some("x\"y".into()),
                ..args()
            },
            GoogleSetupArgs {
                namespace: "n".repeat(60),
                ksa: "k".repeat(60),
                ..args()
            },
        ];
        for args in wrong {
            assert!(check(&args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn the_script_names_the_pool_provider_binding_and_flags() {
        let out = script(
            &args(),
            "https://127.0.0.1:6443",
            "https://kubernetes.default.svc",
            "{\"keys\":[]}",
        );
        for line in [
            "PROJECT_NUMBER=123\n",
            "gcloud iam workload-identity-pools describe kind-pool --project=my-proj --location=global >/dev/null 2>&1 ||\n  gcloud iam workload-identity-pools create kind-pool --project=my-proj --location=global\n",
            "cat > keys.json <<'JWKS'\n{\"keys\":[]}\nJWKS\n",
            "--issuer-uri=https://kubernetes.default.svc --attribute-mapping=google.subject=assertion.sub --jwk-json-path=keys.json\n",
            "gcloud iam service-accounts create wid-workload --project=my-proj\n",
            "--member=\"principal://iam.googleapis.com/projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/kind-pool/subject/system:serviceaccount:team-a:app\" && break\n",
            "echo \"wid metadata serve --workload-identity-provider=projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/kind-pool/providers/kind --project=my-proj\"\n",
        ] {
            assert!(out.contains(line), "{line}\n---\n{out}");
        }
        let named = GoogleSetupArgs {
            project_number: None,
            service_account: Some("app@my-proj.iam.gserviceaccount.com".into()),
            ..args()
        };
        let unknown = script(&named, "u", "i", "{}");
        assert!(
            unknown.contains("PROJECT_NUMBER=\"$(gcloud projects describe my-proj --format='value(projectNumber)')\""),
            "{unknown}"
        );
        assert!(!unknown.contains("service-accounts create"), "{unknown}");
    }
}
