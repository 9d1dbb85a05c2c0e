"""Harness for the container deployment: replicas of one image, roles per replica.

The image (EXECD_IMAGE, default execd:dev) is built by `scripts/container.sh build` (what
`make test-container` runs first). Kafka and FerretDB run on the host, started here through
scripts/services.sh; every replica is a podman container on the host network with its own
EXECD_ROLES and HTTP port, all of one deployment sharing a topic prefix and a database, so
tests never see each other's data. podman runs with the flags these machines need:
`--runtime runc --cgroup-manager=cgroupfs` (crun refuses the hybrid cgroups), explicit
ulimits (the defaults are refused) and --network=host. Nothing is skipped: a missing image,
podman or server fails the test with the reason.
"""
import importlib.util
import json
import os
import subprocess
import time
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
IMAGE = os.environ.get("EXECD_IMAGE", "execd:dev")
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
RUN_FLAGS = ["--network=host", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
# What bubblewrap needs inside a container here (README "Container"): root in the container,
# CAP_SYS_ADMIN, /proc unmasked (bwrap mounts a fresh proc; podman's masked /proc paths forbid
# that) and the host's cgroup tree writable for the per-pod memory/pids/cpu limits.
NODE_FLAGS = ["--user", "root", "--cap-add", "SYS_ADMIN", "--security-opt", "unmask=/proc/*",
              "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]

# The integration harness's helpers (http, wait_for, free_port, mongo), loaded under their own
# module name so the two conftest files do not shadow each other.
_spec = importlib.util.spec_from_file_location(
    "execd_integration_harness", os.path.join(ROOT, "test", "integration", "conftest.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
http, wait_for, free_port, mongo = harness.http, harness.wait_for, harness.free_port, harness.mongo
KAFKA, MONGO = harness.KAFKA, harness.MONGO


def podman(*args, check=True, timeout=120, input=None):
    r = subprocess.run([*PODMAN, *args], capture_output=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({r.returncode}):\n"
                             f"{r.stderr.decode(errors='replace')}")
    return r


def image_run(*args, env=None, timeout=60):
    """`podman run --rm IMAGE args` (execd is the entrypoint); returns the CompletedProcess."""
    e = []
    for k, v in (env or {}).items():
        e += ["-e", f"{k}={v}"]
    return podman("run", "--rm", "--no-healthcheck", *RUN_FLAGS, *e, IMAGE, *args,
                  check=False, timeout=timeout)


@pytest.fixture(scope="session")
def image():
    """The image's inspect record; fails when it was not built."""
    r = podman("image", "inspect", IMAGE, check=False)
    assert r.returncode == 0, (f"image {IMAGE} is missing: run scripts/container.sh build "
                               f"(make test-container does)\n{r.stderr.decode(errors='replace')}")
    return json.loads(r.stdout)[0]


@pytest.fixture(scope="session")
def image_roles(image):
    r = image_run("--list-roles")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout.decode().split()


@pytest.fixture(scope="session")
def image_keys(image):
    """Every EXECD_* key the image's config table knows."""
    r = image_run("--print-config")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return {line.split("=", 1)[0] for line in r.stdout.decode().splitlines() if "=" in line}


@pytest.fixture(scope="session")
def host_services():
    """Kafka and FerretDB on the host, through the project's own script."""
    r = subprocess.run([os.path.join(ROOT, "scripts", "services.sh"), "up"], capture_output=True,
                       timeout=180)
    assert r.returncode == 0, ("scripts/services.sh up failed:\n"
                               + r.stdout.decode(errors="replace")
                               + r.stderr.decode(errors="replace"))
    assert harness._reachable(KAFKA), f"Kafka is not reachable at {KAFKA}"
    assert harness._reachable(MONGO), f"FerretDB is not reachable at {MONGO}"


class Replica:
    """One container of the image running EXECD_ROLES=roles."""

    def __init__(self, dep, name, roles, node=False, env=None):
        self.dep = dep
        self.name = name
        self.roles = roles
        self.node = node
        self.port = free_port()
        self.node_port = free_port() if node else None
        self.cname = f"execd-test-{dep.prefix.rstrip('-')}-{name}"
        self.extra_env = dict(env or {})
        self.exit_code = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def node_url(self):
        return f"http://127.0.0.1:{self.node_port}"

    def env(self):
        env = {
            "EXECD_ROLES": self.roles,
            "EXECD_HTTP_LISTEN": f"127.0.0.1:{self.port}",
            "EXECD_KAFKA_BROKERS": KAFKA,
            "EXECD_MONGO_URI": f"mongodb://{MONGO}/{self.dep.db}",
            "EXECD_TOPIC_PREFIX": self.dep.prefix,
            "EXECD_LOG_LEVEL": "debug",
            "EXECD_BCRYPT_COST": "4",
        }
        if self.node:
            env["EXECD_NODE_LISTEN"] = f"127.0.0.1:{self.node_port}"
            env["EXECD_NODE_TOKEN"] = self.dep.node_token
        env.update(self.dep.common_env)
        env.update(self.extra_env)
        return env

    def start(self, wait=True):
        args = ["run", "-d", "--name", self.cname, *RUN_FLAGS]
        # Like the Kubernetes Deployments (readOnlyRootFilesystem): only the state volume and
        # podman's tmpfs /tmp are writable. The node keeps a writable root (its sandboxes).
        args += NODE_FLAGS if self.node else ["--read-only"]
        for k, v in self.env().items():
            args += ["-e", f"{k}={v}"]
        # podman cannot start its systemd healthcheck timer here (no systemd): it says so on
        # stderr and carries on; the tests run the HEALTHCHECK with `podman healthcheck run`.
        podman(*args, IMAGE)
        if wait:
            self.wait_live()
        return self

    def state(self):
        r = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.cname,
                   check=False)
        return r.stdout.decode().split() if r.returncode == 0 else ["gone", "-1"]

    def wait_live(self, timeout=60):
        def live():
            st = self.state()
            if st[0] in ("exited", "stopped", "gone"):
                raise AssertionError(f"{self.name} ({self.roles}) exited {st[1]}:\n{self.logs()}")
            try:
                return http("GET", self.url + "/api/v1/health/live", timeout=2).status == 200
            except OSError:
                return False
        wait_for(live, timeout, interval=0.2, what=f"{self.name} ({self.roles}) to be live")

    def wait_ready(self, timeout=60):
        def ready():
            try:
                r = http("GET", self.url + "/api/v1/health/ready", timeout=3)
            except OSError:
                return None
            return r if r.status == 200 else None
        return wait_for(ready, timeout, interval=0.2, what=f"{self.name} to be ready").json()

    def healthcheck(self):
        """Runs the image's HEALTHCHECK in the container; returns podman's exit code."""
        return podman("healthcheck", "run", self.cname, check=False).returncode

    def logs(self):
        r = podman("logs", self.cname, check=False)
        return (r.stdout + r.stderr).decode(errors="replace")[-6000:]

    def stop(self, timeout=20):
        """SIGTERM (podman stop) and wait; returns the container's exit code."""
        podman("stop", "-t", str(timeout), self.cname, timeout=timeout + 30)
        self.exit_code = int(self.state()[1])
        return self.exit_code

    def remove(self):
        podman("rm", "-f", "-v", self.cname, check=False)


class Deployment:
    """Replicas of one deployment: one topic prefix, one database, one node token."""

    def __init__(self, image_keys):
        self.prefix = f"c{uuid.uuid4().hex[:10]}-"
        self.db = f"execd_{self.prefix.rstrip('-')}"
        self.node_token = uuid.uuid4().hex
        self.image_keys = image_keys
        self.common_env = {}
        self.replicas = []

    def add(self, name, roles, **kw):
        r = Replica(self, name, roles, **kw)
        unknown = set(r.env()) - self.image_keys
        assert not unknown, f"the image's config table lacks {sorted(unknown)}"
        self.replicas.append(r)
        return r


@pytest.fixture
def deployment(host_services, image, image_keys):
    dep = Deployment(image_keys)
    yield dep
    failures = []
    for r in dep.replicas:
        st = r.state()
        if st[0] == "running":
            rc = r.stop()
            if rc != 0:
                failures.append(f"{r.name} exited {rc} on SIGTERM:\n{r.logs()}")
        r.remove()
    try:
        import pymongo
        client = pymongo.MongoClient(f"mongodb://{MONGO}/", serverSelectionTimeoutMS=3000)
        client.drop_database(dep.db)
        client.close()
    except Exception as exc:  # cleanup only: the test's own outcome stands
        print(f"warning: cannot drop {dep.db}: {exc}")
    if failures:
        pytest.fail("\n".join(failures))


def groups(roles):
    """The replica layout of deploy/compose.yaml, restricted to the roles the image has:
    api,sse · coordinator,saga,store,projection,results (+ any other role) · worker,monitor ·
    node. Empty groups are dropped."""
    have = list(roles)
    layout = [["api", "sse"], ["coordinator", "saga", "store", "projection", "results"],
              ["worker", "monitor"]]
    placed = {r for g in layout for r in g} | {"node"}
    layout[1] += [r for r in have if r not in placed]
    out = []
    for g in layout:
        g = [r for r in g if r in have]
        if g:
            out.append(",".join(g))
    if "node" in have:
        out.append("node")
    return out


def wait_ms(start):
    return int((time.monotonic() - start) * 1000)
