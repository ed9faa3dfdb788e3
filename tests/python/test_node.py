"""Node's google-auth-library (from npm, installed by scripts/test.sh into tests/node) against
wid: the external_account flow with impersonation."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import EMAIL, POOL, PROJECT
from test_google_auth import credential_file, write_token

NODE_DIR = Path(__file__).resolve().parent.parent / "node"


def node_or_skip() -> str:
    node = shutil.which("node")
    installed = (NODE_DIR / "node_modules" / "google-auth-library").is_dir()
    if node is None or not installed:
        if os.environ.get("CI"):
            pytest.fail("node and tests/node/node_modules are needed (scripts/test.sh runs npm install)")
        pytest.skip("node or google-auth-library is not installed")
    return node


def test_node_google_auth_library_external_account(wid, cluster, tmp_path):
    node = node_or_skip()
    wid.bind(f"serviceAccount:{POOL}[ns1/node-app]")
    token_file = write_token(tmp_path, cluster.token("ns1", "node-app"))
    cred = credential_file(tmp_path, wid, token_file)
    env = dict(os.environ, GOOGLE_CLOUD_PROJECT=PROJECT)
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    run = subprocess.run(
        [node, str(NODE_DIR / "external_account.js"), cred], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    token = json.loads(run.stdout)["token"]
    info = requests.get(f"{wid.base}/tokeninfo", params={"access_token": token}, timeout=10).json()
    assert info["email"] == EMAIL
