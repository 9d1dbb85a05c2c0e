"""The executions API (issue 5, api bullet), end to end over HTTP.

One execd with roles api,store (real Kafka + FerretDB) serves most tests:
submit writes the queued record and publishes execution_requested, reads
come from the read model and the event store.  Without the pipeline roles
nothing moves a status, so tests that need a terminal execution set it in
Mongo the way the projection would.  The last test runs every role and
drives print("hello") through the whole pipeline.
"""
import datetime
import json
import random
import time
import uuid

import pytest

from conftest import SLOW, Execd, http, kcat, mongo, wait_for

ADMIN = ("execadmin", "admin-password-123")
ENV = {
    "EXECD_BCRYPT_COST": "4",
    "EXECD_ADMIN_USERNAME": ADMIN[0],
    "EXECD_ADMIN_PASSWORD": ADMIN[1],
    "EXECD_RATE_LIMIT_ENABLED": "false",
    "EXECD_EXECUTION_TIMEOUT_SECONDS": "7",
    "EXECD_POD_CPU_LIMIT": "500m",
    "EXECD_POD_MEMORY_LIMIT": "96Mi",
    "EXECD_POD_CPU_REQUEST": "50m",
    "EXECD_POD_MEMORY_REQUEST": "32Mi",
}
RESULT_FIELDS = {"execution_id", "status", "stdout", "stderr", "lang", "lang_version",
                 "resource_usage", "exit_code", "error_type", "priority"}
USAGE_FIELDS = {"execution_time_wall_seconds", "cpu_time_jiffies", "clk_tck_hertz",
                "peak_memory_kb"}
ENVELOPE = {"event_id", "event_type", "event_version", "timestamp", "aggregate_id",
            "correlation_id", "causation_id", "metadata"}
STORE_ONLY = {"_id", "topic", "partition", "offset", "stored_at", "ts"}


def fresh_ip():
    return f"198.51.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    e = Execd(tmp_path_factory.mktemp("exec-api"), roles="api,store", env=ENV, name="exec-api")
    e.start()
    yield e
    rc = e.stop()
    log = e.log()
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]
    assert rc == 0, log[-3000:]


class User:
    """A Bearer-token client (no CSRF needed) with its own IP."""

    def __init__(self, e, username=None, password="password-123", login_only=False):
        self.e = e
        self.ip = fresh_ip()
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
        me = self.req("GET", "/api/v1/auth/me")
        assert me.status == 200, me.body
        self.user_id = me.json()["user_id"]

    def req(self, method, path, body=None, headers=None):
        h = {"X-Forwarded-For": self.ip, "Authorization": f"Bearer {self.token}"}
        h.update(headers or {})
        return http(method, self.e.url + path, body=body, headers=h)

    def submit(self, script='print("hi")', **kw):
        r = self.req("POST", "/api/v1/execute", {"script": script, **kw})
        assert r.status == 200, r.body
        return r.json()["execution_id"]


def admin(e):
    return User(e, ADMIN[0], ADMIN[1], login_only=True)


def db(e):
    return mongo(e.db)


def topic_events(e, topic="execution_events"):
    out = kcat("-C", "-t", e.prefix + topic, "-e", "-q", "-o", "beginning", "-J")
    msgs = []
    for line in out.decode().splitlines():
        if line.strip():
            m = json.loads(line)
            m["event"] = json.loads(m["payload"])
            msgs.append(m)
    return msgs


def wait_event(e, event_type, aggregate_id, n=1, timeout=20):
    def found():
        hits = [m for m in topic_events(e) if m["event"]["event_type"] == event_type
                and m["event"]["aggregate_id"] == aggregate_id]
        return hits if len(hits) >= n else None
    return wait_for(found, timeout, interval=0.2, what=f"{event_type} of {aggregate_id}")


def set_status(e, execution_id, status, **fields):
    rank = {"queued": 0, "scheduled": 1, "running": 2}.get(status, 3)
    r = db(e).executions.update_one({"execution_id": execution_id},
                                    {"$set": {"status": status, "status_rank": rank, **fields}})
    assert r.matched_count == 1


