"""Accounts and the API's front door (issue 4), end to end over HTTP.

One execd (roles=api: real Kafka + FerretDB) serves most tests; tests that
need other settings start their own.  The rate limiter is per client IP and
loopback is a trusted proxy by default, so every request here carries its own
X-Forwarded-For address (``fresh_ip``) unless a test is about the limiter.
"""
import json
import os
import random
import re
import socket
import statistics
import time
import uuid

import pytest

from conftest import SAN, SLOW, Execd, http, kcat, mongo, wait_for

ADMIN = ("rootadmin", "root-password-123")
API_ENV = {
    "EXECD_BCRYPT_COST": "4",
    "EXECD_ADMIN_USERNAME": ADMIN[0],
    "EXECD_ADMIN_PASSWORD": ADMIN[1],
}


def fresh_ip():
    return f"203.0.{random.randint(0, 255)}.{random.randint(1, 254)}"


def _check_logs(e):
    log = e.log()
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]


def start(tmp_path_factory, name, env=None, roles="api"):
    e = Execd(tmp_path_factory.mktemp(name), roles=roles, env={**API_ENV, **(env or {})},
              name=name)
    e.start()
    return e


def finish(e):
    rc = e.stop()
    _check_logs(e)
    assert rc == 0, f"{e.name} exited {rc}:\n{e.log()[-3000:]}"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    e = start(tmp_path_factory, "api")
    yield e
    finish(e)


class Client:
    """A browser-ish client: one IP, a cookie jar, optional Bearer token."""

    def __init__(self, e, ip=None):
        self.e = e
        self.ip = ip or fresh_ip()
        self.cookies = {}
        self.bearer = None
        self.csrf = None

    def req(self, method, path, body=None, headers=None, cookies=True, csrf=False):
        h = {"X-Forwarded-For": self.ip}
        if cookies and self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.bearer:
            h["Authorization"] = f"Bearer {self.bearer}"
        if csrf and self.csrf:
            h["X-CSRF-Token"] = self.csrf
        h.update(headers or {})
        r = http(method, self.e.url + path, body=body, headers=h)
        for sc in r.headers.get_all("Set-Cookie") or []:
            k, v = sc.split(";", 1)[0].split("=", 1)
            if re.search(r"max-age=0\b", sc, re.I):
                self.cookies.pop(k, None)
            else:
                self.cookies[k] = v
        return r

    def register(self, username=None, password="password-123", email=None, **extra):
        username = username or f"u{uuid.uuid4().hex[:10]}"
        body = {"username": username, "email": email or f"{username}@example.com",
                "password": password, **extra}
        r = self.req("POST", "/api/v1/auth/register", body)
        return username, r

    def login_form(self, username, password):
        return self.req("POST", "/api/v1/auth/login",
                        f"username={username}&password={password}",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})

    def login_json(self, username, password):
        return self.req("POST", "/api/v1/auth/login",
                        {"username": username, "password": password})


def new_user(e, **kw):
    c = Client(e)
    name, r = c.register(**kw)
    assert r.status == 200, r.body
    return c, name


USER_FIELDS = {"user_id", "username", "email", "role", "is_active", "is_superuser", "created_at",
               "updated_at", "bypass_rate_limit", "global_multiplier", "has_custom_limits"}


