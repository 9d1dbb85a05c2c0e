"""The pipeline roles without the api or the worker: coordinator, results,
projection (and the event store), driven by events published with
`execd bus-publish` and observed on the real topics (kcat) and in the test
database (pymongo).

- admission publishes execution_accepted and, only for scheduled work, the
  SAME execution_requested event to execution_tasks, once per execution;
- the global cap holds (EXECD_MAX_CONCURRENT=2 → 2 tasks out of 5) and the
  queue drains in (priority, arrival) order as terminal events free slots;
- per-user concurrency and per-minute limits reject with execution_rejected
  + execution_failed(rate_limited); rate_limit_overrides bypasses them;
- results stores one result and publishes one result_stored even when the
  terminal event comes twice, and keeps the api's fields;
- projection never moves status backwards;
- a coordinator restarted with a non-empty queue drains it.
"""
import json
import os
import subprocess
import time
import uuid

from conftest import EXECD_BIN, KAFKA, SLOW, http, kcat, mongo, wait_for


def publish(e, *args, count=1):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECD_")}
    env.update({"EXECD_KAFKA_BROKERS": KAFKA, "EXECD_TOPIC_PREFIX": e.prefix,
                "EXECD_LOG_LEVEL": "warn"})
    r = subprocess.run([EXECD_BIN, "bus-publish", "--count", str(count), *args], env=env,
                       capture_output=True, text=True, timeout=60 * SLOW)
    assert r.returncode == 0, f"bus-publish {args} failed: {r.stderr}"
    return r.stdout.split()


def request(e, user="alice", priority=5, lang=None):
    """Publishes one execution_requested; returns (execution_id, event_id)."""
    eid = str(uuid.uuid4())
    args = ["--type", "execution_requested", "--aggregate", eid, "--user-id", user,
            "--priority", str(priority)]
    if lang:
        args += ["--lang", lang]
    return eid, publish(e, *args)[0]


def terminal(e, eid, kind="execution_completed", user="alice"):
    return publish(e, "--type", kind, "--aggregate", eid, "--user-id", user)[0]


def events(e, topic="execution_events"):
    out = kcat("-C", "-t", e.prefix + topic, "-e", "-q", "-o", "beginning", "-f", "%s\n")
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def of_type(evs, t, eid=None):
    return [v for v in evs if v["event_type"] == t and (eid is None or v["aggregate_id"] == eid)]


def tasks(e):
    return events(e, "execution_tasks")


def wait_events(e, t, n, topic="execution_events", eid=None, timeout=30):
    return wait_for(lambda: (lambda evs: evs if len(evs) >= n else None)(
        of_type(events(e, topic), t, eid)), timeout, interval=0.2,
        what=f"{n} × {t} on {topic}")


def metric(e, name):
    body = e.get("/metrics").body.decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def start(execd_factory, **env):
    base = {"EXECD_USER_MAX_CONCURRENT": "50", "EXECD_COORDINATOR_SWEEP_MS": "200"}
    base.update(env)
    e = execd_factory(roles="coordinator,results,projection,store", env=base)
    e.start()
    return e


def holders(e):
    return sorted(d["holder"] for d in mongo(e.db).resource_allocations.find({"holder": {"$ne": None}}))


