//! The roles wid supports and the permissions each grants.
//!
//! Authorisation is by permission, never by role name: any role that grants
//! `iam.serviceAccounts.getAccessToken` lets its holder mint tokens.

macro_rules! permissions {
    ($($name:ident = $text:literal;)*) => {
        $(pub const $name: &str = $text;)*
        /// Every permission wid knows.
        pub const ALL_PERMISSIONS: &[&str] = &[$($text),*];
    };
}

permissions! {
    SA_ACT_AS = "iam.serviceAccounts.actAs";
    SA_CREATE = "iam.serviceAccounts.create";
    SA_DELETE = "iam.serviceAccounts.delete";
    SA_DISABLE = "iam.serviceAccounts.disable";
    SA_ENABLE = "iam.serviceAccounts.enable";
    SA_GET = "iam.serviceAccounts.get";
    SA_GET_ACCESS_TOKEN = "iam.serviceAccounts.getAccessToken";
    SA_GET_IAM_POLICY = "iam.serviceAccounts.getIamPolicy";
    SA_GET_OPENID_TOKEN = "iam.serviceAccounts.getOpenIdToken";
    SA_IMPLICIT_DELEGATION = "iam.serviceAccounts.implicitDelegation";
    SA_LIST = "iam.serviceAccounts.list";
    SA_SET_IAM_POLICY = "iam.serviceAccounts.setIamPolicy";
    SA_SIGN_BLOB = "iam.serviceAccounts.signBlob";
    SA_SIGN_JWT = "iam.serviceAccounts.signJwt";
    SA_UNDELETE = "iam.serviceAccounts.undelete";
    SA_UPDATE = "iam.serviceAccounts.update";
    KEY_CREATE = "iam.serviceAccountKeys.create";
    KEY_DELETE = "iam.serviceAccountKeys.delete";
    KEY_DISABLE = "iam.serviceAccountKeys.disable";
    KEY_ENABLE = "iam.serviceAccountKeys.enable";
    KEY_GET = "iam.serviceAccountKeys.get";
    KEY_LIST = "iam.serviceAccountKeys.list";
    POOL_CREATE = "iam.workloadIdentityPools.create";
    POOL_DELETE = "iam.workloadIdentityPools.delete";
    POOL_GET = "iam.workloadIdentityPools.get";
    POOL_LIST = "iam.workloadIdentityPools.list";
    POOL_UPDATE = "iam.workloadIdentityPools.update";
    PROVIDER_CREATE = "iam.workloadIdentityPoolProviders.create";
    PROVIDER_DELETE = "iam.workloadIdentityPoolProviders.delete";
    PROVIDER_GET = "iam.workloadIdentityPoolProviders.get";
    PROVIDER_LIST = "iam.workloadIdentityPoolProviders.list";
    PROVIDER_UPDATE = "iam.workloadIdentityPoolProviders.update";
    CLUSTER_CREATE = "container.clusters.create";
    CLUSTER_DELETE = "container.clusters.delete";
    CLUSTER_GET = "container.clusters.get";
    CLUSTER_LIST = "container.clusters.list";
    PROJECT_GET = "resourcemanager.projects.get";
    PROJECT_GET_IAM_POLICY = "resourcemanager.projects.getIamPolicy";
    PROJECT_SET_IAM_POLICY = "resourcemanager.projects.setIamPolicy";
    PROJECT_UPDATE = "resourcemanager.projects.update";
}

/// Permissions that mint credentials or change who may; the editor role lacks them (Google's
/// editor may create keys: wid's may not, a key being a credential that outlives its maker).
const PRIVILEGED: &[&str] = &[
    KEY_CREATE,
    KEY_ENABLE,
    SA_GET_ACCESS_TOKEN,
    SA_GET_OPENID_TOKEN,
    SA_IMPLICIT_DELEGATION,
    SA_SIGN_BLOB,
    SA_SIGN_JWT,
    SA_SET_IAM_POLICY,
    PROJECT_SET_IAM_POLICY,
    PROJECT_UPDATE,
];

const READ_ONLY: &[&str] = &[
    KEY_GET,
    KEY_LIST,
    SA_GET,
    SA_LIST,
    SA_GET_IAM_POLICY,
    POOL_GET,
    POOL_LIST,
    PROVIDER_GET,
    PROVIDER_LIST,
    CLUSTER_GET,
    CLUSTER_LIST,
    PROJECT_GET,
    PROJECT_GET_IAM_POLICY,
];

/// A supported role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    WorkloadIdentityUser,
    ServiceAccountTokenCreator,
    ServiceAccountOpenIdTokenCreator,
    ServiceAccountUser,
    ServiceAccountAdmin,
    ServiceAccountKeyAdmin,
    WorkloadIdentityPoolAdmin,
    WorkloadIdentityPoolViewer,
    Owner,
    Editor,
    Viewer,
}

