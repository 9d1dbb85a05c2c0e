"""Harness of the end-to-end acceptance suite (issue 5).

Everything here drives the real binary over HTTP, exactly as a client
would: register and log in (Bearer token), POST /api/v1/execute, poll
GET /api/v1/executions/{id}/result.  Kafka (kcat), the event store (pymongo)
and the embedded node's Kubernetes API are read only to check what the
pipeline did.

The `cluster` fixture runs every test in two deployments:

  one    one process, EXECD_ROLES=all;
  split  three processes sharing one topic prefix and one database:
         api,store(,sse) · coordinator,results,projection(,saga) ·
         node,worker,monitor (worker and monitor pointed at that process's
         node with EXECD_K8S_API).

The shared integration harness (test/integration/conftest.py) is loaded
into this module's namespace, so this conftest offers everything that one
does (Execd, http, wait_for, mongo, kcat, its fixtures) plus the cluster.
Both files are imported as module "conftest"; being a superset keeps
`from conftest import ...` right for either directory whichever loads last.
"""
import json
import os
import subprocess
import threading
import time
import urllib.parse
import uuid
from http.client import HTTPConnection

import pytest

_INTEGRATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration",
                            "conftest.py")
with open(_INTEGRATION) as _f:
    exec(compile(_f.read(), os.path.abspath(_INTEGRATION), "exec"))  # noqa: S102

NS = "execd"
PASSWORD = "password-123"
TERMINAL_STATUS = {"completed", "failed", "timeout", "cancelled"}
TERMINAL_EVENTS = {"execution_completed", "execution_failed", "execution_timeout",
                   "execution_cancelled"}

# Settings every deployment of this suite shares: no per-IP HTTP limits (the
# suite submits hundreds of runs from one address), cheap bcrypt, a short
# deadline so an endless loop ends fast, more node slots than the global cap
# so the cap (not the node) is what bounds the running pods.
BASE_ENV = {
    "EXECD_RATE_LIMIT_ENABLED": "false",
    "EXECD_BCRYPT_COST": "4",
    "EXECD_ADMIN_USERNAME": "e2eadmin",
    "EXECD_ADMIN_PASSWORD": "e2e-admin-password",
    "EXECD_LOG_LEVEL": "info",
    "EXECD_EXECUTION_TIMEOUT_SECONDS": "2",
    "EXECD_MAX_CONCURRENT": "3",
    "EXECD_NODE_SLOTS": "4",
    "EXECD_USER_MAX_CONCURRENT": "20",
    "EXECD_USER_MAX_PER_MINUTE": "10000",
    "EXECD_POD_MEMORY_LIMIT": "128Mi",
    "EXECD_COORDINATOR_SWEEP_MS": "200",
}


