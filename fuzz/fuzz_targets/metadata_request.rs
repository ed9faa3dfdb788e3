//! The metadata port on arbitrary bytes: the HTTP/1.1 head parser (`wid_gce::http1`), then every
//! protocol decision a parsed head can reach (precheck, the token fast path, the tree), then the
//! rendering of the reply. Pods send these bytes; none of them may panic the agent, and a parsed
//! head never claims more bytes than arrived.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wid_gce::http1::{self, Connection, Framing};
use wid_gce::{Account, Outcome, Reply, View};

fuzz_target!(|data: &[u8]| {
    let head = match http1::parse_head(data) {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(e) => {
            render(&e.reply());
            return;
        }
    };
    assert!(head.len <= data.len());
    let request = head.request;
    if let Some(reply) = wid_gce::precheck(&request) {
        render(&reply);
        return;
    }
    let email = "runner@proj.iam.gserviceaccount.com";
    let _ = wid_gce::token_fast_path(&request, email);
    let view = View {
        project_id: "proj".into(),
        project_number: "123456789012".into(),
        zone: "local-a".into(),
        hostname: "node-1".into(),
        instance_id: "1000000000000000001".into(),
        cluster_name: "dev".into(),
        cluster_location: "local".into(),
        cluster_uid: "uid".into(),
        account: Account {
            email: email.into(),
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
        },
    };
    match wid_gce::answer(&request, &view) {
        Outcome::Reply(reply) | Outcome::Hold { reply, .. } => render(&reply),
        Outcome::Token { .. } | Outcome::Identity { .. } => {}
    }
});

fn render(reply: &Reply) {
    let mut out = Vec::new();
    let framing = Framing {
        date: "Sun, 29 Nov 2026 20:00:00 GMT",
        head_only: false,
        connection: Connection::Persistent,
    };
    http1::render(reply, framing, &mut out);
    assert!(out.starts_with(b"HTTP/1.1 "));
}
