"""The deployment manifests agree with the code.

1. Every EXECD_* variable deploy/compose.yaml and deploy/k8s/*.yaml set is a row of the config
   table (`execd --print-config`), and each replica's environment passes `execd --check-config`.
2. Every role named in EXECD_ROLES is a role of DESIGN.md §1, and the replica groups cover
   every role once.
3. The RBAC Role for worker and monitor grants exactly the verbs they use: derived from their
   sources (each call of the Kubernetes port, with the kind it is given) and from
   src/infra/k8s_client.c (which HTTP method and path each port function sends).

No YAML library is needed (the venv has none): the manifests keep the few shapes parsed here
(`KEY: value` maps, `- name:/value:` env entries, JSON-style flow lists in Role rules); a
manifest that drifts from them fails the parse loudly instead of passing.
"""
import glob
import json
import os
import re
import subprocess

from conftest import EXECD_BIN, ROOT

DEPLOY = os.path.join(ROOT, "deploy")
K8S_FILES = sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml")))
COMPOSE = os.path.join(DEPLOY, "compose.yaml")
# DESIGN.md §1.
DESIGN_ROLES = {"api", "coordinator", "worker", "monitor", "results", "projection", "store",
                "saga", "sse", "notifier", "dlq", "replay", "node"}
# Compose substitutes these from the user's shell; test values for --check-config.
COMPOSE_VARS = {"EXECD_SECRET_KEY": "k" * 40, "EXECD_NODE_TOKEN": "t" * 32,
                "EXECD_ADMIN_USERNAME": "admin", "EXECD_ADMIN_PASSWORD": "admin-password-123",
                "EXECD_ADMIN_EMAIL": "admin@localhost"}


def read(path):
    with open(path) as f:
        return f.read()


def config_keys():
    r = subprocess.run([EXECD_BIN, "--print-config"], capture_output=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if not k.startswith("EXECD_")})
    assert r.returncode == 0, r.stderr
    return {line.split("=", 1)[0] for line in r.stdout.decode().splitlines() if "=" in line}