def test_submit_inserts_queued_and_publishes_execution_requested(api):
    u = User(api)
    t0 = datetime.datetime.now(datetime.timezone.utc)
    r = u.req("POST", "/api/v1/execute",
              {"script": 'print("hello")', "lang": "python", "lang_version": "3.11"},
              headers={"User-Agent": "exec-test/1.0"})
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == {"execution_id", "status"} and body["status"] == "queued"
    eid = body["execution_id"]
    assert uuid.UUID(eid).version == 4

    doc = db(api).executions.find_one({"execution_id": eid})
    assert doc is not None
    assert doc["user_id"] == u.user_id and doc["script"] == 'print("hello")'
    assert (doc["lang"], doc["lang_version"]) == ("python", "3.11")
    assert doc["status"] == "queued" and doc["status_rank"] == 0 and doc["priority"] == 5
    assert doc["timeout_seconds"] == 7
    assert isinstance(doc["created_at"], datetime.datetime)
    created = doc["created_at"].replace(tzinfo=datetime.timezone.utc)
    assert abs((created - t0).total_seconds()) < 30
    assert doc["updated_at"] == doc["created_at"]
    for f in ("stdout", "stderr", "exit_code", "resource_usage", "error_type"):
        assert f in doc and doc[f] is None, f
    # $min targets of the projection are not pre-set (a null would win every $min).
    for f in ("queued_at", "scheduled_at", "started_at", "finished_at"):
        assert f not in doc

    m = wait_event(api, "execution_requested", eid)[0]
    ev = m["event"]
    assert m["key"] == eid
    headers = {k: v for k, v in zip(m["headers"][::2], m["headers"][1::2])} \
        if m["headers"] and isinstance(m["headers"][0], str) else dict(m["headers"] or [])
    assert headers.get("event_type") == "execution_requested", m["headers"]
    assert ENVELOPE <= set(ev)
    assert ev["execution_id"] == eid and ev["aggregate_id"] == eid
    assert ev["script"] == 'print("hello")' and ev["lang"] == "python"
    assert ev["lang_version"] == "3.11"
    assert ev["runtime_image"] == "python:3.11-slim"
    assert ev["runtime_command"] == ["python", "-u", "main.py"]
    assert ev["timeout_seconds"] == 7 and ev["priority"] == 5
    assert (ev["cpu_limit"], ev["memory_limit"]) == ("500m", "96Mi")
    assert (ev["cpu_request"], ev["memory_request"]) == ("50m", "32Mi")
    md = ev["metadata"]
    assert md["user_id"] == u.user_id and md["ip"] == u.ip
    assert md["user_agent"] == "exec-test/1.0" and md["service"]

    # Another runtime: the command and image come from the runtimes table.
    nid = u.submit("console.log(1)", lang="node", lang_version="20")
    ev = wait_event(api, "execution_requested", nid)[0]["event"]
    assert ev["runtime_image"] == "node:20-slim" and ev["runtime_command"] == ["node", "main.js"]
    # The submit latency histogram counts each queued execution.
    metrics = http("GET", api.url + "/metrics").body.decode()
    assert "execd_api_executions_submitted_total" in metrics
    assert "execd_api_submit_to_requested_seconds_count" in metrics


