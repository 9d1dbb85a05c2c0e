"""One image, roles per replica: the container deployment, end to end.

Every test here runs the image built by scripts/container.sh (podman) — never build/execd.
Replicas of one deployment share a topic prefix and a database and talk only through the
host's Kafka (and Mongo), exactly as separate pods of a cluster would.
"""
import collections
import json
import os
import subprocess
import time
import uuid

from conftest import (IMAGE, KAFKA, ROOT, groups, http, image_run, mongo, podman, wait_for)

MAX_IMAGE_BYTES = 200 * 1000 * 1000  # `podman image inspect` .Size, the README's figure


# ------------------------------------------------------------------ the image itself

def test_image_shape(image):
    size = image["Size"]
    assert 0 < size <= MAX_IMAGE_BYTES, f"image is {size} bytes (> {MAX_IMAGE_BYTES})"
    cfg = image["Config"]
    assert cfg["Entrypoint"] == ["/usr/local/bin/execd"]
    assert cfg["User"] == "execd", "every role but node runs unprivileged"
    hc = image.get("Healthcheck") or cfg.get("Healthcheck")
    assert hc, "the image has no HEALTHCHECK (built without --format docker?)"
    assert "/api/v1/health/live" in " ".join(hc["Test"])
    # The runtime stage carries no compiler and no -dev headers.
    r = podman("run", "--rm", "--no-healthcheck", "--network=host", "--ulimit",
               "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--entrypoint", "bash", IMAGE,
               "-c", "command -v cc gcc make; ls /usr/include/librdkafka 2>/dev/null; "
               "id -u; python3 -c 'import json, http.client, sqlite3; print(\"py-ok\")'; "
               "bwrap --version", check=False)
    out = r.stdout.decode()
    lines = out.split()
    assert lines[0] == "10001", out
    assert "py-ok" in out and "bubblewrap" in out, out
    assert not any(x.endswith(("/cc", "/gcc", "/make")) for x in lines), out


def test_config_by_env_only(image, image_keys):
    with open(os.path.join(ROOT, "VERSION")) as f:
        version = f.read().strip()
    r = image_run("--version")
    assert r.returncode == 0 and version in r.stdout.decode(), r.stdout + r.stderr
    r = image_run("--print-config", env={"EXECD_ROLES": "api,store", "EXECD_LOG_LEVEL": "warn",
                                         "EXECD_SECRET_KEY": "s" * 40})
    assert r.returncode == 0, r.stderr
    cfg = dict(line.split("=", 1) for line in r.stdout.decode().splitlines() if "=" in line)
    assert cfg["EXECD_ROLES"] == "api,store" and cfg["EXECD_LOG_LEVEL"] == "warn"
    assert cfg["EXECD_SECRET_KEY"] == "****", "secrets are masked"
    # The image's own defaults: listen on every interface, node state in the volume.
    assert cfg["EXECD_HTTP_LISTEN"] == "0.0.0.0:8080"
    assert cfg["EXECD_NODE_STATE_DIR"] == "/var/lib/execd/node"
    # No config file is baked in: an unknown key in the environment is a start-up error.
    r = image_run("--check-config", env={"EXECD_NO_SUCH_KEY": "1"})
    assert r.returncode == 2 and b"EXECD_NO_SUCH_KEY" in r.stderr + r.stdout, r


# ------------------------------------------------------------------ replicas

def start_layout(deployment, image_roles, group_env=None):
    """Starts one replica per role group (deploy/compose.yaml's layout); node first, so the
    worker/monitor replica can be pointed at it. group_env: {role: env} adds env to the
    replica whose group has that role."""
    group_env = group_env or {}
    layout = groups(image_roles)
    assert len(layout) >= 3, f"need >= 3 role groups, the image has {image_roles}"
    reps = {}
    if "node" in layout:
        node = deployment.add("node", "node", node=True)
        if "EXECD_K8S_API" in deployment.image_keys:
            deployment.common_env["EXECD_K8S_API"] = node.node_url
            deployment.common_env["EXECD_K8S_TOKEN"] = deployment.node_token
        reps["node"] = node.start(wait=False)
    for i, roles in enumerate(g for g in layout if g != "node"):
        env = {}
        for role in roles.split(","):
            env.update(group_env.get(role, {}))
        reps[roles] = deployment.add(f"r{i}-{roles.split(',')[0]}", roles,
                                     env=env).start(wait=False)
    for r in reps.values():
        r.wait_live()
    return reps