def built_roles():
    r = subprocess.run([EXECD_BIN, "--list-roles"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.decode().split())


def check_config(env):
    """`execd --check-config` with env (roles restricted to those this build has, since
    EXECD_ROLES naming a role not built yet is rejected; test_roles checks the names)."""
    env = dict(env)
    have = built_roles()
    roles = [r for r in env.get("EXECD_ROLES", "all").split(",") if r in have]
    env["EXECD_ROLES"] = ",".join(roles) or "api"
    base = {k: v for k, v in os.environ.items() if not k.startswith("EXECD_")}
    r = subprocess.run([EXECD_BIN, "--check-config"], capture_output=True, timeout=30,
                       env={**base, **env}, cwd="/")
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def unquote(v):
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    return v


def compose_vars(v):
    """${NAME:?msg} / ${NAME:-default} / ${NAME} with the test values."""
    def sub(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in COMPOSE_VARS:
            return COMPOSE_VARS[name]
        assert op == ":-", f"compose variable {name} has no test value"
        return arg
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", sub, v)


# ------------------------------------------------------------------ compose

def compose_services():
    """{service: env} for the execd services (those with EXECD_ROLES), the x-execd-env anchor
    merged in."""
    common, services, cur, in_env = {}, {}, None, False
    section = None
    for line in read(COMPOSE).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            section = line.split(":")[0]
            cur, in_env = None, False
            continue
        if section == "services" and indent == 2:
            cur, in_env = line.strip().rstrip(":"), False
            services[cur] = {}
            continue
        if section == "services" and indent == 4:
            in_env = line.strip() == "environment:"
            continue
        m = re.match(r"\s+(EXECD_\w+):\s*(.*)$", line)
        if m:
            target = common if section == "x-execd-env" else (services[cur] if in_env else None)
            assert target is not None, f"EXECD_ variable outside an environment: {line!r}"
            target[m.group(1)] = compose_vars(unquote(m.group(2)))
    out = {name: {**common, **env} for name, env in services.items() if "EXECD_ROLES" in env}
    assert len(out) >= 4, f"compose execd services not found: {sorted(services)}"
    return out


# ------------------------------------------------------------------ kubernetes

def k8s_docs():
    docs = []
    for path in K8S_FILES:
        for doc in re.split(r"^---\s*$", read(path), flags=re.M):
            m = re.search(r"^kind:\s*(\w+)", doc, re.M)
            if m:
                name = re.search(r"^metadata:\n(?:\s+.*\n)*?\s+name:\s*(\S+)", doc, re.M)
                docs.append((m.group(1), name.group(1) if name else None, doc))
    return docs


def k8s_data(kind):
    """Union of the data/stringData maps of every document of kind."""
    out = {}
    for k, _, doc in k8s_docs():
        if k != kind:
            continue
        for m in re.finditer(r"^  (EXECD_\w+):\s*(.*)$", doc, re.M):
            out[m.group(1)] = unquote(m.group(2))
    return out


def k8s_deployments():
    """{deployment: env} with the ConfigMap and Secret (envFrom) merged in."""
    base = {**k8s_data("ConfigMap"), **k8s_data("Secret")}
    out = {}
    for kind, name, doc in k8s_docs():
        if kind != "Deployment":
            continue
        assert "configMapRef: {name: execd-config}" in doc and "secretRef: {name: execd-secret}" \
            in doc, f"{name} does not take the ConfigMap and Secret"
        env = dict(base)
        for m in re.finditer(r"- name: (EXECD_\w+)\n\s+value:\s*(.*)", doc):
            env[m.group(1)] = unquote(m.group(2))
        out[name] = env
    assert len(out) >= 3, out
    return out


# ------------------------------------------------------------------ tests

def test_every_variable_is_a_config_key():
    keys = config_keys()
    total = set()
    for path in [COMPOSE, *K8S_FILES]:
        used = set(re.findall(r"\bEXECD_[A-Z0-9_]+", read(path)))
        used = {u for u in used if not u.startswith("EXECD_KAFKA_PROP_")}
        total |= used
        unknown = used - keys
        assert not unknown, f"{os.path.relpath(path, ROOT)} uses {sorted(unknown)}, " \
                            f"not in `execd --print-config`"
    assert len(total) >= 10, f"the manifests set only {sorted(total)}"


def test_each_replica_environment_passes_check_config():
    replicas = {f"compose:{k}": v for k, v in compose_services().items()}
    replicas.update({f"k8s:{k}": v for k, v in k8s_deployments().items()})
    for name, env in replicas.items():
        rc, out = check_config(env)
        assert rc == 0, f"{name}: {out}"
    # The cluster replicas use the in-cluster service account in the execution namespace.
    ns = {name for kind, name, _ in k8s_docs() if kind == "Namespace"}
    for name, env in k8s_deployments().items():
        assert env["EXECD_K8S_API"] == "in-cluster" and env["EXECD_K8S_NAMESPACE"] in ns, name
    k8s = compose_services()["k8s"]
    assert k8s["EXECD_K8S_TOKEN"] == compose_services()["node"]["EXECD_NODE_TOKEN"]


def test_roles():
    for where, groups in (("compose", compose_services()), ("k8s", k8s_deployments())):
        seen = []
        for name, env in groups.items():
            roles = env["EXECD_ROLES"].split(",")
            assert set(roles) <= DESIGN_ROLES, f"{where}:{name}: {roles}"
            seen += roles
        assert len(seen) == len(set(seen)), f"{where}: a role runs in two groups: {seen}"
    compose = [env["EXECD_ROLES"] for env in compose_services().values()]
    assert sorted(compose) == sorted(["api,sse", "coordinator,saga,store,projection,results",
                                      "worker,monitor", "node"]), compose
    # A cluster has no embedded node: worker and monitor use the cluster's API.
    k8s_roles = {r for env in k8s_deployments().values() for r in env["EXECD_ROLES"].split(",")}
    assert k8s_roles == set(",".join(compose).split(",")) - {"node"}, k8s_roles


# ---- RBAC

KIND_RESOURCE = {"K8S_POD": ("", "pods"), "K8S_CONFIGMAP": ("", "configmaps"),
                 "K8S_NETWORKPOLICY": ("networking.k8s.io", "networkpolicies")}
# Used until src/roles/monitor/ has sources: what DESIGN.md §1 and INFRA.md say the monitor
# does (list+watch execution pods, read their logs, delete finished pods and their ConfigMaps).
MONITOR_FALLBACK = {("", "pods", "list"), ("", "pods", "watch"), ("", "pods", "delete"),
                    ("", "pods/log", "get"), ("", "configmaps", "delete")}


def c_functions(src):
    """{name: body} of the top-level functions of a C file."""
    out = {}
    for m in re.finditer(r"^[a-z][\w \*]*?\b(\w+)\(([^;{]*?)\)\s*\{(.*?)^\}", src, re.M | re.S):
        out[m.group(1)] = m.group(3)
    return out


def port_verbs():
    """What each Kubernetes port function sends, read from src/infra/k8s_client.c: the
    (verb, subresource) it needs. Fails when the client's requests change shape."""
    path = os.path.join(ROOT, "src", "infra", "k8s_client.c")
    assert os.path.exists(path), "src/infra/k8s_client.c is missing"
    fns = c_functions(read(path))
    want = {"k8s_create": ('"POST"', None, "create"), "k8s_get": ('"GET"', None, "get"),
            "k8s_delete": ('"DELETE"', None, "delete"),
            "k8s_list_pods": ('"GET"', "/pods", "list"),
            "k8s_pod_log": ('"GET"', "/log", "get"),
            "k8s_watch_pods": ('"GET"', "watch=true", "watch")}
    out = {}
    for fn, (method, marker, verb) in want.items():
        body = fns.get(fn)
        assert body is not None, f"k8s_client.c has no {fn}()"
        assert method in body, f"{fn}() does not send {method}"
        if marker:
            assert marker in body, f"{fn}() path lacks {marker!r}"
        out[fn] = verb
    return out


def role_uses(role_dir, verbs):
    """(apiGroup, resource, verb) for every Kubernetes port call in a role's sources; a call
    through a local wrapper (create(w, K8S_POD, ...)) counts by the wrapper's name."""
    used = set()
    srcs = sorted(glob.glob(os.path.join(role_dir, "*.c")))
    for path in srcs:
        src = read(path)
        if "k8s_watch_pods(" in src:
            used.add(("", "pods", "watch"))
        if "k8s_list_pods(" in src:
            used.add(("", "pods", "list"))
        if "k8s_pod_log(" in src:
            used.add(("", "pods/log", "get"))
        for m in re.finditer(r"\b(\w+)\s*\([^;()]*?\b(K8S_(?:POD|CONFIGMAP|NETWORKPOLICY))\b",
                             src):
            fn, kind = m.group(1), m.group(2)
            group, resource = KIND_RESOURCE[kind]
            verb = next((v for name, v in (("create", "create"), ("delete", "delete"),
                                           ("get", "get")) if name in fn), None)
            if fn in verbs:
                verb = verbs[fn]
            assert verb, (f"{os.path.relpath(path, ROOT)}: cannot tell the verb of "
                          f"{fn}(…{kind}…): call the port or a create/delete/get wrapper")
            used.add((group, resource, verb))
    return used, bool(srcs)


def role_rules():
    """(apiGroup, resource, verb) granted by the Role for worker and monitor."""
    roles = [(name, doc) for kind, name, doc in k8s_docs() if kind == "Role"]
    assert len(roles) == 1, f"expected one Role, found {[n for n, _ in roles]}"
    name, doc = roles[0]
    assert "namespace: execd-executions" in doc, "the Role must live in the execution namespace"
    rules = re.findall(r"- apiGroups: (\[.*?\])\n\s+resources: (\[.*?\])\n\s+verbs: (\[.*?\])",
                       doc)
    assert rules, "no rules parsed from the Role"
    out = set()
    for groups, resources, verbs in rules:
        for g in json.loads(groups):
            for r in json.loads(resources):
                for v in json.loads(verbs):
                    out.add((g, r, v))
    return name, out


def test_rbac_verbs_match_worker_and_monitor():
    verbs = port_verbs()
    worker, have_worker = role_uses(os.path.join(ROOT, "src", "roles", "worker"), verbs)
    assert have_worker and worker, "src/roles/worker has no Kubernetes calls"
    monitor, have_monitor = role_uses(os.path.join(ROOT, "src", "roles", "monitor"), verbs)
    if not have_monitor:
        monitor = MONITOR_FALLBACK
    name, granted = role_rules()
    used = worker | monitor
    assert granted == used, (f"Role {name}: grants but unused {sorted(granted - used)}; "
                             f"used but not granted {sorted(used - granted)}")
    # The binding gives exactly that Role to the executor's service account, which only the
    # worker,monitor Deployment uses.
    docs = k8s_docs()
    binding = next(doc for kind, _, doc in docs if kind == "RoleBinding")
    assert f"name: {name}" in binding and "name: execd-executor" in binding
    for kind, dname, doc in docs:
        if kind == "Deployment":
            uses_sa = "serviceAccountName: execd-executor" in doc
            assert uses_sa == ('value: "worker,monitor"' in doc), dname
            assert ("automountServiceAccountToken: true" in doc) == uses_sa, dname


def test_deployments_have_probes_and_resources():
    for kind, name, doc in k8s_docs():
        if kind != "Deployment":
            continue
        assert "livenessProbe:\n            httpGet: {path: /api/v1/health/live" in doc, name
        assert "readinessProbe:\n            httpGet: {path: /api/v1/health/ready" in doc, name
        assert re.search(r"requests: \{cpu: \S+, memory: \S+\}", doc), name
        assert re.search(r"limits: \{cpu: \S+, memory: \S+\}", doc), name
        assert "runAsNonRoot: true" in doc and "readOnlyRootFilesystem: true" in doc, name
    netpol = [doc for kind, _, doc in k8s_docs() if kind == "NetworkPolicy"]
    assert len(netpol) == 1 and "policyTypes: [Ingress, Egress]" in netpol[0]
    assert "ingress:" not in netpol[0] and "egress:" not in netpol[0], "deny-all has no rules"
    services = [doc for kind, _, doc in k8s_docs() if kind == "Service"]
    assert len(services) == 1 and "component: api" in services[0]
