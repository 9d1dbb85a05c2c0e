"""The saga role (issue 6, saga bullet): no execution hangs, cancel stops the pod.

Real binaries against real Kafka and FerretDB.  Several execd processes share
one topic prefix and database (Execd(prefix=P, db=D)), so a role can be
killed on its own:

  * the worker is SIGKILLed with 20 executions in flight and not restarted:
    every execution still ends (the saga's provision deadline ends the
    stranded ones failed/system_error); a restarted worker leaves no pod;
  * the saga role is SIGKILLed and restarted: open sagas resume and their
    deadlines fire; no compensation is published twice;
  * cancel through POST /executions/{id}/cancel and POST /sagas/{id}/cancel:
    the pod is gone from the node within 2 s, the freed slot is taken by the
    queued execution at once, the status is cancelled; the saga read routes.
"""
import json
import random
import time
import uuid

import pytest

from conftest import SLOW, Execd, http, kcat, mongo, wait_for

ADMIN = ("sagaadmin", "admin-password-123")
PROVISION_S = 4
GRACE_S = 3
ENV = {
    "EXECD_BCRYPT_COST": "4",
    "EXECD_ADMIN_USERNAME": ADMIN[0],
    "EXECD_ADMIN_PASSWORD": ADMIN[1],
    "EXECD_RATE_LIMIT_ENABLED": "false",
    "EXECD_USER_MAX_CONCURRENT": "100",
    "EXECD_USER_MAX_PER_MINUTE": "1000",
    "EXECD_LOG_LEVEL": "info",
    "EXECD_SAGA_PROVISION_TIMEOUT_SECONDS": str(PROVISION_S),
    "EXECD_SAGA_GRACE_SECONDS": str(GRACE_S),
    "EXECD_SAGA_FINALIZE_TIMEOUT_SECONDS": "20",
    "EXECD_POD_CPU_LIMIT": "500m",
    "EXECD_POD_MEMORY_LIMIT": "96Mi",
    "EXECD_POD_CPU_REQUEST": "50m",
    "EXECD_POD_MEMORY_REQUEST": "32Mi",
}
TERMINAL = {"completed", "failed", "timeout", "cancelled"}
NO_WORKER = "store,api,node,coordinator,monitor,results,projection"
SAGA_FIELDS = {"saga_id", "saga_name", "execution_id", "state", "current_step",
               "completed_steps", "compensated_steps", "error_message", "created_at",
               "updated_at", "completed_at", "retry_count"}


class User:
    """A Bearer-token client with its own client IP."""

    def __init__(self, e, username=None, password="password-123", login_only=False):
        self.e = e
        self.ip = f"198.51.{random.randint(0, 255)}.{random.randint(1, 254)}"
        self.username = username or f"u{uuid.uuid4().hex[:10]}"
        if not login_only:
            r = http("POST", e.url + "/api/v1/auth/register",
                     body={"username": self.username, "email": f"{self.username}@example.com",
                           "password": password}, headers={"X-Forwarded-For": self.ip})
            assert r.status == 200, r.body
        r = http("POST", e.url + "/api/v1/auth/login",
                 body={"username": self.username, "password": password},
                 headers={"X-Forwarded-For": self.ip})
        assert r.status == 200, r.body
        self.login = r.json()
        self.token = self.login["access_token"]

    def req(self, method, path, body=None, headers=None, base=None):
        h = {"X-Forwarded-For": self.ip, "Authorization": f"Bearer {self.token}"}
        h.update(headers or {})
        return http(method, (base or self.e.url) + path, body=body, headers=h)

    def submit(self, script):
        r = self.req("POST", "/api/v1/execute", {"script": script})
        assert r.status == 200, r.body
        return r.json()["execution_id"]


def status_of(db, eid):
    doc = db.executions.find_one({"execution_id": eid}) or {}
    return doc.get("status")


def saga_of(db, eid):
    return db.sagas.find_one({"execution_id": eid})


def topic(e, name):
    out = kcat("-C", "-t", e.prefix + name, "-e", "-q", "-o", "beginning", "-f", "%s\n")
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def commands(e, eids, event_type):
    counts = {eid: 0 for eid in eids}
    for ev in topic(e, "saga_commands"):
        if ev["event_type"] == event_type and ev["execution_id"] in counts:
            counts[ev["execution_id"]] += 1
    return counts


def pods(e):
    r = http("GET", e.node_url + "/api/v1/namespaces/execd/pods"
             "?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dexecd", timeout=5)
    assert r.status == 200, r.body
    return [p["metadata"]["name"] for p in r.json()["items"]]


