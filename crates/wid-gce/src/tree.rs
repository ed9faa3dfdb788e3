//! The metadata tree a caller sees, and walking it.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::{
    IdFormat, JSON, MAX_WAIT, Outcome, Query, Reply, Request, TEXT, bad_request, not_found,
};

/// A service account as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The annotated account's email; for a KSA without annotation, the pool name
    /// `PROJECT.svc.id.goog` (or the principal identifier, which is never a path segment).
    pub email: String,
    pub scopes: Vec<String>,
}

/// Everything the caller's tree is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub project_id: String,
    pub project_number: String,
    /// The short zone or region, e.g. `us-central1-a`.
    pub zone: String,
    pub hostname: String,
    /// The node's numeric id.
    pub instance_id: String,
    pub cluster_name: String,
    pub cluster_location: String,
    pub cluster_uid: String,
    /// The caller's account; GKE gives a pod exactly one.
    pub account: Account,
}

/// Whether a directory's keys follow a fixed schema (camelCased in recursive JSON) or are
/// names (kept verbatim: attribute names, emails, `default`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    Fixed,
    Names,
}

enum Node {
    Dir(Keys, Vec<(String, Node)>),
    Text(String),
    /// Digits; a JSON number in recursive output, whatever its size.
    Number(String),
    List(Vec<String>),
    Token,
    Identity,
}

fn text(s: &str) -> Node {
    Node::Text(s.to_owned())
}

fn account_dir(account: &Account) -> Node {
    Node::Dir(
        Keys::Fixed,
        vec![
            ("aliases".into(), Node::List(vec!["default".into()])),
            ("email".into(), text(&account.email)),
            ("identity".into(), Node::Identity),
            ("scopes".into(), Node::List(account.scopes.clone())),
            ("token".into(), Node::Token),
        ],
    )
}

/// The instance name a host name carries: `node-1` of `node-1.us-central1-a.c.proj.internal`.
fn instance_name(hostname: &str) -> &str {
    hostname.split('.').next().unwrap_or(hostname)
}

/// The `/computeMetadata/v1/` tree of the caller.
fn v1(view: &View) -> Node {
    let mut accounts = vec![("default".to_owned(), account_dir(&view.account))];
    // An email that cannot be a path segment (a principal identifier) is listed only as default.
    if !view.account.email.contains('/') {
        accounts.push((view.account.email.clone(), account_dir(&view.account)));
    }
    Node::Dir(
        Keys::Fixed,
        vec![
            (
                "instance".into(),
                Node::Dir(
                    Keys::Fixed,
                    vec![
                        (
                            "attributes".into(),
                            Node::Dir(
                                Keys::Names,
                                vec![
                                    ("cluster-location".into(), text(&view.cluster_location)),
                                    ("cluster-name".into(), text(&view.cluster_name)),
                                    ("cluster-uid".into(), text(&view.cluster_uid)),
                                ],
                            ),
                        ),
                        ("hostname".into(), text(&view.hostname)),
                        ("id".into(), Node::Number(view.instance_id.clone())),
                        // GCE's instance name is its host name's first label. GKE's metadata
                        // server has answered it with a 404, which broke Go's
                        // `metadata.InstanceName()` callers (prometheus-to-sd, Datadog's
                        // agent); answering it costs nothing and conceals nothing `hostname`
                        // does not already tell.
                        ("name".into(), text(instance_name(&view.hostname))),
                        ("service-accounts".into(), Node::Dir(Keys::Names, accounts)),
                        (
                            "zone".into(),
                            Node::Text(format!(
                                "projects/{}/zones/{}",
                                view.project_number, view.zone
                            )),
                        ),
                    ],
                ),
            ),
            (
                "project".into(),
                Node::Dir(
                    Keys::Fixed,
                    vec![
                        (
                            "numeric-project-id".into(),
                            Node::Number(view.project_number.clone()),
                        ),
                        ("project-id".into(), text(&view.project_id)),
                    ],
                ),
            ),
            (
                "universe".into(),
                Node::Dir(
                    Keys::Fixed,
                    vec![("universe-domain".into(), text("googleapis.com"))],
                ),
            ),
        ],
    )
}

