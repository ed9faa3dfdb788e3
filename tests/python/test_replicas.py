"""Several `wid iam serve` on one PostgreSQL as one service, and what they survive: a replica
killed with kill -9 under load, PostgreSQL restarted under load, a replica cut off from
PostgreSQL by a dropped route, a revocation at one replica refused at the other within a second.

PostgreSQL is Debian's server, in a network namespace of its own on a bridge the test makes
(a cluster made by initdb in a temporary directory, run as the unprivileged `postgres` user);
each replica is a namespace on the same bridge; the test's load comes from its own namespace.
Each test prints its figures. Needs root, iproute2, iptables and PostgreSQL (scripts/test.sh
installs them)."""

import concurrent.futures
import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import EMAIL, ISSUER, POOL, PROJECT, PROJECT_NUMBER, Cluster
from test_netns import Network, make_certificates, sh, tools_or_skip, wait_for

DB_IP = "10.98.0.40"
REPLICA_IPS = {"a": "10.98.0.41", "b": "10.98.0.42"}
KSA = ("default", "app")
MEMBER = f"serviceAccount:{POOL}[{KSA[0]}/{KSA[1]}]"
AUDIENCE = f"identitynamespace:{POOL}:{ISSUER}"
SCOPE = {"scope": ["https://www.googleapis.com/auth/cloud-platform"]}


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail("PostgreSQL's server is missing (Debian's package postgresql; scripts/test.sh installs it)")
    return Path(found[-1]).parent


