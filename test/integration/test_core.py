"""The core of the binary: CLI, configuration errors, roles, HTTP basics, shutdown."""
import json
import os
import signal
import subprocess
import time

from conftest import EXECD_BIN, ROOT, SLOW, Execd, http, wait_for


def run_cli(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("EXECD_")}
    e.update(env or {})
    return subprocess.run([EXECD_BIN, *args], env=e, capture_output=True, text=True, timeout=30)


def test_help_lists_every_key():
    r = run_cli("--help")
    assert r.returncode == 0
    for key in ("EXECD_ROLES", "EXECD_HTTP_LISTEN", "EXECD_KAFKA_BROKERS", "EXECD_MONGO_URI",
                "EXECD_TOPIC_PREFIX", "EXECD_LOG_LEVEL", "EXECD_LOG_FORMAT",
                "EXECD_SHUTDOWN_TIMEOUT_MS", "EXECD_STORE_THREADS", "EXECD_NODE_THREADS"):
        assert key in r.stdout, key


def test_check_config_and_errors_name_the_key():
    assert run_cli("--check-config").returncode == 0
    r = run_cli("--check-config", env={"EXECD_HTTP_THREADS": "1"})
    assert r.returncode == 2 and "EXECD_HTTP_THREADS" in r.stderr
    r = run_cli("--check-config", env={"EXECD_BOGUS": "1"})
    assert r.returncode == 2 and "unknown configuration key 'EXECD_BOGUS'" in r.stderr
    r = run_cli("--check-config", env={"EXECD_ROLES": "store,frobnicator"})
    assert r.returncode == 2 and "unknown role 'frobnicator'" in r.stderr
    r = run_cli("--check-config", "--set", "EXECD_LOG_LEVEL=loud")
    assert r.returncode == 2 and "EXECD_LOG_LEVEL" in r.stderr


def test_print_config_masks_secrets_and_applies_precedence(tmp_path):
    conf = tmp_path / "execd.conf"
    conf.write_text("# a comment\nEXECD_TOPIC_PREFIX=fromfile-\nEXECD_LOG_LEVEL=warn\n")
    r = run_cli("--config", str(conf), "--print-config", "--set", "EXECD_LOG_LEVEL=error",
                env={"EXECD_NODE_TOKEN": "hunter2hunter2", "EXECD_LOG_LEVEL": "debug"})
    assert r.returncode == 0, r.stderr
    lines = dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)
    assert lines["EXECD_TOPIC_PREFIX"] == "fromfile-"
    assert lines["EXECD_LOG_LEVEL"] == "error"        # --set beats env beats file
    assert lines["EXECD_NODE_TOKEN"] == "****"
    assert "hunter2" not in r.stdout


def test_reference_md_is_generated_from_the_table():
    r = run_cli("--print-reference")
    assert r.returncode == 0
    with open(os.path.join(ROOT, "config", "reference.md")) as f:
        assert f.read() == r.stdout, "config/reference.md is stale: run `make reference`"


def test_health_metrics_404_and_headers(execd_factory):
    # A process with no role still serves health and metrics.
    e = execd_factory(roles="all").start()
    r = e.get("/api/v1/health/live")
    assert r.status == 200
    body = r.json()
    assert body["status"] == "ok" and body["uptime_seconds"] >= 0 and body["timestamp"].endswith("Z")
    for name, value in (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                        ("Referrer-Policy", "strict-origin-when-cross-origin")):
        assert r.header(name) == value
    assert "frame-ancestors 'none'" in r.header("Content-Security-Policy")
    assert r.header("X-Request-Id")
    r = e.get("/api/v1/health/live", headers={"X-Request-Id": "abc-123"})
    assert r.header("X-Request-Id") == "abc-123"

    r = e.get("/api/v1/no/such/route")
    assert r.status == 404
    assert r.json() == {"detail": "Not Found", "type": "NotFound"}
    assert r.header("X-Content-Type-Options") == "nosniff"
    r = e.post("/api/v1/health/live", body={})
    assert r.status == 405 and r.json()["type"]

    r = e.get("/metrics")
    assert r.status == 200
    text = r.body.decode()
    assert "# TYPE execd_http_requests_total counter" in text
    assert 'execd_http_requests_total{server="http",code="404"}' in text
    assert "execd_http_request_duration_seconds_bucket" in text


def test_sigterm_exits_zero_within_deadline(execd_factory):
    e = execd_factory(env={"EXECD_SHUTDOWN_TIMEOUT_MS": "5000"}).start()
    t0 = time.monotonic()
    assert e.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 5 * SLOW
    assert "stopped" in e.log()


def test_json_log_format(execd_factory):
    e = execd_factory(env={"EXECD_LOG_FORMAT": "json"}).start()
    e.get("/api/v1/health/live")
    assert e.stop() == 0
    lines = [l for l in e.log().splitlines() if l.startswith("{")]
    assert lines, e.log()
    recs = [json.loads(l) for l in lines]
    assert any(r["msg"] == "started" and r["level"] == "info" for r in recs)
    assert all({"ts", "level", "role", "thread", "msg"} <= r.keys() for r in recs)
