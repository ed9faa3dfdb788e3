//! HTTP/1.1 framing of the metadata port, as pure functions: a request head parsed from the bytes
//! read so far, and a [`Reply`] rendered into the bytes to write.
//!
//! Why not hyper: the metadata API is GET and HEAD with small heads and no bodies, and the cost of
//! a general HTTP stack per request kept the cached token path at 0.9x nginx's throughput on the
//! same cores (BENCHMARKS.md); these few rules are all the port needs. A request that carries a
//! body is answered (a 405: only GET and HEAD exist) and its connection closed, so a body is never
//! read nor mistaken for the next request.

use crate::{Reply, Request};

/// The largest request head accepted; metadata clients send a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header lines accepted.
const MAX_HEADERS: usize = 64;

/// A complete request head.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    pub request: Request<'a>,
    /// Its length in bytes: where the next request starts.
    pub len: usize,
    /// Whether the connection may carry another request after this one's answer.
    pub keep_alive: bool,
    /// An HTTP/1.0 request: a connection kept open must be announced as such.
    pub http10: bool,
    /// Whether a body follows the head (never read: the connection ends after the answer).
    pub body: bool,
}

/// Why a head cannot be served; the connection is answered with [`HeadError::reply`] and closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// More than [`MAX_HEAD`] bytes, or more than 64 header lines.
    TooLarge,
    /// Not an HTTP/1.x request head.
    Malformed,
}

impl HeadError {
    pub fn reply(self) -> Reply {
        match self {
            HeadError::TooLarge => Reply::text(431, "Request Header Fields Too Large\n"),
            HeadError::Malformed => Reply::text(400, "Bad Request\n"),
        }
    }
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head<'_>>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HeadError::Malformed);
    };
    let mut host = None;
    let mut flavor = None;
    let mut forwarded = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut body = false;
    for header in parsed.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("host") {
            host = host.or(std::str::from_utf8(value).ok());
        } else if name.eq_ignore_ascii_case("metadata-flavor") {
            flavor = flavor.or(std::str::from_utf8(value).ok());
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                connection_close |= token.eq_ignore_ascii_case(b"close");
                connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            body = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            body |= value.trim_ascii() != b"0";
        }
    }
    let (authority, path, query) = split_target(target);
    let keep_alive = !body
        && !connection_close
        && match version {
            1 => true,
            // HTTP/1.0 keeps the connection only when asked to.
            _ => connection_keep_alive,
        };
    Ok(Some(Head {
        request: Request {
            method,
            path,
            query,
            // RFC 9112 3.2.2: an absolute target's authority is the host, whatever Host says.
            host: authority.or(host).unwrap_or("metadata.google.internal"),
            flavor,
            forwarded,
        },
        len,
        keep_alive,
        http10: version == 0,
        body,
    }))
}

/// The authority (absolute form only), the path and the query of a request target, in origin
/// form (`/a?b`) or absolute form (`http://host/a?b`, as clients send through a proxy).
fn split_target(target: &str) -> (Option<&str>, &str, &str) {
    let (authority, origin) = match target.find("://") {
        Some(scheme_end) if !target.starts_with('/') => {
            let rest = &target[scheme_end + 3..];
            match rest.find(['/', '?']) {
                Some(start) => (&rest[..start], &rest[start..]),
                None => (rest, "/"),
            }
        }
        _ => ("", target),
    };
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    let authority = (!authority.is_empty()).then_some(authority);
    (authority, if path.is_empty() { "/" } else { path }, query)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// How a reply goes on the wire.
#[derive(Clone, Copy, Debug)]
pub struct Framing<'a> {
    /// The `Date` header's value (IMF-fixdate).
    pub date: &'a str,
    /// A HEAD request: the headers of GET, no body.
    pub head_only: bool,
    pub connection: Connection,
}

/// What becomes of the connection after a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Kept open, HTTP/1.1's default: nothing to say.
    Persistent,
    /// Kept open for an HTTP/1.0 client, which needs `Connection: keep-alive` to know it.
    KeepAlive,
    /// Closed after this reply (`Connection: close`).
    Close,
}

impl Connection {
    /// The fate of a connection after answering `head`; a stopping server closes every one.
    pub fn after(head: &Head<'_>, stopping: bool) -> Connection {
        if !head.keep_alive || stopping {
            Connection::Close
        } else if head.http10 {
            Connection::KeepAlive
        } else {
            Connection::Persistent
        }
    }
}

