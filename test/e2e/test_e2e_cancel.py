"""Issue 5 acceptance: cancel, over HTTP, in both deployments (`cluster`).

A running endless loop is cancelled: the API answers cancellation_requested,
the saga deletes the pod (gone from the node within 2 s) and the execution
ends `cancelled` — once: one terminal event, one result.  Cancelling again
says already_cancelled; cancelling a finished run is 400.  The deadline is
10 s here so the loop is surely still running when the cancel arrives.
"""
import time

from conftest import TERMINAL_EVENTS, http, wait_for

CLUSTER_ENV = {"EXECD_EXECUTION_TIMEOUT_SECONDS": "10"}


def test_cancel_running_loop(cluster):
    u = cluster.user()
    eid = u.run('print("looping", flush=True)\nwhile True:\n    pass')
    pod = f"exec-{eid}"
    u.wait(eid, timeout=20, statuses={"running"})
    wait_for(lambda: [p for p in cluster.pods() if p["metadata"]["name"] == pod
                      and p["status"]["phase"] == "Running"], 10, what="the pod Running")

    t0 = time.monotonic()
    r = u.req("POST", f"/api/v1/executions/{eid}/cancel", {"reason": "e2e stop"})
    assert r.status == 200, r.body
    body = r.json()
    assert body["execution_id"] == eid and body["status"] == "cancellation_requested", body
    assert body["event_id"] and body["message"]

    def pod_gone():
        r = http("GET", f"{cluster.node_url}/api/v1/namespaces/execd/pods/{pod}")
        return r.status == 404
    wait_for(pod_gone, 2.0, interval=0.02, what="the cancelled pod to be gone from the node")
    gone = time.monotonic() - t0
    res = u.wait(eid, timeout=10)
    assert res["status"] == "cancelled", res
    assert gone < 2.0, f"pod gone {gone:.2f}s after the cancel"

    again = u.req("POST", f"/api/v1/executions/{eid}/cancel", {"reason": "again"})
    assert again.status == 200 and again.json()["status"] == "already_cancelled", again.body

    evs = wait_for(lambda: (lambda e: e if "execution_cancelled" in {x["event_type"] for x in e}
                            else None)(u.events(eid)), 10, interval=0.1,
                   what="execution_cancelled in the event store")
    types = [x["event_type"] for x in evs]
    assert types.index("execution_cancel_requested") < types.index("execution_cancelled")
    bus = [e for e in cluster.topic("execution_events") if e["aggregate_id"] == eid]
    terms = [e["event_type"] for e in bus if e["event_type"] in TERMINAL_EVENTS]
    assert terms == ["execution_cancelled"], terms
    assert len({e["event_id"] for e in bus if e["event_type"] == "result_stored"}) <= 1

    done = u.run('print("done")')
    assert u.wait(done)["status"] == "completed"
    r = u.req("POST", f"/api/v1/executions/{done}/cancel", {"reason": "too late"})
    assert r.status == 400, r.body
