//! `wid metadata google-setup`: the gcloud commands that let a cluster's pods reach Google Cloud
//! through Workload Identity Federation (a pool, the cluster's issuer as its OIDC provider with
//! the cluster's keys, a binding for one KSA), and the agent's flags, printed as a script.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use wid_agent::federation::ProviderName;
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

/// Reads the cluster's issuer and keys from its API server, then prints the script.
pub async fn google_setup(args: GoogleSetupArgs) -> anyhow::Result<()> {
    // The ids as a provider's name has them, checked before anything is read.
    ProviderName::parse(&format!(
        "projects/0/locations/global/workloadIdentityPools/{}/providers/{}",
        args.pool, args.provider
    ))
    .map_err(|_| {
        anyhow::anyhow!("--pool and --provider are ids: lowercase letters, digits and hyphens")
    })?;
    let server = wid_kube::ApiServer::find(args.kubeconfig.as_deref())
        .await
        .context("the cluster's issuer and keys are read from its API server: set KUBECONFIG or give --kubeconfig FILE")?;
    eprintln!(
        "Reading the cluster's issuer and keys from the API server at {}.",
        server.url()
    );
    let issuer = server.issuer().await?;
    print!(
        "{}",
        script(&args, server.url(), &issuer.uri, &issuer.jwks_json)
    );
    Ok(())
}

/// The script for `args`, the cluster at `api_server` with its issuer and keys.
fn script(args: &GoogleSetupArgs, api_server: &str, issuer: &str, jwks_json: &str) -> String {
    let project = sh_quote(&args.project);
    let (pool, provider) = (sh_quote(&args.pool), sh_quote(&args.provider));
    let jwks_file = args.jwks_file.display().to_string();
    let account = args
        .service_account
        .clone()
        .unwrap_or_else(|| format!("{EXAMPLE_ACCOUNT}@{}.iam.gserviceaccount.com", args.project));
    let number = match &args.project_number {
        Some(number) => sh_quote(number).into_owned(),
        None => {
            format!("\"$(gcloud projects describe {project} --format='value(projectNumber)')\"")
        }
    };
    let pool_path = format!(
        "projects/${{PROJECT_NUMBER}}/locations/global/workloadIdentityPools/{}",
        args.pool
    );
    let mut out = format!(
        "#!/bin/sh\n\
         # Workload Identity Federation for the Kubernetes cluster at {api_server}: its pods reach\n\
         # Google Cloud with no keys, through the metadata server. Run with gcloud signed in as an\n\
         # owner of the project {project}.\n\
         set -eu\n\
         PROJECT_NUMBER={number}\n\n\
         # A pool for the cluster's workloads.\n\
         gcloud iam workload-identity-pools create {pool} --project={project} --location=global\n\n\
         # The cluster's issuer as the pool's OIDC provider, its keys uploaded: the issuer need not be\n\
         # reachable from Google. Upload them again (update-oidc) when the cluster rotates its keys.\n\
         cat > {jwks} <<'JWKS'\n{keys}\nJWKS\n\
         gcloud iam workload-identity-pools providers create-oidc {provider} --project={project} --location=global \\\n  \
         --workload-identity-pool={pool} --issuer-uri={issuer} \\\n  \
         --attribute-mapping=google.subject=assertion.sub --jwk-json-path={jwks}\n\n",
        jwks = sh_quote(&jwks_file),
        keys = jwks_json.trim(),
        issuer = sh_quote(issuer),
    );
    out.push_str(&format!(
        "# The KSA {ns}/{ksa} may act as {account}.\n",
        ns = args.namespace,
        ksa = args.ksa
    ));
    if args.service_account.is_none() {
        out.push_str(&format!(
            "gcloud iam service-accounts create {EXAMPLE_ACCOUNT} --project={project}\n"
        ));
    }
    out.push_str(&format!(
        "gcloud iam service-accounts add-iam-policy-binding {account} --project={project} \\\n  \
         --role=roles/iam.workloadIdentityUser \\\n  \
         --member=\"principal://iam.googleapis.com/{pool_path}/subject/system:serviceaccount:{ns}:{ksa}\"\n\n",
        account = sh_quote(&account),
        ns = args.namespace,
        ksa = args.ksa,
    ));
    out.push_str(&format!(
        "# Then annotate the KSA, and run the agent (deploy/kubernetes/) with these flags:\n\
         #   kubectl annotate serviceaccount {ksa} --namespace={ns} iam.gke.io/gcp-service-account={account}\n\
         echo \"wid metadata serve --workload-identity-provider={pool_path}/providers/{provider_id} --project={project}\"\n",
        ksa = sh_quote(&args.ksa),
        ns = sh_quote(&args.namespace),
        account = sh_quote(&account),
        provider_id = args.provider,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_the_pool_provider_binding_and_flags() {
        let args = GoogleSetupArgs {
            project: "my-proj".into(),
            project_number: Some("123".into()),
            pool: "kind-pool".into(),
            provider: "kind".into(),
            kubeconfig: None,
            namespace: "team-a".into(),
            ksa: "app".into(),
            service_account: None,
            jwks_file: "keys.json".into(),
        };
        let out = script(
            &args,
            "https://127.0.0.1:6443",
            "https://kubernetes.default.svc",
            "{\"keys\":[]}\n",
        );
        assert!(out.contains("PROJECT_NUMBER=123\n"), "{out}");
        assert!(out.contains("gcloud iam workload-identity-pools create kind-pool --project=my-proj --location=global\n"), "{out}");
        assert!(
            out.contains("cat > keys.json <<'JWKS'\n{\"keys\":[]}\nJWKS\n"),
            "{out}"
        );
        assert!(
            out.contains("--issuer-uri=https://kubernetes.default.svc"),
            "{out}"
        );
        assert!(
            out.contains("gcloud iam service-accounts create wid-workload --project=my-proj\n"),
            "{out}"
        );
        assert!(out.contains("--member=\"principal://iam.googleapis.com/projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/kind-pool/subject/system:serviceaccount:team-a:app\""), "{out}");
        assert!(out.contains("--workload-identity-provider=projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/kind-pool/providers/kind --project=my-proj"), "{out}");
        let unknown = script(
            &GoogleSetupArgs {
                project_number: None,
                ..args
            },
            "u",
            "i",
            "{}",
        );
        assert!(unknown.contains("PROJECT_NUMBER=\"$(gcloud projects describe my-proj --format='value(projectNumber)')\""), "{unknown}");
    }
}
