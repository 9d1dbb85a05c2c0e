"""worker + monitor end to end, without api/coordinator.

One execd runs node,worker,monitor,store.  Each test publishes an
execution_requested task straight to <prefix>execution_tasks with
`execd bus-publish`, then reads <prefix>execution_events with kcat and checks
what the worker and the monitor published, and the node for what is left.
"""
import json
import os
import subprocess
import uuid

import pytest

from conftest import EXECD_BIN, SLOW, Execd, http, kcat, wait_for

TERMINAL = {"execution_completed", "execution_failed", "execution_timeout"}
PY = ["python3", "-u", "main.py"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    e = Execd(tmp_path_factory.mktemp("wm"), roles="node,worker,monitor,store", name="wm",
              env={"EXECD_NODE_SLOTS": "4", "EXECD_LOG_LEVEL": "info"})
    e.start()

    def ready():
        r = http("GET", e.url + "/api/v1/health/ready", timeout=5)
        return r.status == 200 and r.json()["checks"]["monitor"]["status"] == "ok"

    try:
        wait_for(ready, 30 * SLOW, what="worker+monitor ready")
    except BaseException:
        print(e.log()[-3000:])
        e.stop()
        raise
    yield e
    rc = e.stop()
    log = e.log()
    assert rc == 0, log[-3000:]
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-3000:]


