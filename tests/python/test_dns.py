"""The metadata server's name, through the cluster's DNS: a pod whose hosts file knows nothing of
`metadata.google.internal`, and whose resolv.conf is the one the kubelet writes for a ClusterFirst
pod, reaches its node's agent by that name alone. A real DNS server is the cluster's DNS (Debian's
dnsmasq, on the node's pod bridge), serving exactly the entries of the `hosts` block of the
Corefile that deploy/kubernetes/dns ships: dnsmasq reads the hosts-file format that CoreDNS's
`hosts` plugin reads. Real gcloud runs inside with nothing but the name to go by, and a dual-stack
pod reaches the agent by the name over IPv6.

Builds on test_netns.py's world (a world of its own, for this module). Needs root, iproute2,
iptables and dnsmasq (scripts/test.sh installs them)."""

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import requests

from test_manifests import metadata_hosts
from test_netns import GSA_A, PROJECT, Node, PodNet, World, client_env, wait_for, world  # noqa: F401 (world: the fixture)

NAME = "metadata.google.internal"
NAMESPACE = "team-a"
NODE = "node-dns"


def needed(tool: str, path: str | None) -> str:
    """`path`, or a failure under CI and a skip elsewhere, as test_netns.tools_or_skip does."""
    if path is None:
        problem = f"{tool} is missing"
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return path


class ClusterDns:
    """dnsmasq as the cluster's DNS, on a node's pod bridge, answering from a hosts file the test
    fills and dnsmasq reads again on SIGHUP (as CoreDNS's `reload` reads a new Corefile). Every
    name is its own (`--local=/#/`), with no upstream: a name the file has is answered, with
    NODATA for a type it has no address of (as CoreDNS's `hosts` answers an AAAA query), and any
    other is NXDOMAIN (as the cluster domain and a public resolver answer these names)."""

    def __init__(self, world: World, node: Node, binary: str):
        self.address = f"10.99.{node.index}.1"
        self.hosts = world.tmp / "cluster-dns.hosts"
        self.log = world.tmp / "cluster-dns.log"
        self.hosts.write_text("")
        self.process = world.network.spawn([
            binary, "--keep-in-foreground", "--no-resolv", "--no-hosts", f"--addn-hosts={self.hosts}",
            "--local=/#/", "--bind-interfaces", f"--listen-address={self.address}", "--port=53",
            # Root, not the user it drops to by default: the hosts file it reads again on SIGHUP
            # is in pytest's temporary directory (0700, root's).
            "--user=root", f"--pid-file={world.tmp / 'cluster-dns.pid'}",
            "--log-queries", f"--log-facility={self.log}",
        ], world.tmp / "cluster-dns.stderr", namespace=node.ns)
        wait_for("dnsmasq has read its hosts file", lambda: self.reads() == 1, timeout=10, log=self.text)

    def text(self, since: int = 0) -> str:
        """dnsmasq's log (every query and its answer), from the offset `since` on."""
        return self.log.read_text()[since:] if self.log.exists() else ""

    def reads(self) -> int:
        return self.text().count(f"read {self.hosts} ")

    def serve(self, entries: list[str]):
        """Answers from `entries` (hosts-file lines) from now on."""
        reads = self.reads()
        self.hosts.write_text("".join(f"{line}\n" for line in entries))
        self.process.send_signal(signal.SIGHUP)
        wait_for("dnsmasq has read its hosts file again", lambda: self.reads() > reads, timeout=10, log=self.text)


def kubelets_files(pod: PodNet, name: str, dns: ClusterDns):
    """The pod's /etc files as the kubelet (hosts, resolv.conf for dnsPolicy ClusterFirst) and a
    Debian-based image (nsswitch.conf) make them: no metadata name in the hosts file."""
    etc = Path(f"/etc/netns/{pod.ns}")
    (etc / "hosts").write_text(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"fe00::0\tip6-localnet\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n{pod.ip}\t{name}\n")
    (etc / "resolv.conf").write_text(
        f"search {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local\n"
        f"nameserver {dns.address}\noptions ndots:5\n")
    (etc / "nsswitch.conf").write_text("hosts: files dns\n")


@pytest.fixture(scope="module")
def cluster_dns(world) -> tuple[ClusterDns, PodNet]:
    binary = needed("dnsmasq (Debian's dnsmasq-base)", shutil.which("dnsmasq") or shutil.which("/usr/sbin/dnsmasq"))
    node = world.node(NODE)
    dns = ClusterDns(world, node, binary)
    pod = node.pod("dns", 11)
    kubelets_files(pod, "dns", dns)
    world.put_pod(NAMESPACE, "dns", node.name, pod.ip, "app")
    # What a process in the pod reads: the files above, bound over /etc by `ip netns exec`.
    seen = pod.run(["cat", "/etc/hosts", "/etc/resolv.conf"], client_env(world.tmp), timeout=10).stdout
    assert "metadata" not in seen and f"nameserver {dns.address}" in seen, seen
    return dns, pod


