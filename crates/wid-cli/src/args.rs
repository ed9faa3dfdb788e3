//! What the user typed, as clap parses it. Commands and flags follow gcloud's where gcloud has
//! them, so that muscle memory carries over.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

mod account_keys;
pub use account_keys::{AccountKeysCommand, IamAccountArg};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

/// How the CLI reaches the token service, and how it prints: the options of every admin
/// command (not of `wid iam serve`, which is the service).
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Base URL of the wid token service, with its scheme.
    #[arg(
        long,
        env = "WID_ENDPOINT",
        global = true,
        default_value = "http://127.0.0.1:8080",
        value_parser = parse_endpoint
    )]
    pub endpoint: String,
    /// File holding the credential: the bootstrap admin token (DATA_DIR/admin-token) or an
    /// access token [default: admin-token in the default data directory, if there is one].
    #[arg(long, env = "WID_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for an https:// endpoint besides the system's: a token
    /// service behind a private CA.
    #[arg(long, env = "WID_CA_FILE", global = true, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Output format [default: lists as tables, single resources as YAML, as gcloud prints
    /// them].
    #[arg(long, value_enum, global = true)]
    pub format: Option<Format>,
}

/// An http(s) base URL; a bare `HOST:PORT` is refused with the URL it probably meant.
pub fn parse_endpoint(text: &str) -> Result<String, String> {
    let scheme = text.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "'{other}://' is not a scheme the token service speaks: use http:// or https://"
            ));
        }
        None => {
            return Err(format!(
                "'{text}' has no scheme: --endpoint and WID_ENDPOINT take a URL, e.g. http://{text} (or https:// for TLS)"
            ));
        }
    }
    let url = reqwest::Url::parse(text).map_err(|e| format!("'{text}' is not a URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{text}' names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{text}': a base URL has no query or fragment"));
    }
    Ok(text.to_owned())
}

/// A group of admin commands with the options of every admin command ([`ClientArgs`]).
#[derive(Args, Debug)]
pub struct Group<C: Subcommand> {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: C,
}

/// `wid iam ...` admin commands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Projects: an id, a number and the fixed GKE pool PROJECT.svc.id.goog.
    Projects(Group<ProjectsCommand>),
    /// IAM service accounts and their IAM policies.
    #[command(name = "service-accounts")]
    ServiceAccounts(Group<ServiceAccountsCommand>),
    /// Workload identity pools and their OIDC providers.
    #[command(name = "workload-identity-pools")]
    WorkloadIdentityPools(Group<PoolsCommand>),
    /// Kubernetes clusters registered as providers of the project's GKE pool.
    Clusters(Group<ClustersCommand>),
    /// The token service's signing keys.
    Keys(Group<KeysCommand>),
    /// The audit trail of exchanges, issuances and denials.
    Audit(Group<AuditCommand>),
}

impl AdminCommand {
    /// The options every admin command takes.
    pub fn client(&self) -> &ClientArgs {
        match self {
            AdminCommand::Projects(g) => &g.client,
            AdminCommand::ServiceAccounts(g) => &g.client,
            AdminCommand::WorkloadIdentityPools(g) => &g.client,
            AdminCommand::Clusters(g) => &g.client,
            AdminCommand::Keys(g) => &g.client,
            AdminCommand::Audit(g) => &g.client,
        }
    }
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
        /// How many records, at most.
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
    /// The project (id or number) [required: this flag or WID_PROJECT].
    #[arg(long, env = "WID_PROJECT")]
    project: Option<String>,
}

impl ProjectArg {
    /// The project named, or why none is: said here rather than by clap, whose usage line
    /// would list the flags the environment set as if they were required too.
    pub fn id(&self) -> anyhow::Result<&str> {
        self.project
            .as_deref()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| anyhow::anyhow!("no project: pass --project PROJECT or set WID_PROJECT"))
    }
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
    Describe {
        /// The project's id or number.
        project: String,
    },
    /// Set whether service-account keys may be made in a project, and their longest life.
    Update {
        /// The project's id or number.
        project: String,
        /// Allow keys to be created and uploaded (off by default, as Google enforces for new
        /// organisations); needs --key-max-lifetime.
        #[arg(
            long,
            requires = "key_max_lifetime",
            conflicts_with = "no_service_account_keys"
        )]
        allow_service_account_keys: bool,
        /// Refuse new keys again (keys already made stay until they expire or are deleted).
        #[arg(long)]
        no_service_account_keys: bool,
        /// The longest validity of a key: 24h, 90d, 3600s, 30m (at most 100 years).
        #[arg(long, value_name = "DURATION", requires = "allow_service_account_keys",
              value_parser = parse_lifetime)]
        key_max_lifetime: Option<i64>,
    },
}