def api_replica(reps):
    return next(r for roles, r in reps.items() if "api" in roles.split(","))


def replica_with(reps, role):
    return next(r for roles, r in reps.items() if role in roles.split(","))


def register(api, username=None):
    username = username or f"u{uuid.uuid4().hex[:10]}"
    r = http("POST", api.url + "/api/v1/auth/register",
             {"username": username, "email": f"{username}@example.com",
              "password": "password-123"})
    assert r.status == 200, r.body
    return r.json()


def test_replicas_of_one_image_live_ready_healthy(deployment, image_roles):
    reps = start_layout(deployment, image_roles)
    assert len(reps) >= 3
    for roles, r in reps.items():
        ready = r.wait_ready()
        assert ready["status"] == "ok" and sorted(ready["roles"]) == sorted(roles.split(",")), \
            (roles, ready)
        assert r.healthcheck() == 0, f"HEALTHCHECK failed in {r.name}:\n{r.logs()}"
        # PID 1 is execd, unprivileged except on the node.
        st = podman("exec", r.cname, "cat", "/proc/1/status").stdout.decode()
        uid = next(line.split()[1] for line in st.splitlines() if line.startswith("Uid:"))
        assert uid == ("0" if roles == "node" else "10001"), (roles, uid)
    # The same image for every replica.
    ids = {podman("inspect", "--format", "{{.Image}}", r.cname).stdout.strip()
           for r in reps.values()}
    assert len(ids) == 1, ids
    # A replica stopped with SIGTERM exits 0 (the fixture checks the others the same way).
    some = next(iter(reps.values()))
    assert some.stop() == 0, some.logs()


def test_api_replica_to_store_replica_through_kafka(deployment, image_roles):
    reps = start_layout(deployment, image_roles)
    api = api_replica(reps)
    store = replica_with(reps, "store")
    assert api is not store
    user = register(api)
    r = http("POST", api.url + "/api/v1/auth/login",
             {"username": user["username"], "password": "password-123"})
    assert r.status == 200, r.body
    token = r.json()["access_token"]
    me = http("GET", api.url + "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status == 200 and me.json()["username"] == user["username"], me.body
    # The API replica wrote the account; the store replica stored the events it published.
    db = mongo(deployment.db)
    assert db.users.count_documents({"username": user["username"]}) == 1
    wait_for(lambda: db.events.count_documents(
        {"event_type": "user_registered", "topic": "user_events"}) == 1, 30, 0.2,
        "the store replica to store user_registered")
    wait_for(lambda: db.events.count_documents({"event_type": "user_logged_in"}) == 1, 30, 0.2,
             "the store replica to store user_logged_in")


# ------------------------------------------------------------------ the node replica

def test_node_replica_runs_pods_in_bubblewrap(deployment, image_roles):
    assert "node" in image_roles
    node = deployment.add("node", "node", node=True).start()
    ready = node.wait_ready()
    limits = ready["checks"]["node"]["limits"]
    # With the privileges of NODE_FLAGS every sandbox limit is enforced here (cgroup v1).
    assert limits["user_namespaces"] and limits["seccomp"] and limits["network_isolated"], limits
    assert limits["cgroup_memory"] and limits["cgroup_pids"], limits
    auth = {"Authorization": f"Bearer {deployment.node_token}", "Accept": "application/json"}
    ns = "/api/v1/namespaces/default"
    assert http("GET", node.node_url + ns + "/pods").status == 401, "the node requires its token"
    name = f"exec-{uuid.uuid4().hex[:12]}"
    script = ("import json, os, socket\n"
              "print(json.dumps({'uid': os.getuid()}))\n"
              "try:\n    socket.create_connection(('127.0.0.1', %d), timeout=1)\n"
              "    print('net-open')\nexcept OSError:\n    print('net-closed')\n"
              % node.node_port)
    r = http("POST", node.node_url + ns + "/configmaps",
             {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
              "data": {"main.py": script}}, headers=auth)
    assert r.status == 201, r.body
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "execd"}},
           "spec": {"restartPolicy": "Never", "activeDeadlineSeconds": 20,
                    "containers": [{"name": "main", "image": "python:3.11-slim",
                                    "command": ["python", "-u", "/scripts/main.py"],
                                    "resources": {"limits": {"memory": "128Mi", "cpu": "1"}},
                                    "volumeMounts": [{"name": "code", "mountPath": "/scripts",
                                                      "readOnly": True}]}],
                    "volumes": [{"name": "code", "configMap": {"name": name}}]}}
    r = http("POST", node.node_url + ns + "/pods", pod, headers=auth)
    assert r.status == 201, r.body

    def done():
        p = http("GET", node.node_url + ns + "/pods/" + name, headers=auth).json()
        return p if p["status"].get("phase") in ("Succeeded", "Failed") else None
    p = wait_for(done, 30, 0.1, f"pod {name} to finish")
    assert p["status"]["phase"] == "Succeeded", json.dumps(p["status"])
    log = http("GET", node.node_url + ns + f"/pods/{name}/log", headers=auth).body.decode()
    assert '{"uid": 65534}' in log and "net-closed" in log, log




