"""Multi-node end-to-end: each node is a network namespace running `wid metadata serve` behind an
iptables DNAT of 169.254.169.254:80, as GKE does; each pod is a namespace hanging off its node by
a veth, with `metadata.google.internal` mapped to 169.254.169.254 in its own hosts file. Real,
unmodified clients run inside the pods with no GCE_* variables at all. The token service, the
fake Kubernetes API server (`wid-kube-fake`) and the fake of Google's STS and IAM Credentials
(`wid-google-fake`, over TLS) run in the test's namespace on a bridge the test makes. Everything
the test makes it removes.

Needs root, iproute2 and iptables (scripts/test.sh installs them); WID_KUBE_FAKE and
WID_GOOGLE_FAKE name the fakes' binaries."""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

PROJECT = "net-proj"
NUMBER = "555555555555"
GSA_A = f"app-a-runner@{PROJECT}.iam.gserviceaccount.com"
GSA_B = f"app-b-runner@{PROJECT}.iam.gserviceaccount.com"
GSA_NODE = f"node-runner@{PROJECT}.iam.gserviceaccount.com"
# Short, unique per run: interface names have at most 15 characters.
TAG = f"w{os.getpid() % 10000}"
BRIDGE_IP = "10.98.0.1"
REDIRECT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "agent" / "base" / "redirect.sh"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and run.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {run.returncode}\n{run.stderr}")
    return run


