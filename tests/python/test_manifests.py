"""The Kubernetes manifests under deploy/kubernetes/: every kustomization renders with
`kubectl kustomize` (the machine's kubectl), every object it makes validates offline against
Kubernetes' schemas in strict mode (`kubernetes-validate`: no field a schema does not know), the
images named are the ones scripts/build-images.sh tags, and each half has what an operator
relies on (the agent's opt-in label, taint toleration, priority, redirection installed before it
and removed after it; the token service's replicas, budget, TLS, Secrets and probes; the cluster DNS's
Corefile: kubeadm's stock plugins and the metadata names)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
VERSION = re.search(r'^version = "(.*)"$', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
# The Prometheus Operator's kinds have no schema in kubernetes-validate (they are CRDs).
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PodMonitor")}
ALL = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))
# Components (`kind: Component`) render nothing alone: each is rendered within each agent overlay.
COMPONENTS = [d for d in ALL if re.search(r"^kind: Component$", (d / "kustomization.yaml").read_text(), re.M)]
KUSTOMIZATIONS = [d for d in ALL if d not in COMPONENTS]
# The cluster DNS's Corefile (deploy/kubernetes/dns): its `hosts` block is the one place the
# metadata server's names are written; test_dns.py serves exactly those entries to its pods.
COREFILE = DEPLOY / "dns" / "Corefile"
# The metadata server's addresses, which the agent's redirection catches: IPv4's, and GKE's IPv6.
METADATA_ADDRESSES = ("169.254.169.254", "fd20:ce::254")
# kubeadm's stock Corefile, plugin by plugin: its arguments and the lines of its block.
KUBEADM_PLUGINS = {
    "errors": ([], []),
    "health": ([], [["lameduck", "5s"]]),
    "ready": ([], []),
    "kubernetes": (["cluster.local", "in-addr.arpa", "ip6.arpa"],
                   [["pods", "insecure"], ["fallthrough", "in-addr.arpa", "ip6.arpa"], ["ttl", "30"]]),
    "prometheus": ([":9153"], []),
    "forward": ([".", "/etc/resolv.conf"], [["max_concurrent", "1000"]]),
    "cache": (["30"], []),
    "loop": ([], []),
    "reload": ([], []),
    "loadbalance": ([], []),
}
# The `hosts` plugin's options; every other line of its block is a hosts-file entry.
HOSTS_OPTIONS = {"fallthrough", "fallthrough_unsupported", "ttl", "reload", "no_reverse"}


def render(directory: Path) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing (the machine image has it)")
    run = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"{directory}: {run.stderr}"
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def pod_specs(objects: list[dict]):
    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec")
        if spec:
            yield obj, spec


def built_images() -> set[str]:
    """The images scripts/build-images.sh tags: localhost/NAME:VERSION for each NAME it commits."""
    script = (ROOT / "scripts" / "build-images.sh").read_text()
    names = re.findall(r'commit_image "\$container" ([\w-]+)', script)
    assert names, "build-images.sh commits no image"
    return {f"localhost/{name}:{VERSION}" for name in names}


def test_there_are_overlays_for_both_halves_and_both_upstreams():
    relative = {str(p.relative_to(DEPLOY)) for p in KUSTOMIZATIONS}
    assert {"agent/base", "agent/overlays/wid-token-service", "agent/overlays/google-cloud",
            "token-service/base", "monitoring", "dns"} <= relative, relative


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_kustomization_renders_and_validates_strictly(directory):
    objects = render(directory)
    assert objects
    version = kubernetes_validate.utils.latest_version()
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            assert obj["metadata"]["name"] and obj["spec"]
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{directory.relative_to(DEPLOY)}: {obj['kind']} {obj['metadata']['name']}: {e.message} "
                        f"at {'.'.join(map(str, e.path))}")
    images = {c["image"] for _, spec in pod_specs(objects)
              for c in spec.get("containers", []) + spec.get("initContainers", [])}
    assert images <= built_images(), f"{images - built_images()} are not what build-images.sh tags"


def container(spec: dict, name: str) -> dict:
    return next(c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == name)


@pytest.mark.parametrize("overlay", ["wid-token-service", "google-cloud"])
def test_the_agent_runs_only_where_asked_before_pods_and_cleans_up(overlay):
    objects = render(DEPLOY / "agent" / "overlays" / overlay)
    (daemonset, spec), = [(o, s) for o, s in pod_specs(objects) if o["kind"] == "DaemonSet"]
    assert spec["nodeSelector"] == {"wid.dev/agent": "enabled"}
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["hostNetwork"] is True
    install = container(spec, "install-redirection")
    assert install["command"][-1] == "install"
    keep = container(spec, "keep-redirection")
    assert keep["lifecycle"]["preStop"]["exec"]["command"][-1] == "remove"
    assert set(install["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    agent = container(spec, "agent")
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert agent["securityContext"]["runAsNonRoot"] is True
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    upstream = [a for a in agent["args"] if a.startswith(("--sts-url", "--workload-identity-provider"))]
    assert len(upstream) == 1, agent["args"]
    assert upstream[0].startswith("--sts-url" if overlay == "wid-token-service" else "--workload-identity-provider")


@pytest.mark.parametrize("overlay", ["wid-token-service", "google-cloud"])
def test_the_passthrough_component_relays_the_node_clouds_metadata(overlay, tmp_path):
    """`agent/components/passthrough` added to an overlay, as docs/install.md says: the agent gets
    --passthrough (by its environment) and the rest validates as before."""
    component = DEPLOY / "agent" / "components" / "passthrough"
    assert component in COMPONENTS
    # A kustomization of the operator's, elsewhere, naming both by relative paths as kustomize
    # requires.
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(DEPLOY / "agent" / "overlays" / overlay, tmp_path)],
        "components": [os.path.relpath(component, tmp_path)],
    }))
    objects = render(tmp_path)
    (_, spec), = [(o, s) for o, s in pod_specs(objects) if o["kind"] == "DaemonSet"]
    agent = container(spec, "agent")
    assert {"name": "WID_PASSTHROUGH", "value": "http://169.254.169.254"} in agent["env"], agent["env"]
    assert not any(a.startswith("--passthrough") for a in agent["args"])
    version = kubernetes_validate.utils.latest_version()
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_agent_listens_for_both_families_and_redirects_each_of_the_nodes_addresses():
    objects = render(DEPLOY / "agent" / "base")
    (_, spec), = [(o, s) for o, s in pod_specs(objects) if o["kind"] == "DaemonSet"]
    agent = container(spec, "agent")
    assert "--addr=[::]:8988" in agent["args"], agent["args"]
    assert {"name": "WID_NODE_ADDRESSES", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}} in agent["env"]
    for name in ("install-redirection", "keep-redirection"):
        env = container(spec, name)["env"]
        assert {"name": "NODE_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}} in env, env


def test_the_token_service_is_two_replicas_with_tls_secrets_and_a_budget():
    objects = render(DEPLOY / "token-service" / "base")
    kinds = {o["kind"]: o for o in objects}
    assert {"Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= set(kinds)
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    spec = deployment["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    service = container(spec, "token-service")
    args = service["args"]
    assert "--tls-cert=/etc/wid/tls/tls.crt" in args and "--admin-token-file=/etc/wid/admin/token" in args
    database = next(e for e in service["env"] if e["name"] == "WID_DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"] == {"name": "wid-database", "key": "url"}
    assert service["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert service["securityContext"]["readOnlyRootFilesystem"] is True
    secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert secrets == {"wid-tls", "wid-admin"}
    assert kinds["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


Block = list[tuple[list[str], list]]


def corefile_blocks(text: str) -> Block:
    """A Corefile as nested (words, block) pairs: each line's words, and the lines of the block it
    opens (empty if it opens none); comments dropped."""
    root: Block = []
    stack = [root]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line == "}":
            stack.pop()
            assert stack, f"an unmatched }} in the Corefile:\n{text}"
        elif line:
            children: Block = []
            stack[-1].append((line.rstrip("{").split(), children))
            if line.endswith("{"):
                stack.append(children)
    assert len(stack) == 1, f"an unclosed {{ in the Corefile:\n{text}"
    return root


def server_block(text: str, key: str = ".:53") -> dict[str, tuple[list[str], list]]:
    """The plugins of the server block `key`: each plugin's arguments and block, by name."""
    blocks = [block for words, block in corefile_blocks(text) if words == [key]]
    assert len(blocks) == 1, f"the Corefile has {len(blocks)} server blocks {key}:\n{text}"
    plugins = {}
    for words, block in blocks[0]:
        assert words[0] not in plugins, f"{words[0]} twice in the server block {key}"
        plugins[words[0]] = (words[1:], block)
    return plugins