def test_submit_validation_and_auth(api):
    u = User(api)
    # Defaults: python 3.11.
    eid = u.submit("x = 1")
    doc = db(api).executions.find_one({"execution_id": eid})
    assert (doc["lang"], doc["lang_version"]) == ("python", "3.11")

    def err(body):
        r = u.req("POST", "/api/v1/execute", body)
        assert r.status == 422, (body, r.status, r.body)
        return r.json()["detail"]

    d = err({"script": "x", "lang": "cobol"})
    assert d[0]["loc"] == ["body", "lang"] and "python" in d[0]["msg"]
    d = err({"script": "x", "lang": "python", "lang_version": "2.7"})
    assert d[0]["loc"] == ["body", "lang_version"] and "3.11" in d[0]["msg"]
    d = err({"script": "x" * 50001})
    assert d[0]["loc"] == ["body", "script"] and d[0]["type"] == "string_too_long"
    assert err({"lang": "python"})[0]["type"] == "missing"
    assert err({"script": 5})[0]["type"] == "string_type"
    assert err({"script": "x", "timeout": 3})[0]["type"] == "extra_forbidden"
    r = u.req("POST", "/api/v1/execute", "not json", headers={"Content-Type": "application/json"})
    assert r.status == 422
    # Bytes that are not UTF-8 cannot be stored: 422, not a store error.
    for raw in (b'{"script":"\xff\xfe"}', b'{"script":"x","lang":"py\xc0\xaf"}',
                b'{"script":"\xed\xa0\x80"}'):
        r = u.req("POST", "/api/v1/execute", raw, headers={"Content-Type": "application/json"})
        assert r.status == 422 and r.json()["detail"][0]["type"] == "string_unicode", (raw, r.body)
    # Exactly the limit is fine (characters, not bytes).
    assert u.req("POST", "/api/v1/execute", {"script": "é" * 50000}).status == 200
    # Nothing was inserted for the rejected requests.
    assert db(api).executions.count_documents({"user_id": u.user_id}) == 2

    anon = http("POST", api.url + "/api/v1/execute", body={"script": "x"},
                headers={"X-Forwarded-For": fresh_ip()})
    assert anon.status == 401
    # A cookie session needs the CSRF token; Bearer does not.
    cookie = f"access_token={u.token}; csrf_token={u.login['csrf_token']}"
    r = http("POST", api.url + "/api/v1/execute", body={"script": "x"},
             headers={"Cookie": cookie, "X-Forwarded-For": u.ip})
    assert r.status == 403 and r.json()["detail"] == "CSRF validation failed"
    r = http("POST", api.url + "/api/v1/execute", body={"script": "x"},
             headers={"Cookie": cookie, "X-Forwarded-For": u.ip,
                      "X-CSRF-Token": u.login["csrf_token"]})
    assert r.status == 200, r.body


def test_idempotency_key_replay_and_in_flight(api):
    u, other = User(api), User(api)
    key = "key-" + uuid.uuid4().hex
    h = {"Idempotency-Key": key}
    r1 = u.req("POST", "/api/v1/execute", {"script": "print(1)"}, headers=h)
    assert r1.status == 200, r1.body
    # A repeat (even with another body) returns the first response.
    r2 = u.req("POST", "/api/v1/execute", {"script": "print(2)"}, headers=h)
    assert r2.status == 200 and r2.json() == r1.json()
    assert r2.header("Idempotent-Replayed") == "true"
    assert db(api).executions.count_documents({"user_id": u.user_id}) == 1
    eid = r1.json()["execution_id"]
    assert len(wait_event(api, "execution_requested", eid)) == 1
    # The same key of another user is another request.
    r3 = other.req("POST", "/api/v1/execute", {"script": "print(1)"}, headers=h)
    assert r3.status == 200 and r3.json()["execution_id"] != eid

    # A claim still in flight → 409, and nothing is inserted.
    busy = "busy-" + uuid.uuid4().hex
    now = datetime.datetime.now(datetime.timezone.utc)
    db(api).idempotency_keys.insert_one({
        "_id": f"{u.user_id}:{busy}", "user_id": u.user_id, "key": busy, "status": "in_flight",
        "created_at": now, "expires_at": now + datetime.timedelta(hours=24)})
    r = u.req("POST", "/api/v1/execute", {"script": "print(3)"}, headers={"Idempotency-Key": busy})
    assert r.status == 409 and r.json()["type"] == "Conflict", r.body
    assert db(api).executions.count_documents({"user_id": u.user_id}) == 1
    # A bad key is a validation error.
    r = u.req("POST", "/api/v1/execute", {"script": "x"}, headers={"Idempotency-Key": "k" * 256})
    assert r.status == 422 and r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    # A rejected body does not burn the key.
    k2 = "k2-" + uuid.uuid4().hex
    assert u.req("POST", "/api/v1/execute", {"script": "x", "lang": "nope"},
                 headers={"Idempotency-Key": k2}).status == 422
    r = u.req("POST", "/api/v1/execute", {"script": "x"}, headers={"Idempotency-Key": k2})
    assert r.status == 200 and r.json()["status"] == "queued"

    # Concurrent repeats: exactly one execution, every answer is 200 with it or 409.
    import concurrent.futures
    k3 = "k3-" + uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(lambda _: u.req("POST", "/api/v1/execute", {"script": "print(9)"},
                                           headers={"Idempotency-Key": k3}), range(8)))
    ok = {r.json()["execution_id"] for r in rs if r.status == 200}
    assert len(ok) == 1 and all(r.status in (200, 409) for r in rs), [r.status for r in rs]
    assert db(api).executions.count_documents({"user_id": u.user_id, "script": "print(9)"}) == 1


