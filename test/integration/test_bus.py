"""The Kafka bus through the real binary: topic creation, publishing, headers, properties.

`execd bus-publish` (src/tools/bus_tool.c) drives the real bus code (src/infra/bus_kafka.c):
it ensures the topics and publishes through the idempotent producer. The broker state is
read back independently with kcat and Kafka's own ConfigCommand.
"""
import json
import os
import re
import subprocess
import uuid

import pytest

from conftest import EXECD_BIN, KAFKA, ROOT, SLOW, kcat

TOPICS = {  # logical name: (partitions, retention.ms, max.message.bytes) — DESIGN §2
    "execution_events": (6, 7 * 86400000, 2 * 1048576),
    "execution_tasks": (3, 1 * 86400000, 2 * 1048576),
    "saga_commands": (3, 1 * 86400000, 1048576),
    "user_events": (3, 30 * 86400000, 1048576),
    "notification_events": (3, 7 * 86400000, 1048576),
    "system_events": (3, 30 * 86400000, 1048576),
    "dead_letter_queue": (3, 14 * 86400000, 4 * 1048576),
}
KAFKA_LIB = os.path.join(ROOT, ".cache", "kafka", "lib")


def prefix():
    return f"tb{uuid.uuid4().hex[:10]}-"


def bus_publish(pfx, *args, env=None, timeout=60):
    e = {k: v for k, v in os.environ.items() if not k.startswith("EXECD_")}
    e.update({"EXECD_KAFKA_BROKERS": KAFKA, "EXECD_TOPIC_PREFIX": pfx, "EXECD_LOG_LEVEL": "info"})
    e.update(env or {})
    return subprocess.run([EXECD_BIN, "bus-publish", *args], env=e, capture_output=True,
                          text=True, timeout=timeout * SLOW)


def metadata():
    return json.loads(kcat("-L", "-J", "-m", "10"))


