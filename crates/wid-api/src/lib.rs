//! Wire types of wid's external contracts.
//!
//! Everything here is a compatibility promise: these structs are what goes over the wire, field
//! for field, in the JSON shapes Google's APIs use (`iam.googleapis.com` v1,
//! `cloudresourcemanager` v1 projects, long-running Operations, the Google error body). Internal
//! types of the other crates are deliberately not `Serialize`; they are converted to and from
//! these at the edges.
//!
//! Request types deny unknown fields, as Google's front end does ("Invalid JSON payload
//! received. Unknown name ..."), but accept every field of the resource, output-only ones
//! included, because clients such as gcloud send back the whole resource they read.
//!
//! Beside them, two pure rules for the text of those contracts, used on both sides of the wire:
//! [`json`] refuses JSON with a key twice, [`text`] escapes control characters for text shown
//! to people.

pub mod account_keys;
pub mod bounds;
pub mod cluster;
pub mod credentials;
pub mod error;
pub mod iam;
pub mod json;
pub mod keys;
pub mod operation;
pub mod pool;
pub mod project;
pub mod sts;
pub mod text;
pub mod time;
pub mod tokens;

pub use error::{ErrorBody, GoogleError, RpcCode};
