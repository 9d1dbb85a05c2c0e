"""The node role as a Kubernetes client sees it.

Each test starts the real binary with EXECD_ROLES=node and talks to
execd.node_url with urllib exactly as worker/monitor would: ConfigMaps, Pods,
NetworkPolicies, logs, list with selectors, watch with resourceVersion and
bookmarks, Status errors, slots and restart recovery.
"""
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from conftest import SLOW, Execd, http, wait_for

TERMINAL = ("Succeeded", "Failed")


class Kube:
    """A minimal Kubernetes client for the node."""

    def __init__(self, url, token=None, ns="default"):
        self.url = url
        self.ns = ns
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def req(self, method, path, body=None, **kw):
        return http(method, self.url + path, body=body, headers=self.headers, **kw)

    def path(self, resource, name=None, ns=None, group=None):
        ns = ns or self.ns
        base = f"/apis/{group}/namespaces/{ns}" if group else f"/api/v1/namespaces/{ns}"
        return f"{base}/{resource}" + (f"/{name}" if name else "")

    def create_cm(self, name, data, ns=None):
        r = self.req("POST", self.path("configmaps", ns=ns),
                     {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                      "data": data})
        assert r.status == 201, r.body
        return r.json()

    def create_pod(self, body, ns=None, expect=201):
        r = self.req("POST", self.path("pods", ns=ns), body)
        assert r.status == expect, r.body
        return r.json()

    def pod(self, name, ns=None):
        r = self.req("GET", self.path("pods", name, ns=ns))
        assert r.status == 200, r.body
        return r.json()

    def log(self, name, ns=None, **params):
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        return self.req("GET", self.path("pods", name, ns=ns) + "/log" + q)

    def list_pods(self, selector=None, ns=None, **params):
        if selector is not None:
            params["labelSelector"] = selector
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        r = self.req("GET", self.path("pods", ns=ns) + q)
        assert r.status == 200, r.body
        return r.json()

    def wait_terminal(self, name, timeout=30, ns=None):
        def done():
            p = self.pod(name, ns=ns)
            return p if p["status"]["phase"] in TERMINAL else None
        return wait_for(done, timeout, interval=0.05, what=f"pod {name} to finish")

    def run_script(self, name, script, image="python:3.11-slim", ns=None, **kw):
        """ConfigMap + Pod running script; returns the pod as created."""
        self.create_cm(name, {"main.py": script}, ns=ns)
        return self.create_pod(pod_body(name, image=image, **kw), ns=ns)

    def watch(self, rv=None, selector=None, timeout=10, bookmarks=True, ns=None):
        """Opens a watch; returns (response, line iterator of decoded events)."""
        params = {"watch": "true", "timeoutSeconds": str(timeout)}
        if rv is not None:
            params["resourceVersion"] = str(rv)
        if bookmarks:
            params["allowWatchBookmarks"] = "true"
        if selector:
            params["labelSelector"] = selector
        url = self.url + self.path("pods", ns=ns) + "?" + urllib.parse.urlencode(params)
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=self.headers),
                                      timeout=(timeout + 10) * SLOW)
        assert resp.status == 200

        def events():
            for line in resp:
                line = line.strip()
                if line:
                    yield json.loads(line)
        return resp, events()


class Watcher(threading.Thread):
    """Collects watch events in the background until the watch ends."""

    def __init__(self, kube, rv, selector=None, timeout=20):
        super().__init__(daemon=True)
        self.events = []
        self.resp, self.iter = kube.watch(rv=rv, selector=selector, timeout=timeout)
        self.start()

    def run(self):
        try:
            for ev in self.iter:
                self.events.append(ev)
        except (OSError, ValueError, AttributeError):
            pass  # closed by close() from the test thread

    def for_pod(self, name):
        return [e for e in self.events
                if e["type"] != "BOOKMARK" and e["object"]["metadata"].get("name") == name]

    def close(self):
        try:
            self.resp.close()
        except OSError:
            pass


