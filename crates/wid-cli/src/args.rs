//! What the user typed, as clap parses it. Commands and flags follow gcloud's where gcloud has
//! them, so that muscle memory carries over.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

/// How the CLI reaches the token service.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Base URL of the wid token service.
    #[arg(
        long,
        env = "WID_ENDPOINT",
        global = true,
        default_value = "http://127.0.0.1:8080"
    )]
    pub endpoint: String,
    /// File holding the credential: the bootstrap admin token (DATA_DIR/admin-token) or an
    /// access token. Default: admin-token in the default data directory, if there is one.
    #[arg(long, env = "WID_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, global = true, default_value_t = Format::Table)]
    pub format: Format,
}

/// `wid iam ...` admin commands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Projects: an id, a number and the fixed GKE pool PROJECT.svc.id.goog.
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// IAM service accounts and their IAM policies.
    #[command(subcommand, name = "service-accounts")]
    ServiceAccounts(ServiceAccountsCommand),
    /// Workload identity pools and their OIDC providers.
    #[command(subcommand, name = "workload-identity-pools")]
    WorkloadIdentityPools(PoolsCommand),
    /// Kubernetes clusters registered as providers of the project's GKE pool.
    #[command(subcommand)]
    Clusters(ClustersCommand),
    /// The token service's signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit trail of exchanges, issuances and denials.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List the signing keys: the active ones and those still published.
    List,
    /// Rotate: new keys sign from now on; old ones stay published until their tokens expire.
    Rotate {
        /// RS256 or ES256; both when omitted.
        #[arg(long)]
        algorithm: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// The newest audit records, newest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Exchange a subject token at STS, then impersonate a service account with it.
#[derive(Args, Debug, Clone)]
pub struct ImpersonationArgs {
    /// The service account to get a token for.
    pub service_account: String,
    /// File holding the subject token (a Kubernetes service-account token, or any OIDC token of
    /// a registered provider).
    #[arg(long)]
    pub subject_token_file: PathBuf,
    /// The STS audience: identitynamespace:PROJECT.svc.id.goog:ISSUER, or
    /// //iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/P.
    #[arg(long)]
    pub audience: String,
}

#[derive(Args, Debug, Clone)]
pub struct ProjectArg {
    /// The project (id or number).
    #[arg(long, env = "WID_PROJECT")]
    pub project: String,
}

#[derive(Subcommand, Debug)]
pub enum ProjectsCommand {
    /// Create a project.
    Create {
        /// Project id: lowercase letters, digits and dashes, starting with a letter.
        project_id: String,
        /// Project number; one is assigned when omitted.
        #[arg(long)]
        number: Option<String>,
        /// Human-readable name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List projects.
    List,
    /// Show one project.
    Describe { project: String },
}

/// A condition in gcloud's `--condition=expression=EXPR,title=TITLE[,description=DESC]` form,
/// or `None` for an unconditional binding.
#[derive(Args, Debug, Clone, Default)]
pub struct ConditionArg {
    /// Condition of the binding: expression=EXPR,title=TITLE[,description=DESC], or None.
    #[arg(long)]
    pub condition: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ServiceAccountsCommand {
    /// Create a service account NAME@PROJECT.iam.gserviceaccount.com.
    Create {
        /// Account id: 6 to 30 lowercase letters, digits and dashes.
        name: String,
        #[command(flatten)]
        project: ProjectArg,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the service accounts of a project.
    List {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Show a service account (by email or unique id).
    Describe { service_account: String },
    /// Change a service account's display name or description.
    Update {
        service_account: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a service account.
    Delete { service_account: String },
    /// Disable a service account: no tokens are issued for it.
    Disable { service_account: String },
    /// Enable a disabled service account.
    Enable { service_account: String },
    /// Add a member to a role in the account's IAM policy.
    #[command(name = "add-iam-policy-binding")]
    AddIamPolicyBinding {
        service_account: String,
        /// e.g. serviceAccount:PROJECT.svc.id.goog[NAMESPACE/KSA] or user:alice@example.com.
        #[arg(long)]
        member: String,
        /// e.g. roles/iam.workloadIdentityUser.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        condition: ConditionArg,
    },
    /// Remove a member from a role in the account's IAM policy.
    #[command(name = "remove-iam-policy-binding")]
    RemoveIamPolicyBinding {
        service_account: String,
        #[arg(long)]
        member: String,
        #[arg(long)]
        role: String,
        #[command(flatten)]
        condition: ConditionArg,
        /// Remove the member from every binding of the role, whatever its condition.
        #[arg(long)]
        all: bool,
    },
    /// Show the account's IAM policy.
    #[command(name = "get-iam-policy")]
    GetIamPolicy { service_account: String },
    /// Replace the account's IAM policy with the one in a JSON file (as get-iam-policy --format
    /// json prints it; its etag guards against concurrent changes).
    #[command(name = "set-iam-policy")]
    SetIamPolicy {
        service_account: String,
        policy_file: PathBuf,
    },
    /// Exchange a subject token, then print an access token for the account. Needs no admin
    /// credential.
    #[command(name = "print-access-token")]
    PrintAccessToken {
        #[command(flatten)]
        source: ImpersonationArgs,
        /// OAuth scopes (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "https://www.googleapis.com/auth/cloud-platform"
        )]
        scopes: Vec<String>,
        /// Lifetime, e.g. 3600s (at most one hour).
        #[arg(long)]
        lifetime: Option<String>,
    },
    /// Exchange a subject token, then print an ID token for the account. Needs no admin
    /// credential.
    #[command(name = "print-identity-token")]
    PrintIdentityToken {
        #[command(flatten)]
        source: ImpersonationArgs,
        /// The ID token's audience (gcloud's default when omitted).
        #[arg(long, default_value = "32555940559.apps.googleusercontent.com")]
        token_audience: String,
        /// Add the email and email_verified claims.
        #[arg(long)]
        include_email: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct LocationArg {
    /// Location of workload identity pools; always global.
    #[arg(long, default_value = "global")]
    pub location: String,
}

#[derive(Args, Debug, Clone, Default)]
pub struct OidcArgs {
    /// The issuer URL of the tokens this provider accepts.
    #[arg(long)]
    pub issuer_uri: Option<String>,
    /// Audiences accepted besides the provider's own name (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub allowed_audiences: Option<Vec<String>>,
    /// Attribute mapping, KEY=EXPRESSION pairs (comma-separated); default google.subject=assertion.sub.
    #[arg(long)]
    pub attribute_mapping: Option<String>,
    /// Boolean expression a token's attributes must satisfy.
    #[arg(long)]
    pub attribute_condition: Option<String>,
    /// File with the issuer's JWKS; without it, keys come from the issuer's OIDC discovery.
    #[arg(long)]
    pub jwk_json_path: Option<PathBuf>,
    #[arg(long)]
    pub display_name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Disable the provider: it accepts no tokens.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub disabled: Option<bool>,
}

#[derive(Subcommand, Debug)]
pub enum PoolsCommand {
    /// Create a workload identity pool.
    Create {
        pool: String,
        #[command(flatten)]
        project: ProjectArg,
        #[command(flatten)]
        location: LocationArg,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        disabled: bool,
    },
    /// List pools.
    List {
        #[command(flatten)]
        project: ProjectArg,
        #[command(flatten)]
        location: LocationArg,
    },
    /// Show a pool.
    Describe {
        pool: String,
        #[command(flatten)]
        project: ProjectArg,
        #[command(flatten)]
        location: LocationArg,
    },
    /// Delete a pool and its providers.
    Delete {
        pool: String,
        #[command(flatten)]
        project: ProjectArg,
        #[command(flatten)]
        location: LocationArg,
    },
    /// OIDC providers of a pool.
    #[command(subcommand)]
    Providers(ProvidersCommand),
}

#[derive(Args, Debug, Clone)]
pub struct PoolRef {
    #[arg(long)]
    pub workload_identity_pool: String,
    #[command(flatten)]
    pub project: ProjectArg,
    #[command(flatten)]
    pub location: LocationArg,
}

#[derive(Subcommand, Debug)]
pub enum ProvidersCommand {
    /// Create an OIDC provider.
    #[command(name = "create-oidc")]
    CreateOidc {
        provider: String,
        #[command(flatten)]
        pool: PoolRef,
        #[command(flatten)]
        oidc: OidcArgs,
    },
    /// Change an OIDC provider: only the flags given change.
    #[command(name = "update-oidc")]
    UpdateOidc {
        provider: String,
        #[command(flatten)]
        pool: PoolRef,
        #[command(flatten)]
        oidc: OidcArgs,
    },
    /// List a pool's providers.
    List {
        #[command(flatten)]
        pool: PoolRef,
    },
    /// Show a provider.
    Describe {
        provider: String,
        #[command(flatten)]
        pool: PoolRef,
    },
    /// Delete a provider.
    Delete {
        provider: String,
        #[command(flatten)]
        pool: PoolRef,
    },
}

/// Where a cluster's keys come from: exactly one of the three.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct ClusterKeys {
    /// File with the cluster's service-account JWKS (kubectl get --raw /openid/v1/jwks).
    #[arg(long)]
    pub jwk_json_path: Option<PathBuf>,
    /// The token service fetches the keys through the issuer's OIDC discovery, and keeps them
    /// fresh: for issuers it can reach. Without --issuer-uri, the issuer is read from the API
    /// server of KUBECONFIG (or of the cluster the CLI runs in).
    #[arg(long)]
    pub discover: bool,
    /// Read the issuer and its keys from the cluster's API server, with this kubeconfig's
    /// credentials (its OIDC discovery and /openid/v1/jwks): for issuers the token service
    /// cannot reach, such as https://kubernetes.default.svc.cluster.local. The keys are not
    /// refreshed: after the cluster rotates its signing key, delete and register it again.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The JWKS read from the API server for --kubeconfig; the binary reads it (the CLI knows
    /// only the token service's protocol) and fills in the issuer.
    #[arg(skip)]
    pub read_from_api_server: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ClustersCommand {
    /// Register a Kubernetes cluster as a provider of the project's pool PROJECT.svc.id.goog.
    Register {
        name: String,
        #[command(flatten)]
        project: ProjectArg,
        /// Where the cluster runs, e.g. us-central1 or laptop.
        #[arg(long)]
        location: String,
        /// The issuer of the cluster's service-account tokens; with --kubeconfig, or with
        /// --discover alone, read from the API server (KUBECONFIG's, or in-cluster), and, if
        /// given too, checked against it.
        #[arg(long)]
        issuer_uri: Option<String>,
        #[command(flatten)]
        keys: ClusterKeys,
        /// Give this cluster's KSAs members of their own:
        /// serviceAccount:PROJECT.svc.id.goog[LOCATION/CLUSTER/NAMESPACE/KSA].
        #[arg(long)]
        isolated: bool,
    },
    /// List registered clusters.
    List {
        #[command(flatten)]
        project: ProjectArg,
        /// Only this location's clusters.
        #[arg(long, default_value = "-")]
        location: String,
    },
    /// Show a registered cluster.
    Describe {
        name: String,
        #[command(flatten)]
        project: ProjectArg,
        #[arg(long)]
        location: String,
    },
    /// Unregister a cluster: its tokens are no longer accepted.
    Delete {
        name: String,
        #[command(flatten)]
        project: ProjectArg,
        #[arg(long)]
        location: String,
    },
}
