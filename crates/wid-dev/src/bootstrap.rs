//! The dev project, made (or found) through the admin API as any client would.

use wid_agent::upstream::KsaIssuer;
use wid_api::cluster::Cluster;
use wid_api::iam::ServiceAccount;
use wid_api::project::Project;
use wid_cli::admin::{Admin, add_binding};
use wid_cli::client::CallError;

/// The account the loopback pod's KSA is bound to.
const DEV_ACCOUNT: &str = "dev-runner";
pub(crate) const WORKLOAD_IDENTITY_USER: &str = "roles/iam.workloadIdentityUser";
/// The dev cluster, as registered.
pub(crate) const DEV_CLUSTER: &str = "dev";
pub(crate) const DEV_LOCATION: &str = "local";

/// What the bootstrap made or found.
pub(crate) struct Bootstrapped {
    pub number: String,
    /// The account the loopback KSA default/default is annotated with.
    pub email: String,
    /// That KSA as a member.
    pub member: String,
    /// Whether the member is bound to the account (it is unless a user removed it).
    pub bound: bool,
}

/// Makes, idempotently, the dev project, its account, and the cluster whose issuer signs the
/// agent's KSA tokens; binds default/default to the account when it makes the account (later,
/// the binding is the user's to remove, and stays removed). It reads before it writes, so that
/// neither a first start nor a restart asks for anything that is not there.
pub(crate) async fn bootstrap(
    admin: &Admin<'_>,
    project: &str,
    issuer: &KsaIssuer,
) -> Result<Bootstrapped, CallError> {
    let number = match admin
        .projects()
        .await?
        .into_iter()
        .find(|p| p.project_id == project)
    {
        Some(found) => found.project_number,
        None => {
            let new = Project {
                project_id: project.to_owned(),
                ..Project::default()
            };
            admin.create_project(&new).await?.project_number
        }
    };
    let email = format!("{DEV_ACCOUNT}@{project}.iam.gserviceaccount.com");
    let made = !admin
        .service_accounts(project)
        .await?
        .iter()
        .any(|a| a.email == email);
    if made {
        let account = ServiceAccount {
            display_name: "wid dev workloads".into(),
            ..ServiceAccount::default()
        };
        admin
            .create_service_account(project, DEV_ACCOUNT, &account)
            .await?;
    }
    register_cluster(admin, project, issuer).await?;
    let member = format!("serviceAccount:{project}.svc.id.goog[default/default]");
    let mut policy = admin.iam_policy(&email).await?;
    let bound = if made {
        if add_binding(&mut policy, &member, WORKLOAD_IDENTITY_USER, None) {
            admin.set_iam_policy(&email, &policy).await?;
        }
        true
    } else {
        policy.bindings.iter().any(|b| {
            b.role == WORKLOAD_IDENTITY_USER && b.condition.is_none() && b.members.contains(&member)
        })
    };
    Ok(Bootstrapped {
        number,
        email,
        member,
        bound,
    })
}

/// Registers the dev cluster with the agent's issuer and keys, unless it is registered so
/// already; a cluster of another key (a data directory whose key was replaced) is registered
/// again.
async fn register_cluster(
    admin: &Admin<'_>,
    project: &str,
    issuer: &KsaIssuer,
) -> Result<(), CallError> {
    let wanted = Cluster {
        cluster_name: DEV_CLUSTER.into(),
        issuer_uri: issuer.issuer.clone(),
        jwks_json: issuer.jwks_json(),
        ..Cluster::default()
    };
    let registered = admin
        .clusters(project, DEV_LOCATION)
        .await?
        .into_iter()
        .find(|c| c.cluster_name == DEV_CLUSTER);
    if let Some(cluster) = registered {
        if same_keys(&cluster, &wanted) {
            return Ok(());
        }
        admin
            .delete_cluster(project, DEV_LOCATION, DEV_CLUSTER)
            .await?;
    }
    admin
        .register_cluster(project, DEV_LOCATION, &wanted)
        .await?;
    Ok(())
}

/// Whether a registered cluster has the issuer, keys and sharing that `wanted` asks for (the
/// JWKS compared as JSON, not as text).
fn same_keys(registered: &Cluster, wanted: &Cluster) -> bool {
    let keys = |c: &Cluster| serde_json::from_str::<serde_json::Value>(&c.jwks_json).ok();
    registered.issuer_uri == wanted.issuer_uri
        && registered.isolated == wanted.isolated
        && !registered.discover
        && keys(registered).is_some()
        && keys(registered) == keys(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_registered_again_only_for_other_keys() {
        let wanted = Cluster {
            cluster_name: "dev".into(),
            issuer_uri: "https://kubernetes.wid-dev.wid.local".into(),
            jwks_json: r#"{"keys": [{"kid": "a"}]}"#.into(),
            ..Cluster::default()
        };
        let spaced = Cluster {
            jwks_json: r#"{ "keys":[ {"kid":"a"} ] }"#.into(),
            uid: "u".into(),
            ..wanted.clone()
        };
        assert!(same_keys(&spaced, &wanted));
        let rotated = Cluster {
            jwks_json: r#"{"keys": [{"kid": "b"}]}"#.into(),
            ..wanted.clone()
        };
        assert!(!same_keys(&rotated, &wanted));
        let isolated = Cluster {
            isolated: true,
            ..wanted.clone()
        };
        assert!(!same_keys(&isolated, &wanted));
    }
}
