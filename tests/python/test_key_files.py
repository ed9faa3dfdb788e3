"""Service-account keys with unmodified google-auth: a key file wid made, used as Google's, its
JWT-bearer grants at wid's `/token` (the file's `token_uri`) answered with access tokens that
tokeninfo accepts and ID tokens that verify against wid's published keys; a disabled key stops
at once, its access tokens included."""

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

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
    trail = wid.call("GET", "/v1/auditEvents?limit=50")["events"]
    key_id = json.loads(key_file.read_text())["private_key_id"]
    assert any(e["action"] == "key_self_signed" and e["provider"].endswith(f"/keys/{key_id}") for e in trail), \
        "every use of a key is in the trail"
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


def test_node_google_auth_library_reaches_wid_as_oauth2_googleapis_com(wid_bin, tmp_path):
    """Node's google-auth-library ignores the key file's token_uri and posts to
    https://oauth2.googleapis.com/token, with no `kid`: in a network namespace whose hosts file
    sends that name to wid, over TLS with a CA given to Node (NODE_EXTRA_CA_CERTS), it gets an
    access token and an ID token, unmodified."""
    from conftest import _listening_addr
    from test_netns import make_certificates, sh, tools_or_skip
    from test_node import NODE_DIR, node_or_skip

    node = node_or_skip()
    tools_or_skip()
    tag = f"wk{os.getpid() % 10000}"
    ns, outside, inside = f"{tag}-node", f"{tag}o", f"{tag}i"
    address = "10.97.0.1"
    sh("ip", "netns", "add", ns)
    process = None
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        sh("ip", "link", "set", inside, "netns", ns)
        sh("ip", "addr", "add", f"{address}/24", "dev", outside)
        sh("ip", "link", "set", outside, "up")
        sh("ip", "-n", ns, "addr", "add", "10.97.0.2/24", "dev", inside)
        sh("ip", "-n", ns, "link", "set", inside, "up")
        ca, cert, key = make_certificates(tmp_path, ip=address, name="oauth2", dns=("oauth2.googleapis.com",))
        log = tmp_path / "wid.log"
        process = subprocess.Popen(
            [wid_bin, "iam", "serve", "--addr", f"{address}:443", "--data-dir", str(tmp_path / "data"),
             "--tls-cert", str(cert), "--tls-key", str(key), "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=log.open("w"))
        base = "https://" + _listening_addr(process, log)
        bearer = {"Authorization": "Bearer " + (tmp_path / "data" / "admin-token").read_text().strip()}

        def call(method: str, path: str, **kwargs) -> requests.Response:
            # The CA per request: an environment's REQUESTS_CA_BUNDLE would win over a session's.
            return requests.request(method, base + path, headers=bearer, verify=str(ca), timeout=30, **kwargs)

        for method, path, body in (
            ("POST", "/v1/projects", {"projectId": PROJECT, "projectNumber": "565656565656"}),
            ("POST", f"/v1/projects/{PROJECT}/serviceAccounts", {"accountId": "app-runner"}),
            ("PATCH", f"/v1/projects/{PROJECT}", {"allowServiceAccountKeys": True, "keyMaxLifetime": "3600s"}),
        ):
            assert call(method, path, json=body).ok, path
        created = call("POST", f"/v1/projects/-/serviceAccounts/{EMAIL}/keys", json={}).json()
        key_file = tmp_path / "key.json"
        key_file.write_bytes(base64.b64decode(created["privateKeyData"]))
        etc = Path(f"/etc/netns/{ns}")
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{address} oauth2.googleapis.com\n")
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "NODE_EXTRA_CA_CERTS": str(ca)}
        run = subprocess.run(["ip", "netns", "exec", ns, node, str(NODE_DIR / "key_file.js"), str(key_file),
                              "https://svc.example.com"], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"{run.stderr}\n{log.read_text()[-2000:]}"
        answer = json.loads(run.stdout)
        info = call("GET", "/tokeninfo", params={"access_token": answer["token"]})
        assert info.ok and info.json()["email"] == EMAIL, info.text
        claims = json.loads(base64.urlsafe_b64decode(answer["idToken"].split(".")[1] + "=="))
        assert (claims["aud"], claims["email"]) == ("https://svc.example.com", EMAIL), claims
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=20)
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", outside, check=False)
        shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def test_a_third_party_verifies_a_keys_signature_with_the_published_certificates(wid, key_file):
    """As Google documents: the account's x509 document maps the key's id to its certificate,
    and google-auth's own JWT decoding checks a signature made with the key file against it."""
    from google.auth import crypt, jwt
    signer = crypt.RSASigner.from_service_account_file(str(key_file))
    now = int(__import__("time").time())
    token = jwt.encode(signer, {"iss": EMAIL, "aud": "https://verifier.example.com", "iat": now, "exp": now + 300}).decode()
    certs = requests.get(f"{wid.base}/service_accounts/v1/metadata/x509/{EMAIL}", timeout=10).json()
    assert signer.key_id in certs
    claims = jwt.decode(token, certs=certs, verify=True, audience="https://verifier.example.com")
    assert claims["iss"] == EMAIL
    with pytest.raises(ValueError):
        other = {k: v for k, v in certs.items() if k != signer.key_id}
        jwt.decode(token, certs=other, verify=True, audience="https://verifier.example.com")
