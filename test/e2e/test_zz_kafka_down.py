"""Readiness follows the broker: 200 naming kafka and mongo, 503 naming kafka
when Kafka is stopped, 200 again after it is back.  Runs last of the whole suite (it stops the
shared broker and restarts it through scripts/services.sh)."""
import os
import signal
import subprocess

from conftest import ROOT, wait_for


def kafka_pid():
    var = os.environ.get("DEV_VAR_DIR", os.path.join(ROOT, "var"))
    with open(os.path.join(var, "kafka.pid")) as f:
        return int(f.read().strip())


def test_ready_turns_503_naming_kafka_when_the_broker_stops(execd_factory):
    e = execd_factory(roles="store").start()
    r = wait_for(lambda: (lambda r: r if r.status == 200 else None)(e.get("/api/v1/health/ready")),
                 30, what="ready 200")
    checks = r.json()["checks"]
    assert checks["kafka"]["status"] == "ok" and checks["mongo"]["status"] == "ok"

    pid = kafka_pid()
    os.kill(pid, signal.SIGTERM)
    try:
        def not_ready():
            r = e.get("/api/v1/health/ready", timeout=15)
            return r if r.status == 503 else None
        r = wait_for(not_ready, 40, interval=0.5, what="ready 503 with kafka down")
        body = r.json()
        assert body["status"] == "fail"
        assert body["failing"] == "kafka"
        assert body["checks"]["kafka"]["status"] == "fail"
        assert body["checks"]["mongo"]["status"] == "ok"
    finally:
        def gone():
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                return True
        wait_for(gone, 30, interval=0.2, what="the broker process to exit")
        # A broker holding every topic of the run takes longer to come back.
        up = subprocess.run([os.path.join(ROOT, "scripts", "services.sh"), "up"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "DEV_SERVICES_TIMEOUT": "240"})
        assert up.returncode == 0, up.stdout + up.stderr
    wait_for(lambda: e.get("/api/v1/health/ready", timeout=15).status == 200, 60, interval=0.5,
             what="ready 200 after kafka is back")
    assert e.stop() == 0
