"""Real, unmodified clients against `wid dev`: google-auth's compute-engine credentials and ID
tokens, and gcloud, with only the environment lines `wid dev` prints."""

import os
import shutil
import subprocess
import sys
import time

import pytest
import requests


@pytest.fixture(scope="module")
def dev(wid_bin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dev")
    log = tmp / "dev.log"
    process = subprocess.Popen(
        [wid_bin, "dev", "--metadata-addr", "127.0.0.1:0", "--iam-addr", "127.0.0.1:0", "--data-dir", str(tmp / "data")],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    env = {}
    deadline = time.monotonic() + 60
    while "GCE_METADATA_HOST" not in env:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"wid dev did not start; log:\n{log.read_text()}")
            continue
        if line.startswith("export GCE_METADATA_HOST"):
            for pair in line.split()[1:]:
                key, value = pair.split("=", 1)
                env[key] = value
    yield env
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture()
def dev_env(dev, monkeypatch):
    for key, value in dev.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return dev


def test_printed_lines(dev):
    assert set(dev) == {"GCE_METADATA_HOST", "GCE_METADATA_IP", "GCE_METADATA_ROOT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"}
    assert dev["GOOGLE_CLOUD_PROJECT"] == "wid-dev"
    # gcloud's configuration of wid dev's own, in its data directory, named absolutely.
    assert os.path.isabs(dev["CLOUDSDK_CONFIG"]) and dev["CLOUDSDK_CONFIG"].endswith("/data/gcloud")


CLIENT = """
import google.auth, google.auth.jwt
from google.auth import compute_engine
from google.auth.transport.requests import Request
from google.oauth2 import id_token

credentials, project = google.auth.default()
assert isinstance(credentials, compute_engine.Credentials), type(credentials)
assert project == "wid-dev", project
credentials.refresh(Request())
assert credentials.token and credentials.service_account_email == "dev-runner@wid-dev.iam.gserviceaccount.com"

id_credentials = compute_engine.IDTokenCredentials(Request(), "https://svc.example.com", use_metadata_identity_endpoint=True)
id_credentials.refresh(Request())
assert id_credentials.token.count(".") == 2

token = id_token.fetch_id_token(Request(), "https://svc.example.com")
certs = google.auth.jwt.decode(token, verify=False)["iss"].rstrip("/") + "/oauth2/v1/certs"
claims = id_token.verify_token(token, Request(), audience="https://svc.example.com", certs_url=certs)
assert claims["email"] == "dev-runner@wid-dev.iam.gserviceaccount.com" and claims["email_verified"] is True
print("ok")
"""


def test_google_auth_default_and_id_tokens(dev_env):
    # google-auth reads GCE_METADATA_HOST when it is imported: run it as an application would,
    # in a process started with the printed environment.
    env = dict(os.environ, **dev_env)
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    run = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_metadata_conformance_basics(dev_env):
    base = "http://" + dev_env["GCE_METADATA_HOST"]
    root = requests.get(base + "/", timeout=10)
    assert root.status_code == 200 and root.headers["Metadata-Flavor"] == "Google" and root.text == "computeMetadata/\n"
    refused = requests.get(base + "/computeMetadata/v1/project/project-id", timeout=10)
    assert refused.status_code == 403 and refused.headers["Metadata-Flavor"] == "Google"
    h = {"Metadata-Flavor": "Google"}
    number = requests.get(base + "/computeMetadata/v1/project/numeric-project-id", headers=h, timeout=10)
    assert number.text.isdigit()
    token = requests.get(base + "/computeMetadata/v1/instance/service-accounts/default/token", headers=h, timeout=10)
    assert token.headers["Content-Type"] == "application/json"
    body = token.json()
    assert body["token_type"] == "Bearer" and isinstance(body["expires_in"], int) and body["expires_in"] > 300
    again = requests.get(base + "/computeMetadata/v1/instance/service-accounts/default/token", headers=h, timeout=10).json()
    assert again["access_token"] == body["access_token"], "the cached token is served"
    missing = requests.get(base + "/computeMetadata/v1/instance/service-accounts/default/identity", headers=h, timeout=10)
    assert missing.status_code == 400 and missing.text == "non-empty audience parameter required\n"
    redirect = requests.get(base + "/computeMetadata/v1/instance?recursive=true", headers=h, timeout=10, allow_redirects=False)
    assert redirect.status_code == 301 and redirect.headers["Location"].endswith("/computeMetadata/v1/instance/?recursive=true")
    kube_env = requests.get(base + "/computeMetadata/v1/instance/attributes/kube-env", headers=h, timeout=10)
    assert kube_env.status_code == 404


def test_gcloud_against_dev(dev_env, tmp_path):
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        if os.environ.get("CI"):
            pytest.fail("gcloud is not installed")
        pytest.skip("gcloud is not installed")
    env = dict(os.environ, CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), CLOUDSDK_CORE_DISABLE_PROMPTS="1")
    run = lambda *args: subprocess.run([gcloud, *args], env=env, capture_output=True, text=True, timeout=120)
    token = run("auth", "print-access-token")
    assert token.returncode == 0 and token.stdout.strip(), token.stderr
    identity = run("auth", "print-identity-token", "--audiences=https://svc.example.com")
    assert identity.returncode == 0 and identity.stdout.strip().count(".") == 2, identity.stderr
    config = run("config", "list")
    assert "dev-runner@wid-dev.iam.gserviceaccount.com" in config.stdout and "wid-dev" in config.stdout, config.stdout


def test_node_clients_against_dev(dev_env):
    from test_node import NODE_DIR, node_or_skip

    node = node_or_skip()
    env = dict(os.environ, **dev_env)
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    run = subprocess.run([node, str(NODE_DIR / "metadata.js")], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = __import__("json").loads(run.stdout)
    assert out["available"] is True
    assert out["project"] == "wid-dev"
    assert out["token"] and out["idToken"].count(".") == 2
    assert out["email"] == "dev-runner@wid-dev.iam.gserviceaccount.com"


def test_rust_google_cloud_auth_against_dev(dev_env, tmp_path):
    # Google's Rust library (google-cloud-auth, tests/rust-clients), built by the test script.
    client = os.environ.get("WID_RUST_CLIENT")
    if not client:
        if os.environ.get("CI"):
            pytest.fail("WID_RUST_CLIENT is not set: scripts/test.sh builds tests/rust-clients")
        pytest.skip("WID_RUST_CLIENT is not set")
    # No gcloud ADC file in HOME, no key file: ADC must fall back to the metadata server.
    env = dict(os.environ, **dev_env, HOME=str(tmp_path))
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    env.pop("CLOUDSDK_CONFIG", None)
    run = subprocess.run([client, "https://svc.example.com"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = dict(line.split("=", 1) for line in run.stdout.splitlines())

    import google.auth.jwt
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    for name in ("id_token", "id_token_full"):
        token = out[name]
        issuer = google.auth.jwt.decode(token, verify=False)["iss"].rstrip("/")
        claims = id_token.verify_token(token, Request(), audience="https://svc.example.com", certs_url=issuer + "/oauth2/v1/certs")
        assert claims["email"] == "dev-runner@wid-dev.iam.gserviceaccount.com", claims
    info = requests.get(issuer + "/tokeninfo", params={"access_token": out["adc_access_token"]}, timeout=10).json()
    assert info["email"] == "dev-runner@wid-dev.iam.gserviceaccount.com", info
    scoped = requests.get(issuer + "/tokeninfo", params={"access_token": out["mds_scoped_access_token"]}, timeout=10).json()
    assert scoped["scope"] == "https://www.googleapis.com/auth/cloud-platform.read-only", scoped
