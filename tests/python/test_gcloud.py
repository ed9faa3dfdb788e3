"""Real gcloud (from the machine image) completing the federated flow against wid:
`gcloud auth login --cred-file=F` then `gcloud auth print-access-token`."""

import os
import shutil
import subprocess

import pytest
import requests

from conftest import EMAIL, POOL
from test_google_auth import credential_file, write_token


def gcloud_or_skip() -> str:
    path = shutil.which("gcloud")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("gcloud is not installed: the gcloud compatibility tests need the Google Cloud SDK on PATH")
        pytest.skip("gcloud is not installed")
    return path


def run_gcloud(gcloud: str, config_dir, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        {
            "CLOUDSDK_CONFIG": str(config_dir),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        }
    )
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    return subprocess.run([gcloud, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("impersonate", [True, False])
def test_gcloud_login_with_cred_file_then_print_access_token(wid, cluster, tmp_path, impersonate):
    gcloud = gcloud_or_skip()
    ksa = "gcloud-imp" if impersonate else "gcloud-direct"
    if impersonate:
        wid.bind(f"serviceAccount:{POOL}[ns1/{ksa}]")
    token_file = write_token(tmp_path, cluster.token("ns1", ksa))
    cred = credential_file(tmp_path, wid, token_file, impersonate=impersonate)
    config = tmp_path / "gcloud-config"
    login = run_gcloud(gcloud, config, "auth", "login", f"--cred-file={cred}")
    assert login.returncode == 0, login.stderr
    printed = run_gcloud(gcloud, config, "auth", "print-access-token")
    assert printed.returncode == 0, printed.stderr
    token = printed.stdout.strip()
    assert token
    if impersonate:
        info = requests.get(f"{wid.base}/tokeninfo", params={"access_token": token}, timeout=10).json()
        assert info["email"] == EMAIL
    else:
        body = requests.post(f"{wid.base}/v1/introspect", data={"token": token}, timeout=10).json()
        assert body["active"] is True
        assert body["username"].endswith(f"/sa/{ksa}")
