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

/// The project number, pool and provider of a provider's resource name,
/// `projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`, each
/// non-empty; the ids themselves are not checked here.
pub fn split_provider_name(path: &str) -> Option<(&str, &str, &str)> {
    let mut parts = path.split('/');
    let fixed = [
        "projects",
        "",
        "locations",
        "global",
        "workloadIdentityPools",
        "",
        "providers",
    ];
    let mut named = Vec::with_capacity(3);
    for expected in fixed {
        let part = parts.next()?;
        if expected.is_empty() {
            named.push(part);
        } else if part != expected {
            return None;
        }
    }
    named.push(parts.next()?);
    match (named.as_slice(), parts.next()) {
        ([number, pool, provider], None)
            if !number.is_empty() && !pool.is_empty() && !provider.is_empty() =>
        {
            Some((number, pool, provider))
        }
        _ => None,
    }
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

/// A Kubernetes object uid as tokens carry them: a UUID in practice; anything far from one (empty,
/// over 128 bytes, spaces or controls) is none.
pub fn is_kubernetes_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 128 && uid.bytes().all(|b| b.is_ascii_graphic())
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
/// anywhere else could be swapped in transit. Paths with `%`, `.` or `..` segments or empty
/// segments are refused: each spells one issuer in several ways, and an issuer registered twice
/// under two spellings would take the other's tokens.
pub fn validate_issuer_uri(uri: &str) -> Result<(), String> {
    parse_url(uri)
        .map(|_| ())
        .map_err(|why| format!("Invalid issuer URI '{uri}': {why}"))
}

/// The one spelling of an issuer that wid stores and compares: scheme and host in lowercase, no
/// default port, no trailing slash. Two issuers are the same issuer exactly when their canonical
/// forms are equal; an issuer that does not validate is returned as it is (it matches only
/// itself).
pub fn canonical_issuer(uri: &str) -> String {
    match parse_url(uri) {
        Ok(url) => url.canonical(),
        Err(_) => uri.to_owned(),
    }
}

/// Whether wid may fetch `url` (a `jwks_uri`, or where a redirect points) for an issuer whose
/// discovery began at, or went through, an `https://` URL (`from_https`): the issuer rule on the
/// scheme and host of every hop (plain HTTP only to loopback), and never a step down from TLS.
/// Unlike an issuer, a fetched URL may have a query and escapes (Azure AD B2C's `…/keys?p=…`).
pub fn may_fetch(url: &str, from_https: bool) -> Result<(), String> {
    let bad = |why: &str| Err(format!("'{url}': {why}"));
    if url.len() > 2048 || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("it must be an absolute https:// URL.");
    }
    let lower = |n: usize| url.get(..n).map(str::to_ascii_lowercase);
    let (secure, rest) = if lower(8).as_deref() == Some("https://") {
        (true, &url[8..])
    } else if lower(7).as_deref() == Some("http://") {
        (false, &url[7..])
    } else {
        return bad("it must be an absolute https:// URL.");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return bad("it must name a host.");
    }
    let Some((host, _)) = split_host_port(authority) else {
        return bad("its host or port is malformed.");
    };
    if !secure && !is_loopback_host(host) {
        return bad("plain http:// is only fetched from loopback hosts; use https://.");
    }
    if from_https && !secure {
        return bad("it is plain http:// after https://; keys are fetched over TLS only.");
    }
    Ok(())
}

/// A URL as issuers are written, parsed only as far as wid needs.
struct IssuerUrl<'a> {
    secure: bool,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
}

impl IssuerUrl<'_> {
    fn canonical(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        let default_port = if self.secure { "443" } else { "80" };
        let port = match self.port {
            Some(p) if p != default_port => format!(":{p}"),
            _ => String::new(),
        };
        let host = self.host.to_ascii_lowercase();
        let path = self.path.trim_end_matches('/');
        format!("{scheme}://{host}{port}{path}")
    }
}