def node_pod(e, eid):
    return http("GET", f"{e.node_url}/api/v1/namespaces/execd/pods/exec-{eid}", timeout=5).status


def ready(e, *checks):
    def ok():
        r = http("GET", e.url + "/api/v1/health/ready", timeout=5)
        body = r.json() if r.status in (200, 503) else {}
        return all(body.get("checks", {}).get(c, {}).get("status") == "ok" for c in checks)
    wait_for(ok, 40, interval=0.2, what=f"{e.name} ready ({', '.join(checks)})")


def start(e, *checks):
    e.start()
    try:
        ready(e, *checks)
    except BaseException:
        print(e.log()[-4000:])
        raise
    return e


def wait_all_terminal(db, eids, timeout, e=None):
    def done():
        st = {eid: status_of(db, eid) for eid in eids}
        return st if all(s in TERMINAL for s in st.values()) else None
    try:
        return wait_for(done, timeout, interval=0.25, what="every execution to end")
    except AssertionError:
        st = {eid: (status_of(db, eid), (saga_of(db, eid) or {}).get("current_step"))
              for eid in eids}
        raise AssertionError(f"not terminal: {st}\n" + (e.log()[-4000:] if e else ""))


def test_worker_killed_every_execution_still_ends(execd_factory):
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    db_name = f"execd_{prefix.rstrip('-')}"
    env = {**ENV, "EXECD_MAX_CONCURRENT": "4", "EXECD_NODE_SLOTS": "4",
           "EXECD_EXECUTION_TIMEOUT_SECONDS": "6"}
    main = start(execd_factory(roles=NO_WORKER + ",saga", env=env, prefix=prefix, db=db_name,
                               name="main"), "monitor")
    wenv = {**env, "EXECD_K8S_API": main.node_url}
    worker = start(execd_factory(roles="worker", env=wenv, prefix=prefix, db=db_name,
                                 name="worker"), "worker")
    db = mongo(db_name)
    u = User(main)
    eids = [u.submit("import time\ntime.sleep(1.5)\nprint('done')") for _ in range(20)]
    # Kill the worker while the first pods exist and the rest are in flight.
    wait_for(lambda: len(pods(main)) >= 2, 30, interval=0.05, what="the first pods")
    worker.kill9()
    killed_at = time.time()

    st = wait_all_terminal(db, eids, 60, main)
    statuses = set(st.values())
    assert statuses <= {"completed", "failed"}, st
    stranded = [eid for eid in eids if st[eid] == "failed"]
    assert stranded, "killing the worker stranded no execution"
    for eid in stranded:
        doc = db.executions.find_one({"execution_id": eid})
        assert doc["error_type"] == "system_error", doc
        assert "did not provision the pod" in doc["error_message"], doc
        # Ended within its deadline plus grace.
        took = (doc["finished_at"] - doc["scheduled_at"]).total_seconds()
        assert took <= (PROVISION_S + GRACE_S) * SLOW, (eid, took)
        saga = saga_of(db, eid)
        assert saga["state"] == "failed" and saga["current_step"] == "provision", saga
        assert set(saga["compensated_steps"]) == {"delete_pod", "release_capacity"}, saga
    assert time.time() - killed_at < 60 * SLOW
    for eid in eids:
        if st[eid] == "completed":
            assert saga_of(db, eid)["completed_steps"] == ["admit", "provision", "run",
                                                             "finalize"]
    # Every saga ended; none is left open.
    wait_for(lambda: db.sagas.count_documents({"state": {"$in": ["running", "compensating"]}})
             == 0, 20, interval=0.2, what="every saga to end")

    # A restarted worker works off the delete commands (and the stale tasks,
    # whose pods the monitor cleans up): no pod is left behind.
    start(execd_factory(roles="worker", env=wenv, prefix=prefix, db=db_name, name="worker2"),
          "worker")
    wait_for(lambda: pods(main) == [], 60, interval=0.25, what="no pod left on the node")
    # The stale pods never change a status.
    assert {eid: status_of(db, eid) for eid in eids} == st


