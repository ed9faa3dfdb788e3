//! Which requests are for another cloud's metadata service (AWS's `/latest/...`, Azure's
//! `/metadata/...`), and so may be relayed to the node's own (`--passthrough`), and the headers
//! that go along. Pure: the agent does the I/O.
//!
//! The node's own metadata service is reached at the address the pods' redirection takes from
//! them. On Google Cloud that service holds the node's own identity, which GKE conceals: a
//! request for Google's API is never relayed. Rather than guess every reading the node's
//! service could make of a path, only plain paths are relayed ([`is_plain`]: no
//! percent-encoding, no dot or empty segments, no `\`, `;` or `:`), which every server reads
//! alike, and none whose first segment is Google's. Nor is a request relayed that carries
//! `X-Forwarded-For` (which GCE and Azure refuse, as proxies are how such services are abused)
//! or a body (no metadata API takes one; AWS's token `PUT` has none), or whose method is not
//! `GET` or AWS's `PUT`.

use crate::Request;
use crate::http1::Head;

/// Whether `head`, for another cloud's metadata service, may be relayed to it.
pub fn relayable(head: &Head<'_>) -> bool {
    let request = &head.request;
    matches!(request.method, "GET" | "PUT")
        && !request.forwarded
        && !head.body
        && is_plain(request.path)
        && !is_google(request)
}

/// Whether `path` is `/`-rooted segments of letters, digits and `-._~+=,@` (AWS's role names
/// use the last four), none empty, `.` or `..`, with an optional trailing `/`: a path no server
/// reads otherwise than as written.
fn is_plain(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    !rest.is_empty()
        && rest.split('/').all(|segment| {
            !matches!(segment, "" | "." | "..")
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+=,@".contains(&b))
        })
}

/// Whether a request is for Google's metadata API: the root (GKE's listing), `/computeMetadata`
/// and GCE's legacy `/0.1`, as a lenient server could read the path: percent-decoded, case
/// folded, with `\`, empty segments and dot segments resolved. A path that cannot be read, or
/// that does not start with `/`, is taken for Google's.
pub fn is_google(request: &Request<'_>) -> bool {
    let Some(first) = first_segment(request.path) else {
        return true;
    };
    first.is_empty() || first.starts_with("computemetadata") || first.starts_with("0.1")
}

/// The first segment of a path after the readings a lenient server may make; `None` when it is
/// not valid UTF-8 once decoded, `Some("")` for the root (or `..` above it).
fn first_segment(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?
        .to_ascii_lowercase();
    let mut kept: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        match segment.trim_matches(|c: char| c.is_whitespace() || c.is_control()) {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            segment => kept.push(segment),
        }
    }
    Some(kept.first().map_or_else(String::new, |s| (*s).to_owned()))
}

/// Headers that describe one connection, not the request or reply (RFC 9110 7.6.1), with
/// `Content-Length`, which the relay sets itself, and `Host`, which the relay's client sets
/// from the pod's own.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP_BY_HOP: [&str; 10] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The headers of a request head (its bytes, as [`crate::http1::parse_head`] took them) that
/// are relayed: all but the hop-by-hop ones, in their order. `Host` is among them.
pub fn end_to_end_headers(head: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    if parsed.parse(head).is_err() {
        return Vec::new();
    }
    parsed
        .headers
        .iter()
        .filter(|h| !h.name.is_empty() && !is_hop_by_hop(h.name))
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::parse_head;

    fn request(path: &str) -> Request<'_> {
        Request {
            method: "GET",
            path,
            query: "",
            host: "169.254.169.254",
            flavor: None,
            forwarded: false,
        }
    }

    #[test]
    fn googles_api_however_spelled_is_never_another_clouds() {
        for path in [
            "/",
            "",
            "/computeMetadata/v1/instance/service-accounts/default/token",
            "/computeMetadata",
            "/COMPUTEMETADATA/v1/",
            "/%63omputeMetadata/v1/",
            "/%2FcomputeMetadata/v1/",
            "//computeMetadata/v1/",
            "/./computeMetadata/v1/",
            "/latest/../computeMetadata/v1/",
            "/../../computeMetadata/v1/",
            "/\\computeMetadata/v1/",
            "/%5CcomputeMetadata/v1/",
            "/ computeMetadata/v1/",
            "/computeMetadata;x/v1/",
            "/0.1/meta-data/",
            "/%30.1/meta-data/",
            "/%ff/",
            "/latest/..",
            "@169.254.169.254/computeMetadata/v1/",
            "latest/meta-data/",
        ] {
            assert!(is_google(&request(path)), "{path:?} is Google's API");
        }
    }

    #[test]
    fn other_clouds_paths_are_not_googles() {
        for path in [
            "/latest/meta-data/instance-id",
            "/latest/api/token",
            "/metadata/instance",
            "/metadata/identity/oauth2/token",
            "/opc/v2/instance/",
            "/openstack/latest/meta_data.json",
            "/2009-04-04/meta-data/",
        ] {
            assert!(!is_google(&request(path)), "{path:?} is not Google's API");
        }
    }

    fn relayable_head(raw: &str) -> bool {
        let head = parse_head(raw.as_bytes())
            .expect("parses")
            .expect("complete");
        relayable(&head)
    }

    #[test]
    fn only_plain_paths_are_relayed() {
        for target in [
            "/latest/meta-data/iam/security-credentials/my-role+1=a,b@c.d_e",
            "/latest/meta-data/",
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net",
            "/opc/v2/instance/",
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
            assert!(relayable_head(&raw), "{target:?} is relayed");
        }
        for target in [
            // A target that is not `/`-rooted would let the pod choose the host of the URL.
            "@169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token",
            "@127.0.0.1:10255/pods",
            ".evil.example/x",
            "*",
            // Readings a server could make otherwise than the check.
            "/computeMetadata/..%2flatest",
            "/latest/%2e%2e/computeMetadata/v1/",
            "/latest/..;/computeMetadata/v1/",
            "/latest/;x/meta-data",
            "/latest//meta-data",
            "/latest/./meta-data",
            "/latest/../meta-data",
            "/latest\\meta-data",
            "/latest/meta:data",
            "/",
            "/computeMetadata/v1/",
            "/0.1/meta-data/",
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
            let relayed = parse_head(raw.as_bytes())
                .ok()
                .flatten()
                .is_some_and(|head| relayable(&head));
            assert!(!relayed, "{target:?} is not relayed");
        }
        assert!(!relayable_head("HEAD /latest/meta-data/ HTTP/1.1\r\n\r\n"));
        assert!(!relayable_head("DELETE /latest/api/token HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn forwarded_requests_and_bodies_are_never_relayed() {
        assert!(relayable_head(
            "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!relayable_head(
            "GET /latest/meta-data/ HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
        ));
        assert!(!relayable_head(
            "POST /latest/api/token HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
        ));
        assert!(!relayable_head(
            "POST /latest/api/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!relayable_head(
            "GET /computeMetadata/v1/ HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n"
        ));
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let raw = b"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\nUser-Agent: az\r\n\r\n";
        let headers = end_to_end_headers(raw);
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Host", "Metadata", "User-Agent"]);
        assert_eq!(headers[1].1, b"true");
    }
}
