//! The sizes wid accepts in the fields that end up in the tokens it mints.
//!
//! Google documents some of them (the mapped attributes, the subject); for the others wid takes
//! bounds far above what any client sends (gcloud's six scopes are about 330 bytes, audiences are
//! URLs or client ids) and low enough that every token wid mints is one it accepts back as a
//! bearer token (`wid_jose::MAX_TOKEN_BYTES`, 16 KiB) and that one caller cannot make the node
//! agent hold much per request.

/// The scopes of one token, space-separated: STS's `scope`, generateAccessToken's `scope`, the
/// metadata server's `scopes`.
pub const MAX_SCOPE_BYTES: usize = 2048;

/// The audience of an ID token: generateIdToken's `audience`, the metadata server's `audience`.
pub const MAX_AUDIENCE_BYTES: usize = 2048;

/// STS's `audience`: a provider's resource name, or GKE's `identitynamespace:POOL:ISSUER` with an
/// issuer of up to 2048 bytes.
pub const MAX_STS_AUDIENCE_BYTES: usize = 2304;

/// The attributes a provider's mapping makes for one token: names, values and groups together
/// (Google counts 8 KB of values; wid counts the names too, so that the token stays small).
pub const MAX_MAPPED_ATTRIBUTE_BYTES: usize = 8192;
