"""Shared harness for the integration suites.

Every test drives the real build/execd binary over HTTP against the real
Kafka (127.0.0.1:9092) and FerretDB (127.0.0.1:27017) started by
scripts/services.sh.  Each test gets its own topic prefix and database, so
tests never see each other's data.  A server that cannot be reached fails
the test loudly; nothing is skipped.
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXECD_BIN = os.environ.get("EXECD_BIN", os.path.join(ROOT, "build", "execd"))
KAFKA = os.environ.get("TEST_KAFKA", "127.0.0.1:9092")
MONGO = os.environ.get("TEST_MONGO", "127.0.0.1:27017")
SAN = os.environ.get("EXECD_SAN", "")
# Sanitizer builds run several times slower; deadlines scale with this.
SLOW = 3.0 if SAN else 1.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(hostport):
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def wait_for(cond, timeout, interval=0.05, what="condition"):
    """Polls cond() until it returns a truthy value; fails after timeout."""
    deadline = time.monotonic() + timeout * SLOW
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout * SLOW:.1f}s waiting for {what} (last={last!r})")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name)


def http(method, url, body=None, headers=None, timeout=10):
    """One HTTP request; returns Response for every status (never raises on 4xx/5xx)."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout * SLOW) as r:
            return Response(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.headers, e.read())


class Execd:
    """A running execd process with its own ports, topic prefix and database."""

    def __init__(self, tmp_path, roles="all", env=None, prefix=None, db=None, name="execd"):
        self.tmp_path = tmp_path
        self.roles = roles
        self.port = free_port()
        self.node_port = free_port()
        self.prefix = prefix or f"t{uuid.uuid4().hex[:10]}-"
        self.db = db or f"execd_{self.prefix.rstrip('-').replace('-', '_')}"
        self.name = name
        self.extra_env = dict(env or {})
        self.proc = None
        self.log_path = os.path.join(str(tmp_path), f"{name}.log")
        self.logs = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def node_url(self):
        return f"http://127.0.0.1:{self.node_port}"

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXECD_")}
        env.update({
            "EXECD_ROLES": self.roles,
            "EXECD_HTTP_LISTEN": f"127.0.0.1:{self.port}",
            "EXECD_NODE_LISTEN": f"127.0.0.1:{self.node_port}",
            "EXECD_KAFKA_BROKERS": KAFKA,
            "EXECD_MONGO_URI": f"mongodb://{MONGO}/{self.db}",
            "EXECD_TOPIC_PREFIX": self.prefix,
            "EXECD_NODE_STATE_DIR": os.path.join(str(self.tmp_path), f"{self.name}-node"),
            "EXECD_LOG_LEVEL": "debug",
        })
        if SAN:
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1:halt_on_error=1")
            env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        env.update(self.extra_env)
        return env

    def start(self, wait=True, args=()):
        assert _reachable(KAFKA), f"Kafka is not reachable at {KAFKA}: run scripts/services.sh up"
        assert _reachable(MONGO), f"FerretDB is not reachable at {MONGO}: run scripts/services.sh up"
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([EXECD_BIN, *args], env=self.env(), stdout=logf,
                                     stderr=subprocess.STDOUT, cwd=str(self.tmp_path))
        logf.close()
        if wait:
            self.wait_live()
        return self

    def wait_live(self, timeout=30):
        def live():
            if self.proc.poll() is not None:
                raise AssertionError(f"execd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return http("GET", self.url + "/api/v1/health/live", timeout=2).status == 200
            except OSError:
                return False
        wait_for(live, timeout, what=f"{self.name} to answer /health/live")

    def get(self, path, **kw):
        return http("GET", self.url + path, **kw)

    def post(self, path, body=None, **kw):
        return http("POST", self.url + path, body=body, **kw)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM:\n"
                                 + self.log()[-4000:])

    def kill9(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def services():
    """Fails (never skips) when Kafka or FerretDB is down."""
    assert _reachable(KAFKA), f"Kafka is not reachable at {KAFKA}: run scripts/services.sh up"
    assert _reachable(MONGO), f"FerretDB is not reachable at {MONGO}: run scripts/services.sh up"


@pytest.fixture
def execd_factory(tmp_path, services):
    procs = []

    def make(**kw):
        e = Execd(tmp_path, name=kw.pop("name", f"execd{len(procs)}"), **kw)
        procs.append(e)
        return e

    yield make
    failures = []
    for e in procs:
        if e.proc is not None and e.proc.poll() is None:
            rc = e.stop()
            if rc != 0:
                failures.append(f"{e.name} exited {rc} on SIGTERM:\n{e.log()[-3000:]}")
        elif e.proc is not None and e.proc.returncode not in (0, -9, 137):
            # A sanitizer report or crash after a test's own stop.
            if "ERROR: AddressSanitizer" in e.log() or "runtime error" in e.log():
                failures.append(f"{e.name} sanitizer report:\n{e.log()[-3000:]}")
    # Each test's database is its own; drop it so FerretDB does not fill up.
    try:
        import pymongo
        client = pymongo.MongoClient(f"mongodb://{MONGO}/", serverSelectionTimeoutMS=3000)
        for db in {e.db for e in procs}:
            client.drop_database(db)
        client.close()
    except Exception as exc:  # cleanup only: the test's own outcome stands
        print(f"warning: cannot drop test databases: {exc}")
    for e in procs:
        log = e.log()
        if "ERROR: AddressSanitizer" in log or "runtime error:" in log:
            failures.append(f"{e.name} sanitizer report:\n{log[-3000:]}")
    if failures:
        pytest.fail("\n".join(failures))


def mongo(db):
    """A pymongo Database handle on the test FerretDB."""
    import pymongo
    client = pymongo.MongoClient(f"mongodb://{MONGO}/", serverSelectionTimeoutMS=5000)
    return client[db]


def kcat(*args, input=None, timeout=30):
    """Runs kcat against the test broker; returns stdout bytes."""
    r = subprocess.run(["kcat", "-b", KAFKA, *args], input=input, capture_output=True,
                       timeout=timeout)
    assert r.returncode == 0, f"kcat {' '.join(args)} failed: {r.stderr.decode(errors='replace')}"
    return r.stdout