# ------------------------------------------------------------------ executions through the API
# Every execution enters as a client's would: register, log in (Bearer token), POST
# /api/v1/execute to the api,sse replica, poll GET /api/v1/executions/{id}/result there. Every
# hop crosses replicas: api → execution_requested → coordinator (core replica) → the
# execution_tasks topic → worker (k8s replica) → the node replica's Kubernetes API → bubblewrap
# → monitor → execution_completed → results + projection + store (core) → Mongo → the api.

PIPELINE = ("api", "coordinator", "saga", "worker", "monitor", "results", "projection", "store",
            "node")
TERMINAL = {"completed", "failed", "timeout", "cancelled"}
TERMINAL_EVENTS = {"execution_completed", "execution_failed", "execution_timeout",
                   "execution_cancelled"}
# The API replica takes every request of the test from one address: no per-IP limits.
API_ENV = {"EXECD_RATE_LIMIT_ENABLED": "false"}


class Client:
    """A registered, logged-in user of the API replica (Bearer token)."""

    def __init__(self, api):
        self.api = api
        user = register(api)
        self.username = user["username"]
        r = http("POST", api.url + "/api/v1/auth/login",
                 {"username": self.username, "password": "password-123"})
        assert r.status == 200, r.body
        self.token = r.json()["access_token"]
        me = self.req("GET", "/api/v1/auth/me")
        assert me.status == 200, me.body
        self.user_id = me.json()["user_id"]

    def req(self, method, path, body=None):
        return http(method, self.api.url + path, body,
                    headers={"Authorization": f"Bearer {self.token}"})

    def submit(self, script):
        r = self.req("POST", "/api/v1/execute",
                     {"script": script, "lang": "python", "lang_version": "3.11"})
        assert r.status == 200, (r.status, r.body)
        body = r.json()
        assert body["status"] == "queued" and body["execution_id"], body
        return body["execution_id"]

    def result(self, eid):
        r = self.req("GET", f"/api/v1/executions/{eid}/result")
        assert r.status == 200, (r.status, r.body)
        return r.json()

    def wait(self, eids, timeout=90, reps=None):
        """Polls every result until it is terminal; returns {eid: result}."""
        out = {}

        def done():
            for eid in eids:
                if eid not in out:
                    res = self.result(eid)
                    if res["status"] in TERMINAL:
                        out[eid] = res
            return len(out) == len(eids)
        try:
            wait_for(done, timeout, 0.2, f"{len(eids)} execution(s) to end")
        except AssertionError as exc:
            logs = "".join(f"\n--- {r.name} ({r.roles})\n{r.logs()[-2500:]}"
                           for r in (reps or {}).values())
            raise AssertionError(f"{exc}\nended: {len(out)}/{len(eids)}{logs}") from None
        return out