/// The decoded segments of a path and whether it ends in `/`. `None` for anything that could
/// step outside the tree (`..`, `.`, empty segments, an encoded `/`).
pub(crate) fn segments(path: &str) -> Option<(Vec<String>, bool)> {
    let rest = path.strip_prefix('/')?;
    let trailing = rest.ends_with('/');
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut out = Vec::new();
    for raw in rest.split('/') {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .ok()?;
        if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
            return None;
        }
        out.push(decoded.into_owned());
    }
    Some((out, trailing))
}

fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn json_of(node: &Node) -> Option<Value> {
    Some(match node {
        Node::Dir(keys, children) => {
            let mut map = Map::new();
            for (name, child) in children {
                if let Some(v) = json_of(child) {
                    let key = if *keys == Keys::Fixed {
                        camel(name)
                    } else {
                        name.clone()
                    };
                    map.insert(key, v);
                }
            }
            Value::Object(map)
        }
        Node::Text(s) => Value::String(s.clone()),
        // Parsed from the digits, so large ids stay exact.
        Node::Number(digits) => serde_json::from_str::<serde_json::Number>(digits)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(digits.clone())),
        Node::List(items) => Value::Array(items.iter().cloned().map(Value::String).collect()),
        // Tokens are never part of a recursive answer.
        Node::Token | Node::Identity => return None,
    })
}

fn text_lines(node: &Node, prefix: &str, out: &mut String) {
    match node {
        Node::Dir(_, children) => {
            for (name, child) in children {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                text_lines(child, &path, out);
            }
        }
        Node::Text(s) | Node::Number(s) => out.push_str(&format!("{prefix} {s}\n")),
        Node::List(items) => {
            for item in items {
                out.push_str(&format!("{prefix} {item}\n"));
            }
        }
        Node::Token | Node::Identity => {}
    }
}

fn listing(children: &[(String, Node)]) -> Vec<u8> {
    let mut body = String::new();
    for (name, child) in children {
        body.push_str(name);
        if matches!(child, Node::Dir(..)) {
            body.push('/');
        }
        body.push('\n');
    }
    body.into_bytes()
}

fn leaf_reply(node: &Node, alt: Option<&str>) -> Option<Reply> {
    let json = alt == Some("json");
    Some(match node {
        Node::Text(s) if json => {
            Reply::value(JSON, Value::String(s.clone()).to_string().into_bytes())
        }
        Node::Number(d) if json => Reply::value(JSON, d.clone().into_bytes()),
        Node::List(items) if json => Reply::value(
            JSON,
            Value::Array(items.iter().cloned().map(Value::String).collect())
                .to_string()
                .into_bytes(),
        ),
        // Scalars carry no trailing newline: gcloud tests `isdigit()` on the project number.
        Node::Text(s) | Node::Number(s) => Reply::value(TEXT, s.clone().into_bytes()),
        Node::List(items) => Reply::value(
            TEXT,
            items
                .iter()
                .map(|i| format!("{i}\n"))
                .collect::<String>()
                .into_bytes(),
        ),
        _ => return None,
    })
}

/// Applies `wait_for_change` to a reply: hold it when the caller already has this content.
fn long_poll(reply: Reply, query: &Query) -> Outcome {
    if !query.flag("wait_for_change") {
        return Outcome::Reply(reply);
    }
    let wait = match query.get("timeout_sec") {
        None => MAX_WAIT,
        Some(t) => match t.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs).min(MAX_WAIT),
            Err(_) => return bad_request("timeout_sec must be a whole number of seconds"),
        },
    };
    let unchanged = match query.get("last_etag") {
        None => true,
        Some(last) => reply.etag.as_deref() == Some(last),
    };
    if unchanged {
        Outcome::Hold { reply, wait }
    } else {
        Outcome::Reply(reply)
    }
}

