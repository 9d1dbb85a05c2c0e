"""One image, roles per replica: the container deployment, end to end.

Every test here runs the image built by scripts/container.sh (podman) — never build/execd.
Replicas of one deployment share a topic prefix and a database and talk only through the
host's Kafka (and Mongo), exactly as separate pods of a cluster would.
"""
import json
import os
import uuid

from conftest import (IMAGE, ROOT, groups, http, image_run, mongo, podman, wait_for)

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

def start_layout(deployment, image_roles):
    """Starts one replica per role group (deploy/compose.yaml's layout); node first, so the
    worker/monitor replica can be pointed at it."""
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
        reps[roles] = deployment.add(f"r{i}-{roles.split(',')[0]}", roles).start(wait=False)
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


def test_replacing_the_store_replica_loses_no_event(deployment, image_roles):
    """Stop the replica that hosts the event store (and coordinator/saga when they exist),
    keep the API taking requests, start a fresh replica of the same group: every event
    published meanwhile is stored, exactly once (same consumer group, committed offsets)."""
    reps = start_layout(deployment, image_roles)
    api = api_replica(reps)
    group = next(roles for roles in reps if "store" in roles.split(","))
    old = reps[group]
    before = [register(api)["user_id"] for _ in range(3)]
    db = mongo(deployment.db)
    reg = {"event_type": "user_registered"}
    wait_for(lambda: db.events.count_documents(reg) == 3, 30, 0.2, "3 stored registrations")
    assert old.stop() == 0, old.logs()
    during = [register(api)["user_id"] for _ in range(5)]
    assert db.events.count_documents(reg) == 3, "nothing stores events while the replica is down"
    new = deployment.add("replacement", group).start()
    new.wait_ready()
    wait_for(lambda: db.events.count_documents(reg) == 8, 60, 0.2,
             "the replacement replica to store the 5 events published while none ran")
    docs = list(db.events.find(reg, {"event_id": 1, "aggregate_id": 1}))
    assert len({d["event_id"] for d in docs}) == 8, "every event once"
    assert {d["aggregate_id"] for d in docs} == set(before + during), docs


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


# ------------------------------------------------------------------ executions through replicas
# POST /api/v1/execute is not in the api role yet; the request enters the pipeline as the api
# will publish it: an execution_requested event, published with the image's own
# `execd bus-publish`. From there every hop crosses replicas: coordinator (core) → the
# execution_tasks topic → worker (k8s replica) → the node replica's Kubernetes API → bubblewrap
# → monitor → execution_completed → results + projection (core) → Mongo.

PIPELINE = ("coordinator", "worker", "monitor", "results", "projection", "node")


def request_execution(deployment, script, user="alice"):
    eid = str(uuid.uuid4())
    r = image_run("bus-publish", "--type", "execution_requested", "--aggregate", eid,
                  "--user-id", user, "--script", script,
                  env={"EXECD_KAFKA_BROKERS": deployment.replicas[0].env()["EXECD_KAFKA_BROKERS"],
                       "EXECD_TOPIC_PREFIX": deployment.prefix, "EXECD_LOG_LEVEL": "warn"})
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return eid


def wait_completed(deployment, eids, timeout=90):
    """Waits until every execution is `completed` in the read model (projection) and its
    result_stored (results) is in the event store (store); returns {eid: the stored
    execution_completed event} (the monitor's event, carrying the node's output)."""
    db = mongo(deployment.db)

    def done():
        out = {}
        for eid in eids:
            d = db.executions.find_one({"execution_id": eid})
            if not d or d.get("status") != "completed":
                return None
            if db.events.count_documents({"aggregate_id": eid,
                                          "event_type": "result_stored"}) < 1:
                return None
            out[eid] = db.events.find_one({"aggregate_id": eid,
                                           "event_type": "execution_completed"})
            if out[eid] is None:
                return None
        return out
    return wait_for(done, timeout, 0.3, f"{len(eids)} execution(s) to complete")


def pipeline_deployment(deployment, image_roles):
    assert set(PIPELINE) <= set(image_roles), f"the image lacks {set(PIPELINE) - set(image_roles)}"
    deployment.common_env.update({"EXECD_USER_MAX_CONCURRENT": "50",
                                  "EXECD_COORDINATOR_SWEEP_MS": "200"})
    return start_layout(deployment, image_roles)


def test_execution_completes_through_the_replicas(deployment, image_roles):
    reps = pipeline_deployment(deployment, image_roles)
    assert len(reps) >= 4, list(reps)
    for r in reps.values():
        r.wait_ready()
    marker = uuid.uuid4().hex
    eid = request_execution(deployment, f"import os\nprint('{marker}', os.getuid())\n")
    ev = wait_completed(deployment, [eid])[eid]
    assert ev["stdout"] == f"{marker} 65534\n" and ev["exit_code"] == 0, ev
    assert ev["resource_usage"]["peak_memory_kb"] > 0, ev
    db = mongo(deployment.db)
    d = db.executions.find_one({"execution_id": eid})
    assert d["status_rank"] == 3 and "finished_at" in d and d["user_id"] == "alice", d
    assert db.events.count_documents({"aggregate_id": eid, "event_type": "result_stored"}) == 1
    types = {e["event_type"] for e in db.events.find({"aggregate_id": eid})}
    assert {"execution_requested", "execution_accepted", "pod_created", "execution_completed",
            "result_stored"} <= types, types
    # The node ran it: the pod is gone (the monitor deletes finished pods).
    node = reps["node"]
    pods = http("GET", node.node_url + "/api/v1/namespaces/execd/pods",
                headers={"Authorization": f"Bearer {deployment.node_token}"}).json()
    assert all(p["metadata"]["name"] != f"exec-{eid}" for p in pods["items"]), pods


def test_replacing_the_coordinator_replica_loses_no_execution(deployment, image_roles):
    """Executions requested before, while and after the replica running the coordinator (and
    saga, when it exists) is down all complete once a new replica of that group starts."""
    reps = pipeline_deployment(deployment, image_roles)
    group = next(roles for roles in reps if "coordinator" in roles.split(","))
    old = reps[group]
    old.wait_ready()
    first = [request_execution(deployment, f"print('a{i}')") for i in range(2)]
    wait_completed(deployment, first)
    more = [request_execution(deployment, f"print('b{i}')") for i in range(3)]
    assert old.stop() == 0, old.logs()
    during = [request_execution(deployment, f"print('c{i}')") for i in range(3)]
    new = deployment.add("replacement", group).start()
    new.wait_ready()
    evs = wait_completed(deployment, first + more + during, timeout=120)
    want = {eid: f"{tag}{i}\n" for tag, ids in (("a", first), ("b", more), ("c", during))
            for i, eid in enumerate(ids)}
    for eid, ev in evs.items():
        assert ev["exit_code"] == 0 and ev["stdout"] == want[eid], ev
    db = mongo(deployment.db)
    for eid in want:
        # Ran once although the coordinator changed hands: one pod, one terminal event.
        assert db.events.count_documents({"aggregate_id": eid,
                                          "event_type": "pod_created"}) == 1, eid
        assert db.events.count_documents({"aggregate_id": eid,
                                          "event_type": "execution_completed"}) == 1, eid
