//! Identifiers and their rules.
//!
//! Each validator returns the reason in words a user can act on; callers put it in a Google
//! INVALID_ARGUMENT error naming the field.

/// The domain of IAM service-account emails.
pub const SERVICE_ACCOUNT_DOMAIN: &str = "iam.gserviceaccount.com";

/// The suffix of every project's fixed GKE workload identity pool, `PROJECT.svc.id.goog`.
pub const GKE_POOL_SUFFIX: &str = ".svc.id.goog";

/// The fixed GKE workload identity pool of a project.
pub fn gke_pool(project_id: &str) -> String {
    format!("{project_id}{GKE_POOL_SUFFIX}")
}

/// `ACCOUNT@PROJECT.iam.gserviceaccount.com`.
pub fn service_account_email(account_id: &str, project_id: &str) -> String {
    format!("{account_id}@{project_id}.{SERVICE_ACCOUNT_DOMAIN}")
}

/// Splits an IAM service-account email into (account id, project id).
pub fn parse_service_account_email(email: &str) -> Option<(&str, &str)> {
    let (account, domain) = email.split_once('@')?;
    let project = domain
        .strip_suffix(SERVICE_ACCOUNT_DOMAIN)?
        .strip_suffix('.')?;
    (!account.is_empty() && !project.is_empty()).then_some((account, project))
}

fn is_lower_alnum_dash(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn starts_with_letter(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
}

/// A project id: lowercase letters, digits and dashes, starting with a letter and not ending with
/// a dash, at most 30 characters. Resource Manager also wants at least 6; wid accepts shorter
/// ids (handy on a laptop) since nothing downstream depends on the minimum.
pub fn validate_project_id(id: &str) -> Result<(), String> {
    if !(1..=30).contains(&id.len())
        || !starts_with_letter(id)
        || !is_lower_alnum_dash(id)
        || id.ends_with('-')
    {
        return Err(format!(
            "Invalid project id '{id}': it must be at most 30 characters of lowercase letters, digits and dashes, start with a letter and not end with a dash."
        ));
    }
    Ok(())
}

/// A project number: a positive decimal of at most 18 digits.
pub fn validate_project_number(number: &str) -> Result<(), String> {
    let ok = !number.is_empty()
        && number.len() <= 18
        && number.bytes().all(|b| b.is_ascii_digit())
        && !number.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Invalid project number '{number}': it must be a positive decimal number of at most 18 digits."
        ))
    }
}

/// A service-account id: 6 to 30 characters matching `[a-z]([-a-z0-9]*[a-z0-9])`.
pub fn validate_account_id(id: &str) -> Result<(), String> {
    if !(6..=30).contains(&id.len())
        || !starts_with_letter(id)
        || !is_lower_alnum_dash(id)
        || id.ends_with('-')
    {
        return Err(format!(
            "Invalid account id '{id}': it must be 6 to 30 characters long and match the regular expression [a-z]([-a-z0-9]*[a-z0-9])."
        ));
    }
    Ok(())
}

/// A workload identity pool or provider id: 4 to 32 lowercase letters, digits and dashes; the
/// `gcp-` prefix is reserved.
pub fn validate_pool_id(kind: &str, id: &str) -> Result<(), String> {
    if !(4..=32).contains(&id.len())
        || !is_lower_alnum_dash(id)
        || id.starts_with('-')
        || id.ends_with('-')
        || id.starts_with("gcp-")
    {
        return Err(format!(
            "Invalid {kind} id '{id}': it must be 4 to 32 characters of lowercase letters, digits and dashes, not start or end with a dash, and not start with 'gcp-'."
        ));
    }
    Ok(())
}

/// A cluster name or location: 1 to 63 lowercase letters, digits and dashes, starting with a
/// letter or digit (GKE names start with a letter; locations such as `us-central1-a` do too).
pub fn validate_cluster_segment(kind: &str, value: &str) -> Result<(), String> {
    if !(1..=63).contains(&value.len())
        || !is_lower_alnum_dash(value)
        || value.starts_with('-')
        || value.ends_with('-')
    {
        return Err(format!(
            "Invalid {kind} '{value}': it must be 1 to 63 characters of lowercase letters, digits and dashes, not starting or ending with a dash."
        ));
    }
    Ok(())
}