def wait_for(what: str, check, timeout: float = 30.0, log=None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except (requests.RequestException, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s" + (f"\n{log()}" if log else ""))
        time.sleep(0.05)


def tools_or_skip():
    missing = [tool for tool in ("ip", "iptables") if shutil.which(tool) is None]
    problem = None
    if missing:
        problem = f"missing {', '.join(missing)}"
    elif os.geteuid() != 0:
        problem = "needs root for network namespaces"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)


class Network:
    """The bridge in the test's namespace, and every namespace hung off it; removed at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.cgroups: list[Path] = []
        self.bridge = f"{TAG}br"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        sh("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def namespace(self, name: str) -> str:
        full = f"{TAG}-{name}"
        sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        sh("ip", "-n", full, "link", "set", "lo", "up")
        return full

    def host(self, name: str, address: str, link: str) -> str:
        """A namespace on the bridge at `address`, by a veth whose ends are named after `link`."""
        ns = self.namespace(name)
        up, peer = f"{TAG}{link}u", f"{TAG}{link}p"
        sh("ip", "link", "add", up, "type", "veth", "peer", "name", peer)
        self.links.append(peer)
        sh("ip", "link", "set", up, "netns", ns)
        sh("ip", "link", "set", peer, "master", self.bridge)
        sh("ip", "link", "set", peer, "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", up)
        sh("ip", "-n", ns, "link", "set", up, "up")
        return ns

    def node(self, name: str, index: int) -> "Node":
        address = f"10.98.0.{10 + index}"
        ns = self.host(name, address, f"n{index}")
        # The pods' side: a bridge of the node, the pods' gateway, in both families (`nodad`:
        # usable at once, with no duplicate address detection to wait for).
        sh("ip", "-n", ns, "link", "add", "pods", "type", "bridge")
        sh("ip", "-n", ns, "addr", "add", f"10.99.{index}.1/24", "dev", "pods")
        sh("ip", "-n", ns, "addr", "add", f"fd99:{index}::1/64", "dev", "pods", "nodad")
        sh("ip", "-n", ns, "link", "set", "pods", "up")
        # GKE's interception, by the DaemonSet's own script: 169.254.169.254 and fd20:ce::254,
        # to the agent at the node's addresses.
        run = subprocess.run(["ip", "netns", "exec", ns, "sh", str(REDIRECT), "install"],
                             env={**os.environ, "NODE_IPS": f"10.99.{index}.1,fd99:{index}::1"},
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, f"redirect.sh install: {run.stderr}"
        return Node(self, name, index, ns, address)

    def spawn(self, args: list[str], log: Path, namespace: str | None = None) -> subprocess.Popen:
        prefix = ["ip", "netns", "exec", namespace] if namespace else []
        process = subprocess.Popen(prefix + args, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
        self.processes.append(process)
        return process

    def close(self):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        for link in self.links:
            sh("ip", "link", "del", link, check=False)
        for cgroup in reversed(self.cgroups):
            try:
                cgroup.rmdir()
            except OSError:
                pass

    def pod_cgroup(self, uid: str) -> Path:
        """A cgroup named as kubelet's cgroupfs driver names a pod's (`kubepods/pod<UID>`), in a
        hierarchy that limits nothing (cgroup v2's, or v1's `pids`), for the pod's processes."""
        for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
            if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
                break
        else:
            pytest.fail("no writable cgroup hierarchy for the pods' processes")
        parent = root / f"{TAG}-kubepods"
        if not parent.exists():
            parent.mkdir()
            self.cgroups.append(parent)
        cgroup = parent / f"pod{uid}"
        cgroup.mkdir()
        self.cgroups.append(cgroup)
        return cgroup


class Node:
    def __init__(self, network: Network, name: str, index: int, ns: str, address: str):
        self.network, self.name, self.index, self.ns, self.address = network, name, index, ns, address
        self.pods = 0
        self.log = network.tmp / f"agent-{name}.log"

    def pod(self, name: str, host: int, families: str = "4") -> "PodNet":
        """A pod's network namespace with its addresses on this node (`families`: "4", "6" or
        "46", dual-stack), and its hosts file naming the metadata address it can reach."""
        ns = self.network.namespace(f"{self.name}-{name}")
        self.pods += 1
        inside, outside = f"{TAG}p{self.index}{host}", f"{TAG}q{self.index}{host}"
        sh("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
        sh("ip", "link", "set", inside, "netns", ns)
        sh("ip", "link", "set", outside, "netns", self.ns)
        sh("ip", "-n", self.ns, "link", "set", outside, "master", "pods")
        sh("ip", "-n", self.ns, "link", "set", outside, "up")
        ips = []
        if "4" in families:
            ips.append(f"10.99.{self.index}.{host}")
            sh("ip", "-n", ns, "addr", "add", f"{ips[-1]}/24", "dev", inside)
        if "6" in families:
            ips.append(f"fd99:{self.index}::{host}")
            sh("ip", "-n", ns, "addr", "add", f"{ips[-1]}/64", "dev", inside, "nodad")
        sh("ip", "-n", ns, "link", "set", inside, "up")
        if "4" in families:
            sh("ip", "-n", ns, "route", "add", "default", "via", f"10.99.{self.index}.1")
        if "6" in families:
            sh("ip", "-n", ns, "-6", "route", "add", "default", "via", f"fd99:{self.index}::1")
        etc = Path(f"/etc/netns/{ns}")
        etc.mkdir(parents=True, exist_ok=True)
        metadata = "169.254.169.254" if "4" in families else "fd20:ce::254"
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{metadata} metadata.google.internal metadata\n")
        return PodNet(ns, ips)


class PodNet:
    def __init__(self, ns: str, ips: list[str]):
        # `ip`: the pod's first address, its `status.podIP`.
        self.ns, self.ips, self.ip = ns, ips, ips[0]

    def command(self, args: list[str], cgroup: Path | None = None) -> list[str]:
        """`args` run in the pod's network namespace and, if given, in the pod's cgroup, entered
        before the program starts, as a container's processes are (and before `ip netns exec`,
        which mounts a /sys of the namespace's own, without the cgroup hierarchies)."""
        command = ["ip", "netns", "exec", self.ns, *args]
        if cgroup is not None:
            command = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *command]
        return command

    def run(self, args: list[str], env: dict, timeout: float = 120, cgroup: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(args, cgroup), env=env, capture_output=True, text=True, timeout=timeout)


def make_certificates(tmp: Path, ip: str = BRIDGE_IP, name: str = "iam",
                      dns: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """A CA made here, and a certificate it signed for `ip` (the token service on the bridge)
    and the host names `dns`: the CA's file, the certificate's and its key's."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wid netns test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wid")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)),
                                                        *(x509.DNSName(d) for d in dns)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (tmp / f"{name}-ca.pem", tmp / f"{name}.pem", tmp / f"{name}-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def client_env(tmp: Path) -> dict:
    """A pod's environment: no GCE_* variable, no credentials file, no gcloud configuration."""
    home = tmp / f"home-{time.monotonic_ns()}"
    home.mkdir()
    return {"PATH": os.environ["PATH"], "HOME": str(home), "CLOUDSDK_CONFIG": str(home / "gcloud"),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}


GOOGLE_AUTH = """
import sys, google.auth, google.auth.jwt
from google.auth import compute_engine
from google.auth.transport.requests import Request
from google.oauth2 import id_token
credentials, project = google.auth.default()
assert isinstance(credentials, compute_engine.Credentials), type(credentials)
credentials.refresh(Request())
token = id_token.fetch_id_token(Request(), "https://svc.example.com")
claims = google.auth.jwt.decode(token, verify=False)
print(project, credentials.service_account_email, claims["email"], claims["aud"])
"""


@pytest.fixture(scope="module")
def world(wid_bin, tmp_path_factory):
    tools_or_skip()
    fake_bin = os.environ.get("WID_KUBE_FAKE")
    if not fake_bin:
        pytest.fail("WID_KUBE_FAKE must name the wid-kube-fake binary (scripts/test.sh builds it)")
    tmp = tmp_path_factory.mktemp("netns")
    network = Network(tmp)
    try:
        yield World(network, wid_bin, fake_bin, tmp)
    finally:
        network.close()


class World:
    """The token service and a fake API server on the bridge, and the nodes."""

    def __init__(self, network: Network, wid_bin: str, fake_bin: str, tmp: Path):
        self.network, self.wid_bin, self.fake_bin, self.tmp = network, wid_bin, fake_bin, tmp
        # The token service on the bridge speaks HTTPS with a certificate of the test's CA: tokens
        # cross a network here.
        self.ca, cert, key = make_certificates(tmp)
        self.iam = f"https://{BRIDGE_IP}:18080"
        iam_log = tmp / "iam.log"
        network.spawn([wid_bin, "iam", "serve", "--addr", f"{BRIDGE_IP}:18080", "--data-dir", str(tmp / "data"),
                       "--tls-cert", str(cert), "--tls-key", str(key)], iam_log)
        wait_for("the token service", lambda: requests.get(self.iam + "/healthz", timeout=1, verify=str(self.ca)).ok,
                 log=iam_log.read_text)
        self.admin = requests.Session()
        self.admin.headers["Authorization"] = "Bearer " + (tmp / "data" / "admin-token").read_text().strip()
        self.call("POST", "/v1/projects", json={"projectId": PROJECT, "projectNumber": NUMBER})
        for account in ("app-a-runner", "app-b-runner"):
            self.call("POST", f"/v1/projects/{PROJECT}/serviceAccounts", json={"accountId": account})
        self.fakes: dict[str, str] = {}
        self.issuers: dict[str, tuple[str, str]] = {}
        self.fake = self.cluster("net")
        for gsa, ksa in ((GSA_A, "team-a/app"), (GSA_B, "team-b/other")):
            self.call("POST", f"/v1/projects/-/serviceAccounts/{gsa}:setIamPolicy", json={"policy": {"bindings": [
                {"role": "roles/iam.workloadIdentityUser", "members": [f"serviceAccount:{PROJECT}.svc.id.goog[{ksa}]"]}]}})
        self.nodes: dict[str, Node] = {}

    def cluster(self, name: str, isolated: bool = False, register: bool = True) -> str:
        """A cluster: its own fake API server on the bridge, registered with the token service in
        the project (so sharing its pool, unless isolated; not at all unless `register`), with the
        KSAs of the tests."""
        port = 18081 + len(self.fakes)
        log = self.tmp / f"fake-{name}.log"
        # A cluster whose issuer is published elsewhere than its API server (as GKE's); the token
        # service gets its keys uploaded.
        issuer = f"https://container.example.com/v1/projects/{PROJECT}/locations/europe-west1/clusters/{name}"
        fake = self.network.spawn([self.fake_bin, "--addr", f"{BRIDGE_IP}:{port}", "--issuer", issuer], log)
        line = fake.stdout.readline().strip()
        assert line.startswith("WID_KUBE_FAKE="), f"{line!r}: {log.read_text()}"
        base = line.split("=", 1)[1]
        (self.tmp / f"kubeconfig-{name}").write_text(requests.get(base + "/_fake/kubeconfig", timeout=5).text)
        jwks = requests.get(base + "/_fake/jwks", timeout=5).text
        if register:
            self.call("POST", f"/v1/projects/{PROJECT}/locations/europe-west1/clusters",
                      json={"clusterName": name, "issuerUri": issuer, "jwksJson": jwks, "isolated": isolated})
        self.fakes[name] = base
        self.issuers[name] = (issuer, jwks)
        self.service_account("team-a", "app", {"iam.gke.io/gcp-service-account": GSA_A}, cluster=name)
        self.service_account("team-b", "other", {"iam.gke.io/gcp-service-account": GSA_B}, cluster=name)
        return base

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.admin.request(method, self.iam + path, timeout=30, verify=str(self.ca), **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def service_account(self, namespace: str, name: str, annotations: dict, cluster: str = "net"):
        requests.post(self.fakes[cluster] + "/_fake/serviceaccounts", json={"namespace": namespace, "name": name, "annotations": annotations}, timeout=5).raise_for_status()

    def put_pod(self, namespace: str, name: str, node: str, ip: str | list[str], ksa: str, phase: str = "Running",
                cluster: str = "net", uid: str = "", host_network: bool = False) -> str:
        ips = [ip] if isinstance(ip, str) else ip
        response = requests.post(self.fakes[cluster] + "/_fake/pods", json={
            "namespace": namespace, "name": name, "node": node, "ips": ips, "serviceAccount": ksa, "phase": phase,
            "uid": uid, "hostNetwork": host_network}, timeout=5)
        response.raise_for_status()
        return response.json()["uid"]

    def delete_pod(self, namespace: str, name: str):
        requests.delete(f"{self.fake}/_fake/pods/{namespace}/{name}", timeout=5).raise_for_status()

    def node(self, name: str, cluster: str = "net", extra: tuple[str, ...] = (), upstream: str | None = None) -> Node:
        if name in self.nodes:
            return self.nodes[name]
        if upstream is None:
            upstream, extra = self.iam, ("--ca-file", str(self.ca), *extra)
        node = self.network.node(name, len(self.nodes) + 1)
        self.network.spawn([
            # One dual-stack listener, as the DaemonSet's.
            self.wid_bin, "metadata", "serve", "--addr", "[::]:8988",
            "--admin-addr", f"{node.address}:9090", "--kubeconfig", str(self.tmp / f"kubeconfig-{cluster}"),
            "--node-name", name, "--project", PROJECT,
            "--cluster-name", cluster, "--cluster-location", "europe-west1",
            "--sts-url", upstream, "--iamcredentials-url", upstream, *extra,
        ], node.log, namespace=node.ns)
        wait_for(f"the agent of {name} is ready",
                 lambda: requests.get(f"http://{node.address}:9090/readyz", timeout=1).status_code == 200,
                 log=node.log.read_text)
        self.nodes[name] = node
        return node

    def pod_waits(self, node: Node) -> int:
        text = requests.get(f"http://{node.address}:9090/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("wid_metadata_pod_waits_total "):
                return int(float(line.split()[1]))
        return 0


WIF_NAME = f"projects/{NUMBER}/locations/global/workloadIdentityPools/{{pool}}/providers/kube"


def wif_principal(pool: str, ksa: str) -> str:
    namespace, name = ksa.split("/")
    return (f"principal://iam.googleapis.com/projects/{NUMBER}/locations/global/workloadIdentityPools/{pool}"
            f"/subject/system:serviceaccount:{namespace}:{name}")


def test_real_clients_in_pods_on_two_nodes(world):
    node_a, node_b = world.node("node-a"), world.node("node-b")
    pod_a = node_a.pod("a1", 11)
    pod_b = node_b.pod("b1", 11)  # the same host number, another node's subnet
    world.put_pod("team-a", "a1", "node-a", pod_a.ip, "app")
    world.put_pod("team-b", "b1", "node-b", pod_b.ip, "other")

    for pod, gsa in ((pod_a, GSA_A), (pod_b, GSA_B)):
        run = pod.run([sys.executable, "-c", GOOGLE_AUTH], client_env(world.tmp))
        assert run.returncode == 0, f"{run.stderr}\n{node_a.log.read_text()}"
        project, email, id_email, aud = run.stdout.split()
        assert (project, email, id_email, aud) == (PROJECT, gsa, gsa, "https://svc.example.com")

    gcloud = shutil.which("gcloud")
    if gcloud is None:
        if os.environ.get("CI"):
            pytest.fail("gcloud is not installed")
        return
    run = pod_a.run([gcloud, "auth", "print-access-token"], client_env(world.tmp))
    assert run.returncode == 0 and run.stdout.strip(), run.stderr
    info = requests.get(world.iam + "/tokeninfo", params={"access_token": run.stdout.strip()}, timeout=10, verify=str(world.ca)).json()
    assert info["email"] == GSA_A, info


def test_a_pods_first_request_is_held_then_answered(world):
    node = world.node("node-a")
    pod = node.pod("early", 21)
    waits = world.pod_waits(node)
    client = subprocess.Popen(
        ["ip", "netns", "exec", pod.ns, sys.executable, "-c", GOOGLE_AUTH],
        env=client_env(world.tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # The client has asked for a token before the API server has the pod: it is held.
    wait_for("the first request is held", lambda: world.pod_waits(node) > waits, log=node.log.read_text)
    world.put_pod("team-a", "early", "node-a", pod.ip, "app", phase="Pending")
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, f"{err}\n{node.log.read_text()}"
    assert out.split()[1] == GSA_A


def test_a_reused_address_gets_the_new_pods_identity(world):
    node = world.node("node-a")
    pod = node.pod("reuse", 31)
    world.put_pod("team-a", "old", "node-a", pod.ip, "app")
    run = pod.run([sys.executable, "-c", GOOGLE_AUTH], client_env(world.tmp))
    assert run.returncode == 0 and run.stdout.split()[1] == GSA_A, run.stderr
    world.delete_pod("team-a", "old")
    world.put_pod("team-b", "new", "node-a", pod.ip, "other")

    def new_identity():
        run = pod.run([sys.executable, "-c", GOOGLE_AUTH], client_env(world.tmp))
        assert run.returncode == 0, run.stderr
        return run.stdout.split()[1] == GSA_B

    wait_for("the new pod's identity", new_identity, log=node.log.read_text)


def google_auth_in(pod: PodNet, world) -> tuple[int, str, str]:
    """Runs the google-auth client in the pod: (exit code, the account it got, stderr)."""
    run = pod.run([sys.executable, "-c", GOOGLE_AUTH], client_env(world.tmp))
    account = run.stdout.split()[1] if run.returncode == 0 else ""
    return run.returncode, account, run.stderr


def test_clusters_sharing_a_pool_share_identities_and_an_isolated_one_does_not(world):
    world.cluster("net2")
    world.cluster("lonely", isolated=True)
    shared = world.node("node-c", cluster="net2").pod("c1", 11)
    world.put_pod("team-a", "c1", "node-c", shared.ip, "app", cluster="net2")
    code, account, err = google_auth_in(shared, world)
    assert (code, account) == (0, GSA_A), f"the same KSA in another cluster of the pool is the same identity: {err}"

    alone = world.node("node-d", cluster="lonely").pod("d1", 11)
    world.put_pod("team-a", "d1", "node-d", alone.ip, "app", cluster="lonely")
    code, _, err = google_auth_in(alone, world)
    assert code != 0 and "403" in err, f"an isolated cluster's KSA is not the pool's: {err}"


def test_the_api_server_going_away_and_coming_back(world):
    node = world.node("node-a")
    known = node.pod("known", 41)
    world.put_pod("team-a", "known", "node-a", known.ip, "app")
    assert google_auth_in(known, world)[:2] == (0, GSA_A)
    requests.post(world.fake + "/_fake/down", json={"down": True}, timeout=5).raise_for_status()
    try:
        code, account, err = google_auth_in(known, world)
        assert (code, account) == (0, GSA_A), f"a known pod with the API server down: {err}\n{node.log.read_text()}"
    finally:
        requests.post(world.fake + "/_fake/down", json={"down": False}, timeout=5).raise_for_status()
    # Back: pods created meanwhile are found, from a fresh watch.
    late = node.pod("late", 42)
    world.put_pod("team-b", "late", "node-a", late.ip, "other")
    code, account, err = google_auth_in(late, world)
    assert (code, account) == (0, GSA_B), f"{err}\n{node.log.read_text()}"


def test_attested_callers_are_answered_only_from_their_own_pod(world):
    """`--attest-callers`: the agent reads the host's /proc (the test's processes share its PID
    namespace, as a hostPID DaemonSet does) and answers a connection as a pod's only when it
    starts in the network namespace of that pod's processes, found by their cgroup."""
    node = world.node("node-e", extra=("--attest-callers", "--pod-wait-ms", "1500"))
    # A pod whose process runs in its cgroup: confirmed, answered; even when the pod's first
    # process is on the host's network (as a runtime's monitor in the pod's cgroup is).
    steady = node.pod("steady", 51)
    steady_uid = str(uuid.uuid4())
    steady_cgroup = world.network.pod_cgroup(steady_uid)
    monitor = subprocess.Popen(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec sleep 300', str(steady_cgroup)])
    world.network.processes.append(monitor)
    world.put_pod("team-a", "steady", "node-e", steady.ip, "app", uid=steady_uid)
    run = steady.run([sys.executable, "-c", GOOGLE_AUTH], client_env(world.tmp), cgroup=steady_cgroup)
    assert run.returncode == 0 and run.stdout.split()[1] == GSA_A, f"{run.stderr}\n{node.log.read_text()}"

    # The index is behind: it still has the departed pod "old" at an address that a new pod,
    # not yet delivered by the watch, now has. The new pod's request is held, never answered
    # with the old pod's identity, and answered with its own once the watch catches up.
    reused = node.pod("reused", 52)
    world.put_pod("team-a", "old", "node-e", reused.ip, "app")
    new_uid = str(uuid.uuid4())
    waits = world.pod_waits(node)
    client = subprocess.Popen(
        reused.command([sys.executable, "-c", GOOGLE_AUTH], cgroup=world.network.pod_cgroup(new_uid)),
        env=client_env(world.tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for("the new pod's request is held", lambda: world.pod_waits(node) > waits, log=node.log.read_text)
    world.delete_pod("team-a", "old")
    world.put_pod("team-b", "new", "node-e", reused.ip, "other", uid=new_uid)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, f"{err}\n{node.log.read_text()}"
    assert out.split()[1] == GSA_B, out

    # The indexed pod is alive, in a network of its own that holds its address too (a sandbox
    # torn down late, say), and the request comes from another network with that address: the
    # connection is not in the pod's network, so it is refused.
    twin_ip = "10.99.%d.53" % node.index
    lingering = world.network.namespace("node-e-lingering")
    # A veth pair with both ends inside: a network connected to nothing.
    sh("ip", "-n", lingering, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    sh("ip", "-n", lingering, "addr", "add", f"{twin_ip}/24", "dev", "eth0")
    sh("ip", "-n", lingering, "link", "set", "eth0", "up")
    sh("ip", "-n", lingering, "link", "set", "eth1", "up")
    lingering_uid = str(uuid.uuid4())
    sleeper = subprocess.Popen(PodNet(lingering, [twin_ip]).command(["sleep", "300"], cgroup=world.network.pod_cgroup(lingering_uid)))
    world.network.processes.append(sleeper)
    world.put_pod("team-a", "lingering", "node-e", twin_ip, "app", uid=lingering_uid)
    intruder = node.pod("intruder", 53)
    assert intruder.ip == twin_ip
    run = intruder.run([sys.executable, "-c", STATUS_OF_EMAIL], client_env(world.tmp))
    status, _, body = run.stdout.partition(" ")
    assert status == "503" and "does not start in the network namespace of pod team-a/lingering" in body, f"{run.stdout}{run.stderr}\n{node.log.read_text()}"


# The status and body of the email query, from inside a pod, with no client library's retries.
STATUS_OF_EMAIL = """
import urllib.request, urllib.error
request = urllib.request.Request("http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/email", headers={"Metadata-Flavor": "Google"})
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        print(response.status, response.read().decode())
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode())
"""


def gcloud_token_in(pod: PodNet, world) -> str | None:
    """`gcloud auth print-access-token` in the pod; None where gcloud is missing outside CI."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        if os.environ.get("CI"):
            pytest.fail("gcloud is not installed")
        return None
    run = pod.run([gcloud, "auth", "print-access-token"], client_env(world.tmp))
    assert run.returncode == 0 and run.stdout.strip(), run.stderr
    return run.stdout.strip()


def test_workload_identity_federation_against_wids_token_service(world):
    """The generic mode: a cluster wid's token service knows only as a pool's OIDC provider, the
    KSA bound by its `principal://`, the agent given the provider's name."""
    world.cluster("wif", register=False)
    issuer, jwks = world.issuers["wif"]
    world.call("POST", f"/v1/projects/{PROJECT}/locations/global/workloadIdentityPools?workloadIdentityPoolId=wif-pool", json={})
    world.call("POST", f"/v1/projects/{PROJECT}/locations/global/workloadIdentityPools/wif-pool/providers?workloadIdentityPoolProviderId=kube",
               json={"oidc": {"issuerUri": issuer, "jwksJson": jwks}, "attributeMapping": {"google.subject": "assertion.sub"}})
    world.call("POST", f"/v1/projects/-/serviceAccounts/{GSA_A}:setIamPolicy", json={"policy": {"bindings": [
        {"role": "roles/iam.workloadIdentityUser", "members": [
            f"serviceAccount:{PROJECT}.svc.id.goog[team-a/app]", wif_principal("wif-pool", "team-a/app")]}]}})
    node = world.node("node-f", cluster="wif", extra=("--workload-identity-provider", WIF_NAME.format(pool="wif-pool")))
    pod = node.pod("f1", 11)
    world.put_pod("team-a", "f1", "node-f", pod.ip, "app", cluster="wif")
    run = pod.run([sys.executable, "-c", GOOGLE_AUTH], client_env(world.tmp))
    assert run.returncode == 0, f"{run.stderr}\n{node.log.read_text()}"
    assert run.stdout.split() == [PROJECT, GSA_A, GSA_A, "https://svc.example.com"]
    token = gcloud_token_in(pod, world)
    if token is not None:
        info = requests.get(world.iam + "/tokeninfo", params={"access_token": token}, timeout=10, verify=str(world.ca)).json()
        assert info["email"] == GSA_A, info


def test_workload_identity_federation_against_googles_strict_fake_over_tls(world):
    """The generic mode against a fake of Google's STS and IAM Credentials on the bridge, over
    TLS with a CA the agent is given: what a node of an EKS, AKS or on-premises cluster meets."""
    fake_bin = os.environ.get("WID_GOOGLE_FAKE")
    if not fake_bin:
        pytest.fail("WID_GOOGLE_FAKE must name the wid-google-fake binary (scripts/test.sh builds it)")
    world.cluster("google", register=False)
    issuer, jwks = world.issuers["google"]
    config = {"provider": WIF_NAME.format(pool="eks-pool"), "issuerUri": issuer, "jwksJson": jwks,
              "serviceAccounts": {GSA_A: [wif_principal("eks-pool", "team-a/app")]}}
    (world.tmp / "google.json").write_text(json.dumps(config))
    ca = world.tmp / "google-ca.pem"
    log = world.tmp / "google-fake.log"
    fake = world.network.spawn([fake_bin, "--addr", f"{BRIDGE_IP}:18443", "--config", str(world.tmp / "google.json"),
                                "--ca-out", str(ca)], log)
    line = fake.stdout.readline().strip()
    assert line == f"WID_GOOGLE_FAKE=https://{BRIDGE_IP}:18443", f"{line!r}: {log.read_text()}"
    node = world.node("node-g", cluster="google", upstream=f"https://{BRIDGE_IP}:18443",
                      extra=("--workload-identity-provider", WIF_NAME.format(pool="eks-pool"), "--ca-file", str(ca)))
    pod = node.pod("g1", 11)
    world.put_pod("team-a", "g1", "node-g", pod.ip, "app", cluster="google")
    run = pod.run([sys.executable, "-c", GOOGLE_AUTH], client_env(world.tmp))
    assert run.returncode == 0, f"{run.stderr}\n{node.log.read_text()}"
    assert run.stdout.split() == [PROJECT, GSA_A, GSA_A, "https://svc.example.com"]
    token = gcloud_token_in(pod, world)
    assert token is None or token.startswith("ya29.c.fake-"), token
    recorded = requests.get(f"https://{BRIDGE_IP}:18443/_fake/requests", verify=str(ca), timeout=10).json()
    exchanges = [r for r in recorded if r["path"] == "/v1/token"]
    assert exchanges and all(r["status"] == 200 for r in recorded), recorded
    assert exchanges[0]["fields"]["audience"] == "//iam.googleapis.com/" + WIF_NAME.format(pool="eks-pool")
    assert exchanges[0]["subject"]["sub"] == "system:serviceaccount:team-a:app"


# The status and body of a metadata path from inside a pod, at the address given (IPv4's
# 169.254.169.254 or IPv6's [fd20:ce::254]), with no client library in between.
STATUS_AT = """
import sys, urllib.request, urllib.error
request = urllib.request.Request(f"http://{sys.argv[1]}/computeMetadata/v1/{sys.argv[2]}", headers={"Metadata-Flavor": "Google"})
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        print(response.status, response.read().decode())
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode())
"""


def test_ipv6_only_and_dual_stack_pods_are_answered_and_attested(world):
    """GKE's IPv6 metadata address, fd20:ce::254, redirected by the DaemonSet's script to the
    agent's one dual-stack listener; pods found by their IPv6 addresses and confirmed by the
    kernel (`--attest-callers` reads `net/tcp6`). An IPv6-only pod's google-auth is told the
    address to probe (GCE_METADATA_IP): its default, 169.254.169.254, has no route there, as
    on any IPv6-only host (google-cloud-go#13618)."""
    node = world.node("node-h", extra=("--attest-callers", "--pod-wait-ms", "1500"))
    only6 = node.pod("only6", 61, families="6")
    only6_uid = str(uuid.uuid4())
    world.put_pod("team-a", "only6", "node-h", only6.ips, "app", uid=only6_uid)
    only6_cgroup = world.network.pod_cgroup(only6_uid)
    env = {**client_env(world.tmp), "GCE_METADATA_IP": "[fd20:ce::254]"}
    run = only6.run([sys.executable, "-c", GOOGLE_AUTH], env, cgroup=only6_cgroup)
    assert run.returncode == 0, f"{run.stderr}\n{node.log.read_text()}"
    assert run.stdout.split() == [PROJECT, GSA_A, GSA_A, "https://svc.example.com"]

    dual = node.pod("dual", 62, families="46")
    dual_uid = str(uuid.uuid4())
    world.put_pod("team-b", "dual", "node-h", dual.ips, "other", uid=dual_uid)
    dual_cgroup = world.network.pod_cgroup(dual_uid)
    run = dual.run([sys.executable, "-c", GOOGLE_AUTH], client_env(world.tmp), cgroup=dual_cgroup)
    assert run.returncode == 0 and run.stdout.split()[1] == GSA_B, f"{run.stderr}\n{node.log.read_text()}"
    for address in ("169.254.169.254", "[fd20:ce::254]"):
        run = dual.run([sys.executable, "-c", STATUS_AT, address, "instance/service-accounts/default/email"],
                       client_env(world.tmp), cgroup=dual_cgroup)
        assert run.stdout.strip() == f"200 {GSA_B}", f"by {address}: {run.stdout}{run.stderr}\n{node.log.read_text()}"

    # An IPv6 caller the index has but whose connection is not in that pod's network is refused.
    impostor = node.pod("impostor6", 63, families="6")
    world.put_pod("team-a", "elsewhere", "node-h", impostor.ips, "app", uid=str(uuid.uuid4()))
    run = impostor.run([sys.executable, "-c", STATUS_AT, "[fd20:ce::254]", "instance/service-accounts/default/email"],
                       client_env(world.tmp))
    assert run.stdout.startswith("503 ") and "team-a/elsewhere" in run.stdout, \
        f"{run.stdout}{run.stderr}\n{node.log.read_text()}"


# AWS's IMDSv2 and Azure's IMDS as far as the test needs them, on 169.254.169.254:80 of a host
# of its own; each request's client address and path is printed, a line each.
OTHER_CLOUD = """
import http.server, sys
SESSION = "AQAEAImdsV2SessionToken=="
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
    def do_PUT(self):
        print(self.client_address[0], "PUT", self.path, flush=True)
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if self.path == "/latest/api/token" and ttl and "X-Forwarded-For" not in self.headers:
            self.answer(200, SESSION, [("X-aws-ec2-metadata-token-ttl-seconds", ttl)])
        else:
            self.answer(400, "")
    def do_GET(self):
        print(self.client_address[0], "GET", self.path, flush=True)
        if self.path == "/latest/meta-data/instance-id":
            ok = self.headers.get("X-aws-ec2-metadata-token") == SESSION
            self.answer(200 if ok else 401, "i-0123456789abcdef0" if ok else "")
        elif self.path.startswith("/metadata/instance/compute/vmId"):
            ok = self.headers.get("Metadata") == "true"
            self.answer(200 if ok else 400, "02aab8a4-74ef-476e-8182-f6d2ba4166a6" if ok else "")
        else:
            self.answer(404, "")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("169.254.169.254", 80), Handler)
print("ready", flush=True)
server.serve_forever()
"""

# From a pod: AWS's IMDSv2 flow and Azure's IMDS, as their SDKs make them, and a forwarded
# request; a line each.
OTHER_CLOUD_CLIENT = """
import urllib.request, urllib.error
def call(method, path, headers):
    request = urllib.request.Request("http://169.254.169.254" + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers
status, session, headers = call("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
print("token", status, headers.get("X-aws-ec2-metadata-token-ttl-seconds"), "Metadata-Flavor" in headers)
print("instance-id", *call("GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": session})[:2])
print("vmId", *call("GET", "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text", {"Metadata": "true"})[:2])
print("forwarded", call("GET", "/latest/meta-data/instance-id", {"X-Forwarded-For": "10.0.0.9"})[0])
"""


def test_other_clouds_metadata_is_relayed_and_googles_is_the_agents(world):
    """`--passthrough http://169.254.169.254`: the node cloud's own metadata service on a host
    of its own, reached from the node's network (the pods' redirection does not touch the
    node's own traffic). A pod's AWS and Azure requests reach it through the agent; its
    Google requests are the agent's; a forwarded request reaches nothing."""
    cloud = world.network.host("cloud", "10.98.0.200", "cl")
    sh("ip", "-n", cloud, "addr", "add", "169.254.169.254/32", "dev", "lo")
    log = world.tmp / "other-cloud.log"
    service = world.network.spawn([sys.executable, "-c", OTHER_CLOUD], log, namespace=cloud)
    assert service.stdout.readline().strip() == "ready", log.read_text()
    node = world.node("node-i", extra=("--passthrough", "http://169.254.169.254"))
    sh("ip", "-n", node.ns, "route", "add", "169.254.169.254/32", "via", "10.98.0.200")
    pod = node.pod("i1", 11)
    world.put_pod("team-a", "i1", "node-i", pod.ip, "app")

    run = pod.run([sys.executable, "-c", OTHER_CLOUD_CLIENT], client_env(world.tmp))
    assert run.returncode == 0, f"{run.stderr}\n{node.log.read_text()}"
    lines = run.stdout.splitlines()
    assert lines == ["token 200 21600 False", "instance-id 200 i-0123456789abcdef0",
                     "vmId 200 02aab8a4-74ef-476e-8182-f6d2ba4166a6", "forwarded 403"], \
        f"{run.stdout}\n{node.log.read_text()}"
    code, account, err = google_auth_in(pod, world)
    assert (code, account) == (0, GSA_A), err

    service.terminate()
    service.wait(timeout=10)
    seen = [line.split() for line in service.stdout.read().splitlines()]
    assert service.returncode is not None
    # Every request the service saw came from the node (the agent), none was Google's or
    # forwarded: three calls, as the pod made them.
    assert [(client, method, path.split("?")[0]) for client, method, path in seen] == [
        (node.address, "PUT", "/latest/api/token"),
        (node.address, "GET", "/latest/meta-data/instance-id"),
        (node.address, "GET", "/metadata/instance/compute/vmId"),
    ], seen


@pytest.mark.parametrize("node_identity", [False, True], ids=["no-node-identity", "node-identity"])
def test_host_network_pods_get_their_own_identities_by_their_sockets_owner(world, node_identity):
    """`--attest-callers` with the node's addresses: two host-network pods of one node (their
    processes in the node's network, each in its pod's cgroup) share its address, and each gets
    its own KSA's identity, told by the process that holds the connection's socket; a process of
    no pod gets the node identity, or is refused without one. Host-network processes reach the
    agent at its own address (the pods' DNAT is not theirs), so their clients are told it."""
    index = len(world.nodes) + 1
    gateway = f"10.99.{index}.1"
    identity = ()
    if node_identity:
        # An account of its own, so that no pod's answer could be the node identity's unseen.
        world.call("POST", f"/v1/projects/{PROJECT}/serviceAccounts", json={"accountId": "node-runner"})
        world.call("POST", f"/v1/projects/-/serviceAccounts/{GSA_NODE}:setIamPolicy", json={"policy": {"bindings": [
            {"role": "roles/iam.workloadIdentityUser",
             "members": [f"serviceAccount:{PROJECT}.svc.id.goog[kube-system/node-identity]"]}]}})
        world.service_account("kube-system", "node-identity", {})
        identity = ("--node-identity", "kube-system/node-identity", "--node-gcp-service-account", GSA_NODE)
    name = "node-k" if node_identity else "node-j"
    node = world.node(name, extra=("--attest-callers", "--pod-wait-ms", "1500",
                                   "--node-address", f"{gateway},10.98.0.{10 + index}", *identity))
    assert node.index == index
    env = {**client_env(world.tmp), "GCE_METADATA_HOST": f"{gateway}:8988", "GCE_METADATA_IP": f"{gateway}:8988"}

    # A host-network pod's processes: in the node's network, in the pod's cgroup.
    host = PodNet(node.ns, [gateway])

    def on_the_node(args: list[str], cgroup: Path | None) -> subprocess.CompletedProcess:
        return host.run(args, env, cgroup=cgroup)

    for namespace, pod, ksa, gsa in (("team-a", "host-a", "app", GSA_A), ("team-b", "host-b", "other", GSA_B)):
        uid = str(uuid.uuid4())
        world.put_pod(namespace, pod, name, [gateway, node.address], ksa, uid=uid, host_network=True)
        run = on_the_node([sys.executable, "-c", GOOGLE_AUTH], world.network.pod_cgroup(uid))
        assert run.returncode == 0, f"{pod}: {run.stderr}\n{node.log.read_text()}"
        assert run.stdout.split() == [PROJECT, gsa, gsa, "https://svc.example.com"], run.stdout

    run = on_the_node([sys.executable, "-c", STATUS_AT, f"{gateway}:8988", "instance/service-accounts/default/email"], None)
    if node_identity:
        assert run.stdout.strip() == f"200 {GSA_NODE}", f"{run.stdout}{run.stderr}\n{node.log.read_text()}"
    else:
        assert run.stdout.startswith("403 ") and f"knows no pod at {gateway}" in run.stdout, \
            f"a process of no pod: {run.stdout}{run.stderr}\n{node.log.read_text()}"