fn parse_url(uri: &str) -> Result<IssuerUrl<'_>, &'static str> {
    const SHAPE: &str = "it must be an absolute https:// URL without query or fragment.";
    if uri.len() > 2048 || uri.contains(['?', '#']) || !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SHAPE);
    }
    let lower = |n: usize| uri.get(..n).map(str::to_ascii_lowercase);
    let (secure, rest) = if lower(8).as_deref() == Some("https://") {
        (true, &uri[8..])
    } else if lower(7).as_deref() == Some("http://") {
        (false, &uri[7..])
    } else {
        return Err(SHAPE);
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if authority.is_empty() || authority.contains('@') {
        return Err("it must name a host.");
    }
    let (host, port) = split_host_port(authority).ok_or("its host or port is malformed.")?;
    if !secure && !is_loopback_host(host) {
        return Err("plain http:// is only accepted for loopback hosts; use https://.");
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if path.contains('%') || segments.iter().any(|s| matches!(*s, "" | "." | "..")) {
        return Err("its path may not contain '%', empty segments, or '.' or '..' segments.");
    }
    Ok(IssuerUrl {
        secure,
        host,
        port,
        path,
    })
}

/// `host[:port]` or `[v6][:port]`, with a port of digits when given.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (inside, after) = v6.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (&authority[..inside.len() + 2], port)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    (!host.is_empty() && port_ok).then_some((host, port))
}

/// `localhost`, `127.x.y.z` or `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare
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
        for alias in [
            "https://x/a/../b",
            "https://x/a/./b",
            "https://x/a//b",
            "https://x/%61",
            "https://x:/a",
            "https://x:44a/a",
            "http://[::1/a",
        ] {
            assert!(validate_issuer_uri(alias).is_err(), "{alias}");
        }
    }

    #[test]
    fn issuers_have_one_spelling() {
        for (spelling, canonical) in [
            ("https://k1.example", "https://k1.example"),
            ("https://k1.example/", "https://k1.example"),
            ("HTTPS://K1.Example:443//", "https://k1.example"),
            (
                "https://k1.example:8443/Id/ABC/",
                "https://k1.example:8443/Id/ABC",
            ),
            ("http://127.0.0.1:80/x", "http://127.0.0.1/x"),
            ("http://[::1]:9000/", "http://[::1]:9000"),
            ("http://LOCALHOST:8080", "http://localhost:8080"),
        ] {
            assert_eq!(canonical_issuer(spelling), canonical, "{spelling}");
            assert_eq!(
                canonical_issuer(canonical),
                canonical,
                "idempotent: {canonical}"
            );
        }
        // The path keeps its case: it is not part of the host.
        assert_ne!(
            canonical_issuer("https://k1.example/A"),
            canonical_issuer("https://k1.example/a")
        );
    }

    #[test]
    fn fetches_never_step_down_from_tls() {
        assert!(may_fetch("https://k1.example/keys", true).is_ok());
        assert!(may_fetch("http://127.0.0.1:9/keys", false).is_ok());
        assert!(may_fetch("https://10.0.0.1/keys", false).is_ok());
        // Queries and escapes are a fetched URL's own business.
        assert!(may_fetch("https://login.example/tfp/keys?p=B2C_1_signin&x=%2F", true).is_ok());
        assert!(may_fetch("http://localhost:9/k?x=1", false).is_ok());
        for (url, from_https) in [
            ("http://10.0.0.1/keys", true),
            ("http://localhost.evil.example/keys", false),
            ("https://user@host/keys", true),
            ("http://[::ffff:10.0.0.1]/keys", false),
            ("http://10.0.0.1/keys", false),
            ("http://127.0.0.1/keys", true),
            ("http://169.254.169.254/computeMetadata/v1/", false),
            ("file:///etc/passwd", false),
            ("gopher://x", true),
        ] {
            assert!(
                may_fetch(url, from_https).is_err(),
                "{url} from_https={from_https}"
            );
        }
    }

    proptest::proptest! {
        /// Canonical forms are fixed points, and every spelling of one issuer (case of scheme
        /// and host, default port, trailing slashes) has the same canonical form.
        #[test]
        fn canonical_forms_are_fixed_points(
            host in "[a-z][a-z0-9-]{0,10}(\\.[a-z0-9-]{1,8}){0,2}",
            path in proptest::collection::vec("[A-Za-z0-9_-]{1,6}", 0..4),
            upper in proptest::bool::ANY,
            slashes in 0usize..3,
            port in proptest::bool::ANY,
        ) {
            let path: String = path.iter().map(|s| format!("/{s}")).collect();
            let plain = format!("https://{host}{path}");
            let host_spelt = if upper { host.to_ascii_uppercase() } else { host.clone() };
            let port = if port { ":443" } else { "" };
            let spelt = format!("HTTPS://{host_spelt}{port}{path}{}", "/".repeat(slashes));
            proptest::prop_assert!(validate_issuer_uri(&spelt).is_ok());
            proptest::prop_assert_eq!(canonical_issuer(&spelt), canonical_issuer(&plain));
            let canonical = canonical_issuer(&plain);
            proptest::prop_assert_eq!(canonical_issuer(&canonical), canonical.clone());
        }
    }
}
