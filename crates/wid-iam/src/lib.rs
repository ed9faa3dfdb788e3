//! The IAM model of wid, with no I/O: names and their rules, policy members, roles and their
//! permissions, policy evaluation, and the small expression language of attribute mappings and
//! conditions.
//!
//! Layout:
//! - [`names`]: project, service-account, pool, provider and cluster identifiers, validated as
//!   Google validates them.
//! - [`member`]: the member strings of IAM bindings, parsed into what they denote. The GKE form
//!   `serviceAccount:P.svc.id.goog[NS/KSA]` and the `principal://…/subject/ns/NS/sa/KSA` form
//!   parse to the same identity.
//! - [`roles`]: the supported roles and the permissions each grants.
//! - [`policy`]: a validated policy, and [`policy::is_allowed`], the one decision function.
//! - [`expr`]: parse and evaluate attribute mappings and conditions.

pub mod expr;
pub mod member;
pub mod names;
pub mod policy;
pub mod roles;

pub use member::{Caller, FederatedCaller, Member, Vouch};
pub use policy::{Policy, PolicyError, is_allowed};
