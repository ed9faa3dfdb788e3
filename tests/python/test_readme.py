"""The README names the versions of the clients wid is tested with: they must be the versions
these tests run."""

import json
import re
import subprocess
from pathlib import Path

import google.auth

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def claimed(pattern: str) -> set:
    found = set(re.findall(pattern, README))
    assert found, f"the README names no version for {pattern!r}"
    return found


def test_google_auth_is_the_version_installed():
    assert claimed(r"google-auth (\d+\.\d+\.\d+)") == {google.auth.__version__}


def test_node_google_auth_library_is_the_version_installed():
    installed = json.loads((ROOT / "tests/node/node_modules/google-auth-library/package.json").read_text())
    assert claimed(r"google-auth-library (\d+\.\d+\.\d+)") == {installed["version"]}


def test_rust_google_cloud_auth_is_the_version_locked():
    lock = (ROOT / "tests/rust-clients/Cargo.lock").read_text()
    locked = re.search(r'name = "google-cloud-auth"\nversion = "([^"]+)"', lock).group(1)
    assert claimed(r"google-cloud-auth (\d+\.\d+\.\d+)") == {locked}


def test_gcloud_is_the_version_on_the_machine():
    from test_first_hour import gcloud_or_skip

    gcloud = gcloud_or_skip()
    first = subprocess.run([gcloud, "version"], capture_output=True, text=True, timeout=120).stdout.splitlines()[0]
    major = re.search(r"Google Cloud SDK (\d+)\.", first).group(1)
    assert claimed(r"gcloud (\d+)\b") == {major}


def test_the_rust_version_is_the_workspaces():
    cargo = (ROOT / "Cargo.toml").read_text()
    required = re.search(r'rust-version = "([^"]+)"', cargo).group(1)
    assert claimed(r"Rust (\d+\.\d+) or newer") == {required}