def test_cookie_session_with_csrf(api):
    c, name = new_user(api)
    r = c.login_form(name, "password-123")
    assert r.status == 200, r.body
    body = r.json()
    assert body["message"] and body["username"] == name and body["role"] == "user"
    assert body["token_type"] == "bearer" and body["access_token"].count(".") == 2
    cookies = {sc.split("=", 1)[0]: sc for sc in r.headers.get_all("Set-Cookie")}
    at, ct = cookies["access_token"], cookies["csrf_token"]
    assert re.search(r"HttpOnly", at) and re.search(r"SameSite=Strict", at, re.I)
    assert "Max-Age=3600" in at and "Path=/" in at
    assert "HttpOnly" not in ct and "Max-Age=3600" in ct
    assert c.cookies["access_token"] == body["access_token"]
    assert c.cookies["csrf_token"] == body["csrf_token"]
    c.csrf = body["csrf_token"]

    me = c.req("GET", "/api/v1/auth/me")
    assert me.status == 200, me.body
    u = me.json()
    assert set(u) == USER_FIELDS and u["username"] == name and u["role"] == "user"
    assert u["email"] == f"{name}@example.com" and u["is_active"] is True

    # Missing, mismatched and forged CSRF tokens are refused on a cookie session.
    for hdrs in ({}, {"X-CSRF-Token": "nope"},
                 {"X-CSRF-Token": "0" * 32 + "." + "a" * 64}):
        r = c.req("POST", "/api/v1/auth/logout", headers=hdrs)
        assert r.status == 403, (hdrs, r.body)
        assert r.json()["detail"] == "CSRF validation failed"
    # A token from another session (valid for its own cookie) does not verify here.
    other, oname = new_user(api)
    assert other.login_form(oname, "password-123").status == 200
    forged = dict(c.cookies, csrf_token=other.cookies["csrf_token"])
    saved, c.cookies = c.cookies, forged
    r = c.req("POST", "/api/v1/auth/logout", headers={"X-CSRF-Token": forged["csrf_token"]})
    assert r.status == 403
    c.cookies = saved
    assert c.req("GET", "/api/v1/auth/me").status == 200  # still logged in

    r = c.req("POST", "/api/v1/auth/logout", csrf=True)
    assert r.status == 200, r.body
    assert r.json()["message"]
    cleared = " ".join(r.headers.get_all("Set-Cookie"))
    assert "access_token=;" in cleared and "Max-Age=0" in cleared
    assert "access_token" not in c.cookies
    assert c.req("GET", "/api/v1/auth/me").status == 401


def test_bearer_session_needs_no_csrf(api):
    c, name = new_user(api)
    r = c.login_json(name, "password-123")
    assert r.status == 200, r.body
    token = r.json()["access_token"]
    b = Client(api)
    b.bearer = token
    me = b.req("GET", "/api/v1/auth/me")
    assert me.status == 200 and me.json()["username"] == name
    # A cookie plus Bearer header is a Bearer request: no CSRF needed either.
    b.cookies = {"access_token": token}
    assert b.req("POST", "/api/v1/auth/logout").status == 200
    b.cookies = {}
    # Tampered tokens and other schemes are anonymous.
    head, payload, sig = token.split(".")
    for bad in (f"{head}.{payload}.{sig[:-2]}AA", f"{head}.{payload[:-4]}AAAA.{sig}",
                "eyJhbGciOiJub25lIn0." + payload + ".", "garbage"):
        b.bearer = bad
        assert b.req("GET", "/api/v1/auth/me").status == 401, bad
    r = http("GET", api.url + "/api/v1/auth/me",
             headers={"Authorization": "Basic Zm9vOmJhcg==", "X-Forwarded-For": fresh_ip()})
    assert r.status == 401


def test_anonymous_is_401(api):
    c = Client(api)
    r = c.req("GET", "/api/v1/auth/me")
    assert r.status == 401 and r.json()["detail"] == "Not authenticated"
    assert r.header("WWW-Authenticate") == "Bearer"
    assert c.req("POST", "/api/v1/auth/logout").status == 401
    assert c.req("GET", "/api/v1/admin/users/").status == 401


def test_roles_admin_routes_and_bootstrap_admin(api):
    c, name = new_user(api, role="admin")  # role in the body is ignored
    assert c.login_json(name, "password-123").json()["role"] == "user"
    r = c.req("GET", "/api/v1/admin/users/")
    assert r.status == 403, r.body
    assert c.req("GET", "/api/v1/admin/users/whatever").status == 403

    a = Client(api)
    r = a.login_form(*ADMIN)
    assert r.status == 200, r.body
    assert r.json()["role"] == "admin"
    a.bearer = r.json()["access_token"]
    me = a.req("GET", "/api/v1/auth/me").json()
    assert me["role"] == "admin" and me["is_superuser"] is True
    r = a.req("GET", f"/api/v1/admin/users/?search={name}")
    assert r.status == 200, r.body
    page = r.json()
    assert page["total"] == 1 and page["users"][0]["username"] == name
    assert page["users"][0]["role"] == "user" and set(page["users"][0]) == USER_FIELDS
    uid = page["users"][0]["user_id"]
    r = a.req("GET", f"/api/v1/admin/users/{uid}")
    assert r.status == 200 and r.json()["username"] == name
    assert a.req("GET", "/api/v1/admin/users/no-such-id").status == 404
    admins = a.req("GET", "/api/v1/admin/users/?role=admin&limit=1000").json()
    assert [u["username"] for u in admins["users"]] == [ADMIN[0]]
    assert a.req("GET", "/api/v1/admin/users/?limit=0").status == 422
    assert a.req("GET", "/api/v1/admin/users/?role=god").status == 422
    two = a.req("GET", "/api/v1/admin/users/?limit=2&offset=0").json()
    assert len(two["users"]) == 2 and two["limit"] == 2 and two["total"] >= 3