def publish(e, script, timeout=10, image="python:3.11-slim", command=PY, repeat=1, eid=None):
    eid = eid or str(uuid.uuid4())
    env = e.env()
    if len(script) > 65536:
        path = os.path.join(str(e.tmp_path), f"{eid}.py")
        with open(path, "w") as f:
            f.write(script)
        src = ["--script-file", path]
    else:
        src = ["--script", script]
    r = subprocess.run([EXECD_BIN, "bus-publish", "--raw-topic", "execution_tasks",
                        "--aggregate", eid, *src, "--lang", "python",
                        "--lang-version", "3.11", "--image", image, "--timeout", str(timeout),
                        "--command", json.dumps(command), "--repeat", str(repeat)],
                       env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return eid


def events(e, eid):
    out = kcat("-t", e.prefix + "execution_events", "-C", "-o", "beginning", "-e", "-q",
               "-f", "%s\n")
    evs = [json.loads(l) for l in out.decode().splitlines() if l.strip()]
    return [ev for ev in evs if ev.get("aggregate_id") == eid]


def wait_terminal(e, eid, timeout=30):
    box = {}

    def done():
        box["evs"] = events(e, eid)
        return any(ev["event_type"] in TERMINAL for ev in box["evs"])
    try:
        wait_for(done, timeout * SLOW, interval=0.2, what=f"a terminal event for {eid}")
    except AssertionError:
        raise AssertionError(f"events so far: {[ev['event_type'] for ev in box.get('evs', [])]}\n"
                             + e.log()[-3000:])
    return box["evs"]


def node_get(e, kind, name):
    return http("GET", f"{e.node_url}/api/v1/namespaces/execd/{kind}/{name}", timeout=5)


def types(evs):
    return [ev["event_type"] for ev in evs]


def one(evs, t):
    got = [ev for ev in evs if ev["event_type"] == t]
    assert len(got) == 1, types(evs)
    return got[0]


def assert_cleaned(e, eid):
    def gone():
        return (node_get(e, "pods", f"exec-{eid}").status == 404
                and node_get(e, "configmaps", f"exec-{eid}").status == 404)
    wait_for(gone, 10 * SLOW, what="pod and configmap deleted")
    wait_for(lambda: "pod_deleted" in types(events(e, eid)), 10 * SLOW, interval=0.2,
             what="pod_deleted")


def test_hello_completes_with_output_usage_and_cleanup(pipe):
    eid = publish(pipe, 'print("hello")')
    evs = wait_terminal(pipe, eid)
    t = types(evs)
    assert "pod_created" in t and "execution_started" in t, t
    assert t.index("execution_started") < t.index("execution_completed"), t
    assert not (set(t) & {"execution_failed", "execution_timeout"}), t
    done = one(evs, "execution_completed")
    assert done["stdout"] == "hello\n"
    assert done["stderr"] == ""
    assert done["exit_code"] == 0
    ru = done["resource_usage"]
    assert ru["execution_time_wall_seconds"] > 0
    assert ru["peak_memory_kb"] > 0
    assert ru["clk_tck_hertz"] == 100
    assert done["stdout_truncated"] is False
    created = one(evs, "pod_created")
    assert created["pod_name"] == f"exec-{eid}" and created["namespace"] == "execd"
    # The chain: the monitor's events keep the task's correlation id.
    assert done["correlation_id"] == created["correlation_id"]
    assert_cleaned(pipe, eid)


def test_nonzero_exit_is_completed_with_stderr(pipe):
    eid = publish(pipe, 'import sys\nprint("out")\nprint("bad", file=sys.stderr)\nsys.exit(3)\n')
    done = one(wait_terminal(pipe, eid), "execution_completed")
    assert done["exit_code"] == 3
    assert done["stdout"] == "out\n"
    assert done["stderr"] == "bad\n"


def test_raise_is_completed_with_traceback(pipe):
    eid = publish(pipe, 'def f():\n    raise ValueError("boom")\nf()\n')
    done = one(wait_terminal(pipe, eid), "execution_completed")
    assert done["exit_code"] != 0
    assert "Traceback" in done["stderr"] and "ValueError: boom" in done["stderr"]


def test_infinite_loop_times_out_and_pod_spec_is_locked_down(pipe):
    eid = publish(pipe, 'print("started", flush=True)\nwhile True:\n    pass\n', timeout=2)
    # While it runs: the objects the worker created.
    wait_for(lambda: node_get(pipe, "pods", f"exec-{eid}").status == 200, 10 * SLOW,
             what="the pod to exist")
    pod = node_get(pipe, "pods", f"exec-{eid}").json()
    md, spec = pod["metadata"], pod["spec"]
    assert md["labels"]["app.kubernetes.io/managed-by"] == "execd"
    assert md["labels"]["execd/execution-id"] == eid
    assert md["labels"]["execd/lang"] == "python"
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] >= 2
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    c = spec["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["limits"]["memory"] == "128Mi"
    assert c["args"] == PY
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["tmp"]["emptyDir"]["sizeLimit"]
    assert vols["scripts"]["configMap"]["name"] == f"exec-{eid}"
    assert [m for m in c["volumeMounts"] if m["name"] == "scripts"][0]["readOnly"] is True
    cm = node_get(pipe, "configmaps", f"exec-{eid}")
    assert cm.status == 200
    assert "while True" in cm.json()["data"]["main.py"]
    assert "--execd-stdout-begin" in cm.json()["data"]["entrypoint.sh"]
    np = http("GET", f"{pipe.node_url}/apis/networking.k8s.io/v1/namespaces/execd/"
              "networkpolicies/execd-deny-all", timeout=5)
    assert np.status == 200
    assert sorted(np.json()["spec"]["policyTypes"]) == ["Egress", "Ingress"]

    evs = wait_terminal(pipe, eid, timeout=20)
    t = types(evs)
    assert "execution_completed" not in t and "execution_failed" not in t, t
    to = one(evs, "execution_timeout")
    assert to["timeout_seconds"] == 2
    assert to["stdout"] == "started\n"  # output up to the deadline is kept
    assert to["resource_usage"]["execution_time_wall_seconds"] >= 1.9
    assert_cleaned(pipe, eid)


def test_redelivered_task_runs_once(pipe):
    eid = publish(pipe, 'import time\ntime.sleep(0.5)\nprint("once")\n', repeat=2)
    evs = wait_terminal(pipe, eid)
    assert_cleaned(pipe, eid)
    evs = events(pipe, eid)
    t = types(evs)
    assert t.count("pod_created") == 1, t
    assert sum(1 for x in t if x in TERMINAL) == 1, t
    assert one(evs, "execution_completed")["stdout"] == "once\n"


def test_existing_configmap_is_kept_on_conflict(pipe):
    """A worker that crashed after creating the ConfigMap: the retry gets 409 and goes on."""
    # Borrow the real entrypoint from a running execution's ConfigMap.
    first = publish(pipe, 'import time\ntime.sleep(3)\n', timeout=5)
    wait_for(lambda: node_get(pipe, "configmaps", f"exec-{first}").status == 200, 10 * SLOW,
             what="a configmap")
    entry = node_get(pipe, "configmaps", f"exec-{first}").json()["data"]["entrypoint.sh"]
    eid = str(uuid.uuid4())
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"exec-{eid}", "namespace": "execd"},
            "data": {"main.py": 'print("from the existing configmap")\n',
                     "entrypoint.sh": entry}}
    r = http("POST", f"{pipe.node_url}/api/v1/namespaces/execd/configmaps", body=body, timeout=5)
    assert r.status == 201, r.body
    publish(pipe, 'print("from the task")', eid=eid)
    done = one(wait_terminal(pipe, eid), "execution_completed")
    assert done["stdout"] == "from the existing configmap\n"
    assert_cleaned(pipe, eid)
    wait_terminal(pipe, first)


def test_unknown_image_fails_with_system_error(pipe):
    eid = publish(pipe, 'print("never")', image="nosuchlang:9.9")
    evs = wait_terminal(pipe, eid)
    t = types(evs)
    assert "execution_started" not in t and "execution_completed" not in t, t
    failed = one(evs, "execution_failed")
    assert failed["error_type"] == "system_error"
    assert "nosuchlang:9.9" in failed["message"]
    assert_cleaned(pipe, eid)


def test_rejected_pod_ends_failed_at_the_worker(pipe):
    """A pod the API refuses (422: bad quantity) ends the execution at once."""
    eid = publish(pipe, 'print(1)', command=[])  # empty command: the runtimes table's
    done = one(wait_terminal(pipe, eid), "execution_completed")
    assert done["stdout"] == "1\n"
    eid = str(uuid.uuid4())
    # A ConfigMap over the node's 1 MiB cap is a 422 from the API.
    big = "x = 1\n" * 200000
    publish(pipe, big, eid=eid)
    evs = wait_terminal(pipe, eid)
    failed = one(evs, "execution_failed")
    assert failed["error_type"] == "system_error"
    assert "ConfigMap" in failed["message"]
    assert "pod_created" not in types(evs)
