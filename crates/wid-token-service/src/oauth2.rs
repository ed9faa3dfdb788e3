//! The public key documents, OIDC discovery, and tokeninfo, at Google's paths:
//! `/oauth2/v3/certs` (JWKS), `/oauth2/v1/certs` (kid → X.509 PEM), `/.well-known/openid-configuration`,
//! `/tokeninfo`, and per-account key lookups `/service_accounts/v1/metadata/{jwk|x509}/EMAIL`.
//! None needs credentials.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use wid_api::tokens::TokenKind;
use wid_store::{AccountKeyRow, StoreError};

use crate::App;
use crate::error::ApiError;
use crate::tokens::now;

/// Verifiers cache the key documents; five minutes keeps a rotation visible soon.
const KEYS_CACHE_CONTROL: &str = "public, max-age=300, must-revalidate, no-transform";

/// The signing keys' JWK set with the account's own keys added.
fn with_jwks(signing: &[u8], own: &[AccountKeyRow]) -> Result<Vec<u8>, ApiError> {
    let mut document: Value = serde_json::from_slice(signing)
        .map_err(|e| ApiError::Internal(format!("the account key set is broken: {e}")))?;
    if let Some(keys) = document["keys"].as_array_mut() {
        for key in own {
            let jwk = crate::iam::certificates::rsa_jwk(&key.certificate_pem, &key.key_id)?;
            keys.push(serde_json::to_value(jwk).map_err(|e| ApiError::Internal(e.to_string()))?);
        }
    }
    Ok(document.to_string().into_bytes())
}

/// The signing keys' certificate map with the account's own keys' certificates added.
fn with_certificates(signing: &[u8], own: &[AccountKeyRow]) -> Result<Vec<u8>, ApiError> {
    let mut map: std::collections::BTreeMap<String, String> = serde_json::from_slice(signing)
        .map_err(|e| ApiError::Internal(format!("the account certificate map is broken: {e}")))?;
    for key in own {
        map.insert(key.key_id.clone(), key.certificate_pem.clone());
    }
    serde_json::to_vec(&map).map_err(|e| ApiError::Internal(e.to_string()))
}

fn keys_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(KEYS_CACHE_CONTROL),
    );
    response
}

fn invalid_token() -> ApiError {
    ApiError::OAuth {
        error: "invalid_token",
        description: "Invalid Value".into(),
    }
}

/// Every value as a string, as Google's tokeninfo renders them.
fn stringified(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, Value::String(s))
        })
        .collect()
}

impl App {
    pub(crate) fn jwks_document(&self) -> Response {
        keys_response(self.keys.current().jwks_json.clone())
    }

    pub(crate) fn pem_document(&self) -> Response {
        keys_response(self.keys.current().pem_map_json.clone())
    }

    pub(crate) fn openid_configuration(&self) -> Value {
        let base = self.issuer.trim_end_matches('/');
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{base}/oauth2/v3/certs"),
            "token_endpoint": format!("{base}/v1/token"),
            "introspection_endpoint": format!("{base}/v1/introspect"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"],
            "grant_types_supported": [wid_api::sts::GRANT_TYPE_TOKEN_EXCHANGE],
        })
    }

    /// The keys that sign for an account (signBlob, signJwt), as Google's per-account metadata
    /// serves them. They are not in the `/oauth2` documents: a signature made by signBlob must
    /// never pass as an ID or access token.
    pub(crate) async fn account_keys(
        &self,
        format: &str,
        email: &str,
    ) -> Result<Response, ApiError> {
        let account = match self.store.get_service_account(email).await {
            Err(StoreError::NotFound) => {
                return Err(ApiError::NotFound(format!(
                    "Service account {email} does not exist."
                )));
            }
            other => other?,
        };
        // The account's own keys that sign now: enabled, within their validity, of an enabled
        // account.
        let now = now();
        let own: Vec<AccountKeyRow> = match account.disabled {
            true => Vec::new(),
            false => self.store.list_account_keys(&account.unique_id).await?,
        }
        .into_iter()
        .filter(|k| k.is_usable(now))
        .collect();
        let keys = self.keys.current();
        let body = match format {
            "jwk" => with_jwks(&keys.account_jwks_json, &own)?,
            "x509" => with_certificates(&keys.account_pem_map_json, &own)?,
            other => {
                return Err(ApiError::NotFound(format!(
                    "No key format '{other}'; use jwk or x509."
                )));
            }
        };
        Ok(keys_response(body))
    }

    /// `/tokeninfo?access_token=…` or `?id_token=…`.
    pub(crate) async fn tokeninfo(&self, params: &[(String, String)]) -> Result<Value, ApiError> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_owned())
        };
        let now = now();
        if let Some(token) = get("access_token") {
            let claims = self
                .verify_access_token(&token, now)
                .await
                .map_err(|_| invalid_token())?;
            if !self.token_is_live(&claims).await? {
                return Err(invalid_token());
            }
            let expires_in = (claims.exp - now).max(0);
            let mut out = json!({
                "azp": claims.client_id,
                "aud": claims.client_id,
                "sub": claims.sub,
                "scope": claims.scope,
                "exp": claims.exp.to_string(),
                "expires_in": expires_in.to_string(),
                "access_type": "online",
            });
            if claims.wid.kind == Some(TokenKind::ServiceAccount) {
                let account = self
                    .store
                    .get_service_account(&claims.sub)
                    .await
                    .map_err(|_| invalid_token())?;
                if account.disabled {
                    return Err(invalid_token());
                }
                out["email"] = json!(account.email);
                out["email_verified"] = json!("true");
            }
            return Ok(out);
        }
        if let Some(token) = get("id_token") {
            // Only ID-token keys, RS256, typ JWT and a string audience: access tokens and
            // signJwt output are not ID tokens.
            let verified = self
                .keys
                .verify_fresh(&self.store, |keys| {
                    wid_jose::verify(&token, &keys.id_keys.jwks)
                })
                .await
                .map_err(|_| invalid_token())?;
            let typ_ok = verified.header.typ.as_deref().is_none_or(|t| t == "JWT");
            let aud_ok = verified.claims.get("aud").is_some_and(Value::is_string);
            if verified.alg != wid_jose::Algorithm::Rs256 || !typ_ok || !aud_ok {
                return Err(invalid_token());
            }
            let exp = verified
                .claims
                .get("exp")
                .and_then(Value::as_i64)
                .ok_or_else(invalid_token)?;
            let iss = verified.claims.get("iss").and_then(Value::as_str);
            if exp < now || !self.is_own_issuer(iss.unwrap_or_default()).await {
                return Err(invalid_token());
            }
            let mut out = stringified(verified.claims);
            out.insert("alg".into(), json!(verified.alg.name()));
            out.insert("kid".into(), json!(verified.kid));
            if let Some(typ) = verified.header.typ {
                out.insert("typ".into(), json!(typ));
            }
            return Ok(Value::Object(out));
        }
        Err(ApiError::OAuth {
            error: "invalid_request",
            description: "Pass access_token or id_token.".into(),
        })
    }
}