def test_duplicates_are_409(api):
    c, name = new_user(api)
    _, r = c.register(username=name, email=f"other-{name}@example.com")
    assert r.status == 409 and "Username" in r.json()["detail"]
    _, r = c.register(username=name + "x", email=f"{name}@example.com")
    assert r.status == 409 and "Email" in r.json()["detail"]
    _, r = c.register(username=name + "y", email=f"{name.upper()}@EXAMPLE.com")
    assert r.status == 409  # emails are compared case-insensitively


def test_password_is_bcrypt_and_never_returned_or_logged(api):
    pw = f"secret-{uuid.uuid4().hex}"
    c, name = new_user(api, password=pw)
    r = c.login_form(name, pw)
    assert r.status == 200 and pw not in r.body.decode()
    assert c.login_form(name, pw + "x").status == 401
    doc = mongo(api.db)["users"].find_one({"username": name})
    assert doc["hashed_password"].startswith("$2b$04$") and len(doc["hashed_password"]) == 60
    assert doc["role"] == "user"
    me = c.req("GET", "/api/v1/auth/me").body.decode()
    assert "hashed_password" not in me and "$2b$" not in me
    assert pw not in api.log() and doc["hashed_password"] not in api.log()


def test_lockout_after_five_failures_is_423(api):
    c, name = new_user(api)
    for i in range(5):
        r = c.login_form(name, f"wrong-{i}")
        assert r.status == 401, (i, r.body)
    r = c.login_form(name, "password-123")
    assert r.status == 423, r.body
    assert r.json()["type"] == "Locked" and "locked" in r.json()["detail"].lower()
    assert 0 < int(r.header("Retry-After")) <= 15 * 60
    doc = mongo(api.db)["login_attempts"].find_one({"_id": name})
    assert doc["failures"] == 5 and doc["locked_until"] is not None
    # Unknown usernames lock the same way (no user enumeration).
    ghost = f"ghost{uuid.uuid4().hex[:8]}"
    for _ in range(5):
        assert c.login_form(ghost, "whatever-1").status == 401
    assert c.login_form(ghost, "whatever-1").status == 423


def test_success_resets_failures(api):
    c, name = new_user(api)
    for _ in range(4):
        assert c.login_form(name, "bad-password").status == 401
    assert c.login_form(name, "password-123").status == 200
    for _ in range(4):
        assert c.login_form(name, "bad-password").status == 401
    assert c.login_form(name, "password-123").status == 200


