"""Hostile pods on the node: each is contained, the node stays healthy, the next pod runs.

All hostile pods are submitted at once to one node (6 slots) and awaited
together, then each test checks its pod's outcome and output.  The node's
log cap is lowered so the unbounded-output pod hits it quickly.
"""
import json
import os
import time
import uuid

import pytest

from conftest import SLOW, Execd, http, wait_for
from test_node import Kube, _ready, pod_body, terminated

LOG_LIMIT = 256 * 1024

MARKER = f"execd-daemon-{uuid.uuid4().hex[:12]}"
SECRET = f"host-secret-{uuid.uuid4().hex}"

PROBE = r'''
import json, os, sys
def attempt(fn):
    try:
        return "OK:" + repr(fn())[:80]
    except BaseException as e:
        return "FAIL:" + type(e).__name__ + ":" + str(getattr(e, "errno", ""))
'''

HOSTILE = {
    "daemon": None,  # filled below; submitted first so it runs while the host is watched
    # pids.max stops the forks; every child dies with the pod.
    "fork-limit": (PROBE + r'''
import time
n = 0
while True:
    try:
        pid = os.fork()
    except OSError as e:
        print("fork failed after", n, "errno", e.errno, flush=True)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
''', {}),
    "fork-bomb": ('import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n'
                  '        pass\n', {"deadline": 2}),
    # No memory limit in the spec: the node's default cgroup limit applies.
    "memory-bomb": ("x = []\nwhile True:\n    x.append(bytearray(16 << 20))\n", {}),
    "fill-tmp": (PROBE + r'''
total = 0
chunk = b"x" * (1 << 20)
try:
    with open("/tmp/fill", "wb") as f:
        while True:
            f.write(chunk)
            f.flush()
            total += len(chunk)
except OSError as e:
    print("stopped", e.errno, "after", total)
''', {}),
    "unbounded-output": ('import sys\nwhile True:\n    sys.stdout.write("y" * 65536)\n',
                         {"deadline": 2}),
    "network": (PROBE + r'''
import socket
port = int(os.environ["NODE_PORT"])
out = {}
out["loopback"] = attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
out["public"] = attempt(lambda: socket.create_connection(("1.1.1.1", 80), timeout=2))
out["dns"] = attempt(lambda: socket.getaddrinfo("example.com", 80))
out["ifaces"] = sorted(n for _, n in socket.if_nameindex())
print(json.dumps(out))
''', {}),
    "host-files": (PROBE + r'''
out = {}
for p in ["/etc/shadow", os.environ["SECRET_PATH"], os.environ["STATE_DIR"], "/root",
          "/home", "/work", "/var/log", "/sys/kernel", "/boot", "/proc/kcore"]:
    out[p] = attempt(lambda: os.listdir(p) if os.path.isdir(p) else open(p, "rb").read(64))
out["passwd"] = open("/etc/passwd").read()
print(json.dumps(out))
''', {}),
    "write-outside-tmp": (PROBE + r'''
out = {}
for p in ["/evil", "/usr/evil", "/usr/bin/python3", "/etc/passwd", "/scripts/main.py",
          "/dev/evil", "/proc/sys/kernel/hostname", "/opt/execd/bin/evil"]:
    out[p] = attempt(lambda: open(p, "w").write("x"))
out["/tmp/ok"] = attempt(lambda: open("/tmp/ok", "w").write("x"))
out["/dev/shm/ok"] = attempt(lambda: open("/dev/shm/ok", "w").write("x"))
out["/dev/termination-log"] = attempt(lambda: open("/dev/termination-log", "w").write("x"))
print(json.dumps(out))
''', {}),
    "kill-parent": (PROBE + r'''
import signal
out = {"ppid": os.getppid()}
out["kill_ppid"] = attempt(lambda: os.kill(os.getppid(), signal.SIGKILL))
out["kill_1"] = attempt(lambda: os.kill(1, signal.SIGKILL))
print(json.dumps(out), flush=True)
print("survived")
''', {}),
    "ptrace": (PROBE + r'''
import ctypes, signal
libc = ctypes.CDLL(None, use_errno=True)
out = {}
out["traceme"] = [libc.ptrace(0, 0, 0, 0), ctypes.get_errno()]
pid = os.fork()
if pid == 0:
    import time
    time.sleep(10)
    os._exit(0)
out["attach"] = [libc.ptrace(16, pid, 0, 0), ctypes.get_errno()]
os.kill(pid, signal.SIGKILL)
out["unshare"] = [libc.unshare(0x10000000), ctypes.get_errno()]
out["mount"] = [libc.mount(b"none", b"/tmp", b"tmpfs", 0, None), ctypes.get_errno()]
out["bpf"] = [libc.syscall(321, 0, 0, 0), ctypes.get_errno()]
print(json.dumps(out))
''', {}),
    "setuid": (PROBE + r'''
import subprocess
out = {}
out["setuid0"] = attempt(lambda: os.setuid(0))
out["setresuid"] = attempt(lambda: os.setresuid(0, 0, 0))
status = open("/proc/self/status").read()
out["nonewprivs"] = [l for l in status.splitlines() if l.startswith("NoNewPrivs")][0]
out["capeff"] = [l for l in status.splitlines() if l.startswith("CapEff")][0]
su = [p for p in ("/usr/bin/su", "/usr/bin/mount", "/usr/bin/passwd") if os.path.exists(p)]
r = subprocess.run([su[0], "--version"] if su else ["true"], capture_output=True)
out["suid_binary"] = su[:1]
out["suid_uid_after"] = os.geteuid()
out["id"] = subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip()
print(json.dumps(out))
''', {}),
    "sleep-past-deadline": ("import time\ntime.sleep(60)\n", {"deadline": 1}),
}
HOSTILE["daemon"] = (PROBE + f'''
import time
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/usr/bin/sleep", ["{MARKER}", "300"])
    os._exit(0)
os.waitpid(pid, 0)
print("daemon started", flush=True)
time.sleep(3)
''', {})