def metadata_hosts(text: str | None = None) -> list[str]:
    """The hosts-file entries of the `hosts` block of the shipped Corefile (or of `text`)."""
    _, block = server_block(COREFILE.read_text() if text is None else text)["hosts"]
    return [" ".join(words) for words, _ in block if words[0] not in HOSTS_OPTIONS]


def test_the_cluster_dns_keeps_kubeadms_corefile_and_answers_the_metadata_names():
    objects = render(DEPLOY / "dns")
    assert [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects] == [
        ("ConfigMap", "kube-system", "coredns")], "kubeadm's CoreDNS Deployment mounts kube-system/coredns"
    corefile = objects[0]["data"]["Corefile"]
    assert corefile == COREFILE.read_text()
    plugins = server_block(corefile)
    hosts_args, hosts_block = plugins.pop("hosts")
    stock = {name: (args, [(line, []) for line in lines]) for name, (args, lines) in KUBEADM_PLUGINS.items()}
    assert plugins == stock, "the server block is kubeadm's stock one, plus `hosts`"
    # No file and no zones named: the plugin answers its inline entries (and the CoreDNS pod's own
    # /etc/hosts: localhost, the pod's name) in every zone, and hands any other name on.
    assert hosts_args == [] and (["fallthrough"], []) in hosts_block, hosts_block
    entries = metadata_hosts(corefile)
    by_address = {line.split()[0]: sorted(line.split()[1:]) for line in entries}
    assert len(by_address) == len(entries) and set(by_address) == set(METADATA_ADDRESSES), \
        f"one line for each metadata address, and no other address (nothing else is redirected): {entries}"
    assert all(names == ["metadata.goog", "metadata.google.internal"] for names in by_address.values()), entries


def test_the_docs_write_the_metadata_names_as_the_corefile_does():
    """install.md's snippets for CoreDNS set up by others (k3s, AKS) carry the shipped entries,
    all of them and no line of their own."""
    shipped = set(metadata_hosts())
    blocks = (ROOT / "docs" / "install.md").read_text().split("```")[1::2]
    entry = re.compile(r"\s*(\d+\.\d+\.\d+\.\d+|[0-9a-f]*:[0-9a-f:]+)\s+metadata\.")
    written = [{" ".join(line.split()) for line in block.splitlines() if entry.match(line)} for block in blocks]
    written = [lines for lines in written if lines]
    assert written and all(lines == shipped for lines in written), f"install.md writes {written}; the Corefile has {shipped}"