def test_validation_errors_are_422_naming_the_field(api):
    c = Client(api)

    def reg(body, ctype="application/json"):
        return c.req("POST", "/api/v1/auth/register", body, headers={"Content-Type": ctype})

    def locs(r):
        assert r.status == 422, r.body
        return {tuple(d["loc"]): d["type"] for d in r.json()["detail"]}

    good = {"username": "v" + uuid.uuid4().hex[:8], "email": "v@example.com",
            "password": "password-123"}
    assert locs(reg('{"username": "a",')) == {("body",): "json_invalid"}
    assert locs(reg("[1,2]")) == {("body",): "model_type"}
    assert locs(reg("")) == {("body",): "missing"}
    assert locs(reg({**good, "username": 5})) == {("body", "username"): "string_type"}
    assert locs(reg({**good, "password": ["x"]})) == {("body", "password"): "string_type"}
    missing = dict(good)
    del missing["email"]
    assert locs(reg(missing)) == {("body", "email"): "missing"}
    assert locs(reg({**good, "nickname": "x"})) == {("body", "nickname"): "extra_forbidden"}
    assert locs(reg({**good, "password": "short"})) == {("body", "password"): "string_too_short"}
    assert locs(reg({**good, "email": "not-an-email"})) == {("body", "email"): "value_error"}
    assert locs(reg({**good, "username": "bad name"})) == {("body", "username"): "value_error"}
    assert locs(reg('{"username":"x","email":"y@z.io","password":"p"} trailing')) == \
        {("body",): "json_invalid"}
    assert locs(reg("[" * 5000)) == {("body",): "json_invalid"}  # nesting is bounded
    # Several errors at once are all named.
    assert set(locs(reg({"username": 1, "extra": 2}))) == {
        ("body", "username"), ("body", "email"), ("body", "password"), ("body", "extra")}
    # Login: form and JSON are validated the same way.
    r = c.req("POST", "/api/v1/auth/login", "username=bob",
              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert locs(r) == {("body", "password"): "missing"}
    r = c.req("POST", "/api/v1/auth/login", {"username": "bob", "password": 12})
    assert locs(r) == {("body", "password"): "string_type"}
    r = c.req("POST", "/api/v1/auth/login", "username=%zz&password=x",
              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 422


def _raw(url):
    host, port = url.split("//")[1].split(":")
    return socket.create_connection((host, int(port)), timeout=10 * SLOW)


def _read_response(s, timeout):
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
    n = int(m.group(1)) if m else 0
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head.decode(errors="replace"), rest


def test_body_over_10_mib_is_413_without_reading_it(api):
    s = _raw(api.url)
    t0 = time.monotonic()
    s.sendall(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/json\r\nX-Forwarded-For: " + fresh_ip().encode() +
              b"\r\nContent-Length: " + str(11 * 1024 * 1024).encode() + b"\r\n\r\n")
    s.sendall(b"{" + b" " * 65536)  # a small part only; the rest never comes
    head, body = _read_response(s, 5 * SLOW)
    elapsed = time.monotonic() - t0
    s.close()
    assert head.startswith("HTTP/1.1 413"), head
    assert json.loads(body)["detail"] == "Request too large. Maximum size is 10.0MB"
    assert elapsed < 3 * SLOW


def test_chunked_body_over_limit_is_413(api):
    s = _raw(api.url)
    s.sendall(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"X-Forwarded-For: " + fresh_ip().encode() + b"\r\n\r\n")
    chunk = b"x" * (1024 * 1024)
    for _ in range(11):
        s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    head, body = _read_response(s, 10 * SLOW)
    s.close()
    assert head.startswith("HTTP/1.1 413"), head


def test_execute_rule_11th_request_is_429(api):
    ip = fresh_ip()
    seen = []
    for i in range(10):
        r = http("POST", api.url + "/api/v1/execute", body={"script": "print(1)"},
                 headers={"X-Forwarded-For": ip})
        assert r.status != 429, (i, r.body)
        seen.append((int(r.header("X-RateLimit-Limit")), int(r.header("X-RateLimit-Remaining"))))
    assert seen == [(10, 9 - i) for i in range(10)]
    r = http("POST", api.url + "/api/v1/execute", body={"script": "print(1)"},
             headers={"X-Forwarded-For": ip})
    assert r.status == 429, r.body
    body = r.json()
    assert body["detail"] == "Rate limit exceeded"
    assert 1 <= body["retry_after"] <= 60 and int(r.header("Retry-After")) == body["retry_after"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", body["reset_at"])
    assert r.header("X-RateLimit-Limit") == "10" and r.header("X-RateLimit-Remaining") == "0"
    assert abs(int(r.header("X-RateLimit-Reset")) - time.time()) <= 61
    # Another client (named by the trusted loopback proxy) is unaffected,
    # and the other rules are counted separately for the throttled client.
    other = http("POST", api.url + "/api/v1/execute", body={}, headers={"X-Forwarded-For": fresh_ip()})
    assert other.status != 429
    r = http("GET", api.url + "/api/v1/auth/me", headers={"X-Forwarded-For": ip})
    assert r.status == 401 and r.header("X-RateLimit-Limit") == "20"


def test_auth_rule_counts_me_but_not_login(api):
    ip = fresh_ip()
    for _ in range(25):
        r = http("POST", api.url + "/api/v1/auth/login", body={"username": "x", "password": "y"},
                 headers={"X-Forwarded-For": ip})
        assert r.status in (401, 423)
    limits = []
    for _ in range(21):
        r = http("GET", api.url + "/api/v1/auth/me", headers={"X-Forwarded-For": ip})
        limits.append(r.status)
    assert limits[:20] == [401] * 20 and limits[20] == 429


def test_headers_on_every_response(api):
    ip = fresh_ip()
    cases = [("GET", "/api/v1/health/live", 200), ("GET", "/metrics", 200),
             ("GET", "/api/v1/openapi.json", 200), ("GET", "/api/v1/nope", 404),
             ("DELETE", "/api/v1/health/live", 405), ("GET", "/api/v1/auth/me", 401),
             ("GET", "/", 404), ("POST", "/api/v1/auth/register", 422)]
    for method, path, status in cases:
        r = http(method, api.url + path, body="{}" if method == "POST" else None,
                 headers={"X-Forwarded-For": ip, "Content-Type": "application/json"})
        assert r.status == status, (path, r.status, r.body)
        for h in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                  "X-Request-Id"):
            assert r.header(h), (path, h)
        assert r.header("X-Content-Type-Options") == "nosniff"
        assert r.header("X-Frame-Options") == "DENY"
        assert r.header("Referrer-Policy") == "strict-origin-when-cross-origin"
        assert r.header("Content-Security-Policy") == "default-src 'self'; frame-ancestors 'none'"
    # Exempt paths do not consume the budget.
    a = http("GET", api.url + "/api/v1/health/live", headers={"X-Forwarded-For": ip})
    b = http("GET", api.url + "/api/v1/health/live", headers={"X-Forwarded-For": ip})
    assert a.header("X-RateLimit-Remaining") == b.header("X-RateLimit-Remaining")


def test_request_id_in_header_and_logs(api):
    rid = "rid-" + uuid.uuid4().hex
    r = http("POST", api.url + "/api/v1/auth/login", body={"username": "nobody-" + rid[:8],
                                                           "password": "x"},
             headers={"X-Request-Id": rid, "X-Forwarded-For": fresh_ip()})
    assert r.status == 401 and r.header("X-Request-Id") == rid
    wait_for(lambda: f"request_id={rid}" in api.log(), 5, what="request id in the log")
    r = http("GET", api.url + "/api/v1/health/live", headers={"X-Forwarded-For": fresh_ip()})
    assert re.match(r"^[0-9a-f-]{36}$", r.header("X-Request-Id"))


def test_user_events_published(api):
    c, name = new_user(api)
    assert c.login_form(name, "wrong-password").status == 401
    r = c.login_form(name, "password-123")
    assert r.status == 200
    c.csrf = r.json()["csrf_token"]
    assert c.req("POST", "/api/v1/auth/logout", csrf=True).status == 200
    topic = api.prefix + "user_events"

    def events():
        out = kcat("-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\\n")
        evs = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        mine = [e for e in evs if e.get("username") == name]
        types = {e["event_type"] for e in mine}
        return mine if {"user_registered", "user_logged_in", "user_logged_out",
                        "auth_failed"} <= types else None

    mine = wait_for(events, 20, interval=0.5, what="user events on user_events")
    reg = next(e for e in mine if e["event_type"] == "user_registered")
    assert reg["user_id"] and reg["metadata"]["user_id"] == reg["user_id"]
    assert reg["metadata"]["ip"] == c.ip
    failed = next(e for e in mine if e["event_type"] == "auth_failed")
    assert failed["reason"] == "invalid_password"
    assert all("password" not in json.dumps(e).replace("invalid_password", "") for e in mine)


def test_openapi_matches_the_router(api):
    r = http("GET", api.url + "/api/v1/openapi.json", headers={"X-Forwarded-For": fresh_ip()})
    assert r.status == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"]
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    required = {("POST", "/api/v1/auth/register"), ("POST", "/api/v1/auth/login"),
                ("GET", "/api/v1/auth/me"), ("POST", "/api/v1/auth/logout"),
                ("GET", "/api/v1/admin/users/"), ("GET", "/api/v1/admin/users/{user_id}"),
                ("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/health/live"),
                ("GET", "/api/v1/health/ready"), ("GET", "/metrics")}
    assert required <= ops, required - ops
    methods = {"GET", "POST", "PUT", "DELETE", "PATCH"}
    for path, item in doc["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x1", path)
        listed = {m.upper() for m in item}
        for op in item.values():
            assert op["summary"] and op["responses"]
        for m in methods:
            r = http(m, api.url + concrete, body="{}" if m in ("POST", "PUT", "PATCH") else None,
                     headers={"X-Forwarded-For": fresh_ip(), "Content-Type": "application/json"})
            if m in listed:
                routed = r.status != 405 and not (r.status == 404 and
                                                  r.json().get("detail") == "Not Found")
                assert routed, (m, path, r.status, r.body)
            else:
                assert r.status == 405, (m, path, r.status)
    # A path not in the document is not routed.
    assert http("GET", api.url + "/api/v1/auth/nothing-here").status == 404
    login = doc["paths"]["/api/v1/auth/login"]["post"]
    assert "application/x-www-form-urlencoded" in login["requestBody"]["content"]
    assert "UserResponse" in doc["components"]["schemas"]


def test_timing_unknown_user_costs_like_known_and_cors(tmp_path_factory):
    origin = "http://app.example.test"
    e = start(tmp_path_factory, "api-cost", env={"EXECD_BCRYPT_COST": "10",
                                                 "EXECD_CORS_ORIGINS": origin + ",https://b.test",
                                                 "EXECD_RATE_LIMIT_ENABLED": "false"})
    try:
        c, name = new_user(e)

        def timed(user):
            t0 = time.monotonic()
            r = c.login_json(user, "not-the-password")
            assert r.status == 401
            return time.monotonic() - t0

        known = statistics.median(timed(name) for _ in range(4))
        unknown = statistics.median(timed(f"nobody{uuid.uuid4().hex[:6]}") for _ in range(4))
        assert known > 0.02, known  # cost 10 really is bcrypt work
        assert unknown > 0.6 * known, (known, unknown)

        # Rate limiting off: no limiter headers, no 429.
        for _ in range(12):
            r = http("POST", e.url + "/api/v1/execute", body={})
            assert r.status != 429 and r.header("X-RateLimit-Limit") is None

        # CORS with credentials for the configured origins only.
        r = http("OPTIONS", e.url + "/api/v1/auth/login",
                 headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                          "Access-Control-Request-Headers": "content-type,x-csrf-token"})
        assert r.status == 204
        assert r.header("Access-Control-Allow-Origin") == origin
        assert r.header("Access-Control-Allow-Credentials") == "true"
        assert "X-CSRF-Token" in r.header("Access-Control-Allow-Headers")
        assert "POST" in r.header("Access-Control-Allow-Methods")
        r = http("OPTIONS", e.url + "/api/v1/auth/login",
                 headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"})
        assert r.status == 400 and r.header("Access-Control-Allow-Origin") is None
        r = http("GET", e.url + "/api/v1/health/live", headers={"Origin": "https://b.test"})
        assert r.header("Access-Control-Allow-Origin") == "https://b.test"
        assert r.header("Access-Control-Allow-Credentials") == "true"
        r = http("GET", e.url + "/api/v1/health/live", headers={"Origin": "http://evil.test"})
        assert r.header("Access-Control-Allow-Origin") is None
    finally:
        finish(e)


def test_untrusted_peer_cannot_pick_its_ip(tmp_path_factory):
    e = start(tmp_path_factory, "api-noproxy", env={"EXECD_TRUSTED_PROXIES": "none"})
    try:
        for i in range(10):
            r = http("POST", e.url + "/api/v1/execute", body={},
                     headers={"X-Forwarded-For": fresh_ip(), "X-Real-IP": fresh_ip()})
            assert r.status != 429, i
        r = http("POST", e.url + "/api/v1/execute", body={},
                 headers={"X-Forwarded-For": fresh_ip()})
        assert r.status == 429  # every request counted against the real peer
    finally:
        finish(e)


def test_short_secret_is_a_startup_error(tmp_path_factory):
    e = Execd(tmp_path_factory.mktemp("api-badsecret"), roles="api",
              env={**API_ENV, "EXECD_SECRET_KEY": "too-short"}, name="badsecret")
    e.start(wait=False)
    rc = e.proc.wait(30 * SLOW)
    assert rc != 0
    assert "EXECD_SECRET_KEY" in e.log()


def test_reference_documents_the_auth_numbers():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(root, "config", "reference.md")) as f:
        ref = f.read()
    for key, default in (("EXECD_BCRYPT_COST", "12"), ("EXECD_SESSION_TIMEOUT_MINUTES", "60"),
                         ("EXECD_LOGIN_MAX_ATTEMPTS", "5"), ("EXECD_LOGIN_LOCKOUT_MINUTES", "15"),
                         ("EXECD_RATE_LIMIT_ENABLED", "true")):
        row = next(line for line in ref.splitlines() if f"`{key}`" in line)
        assert f"`{default}`" in row, row