def test_cap_queue_priority_order_and_tasks_exactly_once(execd_factory):
    e = start(execd_factory, EXECD_MAX_CONCURRENT="2")
    a0, ev0 = request(e, priority=1)
    a1, ev1 = request(e, priority=1)
    wait_events(e, "execution_requested", 2, topic="execution_tasks")
    a2, _ = request(e, priority=9)
    a3, _ = request(e, priority=5)
    a4, _ = request(e, priority=9)
    queued = wait_events(e, "execution_queued", 3)
    assert {q["aggregate_id"] for q in queued} == {a2, a3, a4}
    assert sorted(q["position"] for q in queued if q["aggregate_id"] == a2) == [1]
    assert len(tasks(e)) == 2
    assert holders(e) == sorted([a0, a1])
    # The task is the same event that was requested (same event_id), keyed by execution id.
    t = {v["aggregate_id"]: v for v in tasks(e)}
    assert t[a0]["event_id"] == ev0 and t[a1]["event_id"] == ev1
    assert len(mongo(e.db).execution_queue.find_one({"_id": a2})["request"]) > 0

    # Each terminal event frees one slot; the queue drains by priority, then arrival.
    # (kcat interleaves partitions, so each newcomer is found by set difference.)
    seen = {a0, a1}
    for done, kind, nxt in ((a0, "execution_completed", a2), (a1, "execution_cancelled", a4),
                            (a2, "execution_failed", a3)):
        terminal(e, done, kind)
        got = wait_events(e, "execution_requested", len(seen) + 1, topic="execution_tasks")
        new = {v["aggregate_id"] for v in got} - seen
        assert new == {nxt}, f"after {kind} of one, expected {nxt} next, got {new}"
        seen |= new
        assert len(holders(e)) == 2
    for done in (a3, a4):
        terminal(e, done, "execution_timeout")
    wait_for(lambda: holders(e) == [], 20, what="all slots released")
    assert mongo(e.db).execution_queue.count_documents({}) == 0

    evs = events(e)
    ids = [a0, a1, a2, a3, a4]
    for x in ids:
        assert len(of_type(evs, "execution_accepted", x)) == 1
        assert len(of_type(evs, "execution_scheduled", x)) == 1
    time.sleep(0.5)
    all_tasks = tasks(e)
    assert sorted(v["aggregate_id"] for v in all_tasks) == sorted(ids)
    assert {v["event_type"] for v in all_tasks} == {"execution_requested"}
    # Scheduled comes before its task is consumed by anyone, after its queued event.
    for x in (a2, a3, a4):
        pos = [v["event_type"] for v in evs if v["aggregate_id"] == x]
        assert pos.index("execution_queued") < pos.index("execution_scheduled")
    # The read model followed: every one ended, a2 failed, a3/a4 timeout.
    db = mongo(e.db)
    wait_for(lambda: db.executions.count_documents({"status_rank": 3}) == 5, 20,
             what="five terminal executions in the read model: "
             + repr([(d["execution_id"][:8], d.get("status")) for d in db.executions.find()]))
    assert db.executions.find_one({"execution_id": a2})["status"] == "failed"
    assert db.executions.find_one({"execution_id": a3})["error_type"] == "timeout"


def test_user_limits_reject_and_overrides(execd_factory):
    e = start(execd_factory, EXECD_MAX_CONCURRENT="10", EXECD_USER_MAX_CONCURRENT="2",
              EXECD_USER_MAX_PER_MINUTE="3")
    r1, _ = request(e, user="u1")
    r2, _ = request(e, user="u1")
    wait_events(e, "execution_requested", 2, topic="execution_tasks")
    r3, _ = request(e, user="u1")  # concurrency: 2 active
    rej = wait_events(e, "execution_rejected", 1, eid=r3)[0]
    assert "concurrent" in rej["reason"] and rej["retry_after"] >= 1
    fail = wait_events(e, "execution_failed", 1, eid=r3)[0]
    assert fail["error_type"] == "rate_limited" and fail["message"] == rej["reason"]

    terminal(e, r1, user="u1")
    wait_for(lambda: len(holders(e)) == 1, 20, what="r1 released")
    r4, _ = request(e, user="u1")  # 1 active, 3rd admission in the window
    wait_events(e, "execution_requested", 3, topic="execution_tasks")
    terminal(e, r2, user="u1")
    wait_for(lambda: len(holders(e)) == 1, 20, what="r2 released")
    r5, _ = request(e, user="u1")  # 1 active, but 3 admissions in the last minute
    rej5 = wait_events(e, "execution_rejected", 1, eid=r5)[0]
    assert "per minute" in rej5["reason"] and 1 <= rej5["retry_after"] <= 60
    assert wait_events(e, "execution_failed", 1, eid=r5)[0]["error_type"] == "rate_limited"

    # Unknown runtime: rejected, failed/system_error.
    bad, _ = request(e, user="u3", lang="cobol")
    assert wait_events(e, "execution_failed", 1, eid=bad)[0]["error_type"] == "system_error"

    # An admin override bypasses the per-user limits.
    mongo(e.db).rate_limit_overrides.insert_one({"_id": "vip", "bypass": True, "multiplier": 1})
    vip = [request(e, user="vip")[0] for _ in range(4)]
    for v in vip:
        wait_events(e, "execution_accepted", 1, eid=v)

    got = {v["aggregate_id"] for v in tasks(e)}
    assert got == {r1, r2, r4, *vip}
    assert not got & {r3, r5, bad}
    evs = events(e)
    for x in (r3, r5, bad):
        assert of_type(evs, "execution_accepted", x) == []
        assert of_type(evs, "execution_scheduled", x) == []
    db = mongo(e.db)
    wait_for(lambda: (db.executions.find_one({"execution_id": r5}) or {}).get("status") == "failed",
             20, what="r5 failed in the read model")
    assert db.executions.find_one({"execution_id": r5})["error_type"] == "rate_limited"