def available_roles():
    r = subprocess.run([EXECD_BIN, "--list-roles"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


class Cluster:
    """One deployment of execd: `procs` share a topic prefix and a database."""

    def __init__(self, mode, tmp_path, env=None):
        self.mode = mode
        self.env = {**BASE_ENV, **(env or {})}
        roles = available_roles()
        self.has_saga = "saga" in roles
        self.has_sse = "sse" in roles
        if mode == "one":
            self.procs = [Execd(tmp_path, roles="all", env=self.env, name="all")]
            self.api = self.node = self.procs[0]
        else:
            api_roles = "api,store" + (",sse" if self.has_sse else "")
            core_roles = "coordinator,results,projection" + (",saga" if self.has_saga else "")
            self.api = Execd(tmp_path, roles=api_roles, env=self.env, name="api")
            core = Execd(tmp_path, roles=core_roles, env=self.env, prefix=self.api.prefix,
                         db=self.api.db, name="core")
            self.node = Execd(tmp_path, roles="node,worker,monitor", env=self.env,
                              prefix=self.api.prefix, db=self.api.db, name="node")
            self.node.extra_env["EXECD_K8S_API"] = self.node.node_url
            self.procs = [self.api, core, self.node]
        self.prefix = self.api.prefix
        self.db = self.api.db

    @property
    def url(self):
        return self.api.url

    @property
    def node_url(self):
        return self.node.node_url

    def start(self):
        for p in self.procs:
            p.start(wait=False)
        for p in self.procs:
            p.wait_live()
        for p in self.procs:
            def ready(p=p):
                if p.proc.poll() is not None:
                    raise AssertionError(f"{p.name} exited {p.proc.returncode}:\n{p.log()[-3000:]}")
                try:
                    return http("GET", p.url + "/api/v1/health/ready", timeout=5).status == 200
                except OSError:
                    return False
            try:
                wait_for(ready, 60, interval=0.1, what=f"{p.name} ready")
            except AssertionError:
                raise AssertionError(self.logs())
        return self

    def stop(self):
        """SIGTERM every process (last started first); every one must exit 0."""
        bad = []
        for p in reversed(self.procs):
            rc = p.stop()
            if rc not in (0, None):
                bad.append(f"{p.name} exited {rc}:\n{p.log()[-3000:]}")
            log = p.log()
            if "ERROR: AddressSanitizer" in log or "runtime error:" in log:
                bad.append(f"{p.name} sanitizer report:\n{log[-3000:]}")
        return bad

    def drop(self):
        try:
            import pymongo
            c = pymongo.MongoClient(f"mongodb://{MONGO}/", serverSelectionTimeoutMS=3000)
            c.drop_database(self.db)
            c.close()
        except Exception as exc:  # cleanup only
            print(f"warning: cannot drop {self.db}: {exc}")

    def logs(self, n=3000):
        return "\n".join(f"--- {p.name} ---\n{p.log()[-n:]}" for p in self.procs)

    # ---- HTTP as a client ----

    def user(self, name=None):
        name = name or f"u{uuid.uuid4().hex[:10]}"
        r = http("POST", self.url + "/api/v1/auth/register",
                 {"username": name, "email": f"{name}@example.com", "password": PASSWORD})
        assert r.status == 200, (r.status, r.body)
        return self.login(name, PASSWORD, user_id=r.json()["user_id"])

    def login(self, name, password, user_id=None):
        r = http("POST", self.url + "/api/v1/auth/login", {"username": name, "password": password})
        assert r.status == 200, (r.status, r.body)
        return User(self, name, r.json()["access_token"], user_id)

    def admin(self):
        return self.login(BASE_ENV["EXECD_ADMIN_USERNAME"], BASE_ENV["EXECD_ADMIN_PASSWORD"])

    # ---- observation ----

    def topic(self, name):
        """Every message on <prefix><name>, decoded."""
        out = kcat("-C", "-t", self.prefix + name, "-e", "-q", "-o", "beginning", "-f", "%s\n",
                   timeout=60)
        return [json.loads(line) for line in out.decode().splitlines() if line.strip()]

    def pods(self):
        r = http("GET", f"{self.node_url}/api/v1/namespaces/{NS}/pods")
        assert r.status == 200, r.body
        return r.json()["items"]


class User:
    def __init__(self, cluster, name, token, user_id=None):
        self.c = cluster
        self.name = name
        self.token = token
        self.user_id = user_id

    def req(self, method, path, body=None, headers=None, timeout=10):
        h = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        return http(method, self.c.url + path, body=body, headers=h, timeout=timeout)

    def submit(self, script, lang="python", lang_version="3.11", headers=None):
        body = {"script": script, "lang": lang, "lang_version": lang_version}
        return self.req("POST", "/api/v1/execute", body, headers=headers)

    def run(self, script, **kw):
        """Submits; returns the execution id (asserts 200 queued)."""
        r = self.submit(script, **kw)
        assert r.status == 200, (r.status, r.body)
        body = r.json()
        assert body["status"] == "queued" and body["execution_id"], body
        return body["execution_id"]

    def result(self, eid):
        r = self.req("GET", f"/api/v1/executions/{eid}/result")
        assert r.status == 200, (r.status, r.body)
        return r.json()

    def wait(self, eid, timeout=30, statuses=TERMINAL_STATUS):
        """Polls the result until its status is one of statuses."""
        box = {}

        def done():
            box["r"] = self.result(eid)
            return box["r"]["status"] in statuses
        try:
            wait_for(done, timeout, interval=0.05, what=f"execution {eid} to end")
        except AssertionError:
            raise AssertionError(f"last result {box.get('r')}\n{self.c.logs()}")
        return box["r"]

    def events(self, eid, **query):
        q = urllib.parse.urlencode(query, doseq=True)
        r = self.req("GET", f"/api/v1/executions/{eid}/events" + (f"?{q}" if q else ""))
        assert r.status == 200, (r.status, r.body)
        return r.json()


class PodWatch:
    """Follows the node's pods with ?watch=true and records the most pods
    ever in phase Running at once (and every phase transition seen)."""

    def __init__(self, node_url):
        self.node_url = node_url
        self.phase = {}
        self.max_running = 0
        self.events = 0
        self.error = None
        self.stop_flag = False
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10), f"pod watch did not start: {self.error}"
        return self

    def __exit__(self, *exc):
        self.stop_flag = True
        self.thread.join(15)

    def _apply(self, typ, pod):
        name = pod["metadata"]["name"]
        if typ == "DELETED":
            self.phase.pop(name, None)
        else:
            self.phase[name] = (pod.get("status") or {}).get("phase")
        running = sum(1 for p in self.phase.values() if p == "Running")
        self.max_running = max(self.max_running, running)

    def _run(self):
        host, port = self.node_url.rsplit("/", 1)[-1].split(":")
        try:
            conn = HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", f"/api/v1/namespaces/{NS}/pods")
            lst = json.loads(conn.getresponse().read())
            for pod in lst["items"]:
                self._apply("ADDED", pod)
            rv = lst["metadata"]["resourceVersion"]
            while not self.stop_flag:
                conn.request("GET", f"/api/v1/namespaces/{NS}/pods?watch=true&resourceVersion={rv}"
                             "&allowWatchBookmarks=true&timeoutSeconds=5")
                resp = conn.getresponse()
                assert resp.status == 200, resp.read()
                self.ready.set()
                while not self.stop_flag:
                    line = resp.readline()
                    if not line:
                        break
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    if ev["type"] == "ERROR":
                        raise AssertionError(f"watch error: {ev}")
                    rv = ev["object"]["metadata"].get("resourceVersion", rv)
                    if ev["type"] != "BOOKMARK":
                        self.events += 1
                        self._apply(ev["type"], ev["object"])
                resp.close()
        except Exception as exc:  # reported by check()
            if not self.stop_flag:
                self.error = repr(exc)
        finally:
            self.ready.set()

    def check(self):
        assert self.error is None, f"the pod watch broke: {self.error}"


@pytest.fixture(scope="module", params=["one", "split"])
def cluster(request, tmp_path_factory):
    """The shared deployment of a test module, in both modes."""
    env = getattr(request.module, "CLUSTER_ENV", {})
    c = Cluster(request.param, tmp_path_factory.mktemp(f"e2e-{request.param}"), env)
    try:
        c.start()
    except BaseException:
        print(c.logs())
        c.stop()
        c.drop()
        raise
    yield c
    bad = c.stop()
    c.drop()
    assert not bad, "\n".join(bad)
