"""Fixtures for the client-compatibility tests: a real `wid iam serve` on loopback, a project,
a Kubernetes cluster (its token signer is a local RSA key) and helpers to mint the cluster's
service-account tokens, as the TokenRequest API would.

WID_BIN names the wid binary (scripts/test.sh builds it)."""

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

PROJECT = "py-proj"
PROJECT_NUMBER = "123412341234"
POOL = f"{PROJECT}.svc.id.goog"
ISSUER = "https://k8s.python-tests.example.com"
EMAIL = f"app-runner@{PROJECT}.iam.gserviceaccount.com"


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _listening_addr(process: subprocess.Popen, log: Path) -> str:
    """The address `wid iam serve` (told to listen on port 0) logged it listens on."""
    deadline = time.monotonic() + 30
    while True:
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("message") == "token service listening":
                return record["addr"]
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"wid iam serve did not start; log:\n{log.read_text()}")
        time.sleep(0.05)


class Wid:
    """A running token service and an admin session on it."""

    def __init__(self, base: str, data_dir: Path, process: subprocess.Popen, log: Path):
        self.base = base
        self.data_dir = data_dir
        self.process = process
        self.log = log
        self.token = (data_dir / "admin-token").read_text().strip()
        self.admin = requests.Session()
        self.admin.headers["Authorization"] = f"Bearer {self.token}"

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.admin.request(method, self.base + path, timeout=30, **kwargs)
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def bind(self, member: str, role: str = "roles/iam.workloadIdentityUser", account: str = EMAIL) -> None:
        path = f"/v1/projects/-/serviceAccounts/{account}"
        policy = self.call("POST", f"{path}:getIamPolicy")
        policy.setdefault("bindings", []).append({"role": role, "members": [member]})
        self.call("POST", f"{path}:setIamPolicy", json={"policy": policy})


class Cluster:
    """A cluster's service-account token signer."""

    def __init__(self):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.kid = "cluster-key-1"
        self.signer = crypt.RSASigner.from_string(pem, key_id=self.kid)
        numbers = key.public_key().public_numbers()
        self.jwks = json.dumps(
            {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": _b64(numbers.n), "e": _b64(numbers.e)}]}
        )

    def token(self, namespace: str, ksa: str, audience=None, lifetime: int = 600, issued_at=None) -> str:
        now = int(time.time()) if issued_at is None else issued_at
        payload = {
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{ksa}",
            "aud": [POOL] if audience is None else audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": ksa, "uid": "0000-1111"}},
        }
        return jwt.encode(self.signer, payload).decode()


@pytest.fixture(scope="session")
def wid_bin() -> str:
    path = os.environ.get("WID_BIN")
    if not path or not Path(path).is_file():
        pytest.fail("WID_BIN must name the built wid binary (scripts/test.sh sets it)")
    return path


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return Cluster()


@pytest.fixture(scope="module")
def wid(wid_bin, tmp_path_factory, cluster):
    tmp = tmp_path_factory.mktemp("wid")
    data_dir = tmp / "data"
    log = tmp / "wid.log"
    process = subprocess.Popen(
        [wid_bin, "iam", "serve", "--addr", "127.0.0.1:0", "--data-dir", str(data_dir), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    base = "http://" + _listening_addr(process, log)
    server = Wid(base, data_dir, process, log)
    server.call("POST", "/v1/projects", json={"projectId": PROJECT, "projectNumber": PROJECT_NUMBER})
    server.call("POST", f"/v1/projects/{PROJECT}/serviceAccounts", json={"accountId": "app-runner"})
    server.call(
        "POST",
        f"/v1/projects/{PROJECT}/locations/us-east1/clusters",
        json={"clusterName": "prod", "issuerUri": ISSUER, "jwksJson": cluster.jwks},
    )
    yield server
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    text = log.read_text()
    assert server.token not in text, "the admin token reached the log"
