"""The sse role (issue 6): live execution streams and the notification stream.

One execd with EXECD_ROLES=all (the whole pipeline, real Kafka + FerretDB)
serves every test: executions are submitted through POST /api/v1/execute
and run on the embedded node.  Streams are read over raw sockets with a
small HTTP/1.1 chunked + SSE parser, so 500 of them fit in one process
(selectors) and every read is bounded in time: a stream that never closes
fails the test instead of hanging it.
"""
import datetime
import json
import random
import re
import selectors
import socket
import time
import uuid

import pytest

from conftest import SLOW, Execd, http, kcat, mongo, wait_for

ADMIN = ("sseadmin", "admin-password-123")
STREAMS = 500
ENV = {
    "EXECD_BCRYPT_COST": "4",
    "EXECD_ADMIN_USERNAME": ADMIN[0],
    "EXECD_ADMIN_PASSWORD": ADMIN[1],
    "EXECD_RATE_LIMIT_ENABLED": "false",
    "EXECD_EXECUTION_TIMEOUT_SECONDS": "10",
    "EXECD_POD_MEMORY_LIMIT": "128Mi",
    "EXECD_SSE_HEARTBEAT_MS": "500",
    "EXECD_SSE_MAX_STREAMS": str(STREAMS),
    # Each open stream holds one civetweb thread.
    "EXECD_HTTP_THREADS": str(STREAMS + 100),
}
CLOSERS = {"result_stored", "result_failed", "execution_failed", "execution_timeout",
           "execution_cancelled"}
FRAME_FIELDS = {"event_type", "execution_id", "timestamp", "event_id", "status", "result"}
RESULT_FIELDS = {"execution_id", "status", "exit_code", "stdout", "stderr", "lang",
                 "lang_version", "resource_usage", "created_at", "error_type"}


def fresh_ip():
    return f"198.51.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture(scope="module")
def sse(tmp_path_factory):
    e = Execd(tmp_path_factory.mktemp("sse"), roles="all", env=ENV, name="sse-all")
    e.start()
    # The per-process group starts at the latest offsets once it has its partitions.
    wait_for(lambda: re.search(r"partitions assigned.*group=\S*execd-sse-", e.log()), 30,
             interval=0.1, what="the sse consumer's partitions")
    yield e
    t0 = time.monotonic()
    rc = e.stop()
    log = e.log()
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]
    assert rc == 0, log[-3000:]
    assert time.monotonic() - t0 < 10 * SLOW


class User:
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
        self.token = r.json()["access_token"]
        me = self.req("GET", "/api/v1/auth/me")
        assert me.status == 200, me.body
        self.user_id = me.json()["user_id"]

    def req(self, method, path, body=None, headers=None):
        h = {"X-Forwarded-For": self.ip, "Authorization": f"Bearer {self.token}"}
        h.update(headers or {})
        return http(method, self.e.url + path, body=body, headers=h)

    def submit(self, script):
        r = self.req("POST", "/api/v1/execute", {"script": script})
        assert r.status == 200, r.body
        return r.json()["execution_id"]

    def wait_done(self, eid, timeout=60):
        def done():
            r = self.req("GET", f"/api/v1/executions/{eid}/result")
            assert r.status == 200, r.body
            res = r.json()
            return res if res["status"] in ("completed", "failed", "timeout", "cancelled") \
                else None
        return wait_for(done, timeout, interval=0.2, what=f"{eid} to finish")

    def stored_events(self, eid):
        r = self.req("GET", f"/api/v1/executions/{eid}/events?limit=1000")
        assert r.status == 200, r.body
        return r.json()


