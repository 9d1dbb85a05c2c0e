"""Issue 5 acceptance: SIGKILL of the all-roles process in the middle of a
100-execution run, then a restart on the same topics, database and node
state: every accepted execution still ends exactly once — one terminal
status, one result record, one result_stored event id — and every one that
completed has its own output.
"""
import collections
import concurrent.futures

from conftest import TERMINAL_EVENTS, TERMINAL_STATUS, Cluster, Execd, mongo, wait_for

N = 100


def ended(users):
    n = 0
    for u in users:
        body = u.req("GET", "/api/v1/user/executions?limit=200").json()
        n += sum(1 for x in body["executions"] if x["status"] in TERMINAL_STATUS)
    return n


def test_sigkill_mid_run_then_restart(tmp_path):
    c = Cluster("one", tmp_path)
    c.start()
    try:
        users = [c.user() for _ in range(5)]
        jobs = [(users[i % 5], i) for i in range(N)]
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            ids = list(pool.map(lambda j: j[0].run(f'print("crash-{j[1]}")'), jobs))
        wait_for(lambda: ended(users) >= 5, 60, interval=0.1, what="the first runs to end")
        before = ended(users)
        c.procs[0].kill9()
        assert before < N, "everything ended before the kill: the test proves nothing"

        old = c.procs[0]
        again = Execd(tmp_path, roles="all", env=c.env, prefix=c.prefix, db=c.db, name=old.name)
        c.procs = [again]
        c.api = c.node = again
        c.start()
        for u in users:
            u.c = c
        wait_for(lambda: ended(users) >= N, 180, interval=0.25, what=f"all {N} to end")

        db = mongo(c.db)
        evs = [e for e in c.topic("execution_events") if e["aggregate_id"] in set(ids)]
        per = collections.defaultdict(list)
        for e in evs:
            per[e["aggregate_id"]].append(e)
        for (u, i), eid in zip(jobs, ids):
            r = u.result(eid)
            assert r["status"] in TERMINAL_STATUS, r
            if r["status"] == "completed":
                assert (r["exit_code"], r["stdout"]) == (0, f"crash-{i}\n"), r
            assert db.execution_results.count_documents({"execution_id": eid}) == 1, eid
            e = per[eid]
            stored = {x["event_id"] for x in e if x["event_type"] == "result_stored"}
            assert len(stored) == 1, (eid, [x["event_type"] for x in e])
            terms = {x["event_type"] for x in e if x["event_type"] in TERMINAL_EVENTS}
            assert len(terms) == 1, (eid, r["status"], [x["event_type"] for x in e])
            assert f"execution_{r['status']}" in terms, (r["status"], terms)
        statuses = collections.Counter(u.result(eid)["status"] for (u, _), eid in zip(jobs, ids))
        print(f"ended before the kill: {before}; outcomes: {dict(statuses)}")
        assert statuses["completed"] >= N - 10, statuses
    finally:
        bad = c.stop()
        c.drop()
    assert not bad, "\n".join(bad)