def host_has_marker():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if MARKER.encode() in f.read():
                    return True
        except OSError:
            pass
    return False


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sandbox")
    secret = tmp / "secret.txt"
    secret.write_text(SECRET)
    e = Execd(tmp, roles="node", name="sandbox-node",
              env={"EXECD_NODE_SLOTS": "6", "EXECD_NODE_LOG_LIMIT_BYTES": str(LOG_LIMIT)})
    e.start()
    try:
        data = run_hostile(e, secret)
    except BaseException:
        e.stop()
        raise
    yield data
    rc = e.stop()
    assert rc == 0, e.log()[-3000:]


def run_hostile(e, secret):
    """Submits every hostile pod at once and waits for all of them."""
    wait_for(lambda: _ready(e), 10, what="node ready")
    k = Kube(e.node_url, ns="hostile")
    state_dir = e.env()["EXECD_NODE_STATE_DIR"]
    t0 = time.monotonic()
    # The daemon must exist while its pod runs (it is found on the host by its argv[0]).
    def daemon_seen():
        if host_has_marker():
            return "seen"
        if k.pod("daemon")["status"]["phase"] in ("Succeeded", "Failed"):
            return "pod ended first: " + k.log("daemon").body.decode(errors="replace")[-500:]
        return None
    saw_daemon = None
    for name, (script, opts) in HOSTILE.items():
        k.create_cm(name, {"main.py": script})
        k.create_pod(pod_body(name, env={"NODE_PORT": str(e.node_port),
                                         "SECRET_PATH": str(secret), "STATE_DIR": state_dir},
                              **opts))
        if name == "daemon":
            saw_daemon = wait_for(daemon_seen, 30, interval=0.02, what="the daemon to start")
    results = {}
    for name in HOSTILE:
        pod = k.wait_terminal(name, timeout=60)
        results[name] = (pod, k.log(name).body)
    elapsed = time.monotonic() - t0
    return {"node": e, "kube": k, "results": results, "saw_daemon": saw_daemon,
            "elapsed": elapsed}


def outcome(hostile, name):
    pod, log = hostile["results"][name]
    return pod, log.decode(errors="replace")


def probe_json(hostile, name):
    pod, log = outcome(hostile, name)
    assert pod["status"]["phase"] == "Succeeded", (pod["status"], log[-2000:])
    return json.loads(log.strip().splitlines()[-1])


def test_fork_limit_stops_forks_at_pids_max(hostile):
    pod, log = outcome(hostile, "fork-limit")
    assert pod["status"]["phase"] == "Succeeded", log
    words = log.split()
    n, errno = int(words[3]), int(words[5])
    assert errno == 11 and 0 < n < 64, log  # EAGAIN below EXECD_NODE_PIDS_MAX (64)