/// A `--key-max-lifetime`, in seconds.
pub(crate) fn parse_lifetime(text: &str) -> Result<i64, String> {
    wid_api::time::parse_duration(text)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{text:?} is no duration: write it like 24h, 90d, 30m or 3600s"))
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
        /// A name for people.
        #[arg(long)]
        display_name: Option<String>,
        /// A description for people.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the service accounts of a project.
    List {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Show a service account (by email or unique id).
    Describe {
        /// The service account: its email, or its unique id.
        service_account: String,
    },
    /// Change a service account's display name or description.
    Update {
        /// The service account: its email, or its unique id.
        service_account: String,
        /// A name for people.
        #[arg(long)]
        display_name: Option<String>,
        /// A description for people.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a service account.
    Delete {
        /// The service account: its email, or its unique id.
        service_account: String,
    },
    /// Disable a service account: no tokens are issued for it.
    Disable {
        /// The service account: its email, or its unique id.
        service_account: String,
    },
    /// Enable a disabled service account.
    Enable {
        /// The service account: its email, or its unique id.
        service_account: String,
    },
    /// Add a member to a role in the account's IAM policy.
    #[command(name = "add-iam-policy-binding")]
    AddIamPolicyBinding {
        /// The service account: its email, or its unique id.
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
        /// The service account: its email, or its unique id.
        service_account: String,
        /// The member to remove, as it was added.
        #[arg(long)]
        member: String,
        /// The role to remove it from.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        condition: ConditionArg,
        /// Remove the member from every binding of the role, whatever its condition.
        #[arg(long)]
        all: bool,
    },
    /// The account's keys (refused unless its project allows them: `wid iam projects update`).
    #[command(subcommand)]
    Keys(AccountKeysCommand),
    /// Show the account's IAM policy.
    #[command(name = "get-iam-policy")]
    GetIamPolicy {
        /// The service account: its email, or its unique id.
        service_account: String,
    },
    /// Replace the account's IAM policy with the one in a JSON file (as get-iam-policy --format
    /// json prints it; its etag guards against concurrent changes).
    #[command(name = "set-iam-policy")]
    SetIamPolicy {
        /// The service account: its email, or its unique id.
        service_account: String,
        /// The policy, in JSON: `get-iam-policy --format json` edited.
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
    /// A name for people.
    #[arg(long)]
    pub display_name: Option<String>,
    /// A description for people.
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
        /// The pool id.
        pool: String,
        #[command(flatten)]
        project: ProjectArg,
        #[command(flatten)]
        location: LocationArg,
        /// A name for people.
        #[arg(long)]
        display_name: Option<String>,
        /// A description for people.
        #[arg(long)]
        description: Option<String>,
        /// Create the pool disabled: it accepts no tokens.
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
        /// The pool id.
        pool: String,
        #[command(flatten)]
        project: ProjectArg,
        #[command(flatten)]
        location: LocationArg,
    },
    /// Delete a pool and its providers.
    Delete {
        /// The pool id.
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
    /// The pool of the provider.
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
        /// The provider id.
        provider: String,
        #[command(flatten)]
        pool: PoolRef,
        #[command(flatten)]
        oidc: OidcArgs,
    },
    /// Change an OIDC provider: only the flags given change.
    #[command(name = "update-oidc")]
    UpdateOidc {
        /// The provider id.
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
        /// The provider id.
        provider: String,
        #[command(flatten)]
        pool: PoolRef,
    },
    /// Delete a provider.
    Delete {
        /// The provider id.
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
}

#[derive(Subcommand, Debug)]
pub enum ClustersCommand {
    /// Register a Kubernetes cluster as a provider of the project's pool PROJECT.svc.id.goog.
    Register {
        /// The cluster's name.
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
        /// The cluster's name.
        name: String,
        #[command(flatten)]
        project: ProjectArg,
        /// Where the cluster runs, as registered.
        #[arg(long)]
        location: String,
    },
    /// Unregister a cluster: its tokens are no longer accepted.
    Delete {
        /// The cluster's name.
        name: String,
        #[command(flatten)]
        project: ProjectArg,
        /// Where the cluster runs, as registered.
        #[arg(long)]
        location: String,
    },
}
