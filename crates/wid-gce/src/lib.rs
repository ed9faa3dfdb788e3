//! The GCE metadata protocol, as the GKE metadata server speaks it to pods, with no I/O.
//!
//! [`answer`] takes a request (method, path, query, the few headers that matter) and the
//! caller's [`View`] of the metadata tree, and decides: a finished [`Reply`], or a token or
//! identity to mint (the agent's job), or a reply to hold for a long-poll. Every rule of
//! `metadata-api.md` that can be decided from the request alone lives here, so it is tested
//! without sockets: the request header rules (section 2), the response headers and formats
//! (section 3), the tree and its concealment (section 4), directory semantics (section 5), the
//! long-poll parameters (section 6) and the parameters of `token` and `identity` (sections 7, 8).

pub mod http1;
pub mod passthrough;
mod query;
mod tree;

use std::time::Duration;

pub use query::Query;
pub use tree::{Account, View};

/// `Content-Type` of text values and listings (GCE's own, odd as it is).
pub const TEXT: &str = "application/text";
/// `Content-Type` of JSON values; Python parses JSON only under exactly this type.
pub const JSON: &str = "application/json";
/// The longest a long-poll is held without `timeout_sec`, and the most `timeout_sec` can ask.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A request, reduced to what the protocol looks at.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, still percent-encoded.
    pub path: &'a str,
    /// The query string without `?` (empty when there is none).
    pub query: &'a str,
    /// The `Host` header, for absolute redirects.
    pub host: &'a str,
    /// The `Metadata-Flavor` header's value.
    pub flavor: Option<&'a str>,
    /// Whether an `X-Forwarded-For` header came with the request.
    pub forwarded: bool,
}

/// A finished answer. `Metadata-Flavor: Google` and `Server` go on every response; the agent
/// adds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub etag: Option<String>,
    /// `Location` of a 301.
    pub location: Option<String>,
    /// `Allow` of a 405.
    pub allow: Option<&'static str>,
    /// Another cloud's metadata service's answer, relayed (`--passthrough`): its own headers
    /// instead of Google's (hop-by-hop ones are dropped when it is rendered).
    pub relayed: Option<Vec<(String, Vec<u8>)>>,
}

impl Reply {
    /// A plain-text answer without an ETag: errors, and the ID token.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type: TEXT,
            body: body.into(),
            etag: None,
            location: None,
            allow: None,
            relayed: None,
        }
    }

    /// A JSON answer without an ETag: the access token.
    pub fn json(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            content_type: JSON,
            ..Reply::text(200, body)
        }
    }

    /// A value or listing, with its ETag.
    fn value(content_type: &'static str, body: Vec<u8>) -> Reply {
        let etag = Some(etag(&body));
        Reply {
            status: 200,
            content_type,
            body,
            etag,
            location: None,
            allow: None,
            relayed: None,
        }
    }

    /// Another metadata service's answer, relayed as it came; `http1::render` frames it itself
    /// and drops the hop-by-hop ones of `headers`.
    pub fn relay(status: u16, headers: Vec<(String, Vec<u8>)>, body: Vec<u8>) -> Reply {
        Reply {
            relayed: Some(headers),
            ..Reply::text(status, body)
        }
    }
}

/// `format` of an identity token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdFormat {
    Standard,
    Full,
}

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Reply(Reply),
    /// Mint (or serve from cache) an access token for the view's account `account`.
    Token {
        account: usize,
        scopes: Vec<String>,
    },
    /// Mint (or serve from cache) an ID token.
    Identity {
        account: usize,
        audience: String,
        format: IdFormat,
        licenses: bool,
    },
    /// A long-poll whose content has not changed: answer `reply` after `wait`.
    Hold {
        reply: Reply,
        wait: Duration,
    },
}

/// A stable 16-hex-digit ETag of a body (FNV-1a, 64 bits).
pub fn etag(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn bad_request(message: &str) -> Outcome {
    Outcome::Reply(Reply::text(400, format!("{message}\n")))
}

fn not_found() -> Outcome {
    Outcome::Reply(Reply::text(404, "Not Found\n"))
}

/// The answers that need no caller: wrong methods, forwarded requests, `/`, a missing header.
/// The agent asks this before it looks up who is calling.
pub fn precheck(request: &Request<'_>) -> Option<Reply> {
    if request.method != "GET" && request.method != "HEAD" {
        return Some(Reply {
            allow: Some("GET, HEAD"),
            ..Reply::text(405, "Method Not Allowed\n")
        });
    }
    if request.forwarded {
        return Some(Reply::text(
            403,
            "Calls with X-Forwarded-For header are not allowed by the metadata server\n",
        ));
    }
    // `/` answers without the header: Go's OnGCE probes it bare.
    if request.path == "/" {
        return Some(Reply::value(TEXT, b"computeMetadata/\n".to_vec()));
    }
    if request.flavor != Some("Google") {
        return Some(Reply::text(
            403,
            "Missing required header \"Metadata-Flavor\": \"Google\"\n",
        ));
    }
    None
}

/// The hot path: a token request of the default account (or of `email`), decided without
/// building the caller's tree. `None` for anything else, which [`answer`] then decides; the
/// outcome is the same as [`answer`]'s.
pub fn token_fast_path(request: &Request<'_>, email: &str) -> Option<Outcome> {
    let account = request
        .path
        .strip_prefix("/computeMetadata/v1/instance/service-accounts/")?
        .strip_suffix("/token")?;
    // An email with a `/` (a principal identifier) is no path segment: the tree has no such
    // directory, so neither has the fast path.
    if account != "default" && (account != email || account.contains('/')) {
        return None;
    }
    precheck(request).is_none().then_some(())?;
    let query = Query::parse(request.query)?;
    // Oversized scopes are refused by `answer`, in one place.
    if query.flag("wait_for_change") || query.get("alt").is_some() || query.scopes_too_long() {
        return None;
    }
    Some(Outcome::Token {
        account: 0,
        scopes: query.scopes(),
    })
}

/// Decides what to answer.
pub fn answer(request: &Request<'_>, view: &View) -> Outcome {
    if let Some(reply) = precheck(request) {
        return Outcome::Reply(reply);
    }
    let Some(query) = Query::parse(request.query) else {
        return bad_request("malformed query string");
    };
    let Some((segments, trailing_slash)) = tree::segments(request.path) else {
        return not_found();
    };
    tree::resolve(request, view, &segments, trailing_slash, &query)
}

#[cfg(test)]
mod tests;