def test_result_owner_admin_and_every_field(api):
    u, other, adm = User(api), User(api), admin(api)
    eid = u.submit('print("r")')
    for path in (f"/api/v1/executions/{eid}/result", f"/api/v1/result/{eid}"):
        r = u.req("GET", path)
        assert r.status == 200, r.body
        res = r.json()
        assert set(res) == RESULT_FIELDS
        assert res["execution_id"] == eid and res["status"] == "queued"
        assert (res["lang"], res["lang_version"], res["priority"]) == ("python", "3.11", 5)
        for f in ("stdout", "stderr", "resource_usage", "exit_code", "error_type"):
            assert res[f] is None, f
        r = other.req("GET", path)
        assert r.status == 403 and r.json()["type"] == "Forbidden"
        assert adm.req("GET", path).status == 200
    assert u.req("GET", f"/api/v1/executions/{uuid.uuid4()}/result").status == 404
    assert u.req("GET", f"/api/v1/result/{uuid.uuid4()}").status == 404
    assert http("GET", api.url + f"/api/v1/executions/{eid}/result").status == 401

    usage = {"execution_time_wall_seconds": 0.25, "cpu_time_jiffies": 3, "clk_tck_hertz": 100,
             "peak_memory_kb": 9000}
    set_status(api, eid, "completed", stdout="r\n", stderr="", exit_code=0, resource_usage=usage)
    res = u.req("GET", f"/api/v1/executions/{eid}/result").json()
    assert res["status"] == "completed" and res["stdout"] == "r\n" and res["stderr"] == ""
    assert res["exit_code"] == 0 and res["resource_usage"] == usage and res["error_type"] is None
    # A partial resource_usage still has every key.
    set_status(api, eid, "completed", resource_usage={"peak_memory_kb": 5})
    ru = u.req("GET", f"/api/v1/executions/{eid}/result").json()["resource_usage"]
    assert set(ru) == USAGE_FIELDS and ru["peak_memory_kb"] == 5
    assert ru["execution_time_wall_seconds"] is None

    # The results role's record shows while the projection lags behind it.
    lag = u.submit("import sys; sys.exit(3)")
    db(api).execution_results.insert_one({
        "_id": lag, "execution_id": lag, "user_id": u.user_id, "status": "completed",
        "stdout": "", "stderr": "boom", "exit_code": 3, "resource_usage": usage,
        "error_type": None})
    res = u.req("GET", f"/api/v1/executions/{lag}/result").json()
    assert res["status"] == "completed" and res["exit_code"] == 3 and res["stderr"] == "boom"
    assert set(res) == RESULT_FIELDS


