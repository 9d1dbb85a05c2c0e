"""The embedded schema registry: every process registers the event catalog's
JSON Schemas in `schemas` at start-up, reuses ids on restart, and refuses to
start when the registered latest version is incompatible with its catalog."""
import json
import os
import re

from conftest import ROOT, SLOW, mongo

CATALOG_H = os.path.join(ROOT, "include", "event_catalog.h")


def catalog_types():
    with open(CATALOG_H) as f:
        text = f.read()
    return re.findall(r"^\s*X\((\w+),\s*\w+,\s*\d+,\s*\w+\)", text, re.M)


def registered(db):
    return {d["subject"]: d for d in mongo(db).schemas.find({}, {"_id": 0})}


def test_registry_registers_catalog_and_reuses_ids(execd_factory):
    types = catalog_types()
    assert len(types) > 30, types
    first = execd_factory(roles="store", name="first").start()
    assert first.stop() == 0, first.log()[-3000:]

    docs = list(mongo(first.db).schemas.find({}, {"_id": 0}))
    subjects = [d["subject"] for d in docs]
    assert sorted(subjects) == sorted(types), "one subject per catalog type"
    ids = [d["schema_id"] for d in docs]
    assert len(set(ids)) == len(ids) and min(ids) >= 1, ids
    for d in docs:
        assert d["version"] == 1
        schema = json.loads(d["schema"])
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["title"] == d["subject"]
        assert "event_id" in schema["required"] and "metadata" in schema["required"]
        required = {f["name"] for f in d["fields"] if f["required"]}
        assert required <= set(schema["required"])
        assert set(schema["properties"]) >= {f["name"] for f in d["fields"]}
    completed = next(d for d in docs if d["subject"] == "execution_completed")
    fields = {f["name"]: (f["type"], f["required"]) for f in completed["fields"]}
    assert fields["exit_code"] == ("integer", True)
    assert fields["stdout_truncated"] == ("boolean", False)

    second = execd_factory(roles="store", name="second", prefix=first.prefix, db=first.db).start()
    assert second.stop() == 0, second.log()[-3000:]
    again = registered(first.db)
    assert mongo(first.db).schemas.count_documents({}) == len(types), "no new versions"
    assert {s: d["schema_id"] for s, d in again.items()} == \
        {d["subject"]: d["schema_id"] for d in docs}, "same ids after restart"


def _expect_refusal(execd_factory, base, name, subject, field):
    e = execd_factory(roles="store", name=name, prefix=base.prefix, db=base.db)
    e.start(wait=False)
    rc = e.proc.wait(timeout=20 * SLOW)
    log = e.log()
    assert rc != 0, f"execd started despite an incompatible schema:\n{log[-3000:]}"
    assert f"'{subject}'" in log and f"'{field}'" in log, log[-3000:]
    return log


def test_incompatible_latest_version_stops_startup(execd_factory):
    base = execd_factory(roles="store", name="base").start()
    assert base.stop() == 0, base.log()[-3000:]
    db = mongo(base.db)

    # A newer version where exit_code is a string: ours (integer) retypes it.
    v1 = db.schemas.find_one({"subject": "execution_completed", "version": 1}, {"_id": 0})
    v2 = dict(v1, version=2, schema_id=10_000, schema="{}",
              fields=[dict(f, type="string") if f["name"] == "exit_code" else f
                      for f in v1["fields"]])
    db.schemas.insert_one(v2)
    log = _expect_refusal(execd_factory, base, "retyped", "execution_completed", "exit_code")
    assert "integer" in log and "string" in log, log[-3000:]

    # A newer version with a field our catalog lacks: ours would remove it.
    db.schemas.delete_one({"subject": "execution_completed", "version": 2})
    p1 = db.schemas.find_one({"subject": "pod_created", "version": 1}, {"_id": 0})
    p2 = dict(p1, version=2, schema_id=10_001, schema="{}",
              fields=p1["fields"] + [{"name": "node_name", "type": "string", "required": False}])
    db.schemas.insert_one(p2)
    _expect_refusal(execd_factory, base, "removed", "pod_created", "node_name")

    # Back to a compatible registry: starts, and registers nothing new.
    db.schemas.delete_one({"subject": "pod_created", "version": 2})
    ok = execd_factory(roles="store", name="ok", prefix=base.prefix, db=base.db).start()
    assert ok.stop() == 0
    assert db.schemas.count_documents({}) == len(catalog_types())


def test_compatible_change_registers_new_version(execd_factory):
    """A registered latest version that lacks one of our optional fields is
    an older schema: ours is compatible and becomes the next version."""
    base = execd_factory(roles="store", name="base").start()
    assert base.stop() == 0
    db = mongo(base.db)
    old = db.schemas.find_one({"subject": "execution_scheduled"})
    db.schemas.update_one({"_id": old["_id"]}, {"$set": {
        "schema": "{}", "fields": [f for f in old["fields"] if f["name"] != "task_topic"]}})
    e = execd_factory(roles="store", name="next", prefix=base.prefix, db=base.db).start()
    assert e.stop() == 0
    versions = sorted(db.schemas.find({"subject": "execution_scheduled"}),
                      key=lambda d: d["version"])
    assert [d["version"] for d in versions] == [1, 2]
    assert versions[1]["schema_id"] > max(d["schema_id"] for d in db.schemas.find(
        {"subject": {"$ne": "execution_scheduled"}}))


def test_two_processes_racing_register_once(execd_factory):
    a = execd_factory(roles="store", name="a")
    b = execd_factory(roles="store", name="b", prefix=a.prefix, db=a.db)
    a.start(wait=False)
    b.start(wait=False)
    a.wait_live()
    b.wait_live()
    assert a.stop() == 0 and b.stop() == 0
    docs = list(mongo(a.db).schemas.find({}, {"_id": 0, "subject": 1, "version": 1}))
    assert sorted(d["subject"] for d in docs) == sorted(catalog_types())
    assert all(d["version"] == 1 for d in docs)