/// Appends the response for `reply` to `out`. `Metadata-Flavor: Google` goes on every response,
/// errors included (section 3.1 and 3.2: Node's gcp-metadata rejects answers without it), with
/// GKE's `Server`, and `X-Content-Type-Options: nosniff` on errors as GKE sends it.
pub fn render(reply: &Reply, framing: Framing<'_>, out: &mut Vec<u8>) {
    use std::io::Write;
    if let Some(headers) = &reply.relayed {
        return render_relayed(reply, headers, framing, out);
    }
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nMetadata-Flavor: Google\r\nServer: GKE Metadata Server\r\nContent-Type: {}\r\nContent-Length: {}\r\nDate: {}\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len(),
        framing.date,
    );
    let mut header = |name: &str, value: &str| {
        // A value is ours (an ETag, a Location built from the request's own path and Host):
        // never let it split the head.
        if !value.bytes().any(|b| b == b'\r' || b == b'\n') {
            let _ = write!(out, "{name}: {value}\r\n");
        }
    };
    if let Some(etag) = &reply.etag {
        header("ETag", etag);
    }
    if let Some(location) = &reply.location {
        header("Location", location);
    }
    if let Some(allow) = reply.allow {
        header("Allow", allow);
    }
    if reply.status >= 400 {
        header("X-Content-Type-Options", "nosniff");
    }
    end_head(reply, framing, out);
}

