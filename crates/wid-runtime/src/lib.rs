//! Process plumbing shared by the wid daemons, with no business logic: logging, serving a
//! router until a shutdown signal, private files for secrets, and random secrets.
//!
//! Only binaries read flags and the environment; this crate takes resolved values.

pub mod connections;
pub mod log_limit;
pub mod logging;
pub mod memo;
pub mod openmetrics;
pub mod private_files;
pub mod secrets;
pub mod serve;
pub mod tls;