impl Role {
    pub const ALL: &[Role] = &[
        Role::WorkloadIdentityUser,
        Role::ServiceAccountTokenCreator,
        Role::ServiceAccountOpenIdTokenCreator,
        Role::ServiceAccountUser,
        Role::ServiceAccountAdmin,
        Role::ServiceAccountKeyAdmin,
        Role::WorkloadIdentityPoolAdmin,
        Role::WorkloadIdentityPoolViewer,
        Role::Owner,
        Role::Editor,
        Role::Viewer,
    ];

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| r.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::WorkloadIdentityUser => "roles/iam.workloadIdentityUser",
            Role::ServiceAccountTokenCreator => "roles/iam.serviceAccountTokenCreator",
            Role::ServiceAccountOpenIdTokenCreator => "roles/iam.serviceAccountOpenIdTokenCreator",
            Role::ServiceAccountUser => "roles/iam.serviceAccountUser",
            Role::ServiceAccountAdmin => "roles/iam.serviceAccountAdmin",
            Role::ServiceAccountKeyAdmin => "roles/iam.serviceAccountKeyAdmin",
            Role::WorkloadIdentityPoolAdmin => "roles/iam.workloadIdentityPoolAdmin",
            Role::WorkloadIdentityPoolViewer => "roles/iam.workloadIdentityPoolViewer",
            Role::Owner => "roles/owner",
            Role::Editor => "roles/editor",
            Role::Viewer => "roles/viewer",
        }
    }

    /// Whether holding this role grants `permission`.
    pub fn grants(self, permission: &str) -> bool {
        match self {
            Role::WorkloadIdentityUser => {
                [SA_GET, SA_LIST, SA_GET_ACCESS_TOKEN, SA_GET_OPENID_TOKEN].contains(&permission)
            }
            Role::ServiceAccountTokenCreator => [
                SA_GET,
                SA_LIST,
                SA_GET_ACCESS_TOKEN,
                SA_GET_OPENID_TOKEN,
                SA_IMPLICIT_DELEGATION,
                SA_SIGN_BLOB,
                SA_SIGN_JWT,
            ]
            .contains(&permission),
            Role::ServiceAccountOpenIdTokenCreator => permission == SA_GET_OPENID_TOKEN,
            Role::ServiceAccountUser => [SA_ACT_AS, SA_GET, SA_LIST].contains(&permission),
            Role::ServiceAccountAdmin => [
                SA_CREATE,
                SA_DELETE,
                SA_DISABLE,
                SA_ENABLE,
                SA_GET,
                SA_GET_IAM_POLICY,
                SA_LIST,
                SA_SET_IAM_POLICY,
                SA_UNDELETE,
                SA_UPDATE,
            ]
            .contains(&permission),
            Role::ServiceAccountKeyAdmin => permission.starts_with("iam.serviceAccountKeys."),
            Role::WorkloadIdentityPoolAdmin => permission.starts_with("iam.workloadIdentityPool"),
            Role::WorkloadIdentityPoolViewer => {
                [POOL_GET, POOL_LIST, PROVIDER_GET, PROVIDER_LIST].contains(&permission)
            }
            Role::Owner => ALL_PERMISSIONS.contains(&permission),
            Role::Editor => {
                ALL_PERMISSIONS.contains(&permission) && !PRIVILEGED.contains(&permission)
            }
            Role::Viewer => READ_ONLY.contains(&permission),
        }
    }
}

/// Whether `permission` is one wid knows; testIamPermissions refuses others.
pub fn is_known_permission(permission: &str) -> bool {
    ALL_PERMISSIONS.contains(&permission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_by_owners_and_key_admins_not_editors() {
        assert!(Role::Owner.grants(KEY_CREATE) && Role::ServiceAccountKeyAdmin.grants(KEY_CREATE));
        assert!(!Role::Editor.grants(KEY_CREATE) && !Role::Editor.grants(KEY_ENABLE));
        assert!(Role::Editor.grants(KEY_DELETE) && Role::Editor.grants(KEY_DISABLE));
        assert!(Role::Viewer.grants(KEY_LIST) && !Role::Viewer.grants(KEY_DELETE));
        assert!(!Role::Editor.grants(PROJECT_UPDATE));
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.name()), Some(*role));
        }
        assert_eq!(Role::parse("roles/iam.bogus"), None);
    }

    #[test]
    fn token_minting_is_privileged() {
        assert!(Role::WorkloadIdentityUser.grants(SA_GET_ACCESS_TOKEN));
        assert!(Role::ServiceAccountTokenCreator.grants(SA_IMPLICIT_DELEGATION));
        assert!(!Role::WorkloadIdentityUser.grants(SA_IMPLICIT_DELEGATION));
        assert!(!Role::Editor.grants(SA_GET_ACCESS_TOKEN));
        assert!(!Role::Editor.grants(SA_SET_IAM_POLICY));
        assert!(Role::Editor.grants(SA_CREATE));
        assert!(Role::Owner.grants(SA_SET_IAM_POLICY));
        assert!(!Role::Viewer.grants(SA_CREATE));
        assert!(Role::ServiceAccountOpenIdTokenCreator.grants(SA_GET_OPENID_TOKEN));
        assert!(!Role::ServiceAccountOpenIdTokenCreator.grants(SA_GET_ACCESS_TOKEN));
    }
}
