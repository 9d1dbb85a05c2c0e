"""Thousands of random requests over raw sockets never crash or hang execd.

Methods, paths, percent-encodings, headers (cookies, tokens, CSRF, proxies,
lengths), bodies (JSON-ish, forms, garbage bytes, deep nesting), chunked
bodies with good and broken framing.  Each request must get an answer or a
closed connection within a bound; afterwards the process is alive, answers
/api/v1/health/live and still logs a user in.  Bounded to ~45 s (x3 under a
sanitizer build, with fewer requests).
"""
import json
import random
import socket
import threading
import time
import uuid

from conftest import SAN, SLOW, Execd, http

PATHS = ["/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/me",
         "/api/v1/auth/logout", "/api/v1/admin/users/", "/api/v1/admin/users/abc",
         "/api/v1/openapi.json", "/api/v1/health/live", "/api/v1/health/ready", "/metrics",
         "/api/v1/execute", "/api/v1/events/x", "/", "/api/v1/admin/users/%00", "//api//v1//",
         "/api/v1/admin/users/" + "a/" * 40, "/api/v1/%2e%2e/%2e%2e/etc/passwd",
         "/api/v1/auth/me?x=%zz&limit=-1&limit=99999999999999999999",
         "/api/v1/admin/users/?limit=abc&offset=-5&search=%ff%fe&role=admin"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT",
           "BREW", "get", "P\x01ST", "POST ", ""]


def rnd_bytes(r, n):
    return bytes(r.getrandbits(8) for _ in range(n))


def rnd_body(r):
    k = r.randrange(10)
    if k == 0:
        return b""
    if k == 1:
        return rnd_bytes(r, r.randrange(1, 2000))
    if k == 2:
        d = r.randrange(1, 3000)
        return b"[" * d + b"]" * r.randrange(0, d + 1)
    if k == 3:
        return json.dumps({"username": r.choice(["a", "", "x" * 300, 5, None, [1], {"$gt": ""}]),
                           "email": r.choice(["a@b.co", 1, "", "@@", "x" * 500]),
                           "password": r.choice(["password-1", "", 1.5e308, True, "p" * 5000]),
                           r.choice(["role", "extra", "", "$where"]): "admin"}).encode()
    if k == 4:
        return b"username=%zz&password=%&&&==&username=" + rnd_bytes(r, 20)
    if k == 5:
        return '{"username":"\\ud800","email":"\u00e9@\u00e9.fr","password":"\u0000abcdefgh"}'.encode()
    if k == 6:
        return b'{"a":' + b"1" * 400 + b"e99999}"
    if k == 7:
        return b"username=admin&password=" + b"A" * r.randrange(0, 4000)
    if k == 8:
        return json.dumps({"username": "u", "password": "p"}).encode() + b"\x00\xff"
    return b'{"username": "' + rnd_bytes(r, 30).replace(b'"', b"") + b'"}'


def rnd_headers(r, body, chunked):
    h = []
    if chunked:
        h.append("Transfer-Encoding: chunked")
    else:
        k = r.randrange(8)
        if k < 5:
            h.append(f"Content-Length: {len(body)}")
        elif k == 5:
            h.append(f"Content-Length: {r.choice(['-1', 'abc', '99999999999999999999', '0'])}")
        elif k == 6:
            h.append(f"Content-Length: {len(body) + r.randrange(1, 100)}")
    h.append("Content-Type: " + r.choice(["application/json", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "text/plain", "",
                                          "application/json; charset=utf-16"]))
    if r.random() < 0.5:
        h.append(f"X-Forwarded-For: {r.choice(['1.2.3.4', 'garbage', '::1', '10.0.0.1, 8.8.8.8', ','*50])}")
    if r.random() < 0.3:
        h.append(f"X-Real-IP: {r.choice(['5.6.7.8', 'x' * 200, ''])}")
    if r.random() < 0.4:
        h.append("Cookie: " + r.choice([
            "access_token=a.b.c; csrf_token=x.y",
            "access_token=" + "A" * 5000,
            "access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OX0.AAAA",
            "=;=;;;", "csrf_token=" + "."*100]))
    if r.random() < 0.4:
        h.append("Authorization: " + r.choice(["Bearer ", "Bearer a.b.c", "Bearer " + "x" * 5000,
                                               "Basic Og==", "bearer eyJ.eyJ.sig", "Bearer \t"]))
    if r.random() < 0.3:
        h.append("X-CSRF-Token: " + r.choice(["", "a.b", "0" * 32 + "." + "f" * 64, "\x7f"]))
    if r.random() < 0.2:
        h.append("Origin: " + r.choice(["http://app.test", "null", "x" * 300]))
        h.append("Access-Control-Request-Method: POST")
    if r.random() < 0.2:
        h.append("X-Request-Id: " + r.choice(["ok-id", "bad id", "x" * 500, "\u00e9"]))
    if r.random() < 0.1:
        h.append("X-Junk: " + "j" * r.randrange(1, 9000))
    return h