def test_fork_bomb_is_contained_and_killed_at_deadline(hostile):
    pod, log = outcome(hostile, "fork-bomb")
    assert pod["status"]["phase"] == "Failed" and pod["status"]["reason"] == "DeadlineExceeded"


def test_memory_bomb_is_oom_killed_by_the_default_limit(hostile):
    pod, log = outcome(hostile, "memory-bomb")
    assert pod["status"]["phase"] == "Failed"
    assert terminated(pod)["reason"] == "OOMKilled"


def test_filling_tmp_hits_its_size_limit(hostile):
    pod, log = outcome(hostile, "fill-tmp")
    assert pod["status"]["phase"] == "Succeeded", log
    words = log.split()
    assert words[0] == "stopped" and int(words[1]) == 28  # ENOSPC
    assert int(words[3]) <= 64 * 1024 * 1024


def test_unbounded_output_is_capped_and_the_program_runs_to_its_deadline(hostile):
    pod, log = outcome(hostile, "unbounded-output")
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert len(log) == LOG_LIMIT and set(log) == {"y"}


def test_no_network_loopback_or_public(hostile):
    out = probe_json(hostile, "network")
    assert out["loopback"].startswith("FAIL"), out
    assert out["public"].startswith("FAIL"), out
    assert out["dns"].startswith("FAIL"), out
    assert out["ifaces"] == ["lo"]


def test_host_files_are_not_visible(hostile):
    out = probe_json(hostile, "host-files")
    passwd = out.pop("passwd")
    for path, result in out.items():
        assert result.startswith("FAIL"), (path, result)
    assert SECRET not in json.dumps(out)
    assert "/root:/bin/bash" not in passwd and "nobody" in passwd


def test_writes_outside_tmp_fail(hostile):
    out = probe_json(hostile, "write-outside-tmp")
    for ok in ("/tmp/ok", "/dev/shm/ok", "/dev/termination-log"):
        assert out.pop(ok).startswith("OK"), ok
    for path, result in out.items():
        assert result.startswith("FAIL"), (path, result)


def test_killing_the_parent_does_not_escape(hostile):
    pod, log = outcome(hostile, "kill-parent")
    assert pod["status"]["phase"] == "Succeeded", log
    out = json.loads(log.splitlines()[0])
    assert out["ppid"] == 1
    assert log.splitlines()[1] == "survived"


def test_ptrace_namespaces_mount_bpf_are_denied(hostile):
    out = probe_json(hostile, "ptrace")
    for call in ("traceme", "attach", "unshare", "mount", "bpf"):
        assert out[call] == [-1, 1], (call, out)  # EPERM from the seccomp filter


def test_setuid_escalation_fails(hostile):
    out = probe_json(hostile, "setuid")
    assert out["setuid0"].startswith("FAIL") and out["setresuid"].startswith("FAIL")
    assert out["nonewprivs"].split() == ["NoNewPrivs:", "1"]
    assert out["capeff"].split()[1] == "0000000000000000"
    assert out["suid_uid_after"] == 65534 and out["id"] == "65534"


def test_sleeping_past_the_deadline_is_killed(hostile):
    pod, log = outcome(hostile, "sleep-past-deadline")
    assert pod["status"]["reason"] == "DeadlineExceeded"
    t = terminated(pod)
    assert t["exitCode"] == 137


def test_daemon_dies_with_its_pod(hostile):
    pod, log = outcome(hostile, "daemon")
    assert hostile["saw_daemon"] == "seen", hostile["saw_daemon"]
    assert pod["status"]["phase"] == "Succeeded" and "daemon started" in log
    wait_for(lambda: not host_has_marker(), 3, interval=0.05, what="the daemon to be killed")


def test_node_healthy_and_next_pod_runs(hostile):
    e, k = hostile["node"], hostile["kube"]
    r = http("GET", e.node_url + "/api/v1/health/ready")
    assert r.status == 200 and r.json()["checks"]["node"]["running"] == 0
    k.create_cm("after", {"main.py": 'print("still here")\n'})
    k.create_pod(pod_body("after"))
    pod = k.wait_terminal("after")
    assert pod["status"]["phase"] == "Succeeded"
    assert k.log("after").body == b"still here\n"
    assert hostile["elapsed"] < 30 * SLOW