def topic_configs(pfx):
    """Dynamic (per-topic) configs of every topic with this prefix, via Kafka's ConfigCommand."""
    assert os.path.isdir(KAFKA_LIB), f"Kafka jars missing at {KAFKA_LIB}: run scripts/setup.sh"
    r = subprocess.run(["java", "-cp", KAFKA_LIB + "/*", "kafka.admin.ConfigCommand",
                        "--bootstrap-server", KAFKA, "--entity-type", "topics", "--describe"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out, cur = {}, None
    for line in r.stdout.splitlines():
        m = re.match(r"Dynamic configs for topic (\S+) are:", line)
        if m:
            cur = m.group(1) if m.group(1).startswith(pfx) else None
            if cur:
                out[cur] = {}
            continue
        m = re.match(r"\s+([a-z.]+)=(\S+) ", line)
        if m and cur:
            out[cur][m.group(1)] = m.group(2)
    return out


def read_topic(topic, expect, timeout=30):
    """All messages of a topic as kcat JSON records (reads to the end; retries until expect)."""
    import time
    deadline = time.monotonic() + timeout * SLOW
    recs = []
    while time.monotonic() < deadline:
        out = kcat("-C", "-t", topic, "-e", "-J", "-q", "-o", "beginning")
        recs = [json.loads(l) for l in out.decode().splitlines() if l.strip()]
        if len(recs) >= expect:
            return recs
        time.sleep(0.2)
    raise AssertionError(f"{topic}: {len(recs)} messages, expected {expect}")


def headers_of(rec):
    h = rec.get("headers") or []
    return dict(zip(h[0::2], h[1::2]))


def test_topics_created_with_partitions_retention_and_max_size_and_idempotent():
    pfx = prefix()
    r = bus_publish(pfx, "--count", "0", env={"EXECD_EVENT_RETENTION_DAYS": "3"})
    assert r.returncode == 0, r.stderr
    assert "created=7" in r.stderr, r.stderr

    md = {t["topic"]: t for t in metadata()["topics"] if t["topic"].startswith(pfx)}
    assert set(md) == {pfx + n for n in TOPICS}
    for name, (parts, _, _) in TOPICS.items():
        assert len(md[pfx + name]["partitions"]) == parts, name

    cfgs = topic_configs(pfx)
    for name, (_, retention, maxmsg) in TOPICS.items():
        if name == "execution_events":
            retention = 3 * 86400000  # EXECD_EVENT_RETENTION_DAYS
        c = cfgs[pfx + name]
        assert c.get("retention.ms") == str(retention), (name, c)
        assert c.get("max.message.bytes") == str(maxmsg), (name, c)

    # Second run: every topic already exists, which is success; nothing changes.
    r2 = bus_publish(pfx, "--count", "0", env={"EXECD_EVENT_RETENTION_DAYS": "3"})
    assert r2.returncode == 0, r2.stderr
    assert "created=0" in r2.stderr, r2.stderr
    md2 = {t["topic"]: len(t["partitions"]) for t in metadata()["topics"]
           if t["topic"].startswith(pfx)}
    assert md2 == {pfx + n: p for n, (p, _, _) in TOPICS.items()}


def test_published_events_carry_headers_and_aggregate_key():
    pfx = prefix()
    r = bus_publish(pfx, "--count", "5")
    assert r.returncode == 0, r.stderr
    ids = r.stdout.split()
    assert len(ids) == 5 and all(uuid.UUID(i) for i in ids)

    recs = read_topic(pfx + "execution_events", 5)
    assert len(recs) == 5
    got = {}
    for rec in recs:
        ev = json.loads(rec["payload"])
        got[ev["event_id"]] = ev
        h = headers_of(rec)
        assert rec["key"] == ev["aggregate_id"] == ev["execution_id"]
        assert h["event_type"] == "execution_requested"
        assert h["event_version"] == "1"
        assert re.fullmatch(r"\d+", h["schema_id"])
        assert h["content-type"] == "application/json"
        m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", h["traceparent"])
        assert m, h["traceparent"]
        assert m.group(1) == ev["metadata"]["trace_id"]
    assert sorted(got) == sorted(ids)

    # Another type goes to its own catalog topic, keyed by its aggregate (the user id).
    r = bus_publish(pfx, "--count", "2", "--type", "user_registered")
    assert r.returncode == 0, r.stderr
    recs = read_topic(pfx + "user_events", 2)
    for rec in recs:
        ev = json.loads(rec["payload"])
        assert ev["event_type"] == "user_registered"
        assert rec["key"] == ev["aggregate_id"] == ev["user_id"]
        assert headers_of(rec)["event_type"] == "user_registered"
    assert sorted(json.loads(x["payload"])["event_id"] for x in recs) == sorted(r.stdout.split())


def test_raw_payload_and_invalid_events():
    pfx = prefix()
    r = bus_publish(pfx, "--count", "2", "--raw-topic", "system_events", "--payload", "not json{")
    assert r.returncode == 0, r.stderr
    keys = r.stdout.split()
    recs = read_topic(pfx + "system_events", 2)
    assert sorted(x["key"] for x in recs) == sorted(keys)
    assert all(x["payload"] == "not json{" for x in recs)

    r = bus_publish(pfx, "--count", "1", "--invalid")
    assert r.returncode == 0, r.stderr
    rec = read_topic(pfx + "execution_events", 1)[0]
    ev = json.loads(rec["payload"])
    assert ev["event_id"] == r.stdout.strip()
    assert "execution_id" not in ev  # the first required field is missing
    assert headers_of(rec)["event_type"] == "execution_requested"


def test_kafka_properties_pass_through_and_errors():
    pfx = prefix()
    # A tiny producer message.max.bytes makes a 4 KiB payload undeliverable: the property
    # reached librdkafka, and a failed delivery is a non-zero exit.
    big = "x" * 4096
    r = bus_publish(pfx, "--count", "1", "--raw-topic", "system_events", "--payload", big,
                    env={"EXECD_KAFKA_PROP_MESSAGE_MAX_BYTES": "2000"})
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "not delivered" in r.stderr
    assert r.stdout.strip() == ""
    r = bus_publish(pfx, "--count", "1", "--raw-topic", "system_events", "--payload", big)
    assert r.returncode == 0, r.stderr

    # An unknown property fails start-up naming the dotted key.
    r = bus_publish(pfx, "--count", "1", env={"EXECD_KAFKA_PROP_bogus_thing": "1"})
    assert r.returncode != 0
    assert "bogus.thing" in r.stderr


def test_unreachable_broker_fails_fast():
    r = bus_publish(prefix(), "--count", "1", env={"EXECD_KAFKA_BROKERS": "127.0.0.1:1"},
                    timeout=30)
    assert r.returncode == 1
    assert "cannot create topics" in r.stderr
    assert r.stdout.strip() == ""