def build(r):
    if r.random() < 0.05:
        return rnd_bytes(r, r.randrange(1, 3000)), True  # pure garbage
    method = r.choice(METHODS)
    path = r.choice(PATHS)
    if r.random() < 0.2:
        path += "".join(r.choice("%/?&=#.~ab\x01") for _ in range(r.randrange(1, 40)))
    body = rnd_body(r)
    chunked = r.random() < 0.2
    headers = rnd_headers(r, body, chunked)
    version = r.choice(["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/2.0", "HTP/1.1"])
    head = f"{method} {path} {version}\r\nHost: fuzz\r\n" + "".join(x + "\r\n" for x in headers)
    if chunked:
        parts = []
        pos = 0
        while pos < len(body):
            n = r.randrange(1, 600)
            parts.append(b"%x\r\n" % n + body[pos:pos + n] + b"\r\n")
            pos += n
        tail = r.choice([b"0\r\n\r\n", b"zz\r\n", b"fffffffffffffff\r\nabc", b"", b"5\r\nab"])
        payload = b"".join(parts) + tail
    else:
        payload = body
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + payload, False


def one(port, data, deadline_s):
    """Sends data; returns None when answered or closed in time, else a description."""
    s = socket.create_connection(("127.0.0.1", port), timeout=deadline_s)
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return None  # the server closed on us: fine
        t0 = time.monotonic()
        while True:
            if time.monotonic() - t0 > deadline_s:
                return "no answer"
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return "read timeout"
            except OSError:
                return None
            if not chunk:
                return None
    finally:
        s.close()


def test_fuzz_never_crashes_or_hangs(tmp_path):
    e = Execd(tmp_path, roles="api", name="fuzz",
              env={"EXECD_BCRYPT_COST": "4", "EXECD_HTTP_REQUEST_TIMEOUT_MS": "2000",
                   "EXECD_HTTP_THREADS": "32", "EXECD_CORS_ORIGINS": "http://app.test",
                   "EXECD_LOG_LEVEL": "warn"})
    e.start()
    try:
        target = 1500 if SAN else 4000
        budget = 45.0 * SLOW
        seed = random.randrange(1 << 30)
        problems = []
        count = [0]
        lock = threading.Lock()
        t_end = time.monotonic() + budget

        def worker(wid):
            r = random.Random(seed + wid)
            while time.monotonic() < t_end:
                with lock:
                    if count[0] >= target:
                        return
                    count[0] += 1
                data, _ = build(r)
                try:
                    p = one(e.port, data, 10 * SLOW)
                except OSError as exc:
                    p = f"connect failed: {exc}"
                if p:
                    with lock:
                        problems.append((p, data[:200]))
                if e.proc.poll() is not None:
                    return

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert e.proc.poll() is None, f"execd died (seed {seed}):\n{e.log()[-4000:]}"
        assert not problems, f"seed {seed}: {len(problems)} hung requests, e.g. {problems[:3]}"
        assert count[0] >= min(target, 1000), f"only {count[0]} requests in {budget}s"
        r = http("GET", e.url + "/api/v1/health/live")
        assert r.status == 200, r.body
        print(f"fuzz: {count[0]} requests, seed {seed}")
        # Still fully functional.
        name = "f" + uuid.uuid4().hex[:10]
        hdr = {"X-Forwarded-For": "198.51.100.7"}
        r = http("POST", e.url + "/api/v1/auth/register",
                 body={"username": name, "email": f"{name}@example.com",
                       "password": "password-123"}, headers=hdr)
        assert r.status == 200, r.body
        r = http("POST", e.url + "/api/v1/auth/login", body={"username": name,
                                                             "password": "password-123"},
                 headers=hdr)
        assert r.status == 200, r.body
    finally:
        rc = e.stop()
        log = e.log()
        assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]
        assert rc == 0, f"exit {rc}:\n{log[-3000:]}"