def pod_body(name, image="python:3.11-slim", command=None, args=None, labels=None,
             deadline=None, memory=None, cm=None, extra_volumes=(), extra_mounts=(),
             env=None, workdir=None, security=None, termination_path=None, policy=None):
    container = {
        "name": "main",
        "image": image,
        "command": command if command is not None else ["python", "-u", "/scripts/main.py"],
        "volumeMounts": [{"name": "code", "mountPath": "/scripts", "readOnly": True},
                         *extra_mounts],
    }
    if args is not None:
        container["args"] = args
    if memory:
        container["resources"] = {"limits": {"memory": memory, "cpu": "1"},
                                  "requests": {"memory": memory, "cpu": "1"}}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if workdir:
        container["workingDir"] = workdir
    if security is not None:
        container["securityContext"] = security
    if termination_path:
        container["terminationMessagePath"] = termination_path
    if policy:
        container["terminationMessagePolicy"] = policy
    spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [{"name": "code", "configMap": {"name": cm or name}}, *extra_volumes],
    }
    if deadline:
        spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {"app": "execd-test"}},
            "spec": spec}


def terminated(pod):
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


def start_node(execd_factory, **env):
    e = execd_factory(roles="node", env={k: str(v) for k, v in env.items()})
    e.start()
    k = Kube(e.node_url, token=env.get("EXECD_NODE_TOKEN"))
    wait_for(lambda: _ready(e), 10, what="node to answer /health/ready on its own port")
    return e, k


def _ready(e):
    try:
        return http("GET", e.node_url + "/api/v1/health/ready", timeout=2).status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory):
    """One node for the tests that need no special settings (each gets its own namespace)."""
    e = Execd(tmp_path_factory.mktemp("node"), roles="node", name="shared-node")
    e.start()
    try:
        wait_for(lambda: _ready(e), 10, what="node to answer /health/ready on its own port")
    except BaseException:
        e.stop()
        raise
    yield e
    rc = e.stop()
    log = e.log()
    assert rc == 0, log[-3000:]
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-3000:]


@pytest.fixture
def node(shared_node):
    return shared_node, Kube(shared_node.node_url, ns=f"t-{uuid.uuid4().hex[:12]}")


# --------------------------------------------------------------------------- tests


