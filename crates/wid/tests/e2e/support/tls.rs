//! A certificate authority made by the test, and HTTPS servers with its certificates on
//! loopback: the fake of Google's tools (`wid_google_fake::tls`).

pub use wid_google_fake::tls::{TestCa, serve_https};