def test_saga_killed_resumes_and_never_compensates_twice(execd_factory):
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    db_name = f"execd_{prefix.rstrip('-')}"
    env = {**ENV, "EXECD_MAX_CONCURRENT": "50", "EXECD_EXECUTION_TIMEOUT_SECONDS": "5"}
    # No worker at all: every scheduled execution waits for a pod that never
    # comes, so only the saga's provision deadline can end it.
    main = start(execd_factory(roles=NO_WORKER, env=env, prefix=prefix, db=db_name,
                               name="main"), "monitor")
    saga = start(execd_factory(roles="saga", env=env, prefix=prefix, db=db_name, name="saga"),
                 "saga")
    db = mongo(db_name)
    u = User(main)
    first = [u.submit("print(1)") for _ in range(5)]
    wait_all_terminal(db, first, 30, saga)
    wait_for(lambda: all(n == 1 for n in commands(main, first, "delete_pod_command").values()),
             10, interval=0.2, what="the first batch's delete commands")

    second = [u.submit("print(2)") for _ in range(5)]
    wait_for(lambda: all((saga_of(db, eid) or {}).get("current_step") == "provision"
                         for eid in second), 20, interval=0.1, what="second batch provisioning")
    saga.kill9()
    # The deadlines pass while no saga role runs.
    wait_for(lambda: all(s["deadline_at_ms"] < time.time() * 1000
                         for s in db.sagas.find({"execution_id": {"$in": second}})),
             (PROVISION_S + 2), interval=0.1, what="the deadlines to pass")
    assert all(status_of(db, eid) == "scheduled" for eid in second)

    saga2 = start(execd_factory(roles="saga", env=env, prefix=prefix, db=db_name,
                                name="saga2"), "saga")
    st = wait_all_terminal(db, second, 20, saga2)
    assert set(st.values()) == {"failed"}, st
    for eid in second:
        doc = db.executions.find_one({"execution_id": eid})
        assert doc["error_type"] == "system_error" and "provision" in doc["error_message"], doc
    everyone = first + second
    for kind in ("delete_pod_command", "release_capacity_command"):
        wait_for(lambda: all(n >= 1 for n in commands(main, everyone, kind).values()), 10,
                 interval=0.2, what=kind)
    # A second restart replays nothing either.
    saga2.kill9()
    saga3 = start(execd_factory(roles="saga", env=env, prefix=prefix, db=db_name,
                                name="saga3"), "saga")
    wait_for(lambda: "saga consuming" in saga3.log(), 10, what="saga3 consuming")
    time_limit = time.monotonic() + 3
    while time.monotonic() < time_limit:  # give a wrong replay the chance to show
        for kind in ("delete_pod_command", "release_capacity_command"):
            counts = commands(main, everyone, kind)
            assert all(n == 1 for n in counts.values()), (kind, counts)
        time.sleep(0.5)
    for eid in everyone:
        s = saga_of(db, eid)
        assert s["state"] == "failed" and s["outbox"] == [], s
        assert sorted(s["compensated_steps"]) == ["delete_pod", "release_capacity"], s
    # The execution_failed of each saga went out exactly once as well.
    failed = [ev for ev in topic(main, "execution_events")
              if ev["event_type"] == "execution_failed" and ev["execution_id"] in everyone]
    assert sorted(ev["execution_id"] for ev in failed) == sorted(everyone)


