//! Every refusal the agent answers, in GKE's metadata server's words and statuses: IAM's and
//! STS's refusals passed through with the binding hint, 503 while the token service cannot be
//! reached or the caller not told apart, 403 for an address that is no pod, 429 for a pod over
//! its share; never a 500 for a known condition.

use std::net::IpAddr;
use std::time::Duration;

use wid_gce::Reply;

use crate::limits::Exhausted;
use crate::pods::Pod;
use crate::upstream::UpstreamError;

/// What the token endpoint failed to do, as GKE words it.
pub const ACCESS_TOKEN: &str = "Unable to generate access token";
/// What the identity endpoint failed to do, as GKE words it.
pub const ID_TOKEN: &str = "Failed to generate identity token";
/// What failed when the project's number could not be learnt.
const PROJECT_NUMBER: &str = "Unable to learn the project's number from STS (check the agent's --project and the cluster's registration, or give --project-number)";

/// The message GKE appends to IAM's refusals, pointing at the binding.
const BINDING_HINT: &str = "This error could be caused by a missing IAM policy binding on the target IAM service account.\nFor more information, refer to the Workload Identity documentation:\n\thttps://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity#authenticating_to\n";

/// An address no pod of the node has; `waited` is how long the request was held for one to
/// appear, when it could.
pub fn unknown_caller(ip: IpAddr, waited: Option<Duration>) -> Reply {
    let waited = match waited {
        Some(wait) => format!(
            " It waited {} ms for a pod with that address to appear on this node.",
            wait.as_millis()
        ),
        None => String::new(),
    };
    Reply::text(
        403,
        format!(
            "The metadata server knows no pod at {ip}: it answers only the pods of its node, each with its own identity.{waited}\n"
        ),
    )
}

/// An address two live pods have: answering would hand one pod's identity to the other.
pub fn shared_address(ip: IpAddr, pods: &[String]) -> Reply {
    Reply::text(
        503,
        format!(
            "Unable to identify the caller: the pods {} all have the address {ip}; the metadata server answers none of them until only one does. Retry shortly.\n",
            pods.join(", ")
        ),
    )
}

/// An address that changed hands again while the kernel was asked who holds it.
pub fn changing_hands() -> Reply {
    Reply::text(503, "Unable to identify the caller; retry.\n")
}

/// Attestation itself failed, not the caller.
pub fn attestation_failed() -> Reply {
    Reply::text(503, "Unable to confirm the caller; retry.\n")
}

/// The kernel does not show the connection as the pod's the index names.
pub fn unconfirmed_caller(error: &str) -> Reply {
    Reply::text(
        503,
        format!(
            "Unable to confirm the caller: {error}; the metadata server answers a pod's address only from that pod.\n"
        ),
    )
}

pub fn too_many_requests(ip: IpAddr) -> Reply {
    Reply::text(
        429,
        format!("Too many concurrent requests from {ip}; retry with backoff.\n"),
    )
}

pub fn too_many_long_polls(ip: IpAddr) -> Reply {
    Reply::text(
        429,
        format!("Too many long-polls open from {ip}; retry with backoff.\n"),
    )
}

/// An identity token asked by a KSA that names no service account, in GKE's words.
pub fn not_annotated(pod: &Pod) -> Reply {
    Reply::text(
        404,
        format!(
            "Your Kubernetes service account ({}/{}) is not annotated with a target Google service account, which is a requirement for retrieving Identity Tokens using Workload Identity.\nPlease add the iam.gke.io/gcp-service-account=[GSA_NAME]@[PROJECT_ID] annotation to your Kubernetes service account.\nRefer to https://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity\n",
            pod.namespace, pod.service_account_name
        ),
    )
}

/// The project's number could not be learnt from STS.
pub fn no_project_number(e: UpstreamError) -> Reply {
    upstream(PROJECT_NUMBER, e)
}

/// `what` failed upstream: IAM's and STS's refusals pass through with their status (others are
/// the upstream being wrong: 502), the token service away is 503, a call not made for a spent
/// budget 429 (the pod's) or 503 (the node's).
pub fn upstream(what: &str, e: UpstreamError) -> Reply {
    match e {
        UpstreamError::Refused {
            service,
            status,
            reason,
            message,
        } => {
            let mut body = format!("{what}; {service} returned {status} {reason}: {message}\n");
            if status == 403 {
                body.push_str(BINDING_HINT);
            }
            let status = if matches!(status, 400 | 401 | 403 | 404 | 429) {
                status
            } else {
                502
            };
            Reply::text(status, body)
        }
        UpstreamError::Unavailable(reason) => {
            Reply::text(503, format!("{what}: {reason}; retry\n"))
        }
        UpstreamError::Throttled(Exhausted::Pod) => Reply::text(
            429,
            format!(
                "{what}: too many token requests from this pod reach the token service; retry with backoff\n"
            ),
        ),
        UpstreamError::Throttled(Exhausted::Node) => Reply::text(
            503,
            format!(
                "{what}: the metadata server's calls to the token service are at their limit; retry shortly\n"
            ),
        ),
    }
}