class Postgres:
    """Debian's PostgreSQL in its own namespace, listening on the bridge."""

    def __init__(self, network: Network, tmp: Path):
        self.bin = postgres_bin()
        self.ns = network.host("db", DB_IP, "db")
        # Outside pytest's private temporary directory, which the server's user cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="wid-postgres-"))
        shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"
        self.as_postgres(["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"])
        # TLS with a certificate of the test's CA, required from the bridge: the replicas
        # verify it. Only the test runs on the bridge, so no password.
        self.ca, cert, key = make_certificates(self.dir, DB_IP, "postgres")
        for path in (cert, key):
            shutil.chown(path, "postgres")
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write("hostssl all all 10.98.0.0/24 trust\n")
        self.ctl("start", "-w", "-t", "60", "-l", str(self.dir / "server.log"), "-o",
                 f"-c listen_addresses={DB_IP} -k {self.dir} -c fsync=off -c max_connections=200 "
                 f"-c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}")

    def url(self, database: str) -> str:
        return f"postgres://postgres@{DB_IP}:5432/{database}?sslmode=verify-full&sslrootcert={self.ca}"

    def as_postgres(self, args: list[str]) -> None:
        run = subprocess.run(["ip", "netns", "exec", self.ns, "runuser", "-u", "postgres", "--",
                              str(self.bin / args[0]), *args[1:]], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"{args}: {run.stdout}\n{run.stderr}"

    def ctl(self, *args: str) -> None:
        self.as_postgres(["pg_ctl", "-D", str(self.data), *args])

    def stop(self) -> None:
        subprocess.run(["ip", "netns", "exec", self.ns, "runuser", "-u", "postgres", "--",
                        str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class Replica:
    """One `wid iam serve` in its own namespace, on the shared database."""

    def __init__(self, world: "World", name: str, token_file: Path | None):
        self.world, self.name, self.token_file = world, name, token_file
        self.ip = REPLICA_IPS[name]
        self.ns = world.network.host(name, self.ip, name)
        self.base = f"http://{self.ip}:8080"
        self.data = world.tmp / f"data-{name}"
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.log = self.world.tmp / f"{self.name}.{self.starts}.log"
        args = [self.world.wid_bin, "iam", "serve", "--addr", f"{self.ip}:8080", "--insecure-listen",
                "--database", self.world.database, "--data-dir", str(self.data), "--log-format", "json"]
        if self.token_file is not None:
            args += ["--admin-token-file", str(self.token_file)]
        self.process = self.world.network.spawn(args, self.log, namespace=self.ns)
        wait_for(f"replica {self.name} is ready",
                 lambda: requests.get(self.base + "/readyz", timeout=1).status_code == 200, log=self.log.read_text)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def admin_token(self) -> str:
        return (self.token_file or self.data / "admin-token").read_text().strip()

    def cut_off(self, cut: bool) -> None:
        """A dropped route to the database: its packets go nowhere."""
        sh("ip", "-n", self.ns, "route", "add" if cut else "del", "blackhole", f"{DB_IP}/32")


class World:
    def __init__(self, network: Network, postgres: Postgres, wid_bin: str, tmp: Path):
        self.network, self.postgres, self.wid_bin, self.tmp = network, postgres, wid_bin, tmp
        self.database = self.postgres.url("wid")
        subprocess.run(["ip", "netns", "exec", self.postgres.ns, "runuser", "-u", "postgres", "--",
                        str(self.postgres.bin / "createdb"), "-h", str(self.postgres.dir), "wid"], check=True,
                       capture_output=True, timeout=60)
        # Replica a makes the shared admin secret file (as a Kubernetes Secret would hold it);
        # replica b keeps its own in its data directory: each is accepted by both.
        self.a = Replica(self, "a", tmp / "admin-token")
        self.b = Replica(self, "b", None)
        self.cluster = Cluster()
        self.session = requests.Session()
        self.session.headers["Authorization"] = "Bearer " + self.a.admin_token()
        self.call(self.a, "POST", "/v1/projects", json={"projectId": PROJECT, "projectNumber": PROJECT_NUMBER})
        self.call(self.b, "POST", f"/v1/projects/{PROJECT}/serviceAccounts", json={"accountId": "app-runner"})
        self.call(self.a, "POST", f"/v1/projects/{PROJECT}/locations/us-east1/clusters",
                  json={"clusterName": "prod", "issuerUri": ISSUER, "jwksJson": self.cluster.jwks})
        self.bind([MEMBER])

    def call(self, replica: Replica, method: str, path: str, **kwargs) -> dict:
        response = self.session.request(method, replica.base + path, timeout=30, **kwargs)
        assert response.ok, f"{replica.name}: {method} {path}: {response.status_code} {response.text}"
        return response.json()

    def bind(self, members: list[str], replica: Replica | None = None) -> None:
        bindings = [{"role": "roles/iam.workloadIdentityUser", "members": members},
                    {"role": "roles/iam.serviceAccountOpenIdTokenCreator", "members": members}] if members else []
        self.call(replica or self.a, "POST", f"/v1/projects/-/serviceAccounts/{EMAIL}:setIamPolicy",
                  json={"policy": {"bindings": bindings}})

    def federated(self, replica: Replica) -> str:
        """A federated access token for the KSA, from STS at `replica`."""
        response = requests.post(replica.base + "/v1/token", timeout=10, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "audience": AUDIENCE, "scope": "https://www.googleapis.com/auth/cloud-platform",
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "subject_token": self.cluster.token(*KSA), "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"})
        assert response.ok, f"{replica.name}: exchange: {response.status_code} {response.text}"
        return response.json()["access_token"]

    def issue(self, replica: Replica, federated: str, verb: str = "generateAccessToken",
              body: dict | None = None, timeout: float = 10) -> requests.Response:
        return requests.post(f"{replica.base}/v1/projects/-/serviceAccounts/{EMAIL}:{verb}", timeout=timeout,
                             headers={"Authorization": f"Bearer {federated}"}, json=body or SCOPE)

    def audit_count(self, replica: Replica, action: str) -> int:
        events = self.call(replica, "GET", "/v1/auditEvents?limit=10000")["events"]
        return sum(1 for e in events if e["action"] == action and e["outcome"] == "GRANTED")


@pytest.fixture(scope="module")
def world(wid_bin, tmp_path_factory):
    tools_or_skip()
    tmp = tmp_path_factory.mktemp("replicas")
    network = Network(tmp)
    postgres = None
    try:
        postgres = Postgres(network, tmp)
        yield World(network, postgres, wid_bin, tmp)
    finally:
        # The server first: a namespace removed under it would leave it running.
        if postgres is not None:
            postgres.stop()
        network.close()


def report(capsys, text: str) -> None:
    """A figure of the test, shown in the test command's output even when the test passes."""
    with capsys.disabled():
        print(f"\n    {text.strip()}", end="")


def until(what: str, check, timeout: float) -> float:
    """Seconds until `check()` holds, polled every 10 ms; fails past `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - started


def test_replicas_are_one_service(world, capsys):
    a, b = world.a, world.b
    # Each replica's bootstrap secret is accepted by both.
    for token in (a.admin_token(), b.admin_token()):
        for replica in (a, b):
            answer = requests.get(replica.base + f"/v1/projects/{PROJECT}", timeout=10,
                                  headers={"Authorization": f"Bearer {token}"})
            assert answer.ok, f"{replica.name}: {answer.status_code} {answer.text}"
    # A token from STS at one replica is honoured at the other; an ID token minted at one
    # verifies at the other's tokeninfo.
    federated = world.federated(b)
    assert world.issue(a, federated).ok
    id_token = world.issue(a, federated, "generateIdToken", {"audience": "https://svc.example.com"}).json()["token"]
    info = requests.get(b.base + "/tokeninfo", params={"id_token": id_token}, timeout=10)
    assert info.ok and info.json()["aud"] == "https://svc.example.com", info.text

    # A rotation at a: b publishes the new keys within a second, and verifies what they sign.
    before = {k["kid"] for k in requests.get(b.base + "/oauth2/v3/certs", timeout=10).json()["keys"]}
    rotated = world.call(a, "POST", "/v1/signingKeys:rotate", json={})
    new = {k["kid"] for k in rotated["keys"] if k["state"] == "ACTIVE" and k["purpose"] != "account_signing"}
    assert new and not new & before
    took = until("b publishes a's new keys",
                 lambda: new <= {k["kid"] for k in requests.get(b.base + "/oauth2/v3/certs", timeout=10).json()["keys"]},
                 timeout=1.0)
    report(capsys, f"\nkeys rotated at a, published by b after {took * 1000:.0f} ms")
    fresh = world.issue(a, world.federated(a), "generateIdToken", {"audience": "https://svc.example.com"}).json()["token"]
    assert requests.get(b.base + "/tokeninfo", params={"id_token": fresh}, timeout=10).ok
    # Both still publish every key that may have signed a live token.
    for replica in (a, b):
        kids = {k["kid"] for k in requests.get(replica.base + "/oauth2/v3/certs", timeout=10).json()["keys"]}
        assert before <= kids and new <= kids, replica.name

    # Concurrent read-modify-writes of one policy through both replicas lose no update.
    path = f"/v1/projects/{PROJECT}:setIamPolicy"

    def add_members(replica: Replica, prefix: str) -> int:
        retries = 0
        for n in range(10):
            while True:
                policy = world.call(replica, "POST", f"/v1/projects/{PROJECT}:getIamPolicy", json={})
                policy.setdefault("bindings", []).append(
                    {"role": "roles/iam.serviceAccountUser", "members": [f"user:{prefix}{n}@example.com"]})
                answer = world.session.post(replica.base + path, json={"policy": policy}, timeout=30)
                if answer.status_code == 409:
                    retries += 1
                    continue
                assert answer.ok, answer.text
                break
        return retries

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        retries = sum(pool.map(add_members, (a, b), ("a", "b")))
    policy = world.call(b, "POST", f"/v1/projects/{PROJECT}:getIamPolicy", json={})
    members = {m for binding in policy["bindings"] for m in binding["members"]}
    assert {f"user:{p}{n}@example.com" for p in "ab" for n in range(10)} <= members
    report(capsys, f"20 concurrent setIamPolicy through two replicas: all kept, {retries} ABORTED and retried")

    # A revocation at a is refused at b within a second.
    federated = world.federated(b)
    assert world.issue(b, federated).ok
    world.bind([], replica=a)
    took = until("b refuses after the binding is removed at a",
                 lambda: world.issue(b, federated).status_code == 403, timeout=1.0)
    report(capsys, f"binding removed at a, refused at b after {took * 1000:.0f} ms")
    world.bind([MEMBER], replica=b)
    until("a honours the binding restored at b", lambda: world.issue(a, world.federated(a)).ok, timeout=1.0)
    # So is an account disabled.
    world.call(a, "POST", f"/v1/projects/-/serviceAccounts/{EMAIL}:disable", json={})
    took = until("b refuses a disabled account", lambda: world.issue(b, federated).status_code != 200, timeout=1.0)
    report(capsys, f"account disabled at a, refused at b after {took * 1000:.0f} ms")
    world.call(b, "POST", f"/v1/projects/-/serviceAccounts/{EMAIL}:enable", json={})
    until("a honours the account enabled at b", lambda: world.issue(a, world.federated(a)).ok, timeout=1.0)


class Load:
    """Closed-loop clients in threads until stopped; each call goes to one replica and, when
    that replica fails to answer, to the other."""

    def __init__(self, world: World, clients: int, call):
        self.world, self.call = world, call
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: dict[str, int] = {}
        self.acknowledged: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]
        for thread in self.threads:
            thread.start()

    def count(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def run(self, client: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            self.call(self, client, n)

    def finish(self) -> dict[str, int]:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        return dict(sorted(self.outcomes.items()))


def test_a_replica_killed_under_load_loses_no_acknowledged_write(world, capsys):
    a, b = world.a, world.b

    def create(load: Load, client: int, n: int) -> None:
        account = f"load-{client}-{n}"
        first, other = (a, b) if n % 2 else (b, a)
        for replica, label in ((first, "first"), (other, "retried")):
            try:
                answer = world.session.post(f"{replica.base}/v1/projects/{PROJECT}/serviceAccounts",
                                            json={"accountId": account}, timeout=10)
            except requests.RequestException as e:
                # Refused: the replica was gone before the request (a balancer stops sending
                # there); otherwise the request was in flight when it died.
                refused = "Connection refused" in str(e)
                load.count(f"{label}: {'refused' if refused else 'in flight'} ({replica.name})")
                continue
            # A retry that finds the account made: the first attempt's write held.
            if answer.ok or (label == "retried" and answer.status_code == 409):
                load.count(f"{label}: acknowledged")
                with load.lock:
                    load.acknowledged.append(account)
                return
            load.count(f"{label}: {answer.status_code} ({replica.name})")
        load.count("lost")

    load = Load(world, 8, create)
    until("writes under load", lambda: len(load.acknowledged) >= 40, timeout=30)
    a.kill9()
    killed_at = len(load.acknowledged)
    until("writes after the kill", lambda: len(load.acknowledged) >= killed_at + 40, timeout=30)
    outcomes = load.finish()
    report(capsys, f"\nkill -9 of replica a under load (8 clients creating accounts): {outcomes}")
    listed = set()
    token = ""
    while True:
        page = world.call(b, "GET", f"/v1/projects/{PROJECT}/serviceAccounts?pageSize=100&pageToken={token}")
        listed |= {acct["email"].split("@")[0] for acct in page.get("accounts", [])}
        token = page.get("nextPageToken", "")
        if not token:
            break
    missing = [account for account in load.acknowledged if account not in listed]
    assert not missing, f"acknowledged and lost: {missing}"
    assert outcomes.get("lost", 0) == 0, outcomes
    # The only failures: the requests a held when it died (one per client at most), and those
    # sent to it once it was gone; every one was retried at b.
    in_flight = outcomes.get("first: in flight (a)", 0)
    assert in_flight <= 8, outcomes
    assert not [k for k in outcomes if k.startswith("retried") and k != "retried: acknowledged"], outcomes
    report(capsys, f"{len(load.acknowledged)} acknowledged, all kept; {in_flight} in flight at a when it died, "
          f"{outcomes.get('first: refused (a)', 0)} refused by it after; all retried at b")
    a.start()


def test_postgres_restarted_under_load(world, capsys):
    a, b = world.a, world.b
    federated = {r.name: world.federated(r) for r in (a, b)}
    issued_before = world.audit_count(b, "generate_access_token")

    def issue_and_write(load: Load, client: int, n: int) -> None:
        replica = (a, b)[client % 2]
        try:
            if n % 5:
                answer = world.issue(replica, federated[replica.name], timeout=10)
                kind = "issue"
            else:
                answer = world.session.post(f"{replica.base}/v1/projects/{PROJECT}/serviceAccounts",
                                            json={"accountId": f"pg-{client}-{n}"}, timeout=10)
                kind = "write"
        except requests.RequestException:
            load.count("no answer")
            return
        load.count(f"{kind} {answer.status_code}")
        if answer.status_code == 503:
            assert answer.json()["error"]["status"] == "UNAVAILABLE", answer.text
            time.sleep(0.05)

    load = Load(world, 4, issue_and_write)
    until("load before the restart", lambda: load.outcomes.get("write 200", 0) >= 10, timeout=30)
    restarted = time.monotonic()
    world.postgres.ctl("restart", "-m", "fast", "-w", "-t", "60", "-l", str(world.postgres.dir / "server.log"))
    up = time.monotonic() - restarted
    before = dict(load.outcomes)
    took = until("both replicas write again after the restart, without a restart of their own",
                 lambda: load.outcomes.get("write 200", 0) >= before.get("write 200", 0) + 10, timeout=20)
    outcomes = load.finish()
    report(capsys, f"\nPostgreSQL restarted in {up:.1f} s under load (4 clients, 4 issuances to a write): {outcomes}; "
          f"writes succeeded again {took:.1f} s after it was back")
    for replica in (a, b):
        assert requests.get(replica.base + "/readyz", timeout=5).status_code == 200
    assert outcomes.get("no answer", 0) == 0, outcomes
    issued = outcomes.get("issue 200", 0)
    until("every issuance during the restart is in the audit trail",
          lambda: world.audit_count(b, "generate_access_token") - issued_before >= issued, timeout=10)


def test_a_replica_cut_off_from_postgres(world, capsys):
    a, b = world.a, world.b
    federated = world.federated(a)
    assert world.issue(a, federated).ok  # a has what it needs in its cache
    issued_before = world.audit_count(b, "generate_access_token")
    a.cut_off(True)
    try:
        until("a says it is not ready", lambda: requests.get(a.base + "/readyz", timeout=5).status_code == 503,
              timeout=5)
        started = time.monotonic()
        outcomes: dict[int, int] = {}
        while time.monotonic() - started < 3:
            status = world.issue(a, federated).status_code
            outcomes[status] = outcomes.get(status, 0) + 1
        report(capsys, f"\nreplica a cut off from PostgreSQL: issuance from its cache for 3 s: {outcomes}")
        assert set(outcomes) == {200}, outcomes
        # STS too: the cluster and the KSA are cached.
        assert world.issue(a, world.federated(a)).ok
        outcomes[200] += 1
        answer = world.session.post(f"{a.base}/v1/projects/{PROJECT}/serviceAccounts",
                                    json={"accountId": "while-cut-off"}, timeout=10)
        assert answer.status_code == 503 and answer.json()["error"]["status"] == "UNAVAILABLE", answer.text
        assert answer.headers.get("Retry-After") == "1"
        ready = requests.get(a.base + "/readyz", timeout=5)
        assert ready.json()["error"]["status"] == "UNAVAILABLE"
        # b is untouched.
        world.call(b, "POST", f"/v1/projects/{PROJECT}/serviceAccounts", json={"accountId": "b-while-a-cut-off"})
        assert world.issue(b, world.federated(b)).ok
    finally:
        a.cut_off(False)
    took = until("a is ready again without a restart",
                 lambda: requests.get(a.base + "/readyz", timeout=5).status_code == 200, timeout=10)
    world.call(a, "POST", f"/v1/projects/{PROJECT}/serviceAccounts", json={"accountId": "after-cut-off"})
    issued = sum(outcomes.values())
    took_audit = until("a's spooled audit records reach the database",
                       lambda: world.audit_count(b, "generate_access_token") - issued_before >= issued, timeout=10)
    report(capsys, f"a ready {took:.1f} s after the route came back; its {issued} spooled audit records stored within "
          f"{took_audit:.1f} s more")