def topic_events(deployment, topic="execution_events"):
    """Every event on the deployment's topic, read with kcat from the host."""
    r = subprocess.run(["kcat", "-b", KAFKA, "-C", "-t", deployment.prefix + topic, "-e", "-q",
                        "-o", "beginning", "-f", "%s\n"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return [json.loads(line) for line in r.stdout.decode().splitlines() if line.strip()]


def pipeline_deployment(deployment, image_roles):
    assert set(PIPELINE) <= set(image_roles), f"the image lacks {set(PIPELINE) - set(image_roles)}"
    deployment.common_env.update({"EXECD_USER_MAX_CONCURRENT": "50",
                                  "EXECD_USER_MAX_PER_MINUTE": "10000",
                                  "EXECD_COORDINATOR_SWEEP_MS": "200"})
    reps = start_layout(deployment, image_roles, group_env={"api": API_ENV})
    assert sorted(reps) == sorted(["api,sse", "coordinator,saga,store,projection,results",
                                   "worker,monitor", "node"]), list(reps)
    for r in reps.values():
        r.wait_ready()
    return reps


def test_hello_through_the_api_replica(deployment, image_roles):
    reps = pipeline_deployment(deployment, image_roles)
    api = api_replica(reps)
    u = Client(api)
    eid = u.submit('print("hello")')
    res = u.wait([eid], reps=reps)[eid]
    assert res["status"] == "completed", res
    assert res["stdout"] == "hello\n" and res["exit_code"] == 0 and res["error_type"] is None, res
    assert res["resource_usage"]["peak_memory_kb"] > 0, res

    # The event store (core replica) has the whole story, served back by the api replica.
    def stored():
        r = u.req("GET", f"/api/v1/executions/{eid}/events")
        assert r.status == 200, r.body
        evs = [e["event_type"] for e in r.json()]
        return evs if "result_stored" in evs else None
    evs = wait_for(stored, 30, 0.2, "result_stored in the event store")
    assert evs[0] == "execution_requested", evs
    assert evs.index("execution_scheduled") < evs.index("execution_started") < \
        evs.index("execution_completed") < evs.index("result_stored"), evs
    db = mongo(deployment.db)
    d = db.executions.find_one({"execution_id": eid})
    assert d["user_id"] == u.user_id and d["status"] == "completed", d
    assert db.execution_results.count_documents({"execution_id": eid}) == 1
    # The node replica ran it as the sandbox user; the monitor removed the finished pod.
    node = reps["node"]
    pods = http("GET", node.node_url + "/api/v1/namespaces/execd/pods",
                headers={"Authorization": f"Bearer {deployment.node_token}"}).json()
    assert all(eid not in p["metadata"]["name"] for p in pods["items"]), pods


def warnings(reps):
    """The warn/error lines of every replica's log (for a failing assertion's message)."""
    out = []
    for r in reps.values():
        out += [f"{r.name}: {line}" for line in r.logs().splitlines()
                if ('"level":"warn"' in line or '"level":"error"' in line)
                and "endSessions" not in line]
    return "\n".join(out[-40:])


def pod_lines(node, eid):
    """The node replica's info lines about one execution's pod."""
    r = podman("logs", node.cname, check=False)
    return "\n".join(line for line in (r.stdout + r.stderr).decode(errors="replace").splitlines()
                     if eid in line and '"level":"debug"' not in line)


def stop_hard(replica, how):
    """SIGTERM (podman stop; exit 0 expected) or SIGKILL (podman kill; no clean-up at all)."""
    if how == "sigterm":
        rc = replica.stop()
        assert rc == 0, f"{replica.name} exited {rc} on SIGTERM:\n{replica.logs()}"
        return
    podman("kill", "-s", "KILL", replica.cname)
    wait_for(lambda: replica.state()[0] in ("exited", "stopped"), 30, 0.2,
             f"{replica.name} to die of SIGKILL")
    replica.exit_code = int(replica.state()[1])
    assert replica.exit_code == 137, replica.state()


def replace_core(how, deployment, image_roles):
    """Executions submitted through the API before, while and after the replica running
    coordinator and saga (and store, projection, results) is stopped and replaced by a new
    one of the same group all complete, each exactly once."""
    reps = pipeline_deployment(deployment, image_roles)
    group = "coordinator,saga,store,projection,results"
    old = reps[group]
    u = Client(api_replica(reps))
    want = {}

    def submit(tag, n):
        ids = []
        for i in range(n):
            eid = u.submit(f'print("{tag}{i}")')
            want[eid] = f"{tag}{i}\n"
            ids.append(eid)
        return ids

    done_before = submit("a", 3)
    for eid, res in u.wait(done_before, reps=reps).items():
        assert (res["status"], res["stdout"]) == ("completed", want[eid]), \
            f"{res}\n{warnings(reps)}"
    in_flight = submit("b", 4)            # stopped under these: some queued, some running
    t0 = time.monotonic()
    stop_hard(old, how)
    while_down = submit("c", 4)
    # Nothing schedules while the group is down: the api accepted them, they stay queued.
    time.sleep(1.5)
    assert all(u.result(eid)["status"] == "queued" for eid in while_down), \
        [u.result(eid)["status"] for eid in while_down]
    new = deployment.add("replacement", group, env=old.extra_env).start()
    new.wait_ready()
    after = submit("d", 3)
    results = u.wait(list(want), timeout=150, reps={**reps, "replacement": new})
    print(f"{how}: {len(want)} executions, all ended {time.monotonic() - t0:.1f}s after the stop")

    db = mongo(deployment.db)
    topic = collections.defaultdict(list)
    for e in topic_events(deployment):
        topic[e["aggregate_id"]].append(e)
    for eid, res in results.items():
        story = [(e["event_type"], e.get("stdout")) for e in topic[eid]]
        assert res["status"] == "completed", (res, story)
        assert (res["exit_code"], res["stdout"]) == (0, want[eid]), (
            f"{res}\nevents: {story}\nread model: "
            f"{db.executions.find_one({'execution_id': eid})}\nresults: "
            f"{list(db.execution_results.find({'execution_id': eid}))}\n"
            f"{warnings({**reps, 'replacement': new})}\nnode: {pod_lines(reps['node'], eid)}")

    def stored_once():
        return all(db.events.count_documents({"aggregate_id": eid,
                                              "event_type": "result_stored"}) == 1
                   for eid in want)
    wait_for(stored_once, 30, 0.3, "one result_stored per execution in the event store")
    for eid in want:
        # One record in the read model and in the results collection.
        assert db.executions.count_documents({"execution_id": eid}) == 1, eid
        assert db.execution_results.count_documents({"execution_id": eid}) == 1, eid
        # Ran once although the coordinator changed hands: one pod, one terminal event, both on
        # the topic and in the event store.
        evs = topic[eid]
        terms = [e for e in evs if e["event_type"] in TERMINAL_EVENTS]
        assert [e["event_type"] for e in terms] == ["execution_completed"], \
            (eid, [e["event_type"] for e in evs])
        assert db.events.count_documents({"aggregate_id": eid,
                                          "event_type": "execution_completed"}) == 1, eid
        assert db.events.count_documents({"aggregate_id": eid,
                                          "event_type": "pod_created"}) == 1, eid
        assert db.events.count_documents({"aggregate_id": eid,
                                          "event_type": "execution_requested"}) == 1, eid
    assert set(done_before + in_flight + while_down + after) == set(want)


def test_replacing_the_coordinator_saga_replica_sigterm_loses_no_execution(deployment,
                                                                          image_roles):
    replace_core("sigterm", deployment, image_roles)


def test_replacing_the_coordinator_saga_replica_sigkill_loses_no_execution(deployment,
                                                                          image_roles):
    replace_core("sigkill", deployment, image_roles)