/// Another metadata service's answer: its status, its end-to-end headers as they came, and
/// this connection's own framing.
fn render_relayed(
    reply: &Reply,
    headers: &[(String, Vec<u8>)],
    framing: Framing<'_>,
    out: &mut Vec<u8>,
) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        reply.status,
        reason(reply.status)
    );
    for (name, value) in headers {
        let framed_here =
            crate::passthrough::is_hop_by_hop(name) || name.eq_ignore_ascii_case("date");
        // A value that could split the head is dropped, as it could not have come in one.
        if framed_here || value.iter().any(|b| *b == b'\r' || *b == b'\n') {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9110 8.6: no length on a reply that never has content.
    if !matches!(reply.status, 100..=199 | 204 | 304) {
        let _ = write!(out, "Content-Length: {}\r\n", reply.body.len());
    }
    let _ = write!(out, "Date: {}\r\n", framing.date);
    end_head(reply, framing, out);
}

/// The `Connection` header, the end of the head and the body.
fn end_head(reply: &Reply, framing: Framing<'_>, out: &mut Vec<u8>) {
    match framing.connection {
        Connection::Persistent => {}
        Connection::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Connection::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    if !framing.head_only {
        out.extend_from_slice(&reply.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head<'_> {
        match parse_head(raw.as_bytes()) {
            Ok(Some(head)) => head,
            other => panic!("{raw:?} did not parse: {other:?}"),
        }
    }

    #[test]
    fn a_client_request_parses_with_the_headers_that_matter() {
        let raw = "GET /computeMetadata/v1/instance/service-accounts/default/token?scopes=a,b HTTP/1.1\r\nHost: metadata.google.internal\r\nmetadata-flavor: Google\r\nAccept-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\n";
        let h = head(raw);
        assert_eq!(h.request.method, "GET");
        assert_eq!(
            h.request.path,
            "/computeMetadata/v1/instance/service-accounts/default/token"
        );
        assert_eq!(h.request.query, "scopes=a,b");
        assert_eq!(h.request.host, "metadata.google.internal");
        assert_eq!(h.request.flavor, Some("Google"));
        assert!(!h.request.forwarded);
        assert!(h.keep_alive);
        // The pipelined request after it is not part of this head.
        assert_eq!(&raw[h.len..], "GET / HTTP/1.1\r\n");
    }

    #[test]
    fn incomplete_heads_wait_and_oversized_ones_are_refused() {
        assert!(matches!(
            parse_head(b"GET /computeMetadata/v1/ HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        ));
        assert!(matches!(parse_head(b""), Ok(None)));
        let mut big = b"GET / HTTP/1.1\r\nX-A: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse_head(&big).err(), Some(HeadError::TooLarge));
        let many: String = std::iter::once("GET / HTTP/1.1\r\n".to_owned())
            .chain((0..100).map(|i| format!("X-{i}: v\r\n")))
            .chain(std::iter::once("\r\n".to_owned()))
            .collect();
        assert_eq!(parse_head(many.as_bytes()).err(), Some(HeadError::TooLarge));
        assert_eq!(
            parse_head(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").err(),
            Some(HeadError::Malformed)
        );
        assert_eq!(HeadError::TooLarge.reply().status, 431);
        assert_eq!(HeadError::Malformed.reply().status, 400);
    }

    #[test]
    fn connection_reuse_follows_the_version_the_connection_header_and_bodies() {
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: TE, Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        let kept = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(kept.keep_alive);
        // An HTTP/1.0 client is told its connection stays open; a stopping server closes it.
        assert_eq!(Connection::after(&kept, false), Connection::KeepAlive);
        assert_eq!(Connection::after(&kept, true), Connection::Close);
        let v11 = head("GET / HTTP/1.1\r\n\r\n");
        assert_eq!(Connection::after(&v11, false), Connection::Persistent);
        // A body is never read: the connection ends after the answer.
        assert!(!head("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").keep_alive);
        assert!(!head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").keep_alive);
    }

    #[test]
    fn header_names_are_case_insensitive_and_the_first_value_counts() {
        let h = head(
            "GET / HTTP/1.1\r\nMETADATA-FLAVOR: Google\r\nMetadata-Flavor: Other\r\nx-FORWARDED-for: 1.2.3.4\r\n\r\n",
        );
        assert_eq!(h.request.flavor, Some("Google"));
        assert!(h.request.forwarded);
        // No Host (HTTP/1.0): redirects name the metadata server's own host.
        assert_eq!(h.request.host, "metadata.google.internal");
    }

    #[test]
    fn absolute_targets_are_reduced_to_path_and_query() {
        let h = head(
            "GET http://169.254.169.254/computeMetadata/v1/project/project-id?alt=text HTTP/1.1\r\n\r\n",
        );
        assert_eq!(h.request.path, "/computeMetadata/v1/project/project-id");
        assert_eq!(h.request.query, "alt=text");
        assert_eq!(h.request.host, "169.254.169.254");
        let h =
            head("GET http://169.254.169.254/ HTTP/1.1\r\nHost: metadata.google.internal\r\n\r\n");
        assert_eq!(
            h.request.host, "169.254.169.254",
            "the target's authority wins"
        );
        assert_eq!(
            split_target("http://metadata.google.internal"),
            (Some("metadata.google.internal"), "/", "")
        );
        assert_eq!(split_target("http://m?x=1"), (Some("m"), "/", "x=1"));
        assert_eq!(split_target("/a/b"), (None, "/a/b", ""));
        assert_eq!(split_target("/a?"), (None, "/a", ""));
    }

    #[test]
    fn replies_render_with_the_protocol_headers() {
        let mut out = Vec::new();
        let reply = Reply {
            etag: Some("0123456789abcdef".into()),
            ..Reply::json(&b"{\"a\":1}"[..])
        };
        let framing = Framing {
            date: "Sun, 29 Nov 2026 20:00:00 GMT",
            head_only: false,
            connection: Connection::Persistent,
        };
        render(&reply, framing, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nServer: GKE Metadata Server\r\nContent-Type: application/json\r\nContent-Length: 7\r\nDate: Sun, 29 Nov 2026 20:00:00 GMT\r\nETag: 0123456789abcdef\r\n\r\n{\"a\":1}"
        );

        let mut out = Vec::new();
        let refused = Reply {
            allow: Some("GET, HEAD"),
            ..Reply::text(405, "Method Not Allowed\n")
        };
        render(
            &refused,
            Framing {
                head_only: true,
                connection: Connection::Close,
                ..framing
            },
            &mut out,
        );
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        assert!(
            text.contains("\r\nX-Content-Type-Options: nosniff\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 19\r\n"), "{text}");
        // HEAD: the length of the body, not the body.
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }

    #[test]
    fn a_relayed_reply_keeps_its_own_headers_and_gets_this_connections_framing() {
        let mut out = Vec::new();
        let headers = vec![
            ("Content-Type".to_owned(), b"text/plain".to_vec()),
            (
                "X-Aws-Ec2-Metadata-Token-Ttl-Seconds".to_owned(),
                b"60".to_vec(),
            ),
            ("Transfer-Encoding".to_owned(), b"chunked".to_vec()),
            ("Date".to_owned(), b"elsewhen".to_vec()),
            ("X-Split".to_owned(), b"a\r\nSet-Cookie: b".to_vec()),
        ];
        let reply = Reply::relay(401, headers, b"no".to_vec());
        let framing = Framing {
            date: "d",
            head_only: false,
            connection: Connection::Close,
        };
        render(&reply, framing, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nX-Aws-Ec2-Metadata-Token-Ttl-Seconds: 60\r\nContent-Length: 2\r\nDate: d\r\nConnection: close\r\n\r\nno"
        );
    }

    #[test]
    fn a_value_with_a_line_break_never_splits_the_head() {
        let mut out = Vec::new();
        let reply = Reply {
            location: Some("http://x/\r\nSet-Cookie: a=b".into()),
            ..Reply::text(301, "")
        };
        render(
            &reply,
            Framing {
                date: "d",
                head_only: false,
                connection: Connection::Persistent,
            },
            &mut out,
        );
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!text.contains("Set-Cookie"), "{text}");
    }
}