def test_cancel_both_endpoints_stop_the_pod_and_free_the_slot(execd_factory):
    env = {**ENV, "EXECD_MAX_CONCURRENT": "1", "EXECD_EXECUTION_TIMEOUT_SECONDS": "60"}
    e = start(execd_factory(roles="all", env=env, name="all"), "monitor", "saga", "worker")
    db = mongo(e.db)
    u, other = User(e), User(e)
    admin = User(e, ADMIN[0], ADMIN[1], login_only=True)
    sleeper = "import time\nprint('up', flush=True)\ntime.sleep(120)"
    a = u.submit(sleeper)
    wait_for(lambda: status_of(db, a) == "running", 30, interval=0.05, what="a running")
    b = u.submit(sleeper)
    wait_for(lambda: status_of(db, b) == "queued" and (saga_of(db, b) or {}).get("state"),
             10, interval=0.05, what="b queued behind a")
    assert node_pod(e, a) == 200

    # 1. POST /executions/{id}/cancel.
    t0 = time.monotonic()
    r = u.req("POST", f"/api/v1/executions/{a}/cancel", {"reason": "changed my mind"})
    assert r.status == 200 and r.json()["status"] == "cancellation_requested", r.body
    wait_for(lambda: node_pod(e, a) == 404, 2, interval=0.02, what="a's pod deleted")
    assert time.monotonic() - t0 <= 2 * SLOW
    wait_for(lambda: status_of(db, a) == "cancelled", 5, interval=0.05, what="a cancelled")
    # The freed slot goes to b at once.
    wait_for(lambda: status_of(db, b) in ("scheduled", "running"), 3, interval=0.05,
             what="b scheduled into the freed slot")
    sa = wait_for(lambda: (lambda s: s if s and s["state"] == "cancelled" else None)(
        saga_of(db, a)), 5, interval=0.05, what="a's saga cancelled")
    assert sorted(sa["compensated_steps"]) == ["delete_pod", "release_capacity"], sa
    assert "changed my mind" in sa["error_message"]
    res = u.req("GET", f"/api/v1/executions/{a}/result").json()
    assert res["status"] == "cancelled", res

    # 2. POST /sagas/{id}/cancel.
    wait_for(lambda: status_of(db, b) == "running", 30, interval=0.05, what="b running")
    c = u.submit("print('after')")
    r = u.req("GET", f"/api/v1/sagas/execution/{b}")
    assert r.status == 200, r.body
    view = r.json()
    assert set(view) == SAGA_FIELDS, view
    assert view["state"] == "running" and view["current_step"] == "run", view
    assert view["completed_steps"] == ["admit", "provision"] and view["compensated_steps"] == []
    sid = view["saga_id"]
    assert other.req("POST", f"/api/v1/sagas/{sid}/cancel").status == 403
    cookie = f"access_token={u.token}; csrf_token={u.login['csrf_token']}"
    assert http("POST", e.url + f"/api/v1/sagas/{sid}/cancel",
                headers={"Cookie": cookie, "X-Forwarded-For": u.ip}).status == 403
    t0 = time.monotonic()
    r = u.req("POST", f"/api/v1/sagas/{sid}/cancel")
    assert r.status == 200, r.body
    assert r.json() == {"success": True, "message": r.json()["message"], "saga_id": sid}
    wait_for(lambda: node_pod(e, b) == 404, 2, interval=0.02, what="b's pod deleted")
    assert time.monotonic() - t0 <= 2 * SLOW
    wait_for(lambda: status_of(db, b) == "cancelled", 5, interval=0.05, what="b cancelled")
    # c takes the slot and runs to the end; its saga completes every step.
    wait_for(lambda: status_of(db, c) == "completed", 30, interval=0.1, what="c completed")
    sc = wait_for(lambda: (lambda s: s if s and s["state"] == "completed" else None)(
        u.req("GET", f"/api/v1/sagas/execution/{c}").json()), 10, interval=0.1,
        what="c's saga completed")
    assert sc["completed_steps"] == ["admit", "provision", "run", "finalize"], sc
    assert sc["compensated_steps"] == [] and sc["completed_at"] and sc["error_message"] is None

    # A finished saga cannot be cancelled; the read routes check ownership.
    r = u.req("POST", f"/api/v1/sagas/{sid}/cancel")
    assert r.status == 400 and r.json()["type"] == "InvalidState", r.body
    assert u.req("GET", f"/api/v1/sagas/{sid}").json()["state"] == "cancelled"
    assert other.req("GET", f"/api/v1/sagas/{sid}").status == 403
    assert admin.req("GET", f"/api/v1/sagas/{sid}").status == 200
    assert u.req("GET", f"/api/v1/sagas/{uuid.uuid4()}").status == 404
    assert http("GET", e.url + f"/api/v1/sagas/{sid}").status == 401
    mine = u.req("GET", "/api/v1/sagas/?limit=2").json()
    assert mine["total"] == 3 and mine["limit"] == 2 and mine["skip"] == 0, mine
    assert mine["has_more"] is True and len(mine["sagas"]) == 2
    assert {s["execution_id"] for s in u.req("GET", "/api/v1/sagas/?skip=2").json()["sagas"]} \
        <= {a, b, c}
    got = u.req("GET", "/api/v1/sagas/?state=cancelled").json()
    assert {s["execution_id"] for s in got["sagas"]} == {a, b} and got["total"] == 2
    got = u.req("GET", f"/api/v1/sagas/?execution_id={c}").json()
    assert [s["execution_id"] for s in got["sagas"]] == [c]
    assert other.req("GET", "/api/v1/sagas/").json()["total"] == 0
    assert admin.req("GET", "/api/v1/sagas/").json()["total"] >= 3
    assert u.req("GET", "/api/v1/sagas/?state=nope").status == 422
    assert u.req("GET", "/api/v1/sagas/?limit=0").status == 422
    # Exactly one delete command per cancelled execution, none for c.
    counts = commands(e, [a, b, c], "delete_pod_command")
    assert counts == {a: 1, b: 1, c: 0}, counts
    assert pods(e) == [] or wait_for(lambda: pods(e) == [], 10, what="no pods left")
