"""The container images `scripts/build-images.sh` builds, run with podman (`--runtime runc`):
`wid dev` inside the wid image serves a token to Google's client outside it; the image is what
it claims (non-root, no shell, labelled with the version and commit `wid --version` prints); the
iptables image installs the metadata redirection in a network namespace the test makes.

Needs root, podman and runc, and the images (scripts/test.sh installs the tools and builds the
images first)."""

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
VERSION = re.search(r'^version = "(.*)"$', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
WID_IMAGE = f"localhost/wid:{VERSION}"
IPTABLES_IMAGE = f"localhost/wid-iptables:{VERSION}"


def podman_run(*args: str) -> list[str]:
    """`podman run` as it works on this machine: runc (crun fails here), and limits no higher
    than the test's own (a container may not raise them)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["podman", "--runtime", "runc", "run", "--rm", "--ulimit", f"nofile={nofile}:{nofile}",
            "--ulimit", "nproc=4096:4096", *args]


@pytest.fixture(scope="module", autouse=True)
def images():
    problem = None
    if shutil.which("podman") is None or shutil.which("runc") is None:
        problem = "podman and runc are missing (Debian's podman, runc)"
    elif os.geteuid() != 0:
        problem = "needs root for podman's storage and network namespaces"
    else:
        missing = [i for i in (WID_IMAGE, IPTABLES_IMAGE)
                   if subprocess.run(["podman", "image", "exists", i]).returncode != 0]
        if missing:
            problem = f"{', '.join(missing)} not built: run scripts/build-images.sh"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)


def test_wid_dev_in_the_image_serves_a_token_to_googles_client_outside(tmp_path):
    name = f"wid-dev-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "wid-dev.log"
    process = subprocess.Popen(
        podman_run("--name", name, "--network", "host", WID_IMAGE, "dev",
                   "--iam-addr", "127.0.0.1:0", "--metadata-addr", "127.0.0.1:0"),
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    try:
        exports = {}
        deadline = time.monotonic() + 60
        while "GCE_METADATA_HOST" not in exports:
            line = process.stdout.readline()
            if not line or time.monotonic() > deadline:
                pytest.fail(f"wid dev in the image printed no exports; log:\n{log.read_text()}")
            if line.startswith("export GCE_METADATA_HOST="):
                exports = dict(pair.split("=", 1) for pair in line.split()[1:])
        host = exports["GCE_METADATA_HOST"]
        answer = requests.get(f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token",
                              headers={"Metadata-Flavor": "Google"}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["access_token"]
        # Google's own client, in a process of its own outside the container.
        script = ("import google.auth; from google.auth.transport.requests import Request; "
                  "c, p = google.auth.default(); c.refresh(Request()); print(c.service_account_email, p)")
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GCE_METADATA_HOST": host,
               "GCE_METADATA_IP": host, "GOOGLE_CLOUD_PROJECT": "wid-dev"}
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == ["dev-runner@wid-dev.iam.gserviceaccount.com", "wid-dev"]
    finally:
        subprocess.run(["podman", "stop", "-t", "5", name], capture_output=True, timeout=60)
        process.wait(timeout=30)


def test_the_wid_image_is_small_non_root_without_a_shell_and_labelled(capsys):
    inspect = json.loads(subprocess.run(["podman", "image", "inspect", WID_IMAGE], check=True,
                                        capture_output=True, text=True).stdout)[0]
    config = inspect["Config"]
    assert config["User"] == "65532:65532"
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == commit
    version = subprocess.run(podman_run(WID_IMAGE, "--version"), capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"wid {VERSION} (commit {commit})", version.stderr
    shell = subprocess.run(podman_run("--entrypoint", "/bin/sh", WID_IMAGE, "-c", "true"),
                           capture_output=True, text=True, timeout=60)
    assert shell.returncode != 0, "the image has a shell"
    size = inspect["Size"]
    archive = ROOT / "target" / "images" / f"wid-{VERSION}.tar"
    assert archive.is_file()
    with capsys.disabled():
        print(f"\n    {WID_IMAGE}: {size / 1e6:.1f} MB, archive {archive.stat().st_size / 1e6:.1f} MB", end="")


def test_the_iptables_image_installs_the_metadata_redirection():
    ns = f"wid-img-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        rule = ["-t", "nat", "-A", "PREROUTING", "-d", "169.254.169.254/32", "-p", "tcp", "--dport", "80",
                "-j", "DNAT", "--to-destination", "10.0.0.1:8988"]
        run = subprocess.run(podman_run("--network", f"ns:/run/netns/{ns}", "--cap-add", "NET_ADMIN",
                                        "--cap-add", "NET_RAW", IPTABLES_IMAGE, *rule),
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        listed = subprocess.run(["ip", "netns", "exec", ns, "iptables", "-t", "nat", "-S", "PREROUTING"],
                                capture_output=True, text=True, check=True).stdout
        assert "-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:8988" in listed, listed
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_the_daemonsets_redirection_script_installs_once_and_removes_its_rule():
    """deploy/kubernetes/agent/base/redirect.sh in the iptables image, as the DaemonSet runs it."""
    script = ROOT / "deploy" / "kubernetes" / "agent" / "base" / "redirect.sh"
    ns = f"wid-img-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)

    def redirect(mode: str) -> None:
        run = subprocess.run(podman_run("--network", f"ns:/run/netns/{ns}", "--cap-add", "NET_ADMIN",
                                        "--cap-add", "NET_RAW", "--env", "NODE_IPS=10.0.0.7,fd00::7",
                                        "--volume", f"{script}:/redirection/redirect.sh:ro",
                                        "--entrypoint", "/redirection/redirect.sh", IPTABLES_IMAGE, mode),
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr

    def rules() -> list[str]:
        found = []
        for program, address in (("iptables", "169.254.169.254"), ("ip6tables", "fd20:ce::254")):
            listed = subprocess.run(["ip", "netns", "exec", ns, program, "-t", "nat", "-S", "PREROUTING"],
                                    capture_output=True, text=True, check=True).stdout
            found += [line for line in listed.splitlines() if address in line]
        return found

    try:
        redirect("install")
        redirect("install")
        assert rules() == ["-A PREROUTING -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT "
                           "--to-destination 10.0.0.7:8988",
                           "-A PREROUTING -d fd20:ce::254/128 -p tcp -m tcp --dport 80 -j DNAT "
                           "--to-destination [fd00::7]:8988"], "installed once for each family"
        redirect("remove")
        assert rules() == []
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
