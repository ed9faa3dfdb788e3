//! The end-to-end tests: the real `wid` binary on loopback, with real clients (gcloud among
//! them), one module per subject, in one test binary so that it is linked once.

mod support;

mod account_keys;
mod cli;
mod federation;
mod gcloud;
mod iam_api;
mod kubernetes;
mod metadata;
mod metadata_http;
mod persistence;
mod pools_and_clusters;
mod tls;
mod tokens;