def test_user_executions_pagination_and_filters(api):
    u, other = User(api), User(api)
    ids = [u.submit(f"print({i})") for i in range(3)]
    ids += [u.submit("console.log(1)", lang="node", lang_version="20") for _ in range(2)]
    other.submit()
    set_status(api, ids[1], "completed", stdout="1\n", exit_code=0)

    def page(query=""):
        r = u.req("GET", "/api/v1/user/executions" + query)
        assert r.status == 200, (query, r.body)
        return r.json()

    p = page()
    assert set(p) == {"executions", "total", "limit", "skip", "has_more"}
    assert (p["total"], p["limit"], p["skip"], p["has_more"]) == (5, 50, 0, False)
    assert {x["execution_id"] for x in p["executions"]} == set(ids)
    for x in p["executions"]:
        assert RESULT_FIELDS <= set(x) and x["created_at"].endswith("Z")
    created = [x["created_at"] for x in p["executions"]]
    assert created == sorted(created, reverse=True)

    p = page("?limit=2")
    assert len(p["executions"]) == 2 and p["total"] == 5 and p["has_more"] is True
    p2 = page("?limit=2&skip=2")
    p3 = page("?limit=2&skip=4")
    assert len(p2["executions"]) == 2 and p2["has_more"] is True
    assert len(p3["executions"]) == 1 and p3["has_more"] is False and p3["skip"] == 4
    seen = [x["execution_id"] for q in (p, p2, p3) for x in q["executions"]]
    assert sorted(seen) == sorted(ids)

    p = page("?status=completed")
    assert p["total"] == 1 and p["executions"][0]["execution_id"] == ids[1]
    assert p["executions"][0]["stdout"] == "1\n"
    p = page("?lang=node")
    assert p["total"] == 2 and {x["lang"] for x in p["executions"]} == {"node"}
    future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    assert page(f"?start_time={future.strftime(fmt)}")["total"] == 0
    assert page(f"?end_time={past.strftime(fmt)}")["total"] == 0
    assert page(f"?start_time={past.strftime(fmt)}&end_time={future.strftime(fmt)}")["total"] == 5
    for q in ("?limit=0", "?limit=201", "?skip=-1", "?status=bogus", "?start_time=yesterday",
              "?limit=abc"):
        r = u.req("GET", "/api/v1/user/executions" + q)
        assert r.status == 422, (q, r.status, r.body)
    assert page("?limit=200")["limit"] == 200
    op = other.req("GET", "/api/v1/user/executions").json()
    assert op["total"] == 1 and not set(x["execution_id"] for x in op["executions"]) & set(ids)
    assert http("GET", api.url + "/api/v1/user/executions").status == 401


def test_events_from_the_event_store(api):
    u, other, adm = User(api), User(api), admin(api)
    eid = u.submit()
    r = u.req("POST", f"/api/v1/executions/{eid}/cancel", {"reason": "changed my mind"})
    assert r.status == 200, r.body
    path = f"/api/v1/executions/{eid}/events"

    def two():
        r = u.req("GET", path)
        assert r.status == 200, r.body
        evs = r.json()
        return evs if len(evs) >= 2 else None

    evs = wait_for(two, 20, interval=0.2, what="both events in the event store")
    assert [e["event_type"] for e in evs] == ["execution_requested",
                                              "execution_cancel_requested"]
    for e in evs:
        assert ENVELOPE <= set(e) and not (STORE_ONLY & set(e)), set(e)
        assert e["aggregate_id"] == eid and e["metadata"]["user_id"] == u.user_id
    assert evs[0]["script"] == 'print("hi")' and evs[1]["reason"] == "changed my mind"
    assert evs[0]["timestamp"] < evs[1]["timestamp"]

    only = u.req("GET", path + "?event_types=execution_cancel_requested").json()
    assert [e["event_type"] for e in only] == ["execution_cancel_requested"]
    both = u.req("GET", path + "?event_types=execution_cancel_requested"
                 "&event_types=execution_requested").json()
    assert len(both) == 2
    assert [e["event_type"] for e in u.req("GET", path + "?limit=1").json()] == \
        ["execution_requested"]
    assert u.req("GET", path + "?event_types=pod_created").json() == []
    assert adm.req("GET", path).status == 200
    assert other.req("GET", path).status == 403
    assert u.req("GET", f"/api/v1/executions/{uuid.uuid4()}/events").status == 404
    for q in ("?limit=0", "?limit=1001", "?event_types=no_such_event"):
        assert u.req("GET", path + q).status == 422, q


