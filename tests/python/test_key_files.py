"""Service-account keys with unmodified google-auth: a key file wid made, used as Google's, its
JWT-bearer grants at wid's `/token` (the file's `token_uri`) answered with access tokens that
tokeninfo accepts and ID tokens that verify against wid's published keys; a disabled key stops
at once, its access tokens included."""

import base64
import json
import shutil
import subprocess

import pytest
import requests
from google.auth.transport.requests import Request
from google.oauth2 import id_token, service_account

from conftest import EMAIL, PROJECT

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


@pytest.fixture(scope="module")
def key_file(wid, tmp_path_factory):
    """The key file of a new key of EMAIL's, in a project that allows keys for a day."""
    wid.call("PATCH", f"/v1/projects/{PROJECT}", json={"allowServiceAccountKeys": True, "keyMaxLifetime": "86400s"})
    key = wid.call("POST", f"/v1/projects/-/serviceAccounts/{EMAIL}/keys", json={})
    path = tmp_path_factory.mktemp("keys") / "key.json"
    path.write_bytes(base64.b64decode(key["privateKeyData"]))
    path.chmod(0o600)
    return path


def tokeninfo(wid, token: str) -> requests.Response:
    return requests.get(f"{wid.base}/tokeninfo", params={"access_token": token}, timeout=10)


def test_service_account_credentials_get_an_access_token(wid, key_file):
    credentials = service_account.Credentials.from_service_account_file(str(key_file), scopes=[CLOUD_PLATFORM])
    assert credentials._token_uri == f"{wid.base}/token"
    credentials.refresh(Request())
    info = tokeninfo(wid, credentials.token)
    assert info.status_code == 200, info.text
    assert info.json()["email"] == EMAIL
    assert CLOUD_PLATFORM in info.json()["scope"]
    trail = wid.call("GET", "/v1/auditEvents?limit=50")["events"]
    grants = [e for e in trail if e["action"] == "key_grant"]
    key_id = json.loads(key_file.read_text())["private_key_id"]
    assert grants and grants[0]["provider"].endswith(f"/keys/{key_id}"), grants
    listed = wid.call("GET", f"/v1/projects/-/serviceAccounts/{EMAIL}/keys")["keys"]
    assert listed[0]["lastUseTime"], "the key's last use is kept for clean-up"


def test_id_token_credentials_get_a_token_that_verifies(wid, key_file):
    credentials = service_account.IDTokenCredentials.from_service_account_file(
        str(key_file), target_audience="https://svc.example.com"
    )
    credentials.refresh(Request())
    claims = id_token.verify_token(
        credentials.token, Request(), audience="https://svc.example.com", certs_url=f"{wid.base}/oauth2/v1/certs"
    )
    assert claims["email"] == EMAIL and claims["iss"] == wid.base


def test_a_disabled_key_stops_at_once_with_its_tokens(wid, key_file):
    credentials = service_account.Credentials.from_service_account_file(str(key_file), scopes=[CLOUD_PLATFORM])
    credentials.refresh(Request())
    key_id = json.loads(key_file.read_text())["private_key_id"]
    key_path = f"/v1/projects/-/serviceAccounts/{EMAIL}/keys/{key_id}"
    wid.call("POST", f"{key_path}:disable", json={})
    try:
        assert tokeninfo(wid, credentials.token).status_code == 400, "an issued token dies with its key"
        again = service_account.Credentials.from_service_account_file(str(key_file), scopes=[CLOUD_PLATFORM])
        with pytest.raises(Exception) as refused:
            again.refresh(Request())
        assert "invalid_grant" in str(refused.value) and "Invalid JWT Signature." in str(refused.value)
    finally:
        wid.call("POST", f"{key_path}:enable", json={})
    credentials.refresh(Request())
    assert tokeninfo(wid, credentials.token).status_code == 200


def test_gcloud_activates_the_key_file_and_prints_a_token(wid, key_file, tmp_path):
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        import os
        if os.environ.get("CI"):
            pytest.fail("gcloud is not installed")
        pytest.skip("gcloud is not installed")
    env = {"PATH": __import__("os").environ["PATH"], "HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    activate = subprocess.run([gcloud, "auth", "activate-service-account", f"--key-file={key_file}"],
                              env=env, capture_output=True, text=True, timeout=120)
    assert activate.returncode == 0, activate.stderr
    printed = subprocess.run([gcloud, "auth", "print-access-token"], env=env, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    info = tokeninfo(wid, printed.stdout.strip())
    assert info.status_code == 200 and info.json()["email"] == EMAIL, info.text


def test_a_self_signed_jwt_is_taken_in_place_of_an_access_token(wid, key_file):
    """google-auth's `always_use_jwt_access`: the client signs its own JWT (a `scope` claim, no
    audience) and never calls the token endpoint; wid's API takes it as the account."""
    policy = wid.call("POST", f"/v1/projects/{PROJECT}:getIamPolicy")
    policy.setdefault("bindings", []).append({"role": "roles/viewer", "members": [f"serviceAccount:{EMAIL}"]})
    wid.call("POST", f"/v1/projects/{PROJECT}:setIamPolicy", json={"policy": policy})
    grants = lambda: [e for e in wid.call("GET", "/v1/auditEvents?limit=200")["events"] if e["action"] == "key_grant"]
    before = len(grants())
    credentials = service_account.Credentials.from_service_account_file(
        str(key_file), scopes=[CLOUD_PLATFORM], always_use_jwt_access=True
    )
    from google.auth.transport.requests import AuthorizedSession
    session = AuthorizedSession(credentials)
    listed = session.get(f"{wid.base}/v1/projects/{PROJECT}/serviceAccounts", timeout=10)
    assert listed.status_code == 200, listed.text
    assert EMAIL in [a["email"] for a in listed.json()["accounts"]]
    assert len(grants()) == before, "no grant at the token endpoint: the JWT was the client's own"
    # Signed by another key than the account's: refused.
    forged = service_account.Credentials.from_service_account_info(
        {**json.loads(key_file.read_text()), "private_key": _another_private_key()},
        scopes=[CLOUD_PLATFORM], always_use_jwt_access=True,
    )
    refused = AuthorizedSession(forged).get(f"{wid.base}/v1/projects/{PROJECT}/serviceAccounts", timeout=10)
    assert refused.status_code == 401, refused.text


def _another_private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()
