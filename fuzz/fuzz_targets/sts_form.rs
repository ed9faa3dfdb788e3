//! The STS request parsers on arbitrary input: the form body (as google-auth, gcloud, Go and Rust
//! send it) and the JSON body (as discovery-based clients send it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wid_api::sts::ExchangeRequest;

fuzz_target!(|data: &[u8]| {
    let _ = ExchangeRequest::from_form(data);
    let _ = serde_json::from_slice::<ExchangeRequest>(data);
});
