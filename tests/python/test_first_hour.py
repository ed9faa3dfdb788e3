"""A newcomer's quick start, with a shell and a gcloud that already hold state of their own: the
lines `wid dev` prints, evaluated in a real shell, are all gcloud, google-auth and `wid iam`
need, whatever the user's gcloud configuration held, and that configuration is left as it was."""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEV_ACCOUNT = "dev-runner@wid-dev.iam.gserviceaccount.com"
REAL_ACCOUNT = "real@real-proj.iam.gserviceaccount.com"


def gcloud_or_skip() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        if os.environ.get("CI"):
            pytest.fail("gcloud is not installed")
        pytest.skip("gcloud is not installed")
    return gcloud


def _key_file(path: Path) -> None:
    """A service-account key of the user's own real project (never used: no Google here)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "real-proj",
                "private_key_id": "k1",
                "private_key": pem.decode(),
                "client_email": REAL_ACCOUNT,
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )


def _digest(directory: Path) -> dict:
    """What every file of a gcloud configuration holds (logs aside: gcloud writes one per run)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and "logs" not in p.parts
    }


@pytest.fixture()
def user_shell(tmp_path):
    """The environment of a user whose gcloud has an account with credentials of its own and has
    cached "not on GCE", and whose shell names that account and a key file."""
    gcloud = gcloud_or_skip()
    config = tmp_path / "user-gcloud"
    key = tmp_path / "real-key.json"
    _key_file(key)
    env = dict(os.environ, CLOUDSDK_CONFIG=str(config), CLOUDSDK_CORE_DISABLE_PROMPTS="1")
    for name in ("GCE_METADATA_HOST", "GCE_METADATA_IP", "GCE_METADATA_ROOT", "WID_ENDPOINT", "WID_TOKEN_FILE"):
        env.pop(name, None)
    login = subprocess.run(
        [gcloud, "auth", "login", f"--cred-file={key}"], env=env, capture_output=True, text=True, timeout=120
    )
    assert login.returncode == 0, login.stderr
    # A project of its own too (as `gcloud config set project` writes it; that command asks Google).
    with (config / "configurations" / "config_default").open("a") as properties:
        properties.write("project = real-proj\n")
    # gcloud's own cache of "not on GCE", as any run on a laptop leaves it.
    (config / "gce").write_text("False")
    env["CLOUDSDK_CORE_ACCOUNT"] = REAL_ACCOUNT
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(key)
    return env, config