def test_cancel(api):
    u, other = User(api), User(api)
    eid = u.submit()
    assert other.req("POST", f"/api/v1/executions/{eid}/cancel", {}).status == 403
    assert u.req("POST", f"/api/v1/executions/{uuid.uuid4()}/cancel", {}).status == 404
    r = u.req("POST", f"/api/v1/executions/{eid}/cancel", {"reason": "stop it"})
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == {"execution_id", "status", "message", "event_id"}
    assert body["execution_id"] == eid and body["status"] == "cancellation_requested"
    assert body["message"]
    ev = wait_event(api, "execution_cancel_requested", eid)[0]["event"]
    assert ev["event_id"] == body["event_id"] and ev["execution_id"] == eid
    assert ev["reason"] == "stop it" and ev["by"] == u.user_id
    assert ev["metadata"]["user_id"] == u.user_id
    # Without a body (alias route) a default reason is sent.
    r = u.req("POST", f"/api/v1/{eid}/cancel")
    assert r.status == 200 and r.json()["status"] == "cancellation_requested", r.body
    evs = wait_event(api, "execution_cancel_requested", eid, n=2)
    assert evs[1]["event"]["reason"]
    assert u.req("POST", f"/api/v1/executions/{eid}/cancel", {"reason": 3}).status == 422

    set_status(api, eid, "cancelled")
    r = u.req("POST", f"/api/v1/executions/{eid}/cancel", {})
    assert r.status == 200 and r.json()["status"] == "already_cancelled"
    assert r.json()["event_id"] is None
    for st in ("completed", "failed", "timeout"):
        tid = u.submit()
        set_status(api, tid, st)
        r = u.req("POST", f"/api/v1/executions/{tid}/cancel", {})
        assert r.status == 400 and r.json()["type"] == "InvalidState", (st, r.body)
    assert len(wait_event(api, "execution_cancel_requested", eid, n=2)) == 2
    # Cookie sessions need CSRF here too.
    cookie = f"access_token={u.token}; csrf_token={u.login['csrf_token']}"
    r = http("POST", api.url + f"/api/v1/executions/{eid}/cancel", body={},
             headers={"Cookie": cookie, "X-Forwarded-For": u.ip})
    assert r.status == 403


def test_retry(api):
    u, other, adm = User(api), User(api), admin(api)
    eid = u.submit("print('again')", lang="python", lang_version="3.12")
    for st in ("queued", "scheduled", "running"):
        set_status(api, eid, st)
        r = u.req("POST", f"/api/v1/executions/{eid}/retry")
        assert r.status == 400 and r.json()["type"] == "InvalidState", (st, r.body)
    set_status(api, eid, "failed", error_type="system_error")
    assert other.req("POST", f"/api/v1/executions/{eid}/retry").status == 403
    assert u.req("POST", f"/api/v1/executions/{uuid.uuid4()}/retry").status == 404
    r = u.req("POST", f"/api/v1/executions/{eid}/retry")
    assert r.status == 200, r.body
    new = r.json()
    assert set(new) == {"execution_id", "status"} and new["status"] == "queued"
    assert new["execution_id"] != eid
    doc = db(api).executions.find_one({"execution_id": new["execution_id"]})
    assert doc["script"] == "print('again')" and doc["lang_version"] == "3.12"
    assert doc["user_id"] == u.user_id and doc["status"] == "queued"
    ev = wait_event(api, "execution_requested", new["execution_id"])[0]["event"]
    assert ev["runtime_image"] == "python:3.12-slim"
    r = u.req("POST", f"/api/v1/{eid}/retry")
    assert r.status == 200 and r.json()["execution_id"] not in (eid, new["execution_id"])
    assert adm.req("POST", f"/api/v1/executions/{eid}/retry").status == 200