class Stream:
    """One SSE request over a raw socket: status, headers, chunked body, frames."""

    def __init__(self, port, path, token=None, last_event_id=None, cookie=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        hdrs = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
        if token:
            hdrs.append(f"Authorization: Bearer {token}")
        if cookie:
            hdrs.append(f"Cookie: access_token={cookie}")
        if last_event_id:
            hdrs.append(f"Last-Event-ID: {last_event_id}")
        self.sock.sendall(("\r\n".join(hdrs) + "\r\n\r\n").encode())
        self.raw = b""
        self.status = None
        self.headers = {}
        self.body = b""       # de-chunked
        self.chunked = False
        self.length = None
        self.ended = False    # the server ended the response (last chunk or EOF)
        self.frames = []      # dicts: id, event, data (parsed JSON when possible)
        self.pings = 0
        self._sse = b""

    def fileno(self):
        return self.sock.fileno()

    def feed(self, data):
        if not data:
            self.ended = True
            return
        self.raw += data
        if self.status is None:
            if b"\r\n\r\n" not in self.raw:
                return
            head, self.raw = self.raw.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
            self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
            if not self.chunked:
                self.length = int(self.headers.get("content-length", "0"))
        if self.chunked:
            while True:
                if b"\r\n" not in self.raw:
                    break
                size_line, rest = self.raw.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                if len(rest) < size + 2:
                    break
                self.raw = rest[size + 2:]
                if size == 0:
                    self.ended = True
                    break
                self._sse_feed(rest[:size])
        else:
            self.body += self.raw
            self.raw = b""
            if len(self.body) >= self.length:
                self.ended = True

    def _sse_feed(self, data):
        self.body += data
        self._sse += data
        while b"\n\n" in self._sse:
            block, self._sse = self._sse.split(b"\n\n", 1)
            frame = {}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    if line.strip() == ": ping":
                        self.pings += 1
                    continue
                k, _, v = line.partition(":")
                frame[k] = v[1:] if v.startswith(" ") else v
            if "data" in frame:
                try:
                    frame["data"] = json.loads(frame["data"])
                except ValueError:
                    pass
                self.frames.append(frame)

    def read_some(self, timeout):
        self.sock.settimeout(timeout)
        try:
            self.feed(self.sock.recv(65536))
        except socket.timeout:
            pass

    def read_until(self, cond, timeout, what):
        deadline = time.monotonic() + timeout * SLOW
        while not cond(self):
            if self.ended:
                raise AssertionError(f"stream ended before {what}: {self.frames}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}: status={self.status} "
                                     f"frames={self.frames} pings={self.pings}")
            self.read_some(min(left, 0.5))
        return self

    def read_to_end(self, timeout, what="the stream to close"):
        return self.read_until(lambda s: s.ended, timeout, what)

    def json(self):
        return json.loads(self.body)

    def close(self):
        self.sock.close()


def stream(e, eid, user, **kw):
    return Stream(e.port, f"/api/v1/events/executions/{eid}", token=user.token, **kw)


def event_frames(s):
    return [f for f in s.frames if f["data"].get("event_type") != "status"]


def check_frames(s, eid):
    first = s.frames[0]
    assert "id" not in first
    assert set(first["data"]) == FRAME_FIELDS
    assert first["data"]["event_type"] == "status" and first["data"]["event_id"] is None
    assert first["data"]["execution_id"] == eid and first["data"]["result"] is None
    datetime.datetime.fromisoformat(first["data"]["timestamp"].replace("Z", "+00:00"))
    for f in event_frames(s):
        d = f["data"]
        assert set(d) == FRAME_FIELDS, d
        assert f["id"] == d["event_id"] and d["execution_id"] == eid
    ids = [f["id"] for f in event_frames(s)]
    assert len(ids) == len(set(ids)), ids


def test_client_connected_before_the_run_sees_it_live_and_the_stream_closes(sse):
    u = User(sse)
    eid = u.submit('import time\ntime.sleep(1.5)\nprint("hello")')
    s = stream(sse, eid, u)
    s.read_until(lambda s: s.frames, 10, "the status frame")
    assert s.status == 200
    assert s.headers["content-type"].startswith("text/event-stream")
    assert s.headers["cache-control"] == "no-cache"
    assert s.headers["x-accel-buffering"] == "no"
    assert s.frames[0]["data"]["status"] in ("queued", "scheduled", "running")
    t_connected = time.monotonic()
    s.read_to_end(60)
    assert time.monotonic() - t_connected > 1.0  # it really streamed while the script ran
    check_frames(s, eid)
    frames = event_frames(s)
    types = [f["data"]["event_type"] for f in frames]
    assert types[0] == "execution_requested", types
    assert "execution_started" in types and "execution_completed" in types
    assert types[-1] == "result_stored", types
    statuses = [f["data"]["status"] for f in frames if f["data"]["status"]]
    assert "running" in statuses and statuses[-1] == "completed", statuses
    last = frames[-1]["data"]
    assert last["status"] == "completed"
    res = last["result"]
    assert set(res) == RESULT_FIELDS, res
    assert res["execution_id"] == eid and res["status"] == "completed"
    assert res["stdout"] == "hello\n" and res["exit_code"] == 0
    assert (res["lang"], res["lang_version"]) == ("python", "3.11")
    assert res["resource_usage"]["clk_tck_hertz"] > 0 and res["created_at"]
    for f in frames[:-1]:
        assert f["data"]["result"] is None
    # The frames are the stored events of the run (the event store may lag a little).
    stored = wait_for(lambda: [e for e in u.stored_events(eid)
                               if e["event_type"] == "result_stored"] and u.stored_events(eid),
                      10, what="result_stored in the event store")
    assert {f["id"] for f in frames} <= {e["event_id"] for e in stored}
    s.close()


def test_live_frame_waits_for_the_history_before_it(tmp_path):
    """A replica whose consumer missed the first events of a run (it joined,
    or rebalanced, after they were published) and whose event store lags
    still streams them in log order: the first unseen live frame waits for
    the store to hold it and goes out after the history before it."""
    e = Execd(tmp_path, roles="api,sse", env={**ENV, "EXECD_SSE_THREADS": "1"},
              name="sse-gap")
    e.start()
    try:
        wait_for(lambda: re.search(r"partitions assigned.*group=\S*execd-sse-", e.log()), 30,
                 interval=0.1, what="the sse consumer's partitions")
        u = User(e)
        db = mongo(e.db)
        now = datetime.datetime.now(datetime.timezone.utc)
        eid, probe_id = str(uuid.uuid4()), str(uuid.uuid4())
        for x in (eid, probe_id):
            db.executions.insert_one({"_id": x, "execution_id": x, "user_id": u.user_id,
                                      "status": "queued", "lang": "python",
                                      "lang_version": "3.11", "created_at": now,
                                      "updated_at": now})

        def ev(etype, ms, agg=eid, **data):
            ts = (now + datetime.timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            return {"event_id": str(uuid.uuid4()), "event_type": etype, "event_version": 1,
                    "timestamp": ts, "aggregate_id": agg, "correlation_id": agg,
                    "causation_id": None,
                    "metadata": {"service": "test", "service_version": "1",
                                 "user_id": u.user_id, "trace_id": "0" * 32},
                    "execution_id": agg, **data}

        def stored(*evs):
            db.events.insert_many([{**x, "offset": i} for i, x in enumerate(evs)])

        def publish(x):
            # Keyed by eid: every event of this test lands on eid's partition.
            kcat("-P", "-t", e.prefix + "execution_events", "-k", eid,
                 input=(json.dumps(x) + "\n").encode())

        # The consumer starts at the partition's latest offset, which it
        # looks up after the assignment: a probe on the same partition,
        # published until its stream gets it live, proves it is reading.
        probe = ev("execution_cancelled", 0, agg=probe_id, reason="probe")
        ps = stream(e, probe_id, u)
        ps.read_until(lambda s: s.frames, 10, "the probe's status frame")

        def probe_seen():
            publish(probe)  # same event_id each time: streamed once
            ps.read_some(1.0)
            return ps.ended
        wait_for(probe_seen, 30, interval=0, what="the probe to be streamed live")
        # Published before this replica's consumer had its partitions: only
        # the event store will ever have it.
        requested = ev("execution_requested", 0)
        started = ev("saga_started", 1, saga_id=str(uuid.uuid4()))
        cancelled = ev("execution_cancelled", 2, reason="test")

        s = stream(e, eid, u)
        s.read_until(lambda s: s.frames, 10, "the status frame")
        publish(started)
        # The store lags: neither event is stored yet, so nothing is sent.
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            s.read_some(0.2)
        assert event_frames(s) == [], s.frames
        stored(requested, started)
        s.read_until(lambda s: len(event_frames(s)) >= 2, 10, "the two frames")
        publish(cancelled)
        db.events.insert_one({**cancelled, "offset": 2})
        s.read_to_end(15)
        check_frames(s, eid)
        assert [f["data"]["event_type"] for f in event_frames(s)] == \
            ["execution_requested", "saga_started", "execution_cancelled"]
    finally:
        assert e.stop() == 0, e.log()[-3000:]


def finished_run(sse):
    u = User(sse)
    eid = u.submit('print("hello")')
    u.wait_done(eid)
    stored = wait_for(lambda: (lambda ev: ev if ev and ev[-1]["event_type"] in
                               ("result_stored", "saga_completed") or
                               any(e["event_type"] == "result_stored" for e in ev) else None)(
        u.stored_events(eid)), 15, what="the run's events in the event store")
    return u, eid, stored


def test_late_client_gets_the_whole_history_and_the_close(sse):
    u, eid, stored = finished_run(sse)
    time.sleep(1)  # "seconds after completion": nothing of it is live any more
    t0 = time.monotonic()
    s = stream(sse, eid, u).read_to_end(10)
    assert time.monotonic() - t0 < 5 * SLOW
    check_frames(s, eid)
    assert s.frames[0]["data"]["status"] == "completed"
    frames = event_frames(s)
    ids = [f["id"] for f in frames]
    # The history in event-store order, up to and including the closing frame.
    stored_ids = [e["event_id"] for e in stored]
    close_at = next(i for i, e in enumerate(stored) if e["event_type"] in CLOSERS)
    assert ids == stored_ids[:close_at + 1], (ids, stored_ids)
    assert frames[-1]["data"]["event_type"] == "result_stored"
    assert frames[-1]["data"]["result"]["stdout"] == "hello\n"
    s.close()


def test_reconnect_with_last_event_id_gets_only_what_it_missed(sse):
    u, eid, _ = finished_run(sse)
    full = stream(sse, eid, u).read_to_end(10)
    ids = [f["id"] for f in event_frames(full)]
    assert len(ids) >= 5, ids
    for k in (0, 2, len(ids) - 2):
        s = stream(sse, eid, u, last_event_id=ids[k]).read_to_end(10)
        check_frames(s, eid)
        assert [f["id"] for f in event_frames(s)] == ids[k + 1:], (k, ids)
        s.close()
    # The last frame was seen: only the status frame, then the close.
    s = stream(sse, eid, u, last_event_id=ids[-1]).read_to_end(10)
    assert event_frames(s) == [] and s.frames[0]["data"]["status"] == "completed"
    full.close()


def test_errors_come_before_the_stream(sse):
    owner = User(sse)
    other = User(sse)
    eid = owner.submit('print("x")')
    s = stream(sse, eid, other).read_to_end(10)
    assert s.status == 403 and s.headers["content-type"].startswith("application/json")
    assert s.json()["type"] == "Forbidden"
    s = stream(sse, str(uuid.uuid4()), owner).read_to_end(10)
    assert s.status == 404 and s.json()["detail"] == "Execution not found"
    s = Stream(sse.port, f"/api/v1/events/executions/{eid}").read_to_end(10)
    assert s.status == 401
    s = Stream(sse.port, f"/api/v1/events/executions/{eid}", token="not.a.jwt").read_to_end(10)
    assert s.status == 401
    # An admin sees anyone's execution; the cookie session works too.
    adm = User(sse, ADMIN[0], ADMIN[1], login_only=True)
    s = Stream(sse.port, f"/api/v1/events/executions/{eid}", cookie=adm.token)
    s.read_until(lambda s: s.frames, 10, "the admin's status frame")
    assert s.status == 200 and s.frames[0]["data"]["execution_id"] == eid
    s.read_to_end(60)
    owner.wait_done(eid)
    s.close()


def test_notification_stream(sse):
    u = User(sse)
    s = Stream(sse.port, "/api/v1/events/notifications/stream", token=u.token)
    s.read_until(lambda s: s.status == 200 and s.pings >= 1, 10, "the stream to open")
    assert s.headers["content-type"].startswith("text/event-stream")
    nid = str(uuid.uuid4())

    def event(user_id, nid):
        return json.dumps({
            "event_id": str(uuid.uuid4()), "event_type": "notification_created",
            "event_version": 1, "timestamp": "2024-01-01T00:00:00.000000Z",
            "aggregate_id": nid, "correlation_id": nid, "causation_id": None,
            "metadata": {"service": "test", "service_version": "1", "user_id": user_id,
                         "trace_id": "0" * 32},
            "notification_id": nid, "user_id": user_id, "channel": "in_app"})
    # Someone else's notification is not streamed; ours is.
    kcat("-P", "-t", sse.prefix + "notification_events", "-k", "x",
         input=(event("someone-else", str(uuid.uuid4())) + "\n" + event(u.user_id, nid) + "\n")
         .encode())
    s.read_until(lambda s: s.frames, 15, "the notification frame")
    assert len(s.frames) == 1
    f = s.frames[0]
    assert f["event"] == "notification"
    assert set(f["data"]) == {"notification_id", "status", "subject", "body", "action_url",
                              "created_at", "severity", "tags", "channel", "read_at"}
    assert f["data"]["notification_id"] == nid and f["data"]["channel"] == "in_app"
    assert Stream(sse.port, "/api/v1/events/notifications/stream").read_to_end(10).status == 401
    s.close()


def test_500_streams_keep_their_heartbeats_and_the_cap_answers_503(sse):
    u = User(sse)
    eid = str(uuid.uuid4())
    # A run that stays running: nothing will ever close these streams.
    mongo(sse.db).executions.insert_one({
        "execution_id": eid, "user_id": u.user_id, "script": "pass", "lang": "python",
        "lang_version": "3.11", "priority": 5, "status": "running", "status_rank": 2,
        "created_at": datetime.datetime.now(datetime.timezone.utc)})
    sel = selectors.DefaultSelector()
    streams = []
    try:
        for _ in range(STREAMS):
            s = stream(sse, eid, u)
            s.sock.setblocking(False)
            sel.register(s.sock, selectors.EVENT_READ, s)
            streams.append(s)
        t0 = time.monotonic()
        deadline = t0 + 20 * SLOW
        while time.monotonic() < deadline:
            if all(s.pings >= 2 for s in streams):
                break
            for key, _ in sel.select(timeout=0.5):
                s = key.data
                try:
                    s.feed(s.sock.recv(65536))
                except BlockingIOError:
                    pass
        slow = [(s.status, s.pings, s.ended) for s in streams if s.pings < 2]
        assert not slow, f"{len(slow)} streams without 2 pings: {slow[:5]}"
        assert all(s.status == 200 and not s.ended for s in streams)
        assert all(s.frames[0]["data"]["status"] == "running" for s in streams)
        elapsed = time.monotonic() - t0
        # The cap: one more is refused before it starts.
        extra = stream(sse, eid, u).read_to_end(10)
        assert extra.status == 503, (extra.status, extra.body)
        assert extra.json()["type"] == "Infrastructure"
        health = http("GET", sse.url + "/api/v1/health/ready").json()
        assert f'"streams": {STREAMS}, "max_streams": {STREAMS}' in json.dumps(health), health
        # A closed client frees its slot (seen at the next ping's failed write).
        victim = streams.pop()
        sel.unregister(victim.sock)
        victim.close()

        def reopened():
            s = stream(sse, eid, u)
            s.read_until(lambda s: s.status is not None, 10, "a status line")
            if s.status == 200:
                return s
            s.close()
            return None
        again = wait_for(reopened, 10, interval=0.2, what="a freed stream slot")
        again.close()
        print(f"{STREAMS} streams with 2 pings each after {elapsed:.2f}s")
    finally:
        for s in streams:
            s.close()
        sel.close()
