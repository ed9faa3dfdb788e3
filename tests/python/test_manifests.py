"""The Kubernetes manifests under deploy/kubernetes/: every kustomization renders with
`kubectl kustomize` (the machine's kubectl), every object it makes validates offline against
Kubernetes' schemas in strict mode (`kubernetes-validate`: no field a schema does not know), the
images named are the ones scripts/build-images.sh tags, and each half has what an operator
relies on (the agent's opt-in label, taint toleration, priority, redirection installed before it
and removed after it; the token service's replicas, budget, TLS, Secrets and probes)."""

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
KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


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
            "token-service/base", "monitoring"} <= relative, relative


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
