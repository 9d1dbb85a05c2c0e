"""Dead-lettering end to end: an event that fails its schema, consumed by the store role
through the bus, lands on <prefix>dead_letter_queue with the original key, payload and headers
plus the six DLQ headers; the consumer carries on with valid events afterwards."""
import json
import os
import re
import subprocess
import time
import uuid

from conftest import EXECD_BIN, KAFKA, SLOW, kcat, mongo, wait_for


def bus_publish(e, *args):
    env = e.env()
    r = subprocess.run([EXECD_BIN, "bus-publish", *args], env=env, capture_output=True,
                       text=True, timeout=60 * SLOW)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def dlq_records(topic, expect, timeout=30):
    deadline = time.monotonic() + timeout * SLOW
    recs = []
    while time.monotonic() < deadline:
        out = kcat("-C", "-t", topic, "-e", "-J", "-q", "-o", "beginning")
        recs = [json.loads(l) for l in out.decode().splitlines() if l.strip()]
        if len(recs) >= expect:
            return recs
        time.sleep(0.2)
    raise AssertionError(f"{topic}: {len(recs)} dead letters, expected {expect}")


def headers_of(rec):
    h = rec.get("headers") or []
    return dict(zip(h[0::2], h[1::2]))


def test_invalid_events_are_dead_lettered_and_store_carries_on(execd_factory):
    e = execd_factory(roles="store").start()
    ids = bus_publish(e, "--invalid", "--count", "3")
    assert len(ids) == 3

    recs = dlq_records(e.prefix + "dead_letter_queue", 3)
    assert len(recs) == 3
    src = json.loads(kcat("-L", "-J", "-t", e.prefix + "execution_events"))
    nparts = len(src["topics"][0]["partitions"])
    seen = set()
    for rec in recs:
        ev = json.loads(rec["payload"])  # the original payload, unchanged
        seen.add(ev["event_id"])
        assert rec["key"] == ev["aggregate_id"]  # the original key
        h = headers_of(rec)
        # The original headers are kept …
        assert h["event_type"] == "execution_requested"
        assert h["content-type"] == "application/json"
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", h["traceparent"])
        # … and the DLQ ones added.
        assert h["original_topic"] == e.prefix + "execution_events"
        assert 0 <= int(h["original_partition"]) < nparts
        assert int(h["original_offset"]) >= 0
        assert h["consumer_group"] == e.prefix + "execd-store"  # groups are prefixed too
        assert "execution_id" in h["error"], h["error"]
        assert h["retry_count"] == "0"  # schema failures are not retried
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", h["failed_at"])
    assert seen == set(ids)
    # The original (topic, partition, offset) really holds that message.
    for rec in recs:
        h = headers_of(rec)
        orig = kcat("-C", "-t", h["original_topic"], "-p", h["original_partition"],
                    "-o", h["original_offset"], "-c", "1", "-e", "-q", "-f", "%s")
        assert json.loads(orig)["event_id"] == json.loads(rec["payload"])["event_id"]

    # The store role keeps consuming: valid events published afterwards are stored.
    good = bus_publish(e, "--count", "4")
    db = mongo(e.db)
    wait_for(lambda: db["events"].count_documents({"event_id": {"$in": good}}) == 4, 30,
             what="valid events stored after the dead letters")
    assert db["events"].count_documents({"event_id": {"$in": ids}}) == 0
    # Nothing else was dead-lettered.
    assert len(dlq_records(e.prefix + "dead_letter_queue", 3)) == 3

    # The bus's own metrics agree: 3 dead letters, every message consumed, and the lag
    # gauge of the store group drains to 0 (refreshed every ~5 s).
    def metric(text, name, labels):
        for line in text.splitlines():
            if line.startswith(name + "{") and all(l in line for l in labels):
                return float(line.rsplit(" ", 1)[1])
        return None

    text = e.get("/metrics").body.decode()
    assert metric(text, "execd_kafka_dead_lettered_total", ['role="store"']) == 3
    assert metric(text, "execd_kafka_consumed_total", ['role="store"']) >= 7
    assert metric(text, "execd_kafka_published_total", ['topic="dead_letter_queue"']) == 3
    lag_labels = [f'group="{e.prefix}execd-store"', 'topic="execution_events"']
    wait_for(lambda: metric(e.get("/metrics").body.decode(), "execd_kafka_consumer_lag",
                            lag_labels) == 0, 15, interval=0.5, what="store lag gauge at 0")