def test_admin_delete(api):
    u, adm = User(api), admin(api)
    eid = u.submit()
    assert u.req("DELETE", f"/api/v1/executions/{eid}").status == 403
    r = adm.req("DELETE", f"/api/v1/executions/{eid}")
    assert r.status == 200, r.body
    assert r.json() == {"message": r.json()["message"], "execution_id": eid}
    assert r.json()["message"]
    assert db(api).executions.count_documents({"execution_id": eid}) == 0
    assert adm.req("DELETE", f"/api/v1/executions/{eid}").status == 404
    assert u.req("GET", f"/api/v1/executions/{eid}/result").status == 404


def test_example_scripts_and_k8s_limits(api):
    r = http("GET", api.url + "/api/v1/example-scripts", headers={"X-Forwarded-For": fresh_ip()})
    assert r.status == 200
    assert r.header("Cache-Control") == "public, max-age=600"
    scripts = r.json()["scripts"]
    assert scripts["python"] == 'print("hello")\n'
    assert {"python", "node", "ruby", "bash", "go"} <= set(scripts)
    assert all(isinstance(v, str) and v for v in scripts.values())

    r = http("GET", api.url + "/api/v1/k8s-limits", headers={"X-Forwarded-For": fresh_ip()})
    assert r.status == 200
    assert r.header("Cache-Control") == "public, max-age=300"
    lim = r.json()
    assert set(lim) == {"cpu_limit", "memory_limit", "cpu_request", "memory_request",
                        "execution_timeout", "supported_runtimes"}
    assert (lim["cpu_limit"], lim["memory_limit"]) == ("500m", "96Mi")
    assert (lim["cpu_request"], lim["memory_request"]) == ("50m", "32Mi")
    assert lim["execution_timeout"] == 7
    py = lim["supported_runtimes"]["python"]
    assert "3.11" in py["versions"] and py["file_ext"] == "py"
    assert lim["supported_runtimes"]["node"]["file_ext"] == "js"
    assert set(lim["supported_runtimes"]) == set(scripts)


def test_openapi_lists_the_execution_routes(api):
    doc = http("GET", api.url + "/api/v1/openapi.json").json()
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    want = {("POST", "/api/v1/execute"),
            ("GET", "/api/v1/executions/{execution_id}/result"),
            ("GET", "/api/v1/executions/{execution_id}/events"),
            ("POST", "/api/v1/executions/{execution_id}/cancel"),
            ("POST", "/api/v1/executions/{execution_id}/retry"),
            ("DELETE", "/api/v1/executions/{execution_id}"),
            ("GET", "/api/v1/user/executions"), ("GET", "/api/v1/example-scripts"),
            ("GET", "/api/v1/k8s-limits"), ("GET", "/api/v1/result/{execution_id}"),
            ("POST", "/api/v1/{execution_id}/cancel"), ("POST", "/api/v1/{execution_id}/retry")}
    assert want <= ops, want - ops
    schemas = doc["components"]["schemas"]
    refs = json.dumps(doc["paths"])
    for name in ("ExecuteRequest", "ExecutionResult", "ExecutionList", "CancelResponse",
                 "K8sLimits", "ExampleScripts", "EventList"):
        assert name in schemas and f"#/components/schemas/{name}" in refs
    assert set(schemas["ExecutionResult"]["required"]) == RESULT_FIELDS
    execute = doc["paths"]["/api/v1/execute"]["post"]
    assert execute["x-execd-auth"] == "user" and execute["requestBody"]["required"] is True


