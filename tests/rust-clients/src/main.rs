//! Google's Rust auth library, unmodified, against whatever metadata server `GCE_METADATA_HOST`
//! names: Application Default Credentials (which fall back to the metadata server), the metadata
//! server's access-token credentials, and its ID-token credentials in both formats. Prints one
//! `name=value` line per result; exits non-zero with the library's error otherwise.

use google_cloud_auth::credentials::{self, idtoken};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let audience = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "https://service.example.com".to_owned());

    let adc = credentials::Builder::default().build_access_token_credentials()?;
    println!("adc_access_token={}", adc.access_token().await?.token);

    let mds = credentials::mds::Builder::default()
        .with_scopes(["https://www.googleapis.com/auth/cloud-platform.read-only"])
        .build_access_token_credentials()?;
    println!("mds_scoped_access_token={}", mds.access_token().await?.token);

    let standard = idtoken::mds::Builder::new(audience.clone()).build()?;
    println!("id_token={}", standard.id_token().await?);

    let full = idtoken::mds::Builder::new(audience)
        .with_format(idtoken::mds::Format::Full)
        .with_licenses(true)
        .build()?;
    println!("id_token_full={}", full.id_token().await?);
    Ok(())
}