pub(crate) fn resolve(
    request: &Request<'_>,
    view: &View,
    segments: &[String],
    trailing: bool,
    query: &Query,
) -> Outcome {
    let (first, rest) = match segments.split_first() {
        Some(split) => split,
        None => return not_found(),
    };
    if first != "computeMetadata" {
        return not_found();
    }
    let redirect = || {
        let mut location = format!("http://{}{}/", request.host, request.path);
        if !request.query.is_empty() {
            location.push('?');
            location.push_str(request.query);
        }
        Outcome::Reply(Reply {
            status: 301,
            content_type: "text/html",
            body: format!("{}/\n", request.path).into_bytes(),
            etag: None,
            location: Some(location),
            allow: None,
            relayed: None,
        })
    };
    let Some((version, below)) = rest.split_first() else {
        return if trailing {
            Outcome::Reply(Reply::value(TEXT, b"v1/\n".to_vec()))
        } else {
            redirect()
        };
    };
    if version != "v1" {
        return not_found();
    }
    let root = v1(view);
    let mut node = &root;
    for name in below {
        let Node::Dir(_, children) = node else {
            return not_found();
        };
        match children.iter().find(|(n, _)| n == name) {
            Some((_, child)) => node = child,
            None => return not_found(),
        }
    }
    let alt = query.get("alt");
    if alt.is_some_and(|a| a != "json" && a != "text") {
        return bad_request("alt must be json or text");
    }
    match node {
        Node::Dir(_, children) if trailing => directory(node, children, alt, query),
        Node::Dir(..) => redirect(),
        _ if trailing => not_found(),
        Node::Token => token(query),
        Node::Identity => identity(query),
        leaf => match leaf_reply(leaf, alt) {
            Some(reply) => long_poll(reply, query),
            None => not_found(),
        },
    }
}

/// A directory: its listing, or with `recursive=true` its whole subtree as JSON or text.
fn directory(
    node: &Node,
    children: &[(String, Node)],
    alt: Option<&str>,
    query: &Query,
) -> Outcome {
    if !query.flag("recursive") {
        if query.flag("wait_for_change") {
            return bad_request("wait_for_change on a directory needs recursive=true");
        }
        return long_poll(Reply::value(TEXT, listing(children)), query);
    }
    let reply = if alt == Some("text") {
        let mut out = String::new();
        text_lines(node, "", &mut out);
        Reply::value(TEXT, out.into_bytes())
    } else {
        let json = json_of(node).unwrap_or(Value::Null);
        Reply::value(JSON, json.to_string().into_bytes())
    };
    long_poll(reply, query)
}

/// `…/token`: an access token to mint, with the scopes asked for.
fn token(query: &Query) -> Outcome {
    if query.flag("wait_for_change") {
        return bad_request("wait_for_change is not supported on a token");
    }
    if query.scopes_too_long() {
        return bad_request(&format!(
            "scopes must be at most {} bytes",
            wid_api::bounds::MAX_SCOPE_BYTES
        ));
    }
    Outcome::Token {
        account: 0,
        scopes: query.scopes(),
    }
}

/// `…/identity`: an ID token to mint, for a non-empty, bounded audience.
fn identity(query: &Query) -> Outcome {
    if query.flag("wait_for_change") {
        return bad_request("wait_for_change is not supported on an identity token");
    }
    let audience = query.get("audience").unwrap_or_default();
    if audience.is_empty() {
        return bad_request("non-empty audience parameter required");
    }
    if audience.len() > wid_api::bounds::MAX_AUDIENCE_BYTES {
        return bad_request(&format!(
            "audience must be at most {} bytes",
            wid_api::bounds::MAX_AUDIENCE_BYTES
        ));
    }
    let format = match query.get("format").map(str::to_ascii_lowercase).as_deref() {
        None | Some("standard") => IdFormat::Standard,
        Some("full") => IdFormat::Full,
        Some(_) => return bad_request("format must be standard or full"),
    };
    let licenses = match query
        .get("licenses")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return bad_request("licenses must be TRUE or FALSE"),
    };
    Outcome::Identity {
        account: 0,
        audience: audience.to_owned(),
        format,
        licenses,
    }
}

/// The ETag of a leaf or listing at `path`, for tests of long-polls.
#[cfg(test)]
pub(crate) fn current_etag(view: &View, path: &str) -> Option<String> {
    let request = Request {
        method: "GET",
        path,
        query: "",
        host: "h",
        flavor: Some("Google"),
        forwarded: false,
    };
    match crate::answer(&request, view) {
        Outcome::Reply(r) => r.etag,
        _ => None,
    }
}