def test_end_to_end_hello(execd_factory):
    e = execd_factory(roles="all", env={**ENV, "EXECD_EXECUTION_TIMEOUT_SECONDS": "10",
                                        "EXECD_POD_MEMORY_LIMIT": "128Mi"}, name="exec-all")
    e.start()
    u = User(e)
    eid = u.submit('print("hello")')

    def done():
        r = u.req("GET", f"/api/v1/executions/{eid}/result")
        assert r.status == 200, r.body
        res = r.json()
        return res if res["status"] in ("completed", "failed", "timeout", "cancelled") else None

    res = wait_for(done, 60, interval=0.1, what="hello world to finish")
    assert res["status"] == "completed", (res, e.log()[-4000:])
    assert res["stdout"] == "hello\n" and res["exit_code"] == 0 and res["error_type"] is None
    assert set(res) == RESULT_FIELDS
    ru = res["resource_usage"]
    assert set(ru) == USAGE_FIELDS
    assert ru["execution_time_wall_seconds"] > 0 and ru["peak_memory_kb"] > 0

    def ordered():
        evs = [x["event_type"] for x in u.req("GET", f"/api/v1/executions/{eid}/events").json()]
        return evs if "result_stored" in evs else None

    evs = wait_for(ordered, 20, interval=0.2, what="result_stored in the event store")
    assert evs[0] == "execution_requested"
    assert evs.index("execution_scheduled") < evs.index("execution_started") < \
        evs.index("execution_completed") < evs.index("result_stored")
    # A finished execution can be retried and cannot be cancelled.
    assert u.req("POST", f"/api/v1/executions/{eid}/cancel", {}).status == 400
    r = u.req("POST", f"/api/v1/executions/{eid}/retry")
    assert r.status == 200
    again = r.json()["execution_id"]
    res = wait_for(lambda: (lambda x: x if x["status"] == "completed" else None)(
        u.req("GET", f"/api/v1/result/{again}").json()), 60, interval=0.1, what="the retry")
    assert res["stdout"] == "hello\n"


def test_bad_input_never_breaks_the_routes(api):
    """Random ids, queries and bodies on every execution route: 4xx, never 5xx or a hang."""
    u = User(api)
    eid = u.submit()
    rng = random.Random(1234)
    junk = ["", "%00", "%ff%fe", "a" * 300, "..%2f..", "%7B%7D", "x%20y", eid, eid + "x", "-1",
            "9" * 40, "%22%5C"]
    queries = ["", "?limit=", "?limit=-5", "?limit=99999999999999999999", "?skip=abc",
               "?status=", "?lang=" + "p" * 200, "?start_time=2024-13-45T99:00:00Z",
               "?end_time=%ff", "?event_types=", "?event_types=" + ",".join(["pod_created"] * 80),
               "?event_types=%00", "?event_types=execution_requested,", "?x=1&x=2"]
    bodies = [None, "", "{", "[]", "null", '{"script":null}', '{"script":"x","lang":null}',
              '{"reason":"' + "r" * 2000 + '"}', json.dumps({"script": "x", "lang": "python",
                                                            "lang_version": ["3.11"]}),
              '{"script":"\\ud800"}', "\x00\x01\x02", b'{"script":"\xff"}',
              b'{"reason":"\xc3"}', '{"a":' * 100 + "1" + "}" * 100]
    routes = [("POST", "/api/v1/execute"), ("GET", "/api/v1/executions/{}/result"),
              ("GET", "/api/v1/executions/{}/events"), ("POST", "/api/v1/executions/{}/cancel"),
              ("POST", "/api/v1/executions/{}/retry"), ("DELETE", "/api/v1/executions/{}"),
              ("GET", "/api/v1/user/executions"), ("GET", "/api/v1/result/{}"),
              ("POST", "/api/v1/{}/cancel"), ("POST", "/api/v1/{}/retry")]
    deadline = time.monotonic() + 20 * SLOW
    n = 0
    while n < 400 and time.monotonic() < deadline:
        method, path = rng.choice(routes)
        body = rng.choice(bodies) if method != "GET" else None
        r = u.req(method, path.format(rng.choice(junk)) + rng.choice(queries), body=body,
                  headers={"Content-Type": "application/json",
                           "Idempotency-Key": rng.choice(["", "k", "\x7f", "ok-" + str(n)])})
        assert r.status < 500, (method, path, r.status, r.body)
        n += 1
    assert n >= 100
    assert http("GET", api.url + "/api/v1/health/live").status == 200
    assert u.req("GET", f"/api/v1/executions/{eid}/result").status == 200