class Dev:
    """`wid dev` on free ports, started from the user's shell; `lines` is what it printed."""

    def __init__(self, wid_bin: str, data_dir: Path, env: dict, log: Path):
        self.process = subprocess.Popen(
            [wid_bin, "dev", "--metadata-addr", "127.0.0.1:0", "--iam-addr", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            env=env,
            text=True,
        )
        self.log = log
        printed = []
        deadline = time.monotonic() + 60
        while not any(line.startswith("export WID_ENDPOINT=") for line in printed):
            line = self.process.stdout.readline()
            if not line:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"wid dev did not start; log:\n{log.read_text()}")
                continue
            printed.append(line)
        self.lines = "".join(printed)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def in_shell(lines: str, command: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """`command` in bash, after the printed lines are evaluated there, as a user pastes them."""
    script = f'eval "$WID_DEV_LINES"\n{command}'
    return subprocess.run(
        ["bash", "-c", script],
        env=dict(env, WID_DEV_LINES=lines),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


GOOGLE_AUTH = """
import google.auth
from google.auth import compute_engine
from google.auth.transport.requests import Request
credentials, project = google.auth.default()
assert isinstance(credentials, compute_engine.Credentials), type(credentials)
credentials.refresh(Request())
print(credentials.service_account_email, project)
"""


def test_the_printed_lines_beat_the_users_gcloud_state(wid_bin, user_shell, tmp_path):
    env, user_config = user_shell
    before = _digest(user_config)
    data_dir = tmp_path / "wid data"  # a space: the printed paths are quoted for the shell
    dev = Dev(wid_bin, data_dir, env, tmp_path / "dev.log")
    try:
        assert "unset GOOGLE_APPLICATION_CREDENTIALS CLOUDSDK_CORE_ACCOUNT\n" in dev.lines, dev.lines
        elsewhere = tmp_path / "another-directory"
        elsewhere.mkdir()

        token = in_shell(dev.lines, "gcloud auth print-access-token", env, elsewhere)
        assert token.returncode == 0, token.stderr
        endpoint = in_shell(dev.lines, 'printf %s "$WID_ENDPOINT"', env, elsewhere).stdout
        info = requests.get(endpoint + "/tokeninfo", params={"access_token": token.stdout.strip()}, timeout=10).json()
        assert info["email"] == DEV_ACCOUNT, info

        identity = in_shell(dev.lines, "gcloud auth print-identity-token --audiences=https://svc.example.com", env, elsewhere)
        assert identity.returncode == 0, identity.stderr
        claims = _claims(identity.stdout.strip())
        assert claims["email"] == DEV_ACCOUNT and claims["aud"] == "https://svc.example.com", claims

        adc = in_shell(dev.lines, f"{sys.executable} -c '{GOOGLE_AUTH}'", env, elsewhere)
        assert adc.returncode == 0 and adc.stdout.split() == [DEV_ACCOUNT, "wid-dev"], adc.stderr

        # `wid iam` from another directory: the token file's path is absolute.
        listed = in_shell(dev.lines, f"'{wid_bin}' iam service-accounts list --project wid-dev --format json", env, elsewhere)
        assert listed.returncode == 0, listed.stderr
        assert [a["email"] for a in json.loads(listed.stdout)] == [DEV_ACCOUNT]
    finally:
        dev.stop()

    # gcloud run while wid dev is down caches "not on GCE" in wid dev's configuration; the next
    # start clears it, so the lines it prints work at once.
    down = in_shell(dev.lines, "gcloud auth print-access-token", env, tmp_path)
    assert down.returncode != 0
    assert (data_dir / "gcloud" / "gce").read_text() == "False"
    again = Dev(wid_bin, data_dir, env, tmp_path / "dev-again.log")
    try:
        token = in_shell(again.lines, "gcloud auth print-access-token", env, tmp_path)
        assert token.returncode == 0 and token.stdout.strip(), token.stderr
    finally:
        again.stop()

    # The user's own configuration is as it was: account, project, credentials, "not on GCE".
    assert _digest(user_config) == before
    assert (user_config / "gce").read_text() == "False"
    own = {k: v for k, v in env.items() if k != "CLOUDSDK_CORE_ACCOUNT"}
    account = subprocess.run(
        [shutil.which("gcloud"), "config", "get", "account"], env=own, capture_output=True, text=True, timeout=120
    )
    assert account.stdout.strip() == REAL_ACCOUNT


def test_removing_a_binding_as_the_readme_says(wid_bin, tmp_path):
    """New tokens are refused at once; a token already issued is served from the agent's cache
    until it expires, as GKE's is; a restart of `wid dev` drops that cache, and keeps the removal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WID_", "GCE_METADATA"))}
    data_dir = tmp_path / "data"
    dev = Dev(wid_bin, data_dir, env, tmp_path / "dev.log")
    h = {"Metadata-Flavor": "Google"}
    try:
        host = in_shell(dev.lines, 'printf %s "$GCE_METADATA_HOST"', env, tmp_path).stdout
        token_url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
        cached = requests.get(token_url, headers=h, timeout=10).json()["access_token"]
        member = "serviceAccount:wid-dev.svc.id.goog[default/default]"
        removed = in_shell(
            dev.lines,
            f"'{wid_bin}' iam service-accounts remove-iam-policy-binding {DEV_ACCOUNT} "
            f"--role roles/iam.workloadIdentityUser --member '{member}'",
            env,
            tmp_path,
        )
        assert removed.returncode == 0, removed.stderr
        # A token not issued yet (other scopes): refused at once, in GKE's words.
        refused = requests.get(token_url, params={"scopes": "https://www.googleapis.com/auth/userinfo.email"}, headers=h, timeout=10)
        assert refused.status_code == 403 and "IAM returned 403 Forbidden" in refused.text, refused.text
        # The token already issued: still served, until it expires.
        again = requests.get(token_url, headers=h, timeout=10)
        assert again.status_code == 200 and again.json()["access_token"] == cached
    finally:
        dev.stop()
    restarted = Dev(wid_bin, data_dir, env, tmp_path / "dev-again.log")
    try:
        host = in_shell(restarted.lines, 'printf %s "$GCE_METADATA_HOST"', env, tmp_path).stdout
        token_url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
        # The removal holds across the restart, and the banner says so; the cache went with the
        # old process, so the token issued before is served no more.
        assert "no longer bound" in restarted.lines, restarted.lines
        gone = requests.get(token_url, headers=h, timeout=10)
        assert gone.status_code == 403 and "IAM returned 403 Forbidden" in gone.text, gone.text
    finally:
        restarted.stop()