def test_hello_from_configmap_and_watch_sees_every_phase_in_order(node):
    e, k = node
    rv = k.list_pods()["metadata"]["resourceVersion"]
    w = Watcher(k, rv)
    k.run_script("hello", 'print("hello")\n')
    pod = k.wait_terminal("hello")
    assert pod["status"]["phase"] == "Succeeded"
    t = terminated(pod)
    assert t["exitCode"] == 0 and t["reason"] == "Completed"
    assert t["startedAt"] and t["finishedAt"] and pod["status"]["startTime"]
    assert pod["metadata"]["uid"] and pod["metadata"]["creationTimestamp"]
    assert pod["spec"]["containers"][0]["command"] == ["python", "-u", "/scripts/main.py"]
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds["PodScheduled"] == "True" and conds["Ready"] == "False"
    r = k.log("hello")
    assert r.status == 200 and r.body == b"hello\n"
    assert k.log("hello", container="main").body == b"hello\n"
    wait_for(lambda: len(w.for_pod("hello")) >= 3, 5, what="three watch events")
    evs = w.for_pod("hello")
    w.close()
    kinds = [(ev["type"], ev["object"]["status"]["phase"]) for ev in evs]
    assert kinds[:3] == [("ADDED", "Pending"), ("MODIFIED", "Running"),
                         ("MODIFIED", "Succeeded")], kinds
    rvs = [int(ev["object"]["metadata"]["resourceVersion"]) for ev in evs]
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs) and rvs[0] > int(rv)
    assert evs[1]["object"]["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    # The node's own health port and the main server's ready report both list the limits.
    ready = http("GET", e.node_url + "/api/v1/health/ready").json()
    limits = ready["checks"]["node"]["limits"]
    assert limits["user_namespaces"] and limits["seccomp"]
    assert limits["cgroup_memory"] and limits["cgroup_pids"]
    assert http("GET", e.node_url + "/api/v1/health/live").status == 200
    main_ready = e.get("/api/v1/health/ready").json()
    assert main_ready["checks"]["node"]["limits"] == limits


def test_watch_resumed_from_a_bookmark_misses_nothing(node):
    e, k = node
    k.run_script("first", 'print("1")\n')
    k.wait_terminal("first")
    resp, it = k.watch(rv=k.list_pods()["metadata"]["resourceVersion"], timeout=5)
    bookmark = None
    for ev in it:
        if ev["type"] == "BOOKMARK":
            bookmark = ev["object"]["metadata"]["resourceVersion"]
            break
    resp.close()
    assert bookmark, "no BOOKMARK within the watch"
    names = [f"after-{i}" for i in range(3)]
    for n in names:
        k.run_script(n, f'print("{n}")\n')
    for n in names:
        assert k.wait_terminal(n)["status"]["phase"] == "Succeeded"
    resp, it = k.watch(rv=bookmark, timeout=2)
    seen = {}
    for ev in it:
        if ev["type"] in ("ADDED", "MODIFIED"):
            md = ev["object"]["metadata"]
            seen.setdefault(md["name"], []).append(ev["object"]["status"]["phase"])
    resp.close()
    for n in names:
        assert seen.get(n) == ["Pending", "Running", "Succeeded"], seen
    assert "first" not in seen


def test_exit_code_and_termination_message(node):
    e, k = node
    k.run_script("exit3", 'import sys\nopen("/dev/termination-log","w").write("bad input")\n'
                          'print("about to fail")\nsys.exit(3)\n')
    pod = k.wait_terminal("exit3")
    assert pod["status"]["phase"] == "Failed"
    t = terminated(pod)
    assert t["exitCode"] == 3 and t["reason"] == "Error" and t["message"] == "bad input"
    assert k.log("exit3").body == b"about to fail\n"
    # Custom path, capped at 4096 bytes like the kubelet; fallback to logs on error.
    k.run_script("msg", 'open("/tmp/msg","w").write("x"*10000)\n', termination_path="/tmp/msg")
    assert len(terminated(k.wait_terminal("msg"))["message"]) == 4096
    k.run_script("fallback", 'print("last words")\nraise SystemExit(2)\n',
                 policy="FallbackToLogsOnError")
    t = terminated(k.wait_terminal("fallback"))
    assert t["exitCode"] == 2 and "last words" in t["message"]


def test_active_deadline_fails_with_deadline_exceeded_within_two_seconds(node):
    e, k = node
    t0 = time.monotonic()
    k.run_script("spin", "while True:\n    pass\n", deadline=1)
    pod = k.wait_terminal("spin", timeout=5)
    elapsed = time.monotonic() - t0
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert terminated(pod)["reason"] == "DeadlineExceeded"
    assert elapsed < 2.0 * SLOW, f"deadline took {elapsed:.2f}s"


def test_memory_limit_oom_killed(node):
    e, k = node
    k.run_script("oom", "x = bytearray(500 * 1024 * 1024)\nprint('allocated')\n",
                 memory="64Mi")
    pod = k.wait_terminal("oom")
    t = terminated(pod)
    assert pod["status"]["phase"] == "Failed"
    assert t["reason"] == "OOMKilled" and t["exitCode"] == 137, t
    assert b"allocated" not in k.log("oom").body
    assert pod["status"]["qosClass"] == "Guaranteed"


def test_spec_fields_env_args_workdir_emptydir_and_run_as_user(node):
    e, k = node
    script = ("import os, sys\n"
              "print(os.getuid(), os.getgid(), os.getcwd(), os.environ['GREETING'], sys.argv[1:])\n"
              "open('data.txt', 'w').write('ok')\n"
              "print(open('/work/data.txt').read())\n"
              "st = os.statvfs('/work'); print('size', st.f_blocks * st.f_frsize)\n"
              "print(os.environ['HOSTNAME'])\n")
    body = pod_body("fields", command=["python", "/scripts/main.py"],
                    args=["$(GREETING)-arg", "plain"], env={"GREETING": "hi"},
                    workdir="/work", security={"runAsUser": 1000, "runAsGroup": 2000},
                    extra_volumes=[{"name": "scratch", "emptyDir": {"sizeLimit": "8Mi"}}],
                    extra_mounts=[{"name": "scratch", "mountPath": "/work"}])
    k.create_cm("fields", {"main.py": script})
    k.create_pod(body)
    pod = k.wait_terminal("fields")
    out = k.log("fields").body.decode()
    assert pod["status"]["phase"] == "Succeeded", out
    lines = out.splitlines()
    assert lines[0] == "1000 2000 /work hi ['hi-arg', 'plain']"
    assert lines[1] == "ok"
    assert lines[2] == f"size {8 * 1024 * 1024}"
    assert lines[3] == "fields"
    # Default: nobody, and other runtimes from the table.
    k.create_cm("sh", {"main.sh": "id -u; echo $0"})
    k.create_pod(pod_body("sh", image="bash:5.2", command=["bash", "/scripts/main.sh"]))
    assert k.wait_terminal("sh")["status"]["phase"] == "Succeeded"
    assert k.log("sh").body.decode().split() == ["65534", "/scripts/main.sh"]


def test_unavailable_image_fails_like_err_image_pull(node):
    e, k = node
    k.run_script("noimg", 'print("x")\n', image="cobol:85")
    pod = k.wait_terminal("noimg")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "ErrImagePull"
    assert "cobol:85" in pod["status"]["message"] and "python:3.11-slim" in pod["status"]["message"]
    assert terminated(pod)["reason"] == "ErrImagePull"
    # A missing ConfigMap is a config error with a clear message, not a hang.
    k.create_pod(pod_body("nocm", cm="does-not-exist"))
    pod = k.wait_terminal("nocm")
    assert pod["status"]["phase"] == "Failed"
    assert 'configmap "does-not-exist" not found' in terminated(pod)["message"]


def test_status_errors_404_409_422_400(node):
    e, k = node
    r = k.req("GET", k.path("pods", "missing"))
    s = r.json()
    assert r.status == 404 and s["kind"] == "Status" and s["reason"] == "NotFound"
    assert s["code"] == 404 and s["status"] == "Failure" and s["details"]["name"] == "missing"
    assert s["message"] == 'pods "missing" not found'
    assert k.req("DELETE", k.path("pods", "missing")).status == 404
    assert k.req("GET", k.path("configmaps", "missing")).json()["reason"] == "NotFound"
    assert k.log("missing").status == 404
    k.create_cm("dup", {"a": "b"})
    r = k.req("POST", k.path("configmaps"), {"metadata": {"name": "dup"}, "data": {}})
    assert r.status == 409 and r.json()["reason"] == "AlreadyExists"
    r = k.req("POST", k.path("pods"), {"metadata": {"name": "Bad_Name"}, "spec": {}})
    s = r.json()
    assert r.status == 422 and s["reason"] == "Invalid" and s["code"] == 422
    fields = {c["field"] for c in s["details"]["causes"]}
    assert {"metadata.name", "spec.containers"} <= fields, s
    body = pod_body("noimage")
    del body["spec"]["containers"][0]["image"]
    body["spec"]["containers"][0]["name"] = "UPPER"
    body["spec"]["activeDeadlineSeconds"] = 0
    body["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    s = k.req("POST", k.path("pods"), body).json()
    fields = {c["field"] for c in s["details"]["causes"]}
    assert {"spec.containers[0].image", "spec.containers[0].name",
            "spec.activeDeadlineSeconds", "spec.containers[0].resources.limits[memory]"} <= fields
    assert all(c["reason"].startswith("FieldValue") for c in s["details"]["causes"])
    body = pod_body("always")
    body["spec"]["restartPolicy"] = "Always"
    assert k.req("POST", k.path("pods"), body).status == 422
    r = k.req("POST", k.path("pods"), b"{not json")
    assert r.status == 400 and r.json()["reason"] == "BadRequest"
    r = k.req("POST", k.path("pods"), {**pod_body("x"), "metadata": {
        "name": "x", "namespace": k.ns + "-elsewhere"}})
    assert r.status == 400
    r = k.req("GET", k.path("pods") + "?labelSelector=" + urllib.parse.quote("a in (b"))
    assert r.status == 400 and r.json()["kind"] == "Status"
    # Pods are not created by failed requests.
    assert k.list_pods()["items"] == []


def test_token_required_when_configured(execd_factory):
    e, k = start_node(execd_factory, EXECD_NODE_TOKEN="s3cret-token")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        r = http("GET", e.node_url + "/api/v1/namespaces/default/pods", headers=headers)
        s = r.json()
        assert r.status == 401 and s["kind"] == "Status" and s["reason"] == "Unauthorized"
    r = http("POST", e.node_url + "/api/v1/namespaces/default/configmaps",
             body={"metadata": {"name": "x"}}, headers={"Authorization": "Bearer wrong"})
    assert r.status == 401
    assert k.list_pods()["kind"] == "PodList"
    assert http("GET", e.node_url + "/api/v1/health/ready").status == 200


def test_label_selectors_list_and_delete_collection(node):
    e, k = node
    k.create_cm("ls", {"main.py": "pass\n"})
    a, b, other = "a" + k.ns, "b" + k.ns, k.ns + "-other"
    specs = {"a1": {"app": a, "tier": "x"}, "a2": {"app": a}, "b1": {"app": b, "tier": "y"}}
    for name, labels in specs.items():
        k.create_pod(pod_body(name, cm="ls", labels=labels))
    k.create_cm("ls", {"main.py": "pass\n"}, ns=other)
    k.create_pod(pod_body("elsewhere", cm="ls", labels={"app": a}), ns=other)

    def names(sel, **kw):
        return sorted(p["metadata"]["name"] for p in k.list_pods(sel, **kw)["items"])
    assert names(f"app={a}") == ["a1", "a2"]
    assert names(f"app=={a},tier=x") == ["a1"]
    assert names(f"app!={a}") == ["b1"]
    assert names("tier") == ["a1", "b1"]
    assert names("!tier") == ["a2"]
    assert names(f"tier in (x,y),app notin ({b})") == ["a1"]
    assert names(None) == ["a1", "a2", "b1"]
    assert names(None, fieldSelector="metadata.name=a2") == ["a2"]
    everywhere = k.req("GET", f"/api/v1/pods?labelSelector=app%3D{a}").json()
    assert sorted(p["metadata"]["name"] for p in everywhere["items"]) == ["a1", "a2", "elsewhere"]
    lst = k.list_pods()
    assert lst["kind"] == "PodList" and int(lst["metadata"]["resourceVersion"]) > 0
    for n in ("a1", "a2", "b1"):
        k.wait_terminal(n)
    r = k.req("DELETE", k.path("pods") + f"?labelSelector=app%3D{a}")
    assert r.status == 200
    assert sorted(p["metadata"]["name"] for p in r.json()["items"]) == ["a1", "a2"]
    assert names(None) == ["b1"]
    assert names(None, ns=other) == ["elsewhere"]
    assert k.log("a1").status == 404


def test_configmap_and_networkpolicy_crud(node):
    e, k = node
    cm = k.create_cm("cfg", {"k": "v"})
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["resourceVersion"]
    assert k.req("GET", k.path("configmaps", "cfg")).json()["data"] == {"k": "v"}
    r = k.req("DELETE", k.path("configmaps", "cfg"))
    assert r.status == 200 and r.json()["status"] == "Success"
    assert k.req("GET", k.path("configmaps", "cfg")).status == 404
    g = "networking.k8s.io/v1"
    np = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "deny-all"},
          "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "execd"}},
                   "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}}
    r = k.req("POST", k.path("networkpolicies", group=g), np)
    assert r.status == 201 and r.json()["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert k.req("POST", k.path("networkpolicies", group=g), np).status == 409
    r = k.req("GET", k.path("networkpolicies", "deny-all", group=g))
    assert r.status == 200 and r.json()["kind"] == "NetworkPolicy"
    assert k.req("DELETE", k.path("networkpolicies", "deny-all", group=g)).status == 200
    assert k.req("GET", k.path("networkpolicies", "deny-all", group=g)).status == 404
    bad = {"metadata": {"name": "bad"}, "spec": {"policyTypes": ["Sideways"]}}
    assert k.req("POST", k.path("networkpolicies", group=g), bad).status == 422


def test_logs_limit_bytes_tail_lines_and_bad_container(node):
    e, k = node
    k.run_script("logs", "for i in range(5):\n    print(f'line {i}')\n")
    k.wait_terminal("logs")
    assert k.log("logs", limitBytes=6).body == b"line 0"
    assert k.log("logs", tailLines=2).body == b"line 3\nline 4\n"
    r = k.log("logs", container="nope")
    assert r.status == 400 and r.json()["reason"] == "BadRequest"


def test_slots_bound_running_pods_and_every_pod_completes(execd_factory):
    e, k = start_node(execd_factory, EXECD_NODE_SLOTS=2)
    k.create_cm("slot", {"main.py": "import time\ntime.sleep(0.3)\nprint('done')\n"})
    rv = k.list_pods()["metadata"]["resourceVersion"]
    w = Watcher(k, rv, selector="app=slots", timeout=60)
    names = [f"slot-{i:02d}" for i in range(20)]
    errors = []

    def create(n):
        try:
            k.create_pod(pod_body(n, cm="slot", labels={"app": "slots"}))
        except AssertionError as ex:
            errors.append(ex)
    threads = [threading.Thread(target=create, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors

    def all_done():
        items = k.list_pods("app=slots")["items"]
        return len(items) == 20 and all(p["status"]["phase"] == "Succeeded" for p in items)
    wait_for(all_done, 60, interval=0.2, what="20 pods to succeed")
    wait_for(lambda: sum(1 for ev in w.events if ev["type"] == "MODIFIED"
                         and ev["object"]["status"]["phase"] == "Succeeded") == 20,
             10, what="20 Succeeded events")
    w.close()
    running, peak, unschedulable = set(), 0, 0
    for ev in w.events:
        if ev["type"] == "BOOKMARK":
            continue
        obj = ev["object"]
        name, phase = obj["metadata"]["name"], obj["status"]["phase"]
        if ev["type"] == "ADDED":
            conds = {c["type"]: c for c in obj["status"]["conditions"]}
            unschedulable += conds["PodScheduled"]["status"] == "False"
        if phase == "Running":
            running.add(name)
        else:
            running.discard(name)
        peak = max(peak, len(running))
    assert peak == 2, f"peak running {peak}"
    assert unschedulable >= 10
    for n in names:
        assert k.log(n).body == b"done\n"


def test_expired_resource_version_gets_410(execd_factory):
    e, k = start_node(execd_factory, EXECD_NODE_WATCH_HISTORY=10)
    first = int(k.list_pods()["metadata"]["resourceVersion"])
    for i in range(8):  # each unavailable-image pod makes 2 events: ADDED, MODIFIED(Failed)
        k.create_pod(pod_body(f"old-{i}", image="none:0"))
    for i in range(8):
        k.wait_terminal(f"old-{i}")
    resp, it = k.watch(rv=first + 1, timeout=5)
    ev = next(it)
    resp.close()
    assert ev["type"] == "ERROR"
    assert ev["object"]["kind"] == "Status" and ev["object"]["code"] == 410
    assert ev["object"]["reason"] == "Expired"
    # A recent version still resumes.
    rv = k.list_pods()["metadata"]["resourceVersion"]
    resp, it = k.watch(rv=rv, timeout=2)
    assert next(it)["type"] == "BOOKMARK"
    resp.close()


def test_delete_running_pod_kills_it_and_emits_deleted(node):
    e, k = node
    k.run_script("long", "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    wait_for(lambda: k.pod("long")["status"]["phase"] == "Running", 10, what="Running")
    rv = k.pod("long")["metadata"]["resourceVersion"]
    w = Watcher(k, rv, timeout=10)
    r = k.req("DELETE", k.path("pods", "long"),
              {"kind": "DeleteOptions", "gracePeriodSeconds": 0,
               "propagationPolicy": "Background"})
    assert r.status == 200 and r.json()["metadata"]["name"] == "long"
    assert k.req("GET", k.path("pods", "long")).status == 404
    wait_for(lambda: any(ev["type"] == "DELETED" for ev in w.for_pod("long")), 5,
             what="DELETED event")
    w.close()

    def idle():
        n = http("GET", e.node_url + "/api/v1/health/ready").json()["checks"]["node"]
        return n["running"] == 0
    wait_for(idle, 5, what="the slot to free")


def test_restart_reports_lost_pods_failed(execd_factory, tmp_path):
    env = {"EXECD_ROLES": "node", "EXECD_NODE_SLOTS": "1"}
    e = execd_factory(roles="node", env=env, name="restart")
    e.start()
    k = Kube(e.node_url)
    wait_for(lambda: _ready(e), 10, what="node ready")
    k.create_pod(pod_body("done-before", image="none:1"))
    k.wait_terminal("done-before")
    k.run_script("runner", "import time\ntime.sleep(60)\n")
    k.run_script("waiter", "print('never')\n")
    wait_for(lambda: k.pod("runner")["status"]["phase"] == "Running", 10, what="Running")
    assert k.pod("waiter")["status"]["phase"] == "Pending"
    rv_before = int(k.list_pods()["metadata"]["resourceVersion"])
    t0 = time.monotonic()
    assert e.stop() == 0
    assert time.monotonic() - t0 < 8 * SLOW
    e2 = execd_factory(roles="node", env=env, name="restart")
    e2.start()
    wait_for(lambda: _ready(e2), 10, what="node ready again")
    k2 = Kube(e2.node_url)
    for name, was in (("runner", "Running"), ("waiter", "Pending")):
        pod = k2.pod(name)
        assert pod["status"]["phase"] == "Failed", pod["status"]
        assert pod["status"]["reason"] == "NodeRestarted"
        assert was in pod["status"]["message"]
        assert terminated(pod)["exitCode"] == 137
    assert k2.pod("done-before")["status"]["reason"] == "ErrImagePull"
    cm = k2.req("GET", k2.path("configmaps", "runner"))
    assert cm.status == 200 and "main.py" in cm.json()["data"]
    # resourceVersions keep growing across the restart; a pre-restart RV is expired.
    assert int(k2.list_pods()["metadata"]["resourceVersion"]) > rv_before
    resp, it = k2.watch(rv=1, timeout=3)
    assert next(it)["object"]["code"] == 410
    resp.close()
    k2.run_script("fresh", "print('after restart')\n")
    assert k2.wait_terminal("fresh")["status"]["phase"] == "Succeeded"
