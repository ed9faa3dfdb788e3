//! The wid admin CLI, shaped like `gcloud iam`: argument definitions ([`args`]), an HTTP client
//! for the token service's IAM API ([`client`]) and its admin operations as typed calls
//! ([`admin`]), output formats ([`output`]), and the commands that tie them together
//! ([`commands`]), and how any `wid` command tells a failure ([`report`]). It knows the service only through its wire
//! protocol, like any other client.

pub mod admin;
pub mod args;
pub mod client;
pub mod commands;
pub mod output;
pub mod report;

pub use args::{AdminCommand, ClientArgs};
pub use commands::run;