/// A Kubernetes namespace: an RFC 1123 label (at most 63 characters).
pub fn is_kubernetes_namespace(ns: &str) -> bool {
    (1..=63).contains(&ns.len())
        && is_lower_alnum_dash(ns)
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

/// A Kubernetes service-account name: an RFC 1123 subdomain (at most 253 characters).
pub fn is_kubernetes_service_account(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            !label.is_empty()
                && is_lower_alnum_dash(label)
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An email address as IAM members carry them: `local@domain.tld`, no spaces or controls.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.len() <= 253
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && s.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'<' | b'>' | b'(' | b')' | b',' | b';' | b'[' | b']' | b'\\' | b'"'
                )
        })
        && !domain.contains('@')
}

/// An issuer URI: an absolute `https://` URL without query or fragment. Plain `http://` is
/// accepted only for loopback hosts (development and tests): keys fetched over plain HTTP from
/// anywhere else could be swapped in transit.
pub fn validate_issuer_uri(uri: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("Invalid issuer URI '{uri}': {why}"));
    if uri.len() > 2048 || uri.contains(['?', '#']) || !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("it must be an absolute https:// URL without query or fragment.");
    }
    let (secure, rest) = match (uri.strip_prefix("https://"), uri.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => {
            return bad("it must be an absolute https:// URL without query or fragment.");
        }
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return bad("it must name a host.");
    }
    if !secure && !is_loopback_authority(authority) {
        return bad("plain http:// is only accepted for loopback hosts; use https://.");
    }
    Ok(())
}

/// `localhost`, `127.x.y.z` or `[::1]`, with an optional port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_follow_google_rules() {
        assert!(validate_account_id("my-sa1").is_ok());
        assert!(validate_account_id("a23456789012345678901234567890").is_ok());
        for bad in [
            "short",
            "1abcdef",
            "abcdef-",
            "Abcdefg",
            "abc_def",
            "a234567890123456789012345678901",
        ] {
            assert!(validate_account_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_round_trip() {
        let email = service_account_email("my-sa1", "my-project");
        assert_eq!(email, "my-sa1@my-project.iam.gserviceaccount.com");
        assert_eq!(
            parse_service_account_email(&email),
            Some(("my-sa1", "my-project"))
        );
        assert_eq!(parse_service_account_email("a@example.com"), None);
        assert_eq!(
            parse_service_account_email("@p.iam.gserviceaccount.com"),
            None
        );
    }

    #[test]
    fn kubernetes_names() {
        assert!(is_kubernetes_namespace("kube-system"));
        assert!(!is_kubernetes_namespace("Kube"));
        assert!(!is_kubernetes_namespace(&"a".repeat(64)));
        assert!(is_kubernetes_service_account("my.sa-1"));
        assert!(!is_kubernetes_service_account("my..sa"));
        assert!(!is_kubernetes_service_account("a/b"));
    }

    #[test]
    fn issuer_uris() {
        assert!(
            validate_issuer_uri(
                "https://container.googleapis.com/v1/projects/p/locations/l/clusters/c"
            )
            .is_ok()
        );
        assert!(validate_issuer_uri("http://127.0.0.1:8080").is_ok());
        assert!(validate_issuer_uri("http://localhost/x").is_ok());
        assert!(validate_issuer_uri("http://[::1]:99").is_ok());
        assert!(validate_issuer_uri("http://k8s.example.com").is_err());
        assert!(validate_issuer_uri("http://127.0.0.1.evil.com").is_err());
        assert!(validate_issuer_uri("https://user@host").is_err());
        assert!(validate_issuer_uri("ftp://x").is_err());
        assert!(validate_issuer_uri("https://").is_err());
        assert!(validate_issuer_uri("https://x/?q=1").is_err());
    }
}
