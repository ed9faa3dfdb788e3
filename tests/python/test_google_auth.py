"""Real, unmodified google-auth (from PyPI) against wid: external_account credentials with and
without impersonation, google.auth.default(), ID tokens verified with verify_token, and the
refusals a user meets."""

import json

import google.auth
import google.auth.exceptions
import pytest
import requests
from google.auth import external_account, identity_pool
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2 import id_token

from conftest import EMAIL, ISSUER, POOL, PROJECT

AUDIENCE = f"identitynamespace:{POOL}:{ISSUER}"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def credential_file(tmp_path, wid, token_path, impersonate=True, lifetime=None) -> str:
    info = {
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"{wid.base}/v1/token",
        "credential_source": {"file": str(token_path)},
    }
    if impersonate:
        info["service_account_impersonation_url"] = (
            f"{wid.base}/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken"
        )
        if lifetime:
            info["service_account_impersonation"] = {"token_lifetime_seconds": lifetime}
    else:
        info["token_info_url"] = f"{wid.base}/v1/introspect"
    path = tmp_path / "cred.json"
    path.write_text(json.dumps(info))
    return str(path)


def write_token(tmp_path, token: str):
    path = tmp_path / "ksa-token"
    # As kubelet writes it; google-auth sends the file's content with its newline.
    path.write_text(token + "\n")
    return path


def tokeninfo(wid, token: str) -> dict:
    response = requests.get(f"{wid.base}/tokeninfo", params={"access_token": token}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_impersonation_flow_refreshes_a_token_that_tokeninfo_accepts(wid, cluster, tmp_path):
    wid.bind(f"serviceAccount:{POOL}[ns1/app]")
    token_file = write_token(tmp_path, cluster.token("ns1", "app"))
    credentials, _ = google.auth.load_credentials_from_file(
        credential_file(tmp_path, wid, token_file, lifetime=1800), scopes=[CLOUD_PLATFORM]
    )
    assert isinstance(credentials, identity_pool.Credentials)
    credentials.refresh(Request())
    assert credentials.valid and credentials.token
    info = tokeninfo(wid, credentials.token)
    assert info["email"] == EMAIL
    assert info["email_verified"] == "true"
    assert 1700 < int(info["expires_in"]) <= 1800
    assert CLOUD_PLATFORM in info["scope"]


def test_direct_federated_token_and_introspection(wid, cluster, tmp_path):
    token_file = write_token(tmp_path, cluster.token("ns1", "direct"))
    credentials, _ = google.auth.load_credentials_from_file(
        credential_file(tmp_path, wid, token_file, impersonate=False), scopes=[CLOUD_PLATFORM]
    )
    credentials.refresh(Request())
    response = requests.post(f"{wid.base}/v1/introspect", data={"token": credentials.token}, timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["active"] is True
    assert body["username"].endswith(f"/workloadIdentityPools/{POOL}/subject/ns/ns1/sa/direct")


def test_application_default_credentials(wid, cluster, tmp_path, monkeypatch):
    wid.bind(f"serviceAccount:{POOL}[ns1/adc]")
    token_file = write_token(tmp_path, cluster.token("ns1", "adc"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", credential_file(tmp_path, wid, token_file))
    # Without it, google.auth.default() would ask cloudresourcemanager.googleapis.com.
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    credentials, project = google.auth.default(scopes=[CLOUD_PLATFORM])
    assert project == PROJECT
    credentials.refresh(Request())
    assert tokeninfo(wid, credentials.token)["email"] == EMAIL


def test_token_file_is_read_again_on_refresh(wid, cluster, tmp_path):
    token_file = write_token(tmp_path, cluster.token("ns1", "rotating"))
    # Direct access: every refresh is an exchange (impersonation reuses a valid source token).
    credentials, _ = google.auth.load_credentials_from_file(
        credential_file(tmp_path, wid, token_file, impersonate=False), scopes=[CLOUD_PLATFORM]
    )
    credentials.refresh(Request())
    first = credentials.token
    # kubelet rotates the projected token: the next refresh must exchange the new one.
    write_token(tmp_path, cluster.token("ns1", "rotating", lifetime=900))
    credentials.refresh(Request())
    assert credentials.token != first
    events = wid.call("GET", "/v1/auditEvents?limit=50")["events"]
    exchanges = [e for e in events if e["action"] == "token_exchange" and e["caller"].endswith("/sa/rotating")]
    assert len(exchanges) >= 2


def test_id_token_verifies_with_verify_token(wid, cluster, tmp_path):
    wid.bind(f"serviceAccount:{POOL}[ns1/idtok]", role="roles/iam.serviceAccountOpenIdTokenCreator")
    token_file = write_token(tmp_path, cluster.token("ns1", "idtok"))
    source, _ = google.auth.load_credentials_from_file(
        credential_file(tmp_path, wid, token_file, impersonate=False), scopes=[CLOUD_PLATFORM]
    )
    session = AuthorizedSession(source)
    response = session.post(
        f"{wid.base}/v1/projects/-/serviceAccounts/{EMAIL}:generateIdToken",
        json={"audience": "https://my-service.example.com", "includeEmail": True, "delegates": None},
    )
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    claims = id_token.verify_token(
        token, Request(), audience="https://my-service.example.com", certs_url=f"{wid.base}/oauth2/v1/certs"
    )
    assert claims["email"] == EMAIL
    assert claims["email_verified"] is True
    assert claims["iss"] == wid.base
    assert claims["exp"] - claims["iat"] == 3600
    with pytest.raises(ValueError):
        id_token.verify_token(token, Request(), audience="https://other.example.com", certs_url=f"{wid.base}/oauth2/v1/certs")


def test_unbound_ksa_gets_403(wid, cluster, tmp_path):
    token_file = write_token(tmp_path, cluster.token("ns1", "nobody-bound-me"))
    credentials, _ = google.auth.load_credentials_from_file(
        credential_file(tmp_path, wid, token_file), scopes=[CLOUD_PLATFORM]
    )
    with pytest.raises(google.auth.exceptions.RefreshError) as failure:
        credentials.refresh(Request())
    assert "iam.serviceAccounts.getAccessToken" in str(failure.value)


@pytest.mark.parametrize("kind", ["expired", "forged"])
def test_expired_or_forged_subject_gets_invalid_grant(wid, cluster, tmp_path, kind):
    if kind == "expired":
        token = cluster.token("ns1", "app", issued_at=1_600_000_000)
    else:
        from conftest import Cluster

        token = Cluster().token("ns1", "app")
    token_file = write_token(tmp_path, token)
    credentials, _ = google.auth.load_credentials_from_file(
        credential_file(tmp_path, wid, token_file), scopes=[CLOUD_PLATFORM]
    )
    with pytest.raises((google.auth.exceptions.OAuthError, google.auth.exceptions.RefreshError)) as failure:
        credentials.refresh(Request())
    assert "invalid_grant" in str(failure.value)


def test_external_account_types_are_what_clients_expect(wid, cluster, tmp_path):
    """The STS answer parses in google-auth's strict model: integer expires_in, all fields."""
    response = requests.post(
        f"{wid.base}/v1/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "audience": AUDIENCE,
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "subject_token": cluster.token("ns1", "app"),
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "scope": "https://www.googleapis.com/auth/iam",
        },
        timeout=10,
    )
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body["expires_in"], int)
    assert body["token_type"] == "Bearer"
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["scope"] == "https://www.googleapis.com/auth/iam"
    assert isinstance(external_account.Credentials, type)