def test_results_exactly_once_and_projection_forward_only(execd_factory):
    e = start(execd_factory)
    db = mongo(e.db)
    # The api's insert came first for x; y has no document at all.
    x, y = str(uuid.uuid4()), str(uuid.uuid4())
    db.executions.insert_one({"execution_id": x, "user_id": "alice", "script": "print(1)",
                              "lang": "python", "lang_version": "3.11", "status": "queued",
                              "status_rank": 0, "priority": 5})
    publish(e, "--type", "execution_started", "--aggregate", x)
    for _ in range(2):
        terminal(e, x)
        terminal(e, y)
    publish(e, "--type", "execution_failed", "--aggregate", x)
    stored = wait_events(e, "result_stored", 1, eid=x)
    wait_events(e, "result_stored", 1, eid=y)
    wait_for(lambda: metric(e, "execd_results_duplicate_total") >= 3, 30,
             what="the duplicate terminal events handled by results")
    # Late (backwards) event: running after completed.
    publish(e, "--type", "execution_started", "--aggregate", y)
    wait_for(lambda: metric(e, "execd_projection_stale_total") >= 4, 30,
             what="stale status updates seen by the projection")

    evs = events(e)
    assert len(of_type(evs, "result_stored", x)) == 1
    assert len(of_type(evs, "result_stored", y)) == 1
    assert stored[0]["size_bytes"] == len("hello\n") and stored[0]["status"] == "completed"
    for eid in (x, y):
        docs = list(db.executions.find({"execution_id": eid}))
        assert len(docs) == 1
        d = docs[0]
        assert d["status"] == "completed" and d["status_rank"] == 3, d
        assert d["stdout"] == "hello\n" and d["exit_code"] == 0
        assert d["resource_usage"]["peak_memory_kb"] == 9000
        assert "finished_at" in d and "error_type" not in d
        r = list(db.execution_results.find({"execution_id": eid}))
        assert len(r) == 1
        assert r[0]["status"] == "completed" and r[0]["stdout"] == "hello\n"
        assert r[0]["published"] is True and r[0]["size_bytes"] == 6
        # The result_stored event carries the id recorded with the result.
        assert [v["event_id"] for v in of_type(evs, "result_stored", eid)] == [r[0]["result_event_id"]]
    dx = db.executions.find_one({"execution_id": x})
    assert dx["script"] == "print(1)" and dx["user_id"] == "alice" and "started_at" in dx
    dy = db.executions.find_one({"execution_id": y})
    assert "started_at" not in dy
    # The event store holds exactly one result_stored per execution too.
    wait_for(lambda: db.events.count_documents({"event_type": "result_stored"}) == 2, 20,
             what="two result_stored in the event store")


def test_restart_with_queue_drains_it(execd_factory):
    e = start(execd_factory, EXECD_MAX_CONCURRENT="1")
    ids = []
    for p in (1, 2, 3):
        ids.append(request(e, priority=p)[0])
        if p == 1:
            wait_events(e, "execution_requested", 1, topic="execution_tasks")
    wait_events(e, "execution_queued", 2)
    assert e.stop() == 0
    db = mongo(e.db)
    assert sorted(d["_id"] for d in db.execution_queue.find()) == sorted(ids[1:])
    assert len(tasks(e)) == 1

    # Same database and topics, more capacity: the queue in MongoDB is drained at start,
    # with no new event to trigger it, in priority order.
    e2 = execd_factory(roles="coordinator,results,projection,store", prefix=e.prefix, db=e.db,
                       env={"EXECD_MAX_CONCURRENT": "3", "EXECD_COORDINATOR_SWEEP_MS": "200"},
                       name="restarted")
    e2.start()
    wait_events(e2, "execution_requested", 3, topic="execution_tasks")
    sched = sorted(of_type(events(e2), "execution_scheduled"), key=lambda v: v["timestamp"])
    assert [v["aggregate_id"] for v in sched] == [ids[0], ids[2], ids[1]]
    assert db.execution_queue.count_documents({}) == 0
    assert holders(e2) == sorted(ids)
    # A terminal event published while nothing runs is applied after a restart too.
    terminal(e2, ids[2])
    wait_for(lambda: holders(e2) == sorted([ids[0], ids[1]]), 20, what="ids[2] released")
    time.sleep(0.5)
    assert sorted(v["aggregate_id"] for v in tasks(e2)) == sorted(ids)