def addresses(pod: PodNet, name: str, env: dict, family: str = "") -> tuple[int, set[str]]:
    """getent's lookup of `name` in the pod, through its resolver (glibc's, nsswitch, resolv.conf),
    of the addresses of `family` ("v4", "v6", or "" for both): the exit code (2: not found) and
    the addresses."""
    run = pod.run(["getent", f"ahosts{family}", name], env, timeout=30)
    return run.returncode, {line.split()[0] for line in run.stdout.splitlines()}


def shipped() -> dict[str, dict[str, set[str]]]:
    """The shipped entries: for each name, its addresses of each family ("v4", "v6")."""
    names: dict[str, dict[str, set[str]]] = {}
    for line in metadata_hosts():
        address, *aliases = line.split()
        for name in aliases:
            names.setdefault(name, {"v4": set(), "v6": set()})["v6" if ":" in address else "v4"].add(address)
    return names


def test_the_metadata_names_resolve_through_the_cluster_dns_from_the_shipped_entries(world, cluster_dns):
    dns, pod = cluster_dns
    env = client_env(world.tmp)
    # The negative control: without the entries the name resolves nowhere, though the pod asks
    # the cluster's DNS (first with the search domains: ndots:5).
    dns.serve([])
    asked = len(dns.text())
    code, found = addresses(pod, NAME, env)
    assert (code, found) == (2, set()), f"{NAME} resolved with no entry served: {found}\n{dns.text()}"
    assert f"query[A] {NAME} from {pod.ip}" in dns.text(asked), dns.text()

    dns.serve(metadata_hosts())
    for name, families in shipped().items():
        for family, expected in families.items():
            asked = len(dns.text())
            code, found = addresses(pod, name, env, family)
            assert (code, found) == (0, expected), f"{name}, {family}: {code} {found}\n{dns.text()}"
            # Answered by the DNS server from the shipped entries, not by a hosts file of the pod's.
            answered = dns.text(asked)
            assert all(f"{dns.hosts} {name} is {address}" in answered for address in expected), answered


def test_gcloud_in_the_pod_finds_the_metadata_server_by_name(world, cluster_dns):
    """gcloud with no configuration and no GCE_* variable: it knows the metadata server only as
    `metadata.google.internal`, and detects from it that it runs on GCE, the account and the
    project."""
    gcloud = needed("gcloud", shutil.which("gcloud"))
    dns, pod = cluster_dns
    dns.serve(metadata_hosts())
    asked = len(dns.text())

    run = pod.run([gcloud, "config", "list", "--format=value(core.account,core.project)"], client_env(world.tmp))
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [GSA_A, PROJECT], f"gcloud's account and project: {run.stdout!r} {run.stderr}"

    run = pod.run([gcloud, "auth", "print-access-token"], client_env(world.tmp))
    assert run.returncode == 0 and run.stdout.strip(), run.stderr
    info = requests.get(world.iam + "/tokeninfo", params={"access_token": run.stdout.strip()}, timeout=10,
                        verify=str(world.ca)).json()
    assert info["email"] == GSA_A, info
    assert f"query[A] {NAME} from {pod.ip}" in dns.text(asked), f"gcloud did not ask the cluster's DNS:\n{dns.text(asked)}"


# The address a client connecting by the name reaches (the first that answers, of those the
# resolver sorted), and the email the metadata server gives there.
EMAIL_BY_NAME = f"""
import http.client
connection = http.client.HTTPConnection("{NAME}", 80, timeout=30)
connection.connect()
peer = connection.sock.getpeername()[0]
connection.request("GET", "/computeMetadata/v1/instance/service-accounts/default/email", headers={{"Metadata-Flavor": "Google"}})
response = connection.getresponse()
print(peer, response.status, response.read().decode())
"""


def test_a_dual_stack_pod_reaches_the_agent_by_name_over_ipv6(world, cluster_dns):
    """With both addresses answered, a dual-stack pod's resolver puts the IPv6 one first (RFC 6724:
    169.254.0.0/16 is link-local), so the name leads to [fd20:ce::254]:80, which the node's
    redirection (deploy/kubernetes/agent/base/redirect.sh) hands to the agent."""
    dns, pod = cluster_dns
    dns.serve(metadata_hosts())
    node = world.nodes[NODE]
    dual = node.pod("dual", 12, families="46")
    kubelets_files(dual, "dual", dns)
    world.put_pod(NAMESPACE, "dual", node.name, dual.ips, "app")
    run = dual.run([sys.executable, "-c", EMAIL_BY_NAME], client_env(world.tmp))
    assert run.returncode == 0, f"{run.stderr}\n{node.log.read_text()}"
    (ipv6,) = shipped()[NAME]["v6"]
    assert run.stdout.split() == [ipv6, "200", GSA_A], f"{run.stdout}\n{dns.text()}"
