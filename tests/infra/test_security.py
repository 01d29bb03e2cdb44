"""infra/: the locked doors. MLflow asks for a user (its basic-auth app) and no credential is committed (the
operator creates the Secrets, as the manifests' comments say how); the object store is reached through the
pods' workload identity, never static keys; Ray heads advertise no CPUs and their dashboard, job API and
client port are neither exposed outside the cluster nor reachable from other namespaces; the search service
has a Service of its own. Each check is a function returning problems, shown to catch what it looks for."""
import configparser
import copy
import importlib.util
import re
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MANIFESTS = sorted(INFRA.rglob("*.yaml"))
DOCS = [(path, d) for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d is not None]

WORKLOAD_IDENTITY = ("eks.amazonaws.com/role-arn", "iam.gke.io/gcp-service-account",
                     "azure.workload.identity/client-id")
STATIC_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS",
               "AZURE_STORAGE_KEY", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_CONNECTION_STRING"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|API_KEY|PRIVATE_KEY", re.I)
URI_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)
RAY_PORTS = {"dashboard": 8265, "client": 10001, "gcs-server": 6379}
EXPOSING_TYPES = {"LoadBalancer", "NodePort"}


def of_kind(kind, docs=None):
    return [d for _, d in (DOCS if docs is None else docs) if d["kind"] == kind]


def walk(node, where=()):
    """(path, node) for the node and every dict and list under it."""
    yield where, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from walk(child, where + (key,))


def name_of(path: Path, doc: dict, where=()) -> str:
    return f"{path.relative_to(REPO)}: {doc['kind']} {doc['metadata']['name']}" + "".join(f"/{w}" for w in where)


def ray_cluster_specs(doc: dict) -> list[tuple[tuple, dict]]:
    """The RayCluster specs a document holds (itself, or the cluster a RayJob, RayCronJob or RayService makes)."""
    spec = doc.get("spec", {})
    where = {"RayCluster": (), "RayJob": ("rayClusterSpec",), "RayCronJob": ("jobTemplate", "rayClusterSpec"),
             "RayService": ("rayClusterConfig",)}.get(doc["kind"])
    if where is None:
        return []
    for key in where:
        spec = spec[key]
    return [(("spec",) + where, spec)]


def ray_job_specs(doc: dict) -> list[tuple[tuple, dict]]:
    if doc["kind"] == "RayJob":
        return [(("spec",), doc["spec"])]
    if doc["kind"] == "RayCronJob":
        return [(("spec", "jobTemplate"), doc["spec"]["jobTemplate"])]
    return []


# --- no committed credentials ------------------------------------------------------------------------------

def documented_secrets() -> dict[str, set[str]]:
    """{Secret name: its keys} for every `kubectl create secret generic NAME --from-literal=KEY=...` command the
    manifests' comments give the operator (continued over `\\` line ends)."""
    secrets = {}
    for path in MANIFESTS:
        comments = "\n".join(line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line)
        for match in re.finditer(r"create secret generic ([a-z0-9.-]+)((?:[^\n]*\\\n)*[^\n]*)", comments):
            secrets.setdefault(match[1], set()).update(re.findall(r"--from-(?:literal|file)=([\w.-]+)=", match[2]))
    return secrets


def secret_problems(docs) -> list[str]:
    problems = []
    for path, doc in docs:
        if doc["kind"] == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"{name_of(path, doc)} commits values: the operator creates it")
        for where, node in walk(doc):
            if isinstance(node, dict) and isinstance(node.get("name"),
                                                     str) and ("value" in node or "valueFrom" in node):
                env = node["name"]
                if env in STATIC_KEYS:
                    problems.append(f"{name_of(path, doc, where)}: {env} is a static cloud key (use workload identity)")
                elif SECRET_NAME.search(env) and ("value" in node
                                                  or "secretKeyRef" not in (node.get("valueFrom") or {})):
                    problems.append(f"{name_of(path, doc, where)}: {env} is not read from a Secret "
                                    f"(valueFrom.secretKeyRef)")
            if isinstance(node, str):
                if URI_WITH_PASSWORD.search(node):
                    problems.append(f"{name_of(path, doc, where)}: a URI with a password")
                if where and where[-1] == "runtimeEnvYAML":
                    for env in (yaml.safe_load(node) or {}).get("env_vars", {}):
                        if env in STATIC_KEYS or SECRET_NAME.search(env):
                            problems.append(f"{name_of(path, doc, where)}: {env} in the job's runtime environment")
            if isinstance(node, list) and all(isinstance(word, str) for word in node):
                for flag, value in zip(node, node[1:]):
                    env = value.split("=", 1)[0]
                    if flag == "--env" and (env in STATIC_KEYS or SECRET_NAME.search(env)):
                        problems.append(f"{name_of(path, doc, where)}: {env} passed on a command line")
        if doc["kind"] == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if re.search(r"^\s*[\w-]*(password|secret)[\w-]*\s*[=:]\s*\S", text, flags=re.I | re.M):
                    problems.append(f"{name_of(path, doc)}: {key} holds a password")
    return problems


def test_no_credentials_are_committed():
    assert secret_problems(DOCS) == []
    assert of_kind("Secret") == [], "Secrets are the operator's to create (kubectl create secret), not the repository's"


def test_every_secret_the_pods_read_is_one_the_operator_is_told_to_create():
    documented = documented_secrets()
    assert {"mlflow-auth", "mlflow-client"} <= documented.keys()
    refs = [(path, doc, where, node["secretKeyRef"]) for path, doc in DOCS for where, node in walk(doc)
            if isinstance(node, dict) and "secretKeyRef" in node]
    assert refs
    for path, doc, where, ref in refs:
        if ref.get("optional"):
            continue
        assert ref["key"] in documented.get(ref["name"], ()), \
            f"{name_of(path, doc, where)} reads {ref['name']}/{ref['key']}, which no `kubectl create secret` makes"


def _mutated(kind: str, change) -> list:
    """DOCS with a deep copy of every document of `kind` passed through change(doc)."""
    docs = copy.deepcopy(DOCS)
    for _, doc in docs:
        if doc["kind"] == kind:
            change(doc)
    return docs


def test_secret_check_would_catch_committed_credentials():
    def literal_password(doc):
        env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
        env.append({"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}})
        pgpassword = next(e for e in env if e["name"] == "PGPASSWORD")
        del pgpassword["valueFrom"]
        pgpassword["value"] = "hunter2"
        doc["spec"]["template"]["spec"]["containers"][0]["args"].append(
            "--backend-store-uri=postgresql://mlflow:hunter2@db/mlflow")

    problems = secret_problems(_mutated("Deployment", literal_password))
    assert any("AWS_ACCESS_KEY_ID is a static cloud key" in p for p in problems)
    assert any("PGPASSWORD is not read from a Secret" in p for p in problems)
    assert any("a URI with a password" in p for p in problems)
    docs = copy.deepcopy(DOCS) + [(INFRA / "x.yaml", {"kind": "Secret", "metadata": {"name": "s"},
                                                      "stringData": {"password": "change-me"}})]
    assert any("Secret s commits values" in p for p in secret_problems(docs))
    ini = _mutated("ConfigMap", lambda d: d["data"].update(
        {k: v + "admin_password = password1234\n" for k, v in d["data"].items() if k.endswith(".ini")}))
    assert any("basic_auth.ini holds a password" in p for p in secret_problems(ini))
    runtime = _mutated("RayJob", lambda d: d["spec"].update(runtimeEnvYAML="env_vars: {MLFLOW_TRACKING_PASSWORD: x}"))
    assert any("MLFLOW_TRACKING_PASSWORD in the job's runtime environment" in p for p in secret_problems(runtime))


# --- MLflow asks for a user --------------------------------------------------------------------------------

def _mlflow_pod():
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    return deployment["spec"]["template"]["spec"]


def _read_auth_config(path: Path, env: dict, monkeypatch):
    """MLflow's own reader of the basic-auth settings, loaded from its file (the package `mlflow.server.auth`
    itself needs Flask-WTF, which only the server image has)."""
    origin = Path(importlib.util.find_spec("mlflow").origin).parent / "server" / "auth" / "config.py"
    spec = importlib.util.spec_from_file_location("_mlflow_auth_config", origin)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    return module.read_auth_config()


def test_mlflow_server_runs_the_basic_auth_app(tmp_path, monkeypatch):

    pod = _mlflow_pod()
    container = pod["containers"][0]
    args = container["args"]
    app = [a.split("=", 1)[1] for a in args if a.startswith("--app-name=")]
    app += [b for a, b in zip(args, args[1:]) if a == "--app-name"]
    assert app == ["basic-auth"], "the MLflow server runs without authentication"
    assert "basic-auth" in {e.name for e in metadata.entry_points(group="mlflow.app")}
    env = {e["name"]: e for e in container["env"]}
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "PGPASSWORD"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-auth", name

    # The settings file: a ConfigMap mounted where MLFLOW_AUTH_CONFIG_PATH points, read as MLflow reads it.
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == config_path.parent]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (config_map,) = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"]]
    text = config_map["data"][config_path.name]
    parsed = configparser.ConfigParser()
    parsed.read_string(text)
    assert "admin_password" not in parsed["mlflow"], "the admin's password belongs in the Secret"
    (tmp_path / config_path.name).write_text(text)
    config = _read_auth_config(tmp_path / config_path.name, {"MLFLOW_AUTH_ADMIN_PASSWORD": "from-the-secret"},
                               monkeypatch)
    assert config.admin_username and config.admin_password == "from-the-secret"
    assert config.default_permission in ("READ", "NO_PERMISSIONS"), "users may not edit what is not theirs"
    assert config.authorization_function.endswith(":authenticate_request_basic_auth")

    # Its user store: a database of the PostgreSQL server, made by the database's init script.
    url = urlparse(config.database_uri)
    assert url.scheme == "postgresql" and url.password is None
    (postgres,) = of_kind("StatefulSet")
    assert url.hostname == f"{postgres['spec']['serviceName']}.tempme.svc.cluster.local"
    db_pod = postgres["spec"]["template"]["spec"]
    (init,) = [m for m in db_pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/docker-entrypoint-initdb.d"]
    (init_volume,) = [v for v in db_pod["volumes"] if v["name"] == init["name"]]
    (scripts,) = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == init_volume["configMap"]["name"]]
    assert any(re.search(rf"CREATE DATABASE {url.path.lstrip('/')}\b", s) for s in scripts["data"].values())


def test_ray_pods_log_to_mlflow_as_a_user_from_a_secret():
    for path, doc in DOCS:
        for where, spec in ray_cluster_specs(doc):
            pods = ([spec["headGroupSpec"]["template"]["spec"]]
                    + [g["template"]["spec"] for g in spec["workerGroupSpecs"]])
            for pod in pods:
                env = {e["name"]: e for e in pod["containers"][0].get("env", [])}
                for name, key in (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password")):
                    assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-client", "key": key}, \
                        name_of(path, doc, where)


# --- workload identity -------------------------------------------------------------------------------------

def pod_specs(docs):
    """(path, doc, where, pod spec) for every pod template in the manifests: whatever holds `containers`."""
    return [(path, doc, where, node) for path, doc in docs for where, node in walk(doc)
            if isinstance(node, dict) and isinstance(node.get("containers"), list)]


def _is_ray_head(where) -> bool:
    return "headGroupSpec" in where


def identity_problems(docs) -> list[str]:
    accounts = {d["metadata"]["name"]: d for d in of_kind("ServiceAccount", docs)}
    autoscaling_heads = set()
    problems = []
    for path, doc in docs:
        for where, spec in ray_cluster_specs(doc):
            if spec.get("enableInTreeAutoscaling"):
                autoscaling_heads.add((id(doc), where + ("headGroupSpec", "template", "spec")))
        for where, job in ray_job_specs(doc):
            if "submitterPodTemplate" not in job:
                problems.append(f"{name_of(path, doc, where)}: no submitterPodTemplate, so KubeRay's submitter pod "
                                "runs as the namespace's default ServiceAccount")
    for path, doc, where, pod in pod_specs(docs):
        here = name_of(path, doc, where)
        account = accounts.get(pod.get("serviceAccountName"))
        if account is None:
            problems.append(f"{here}: serviceAccountName {pod.get('serviceAccountName')!r} is not a ServiceAccount "
                            f"here")
            continue
        annotations = account["metadata"].get("annotations") or {}
        identity = {k: v for k, v in annotations.items() if k in WORKLOAD_IDENTITY}
        token = pod.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True))
        if doc["metadata"]["name"] == "mlflow-postgres":
            if identity:
                problems.append(f"{here}: the database holds a cloud role it does not need")
        elif not identity:
            problems.append(f"{here}: ServiceAccount {account['metadata']['name']} has no workload identity annotation")
        elif any(k == "eks.amazonaws.com/role-arn" and not re.fullmatch(r"arn:aws:iam::[\w-]+:role/[\w+=,.@/-]+", v)
                 for k, v in identity.items()):
            problems.append(f"{here}: the role annotation is not an IAM role ARN")
        needs_api = (id(doc), where) in autoscaling_heads
        if needs_api and token is False:
            problems.append(f"{here}: the autoscaler sidecar needs the ServiceAccount's API token")
        if not needs_api and not _is_ray_head(where) and token is not False:
            problems.append(f"{here}: mounts a Kubernetes API token it does not use")
    return problems


def test_every_pod_runs_as_a_service_account_with_workload_identity():
    pods = pod_specs(DOCS)
    # Ray heads and workers of four clusters, two RayJob submitters, the CronJob, MLflow and its database.
    assert len(pods) >= 13
    assert identity_problems(DOCS) == []


def test_identity_check_would_catch_missing_accounts_and_roles():
    def no_account(doc):
        del doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["serviceAccountName"]

    assert any("workerGroupSpecs/0/template/spec: serviceAccountName None" in p
               for p in identity_problems(_mutated("RayCluster", no_account)))
    bare = _mutated("ServiceAccount", lambda d: d["metadata"].pop("annotations", None))
    assert any("has no workload identity annotation" in p for p in identity_problems(bare))
    keys = _mutated("ServiceAccount", lambda d: d["metadata"].get("annotations", {}).update(
        {k: "AKIAIOSFODNN7EXAMPLE" for k in d["metadata"].get("annotations", {}) if k.startswith("eks.")}))
    assert any("not an IAM role ARN" in p for p in identity_problems(keys))
    default_submitter = _mutated("RayJob", lambda d: d["spec"].pop("submitterPodTemplate"))
    assert any("no submitterPodTemplate" in p for p in identity_problems(default_submitter))
    tokens = _mutated("ServiceAccount", lambda d: d.pop("automountServiceAccountToken", None))
    assert any("mounts a Kubernetes API token" in p for p in identity_problems(tokens))


def test_submitter_pods_run_the_heads_image():
    for path, doc in DOCS:
        for where, job in ray_job_specs(doc):
            submitter = job["submitterPodTemplate"]["spec"]
            head = (job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0])
            assert submitter["containers"][0]["image"] == head["image"], name_of(path, doc, where)
            assert submitter.get("restartPolicy") in ("Never", "OnFailure"), "a Job's pods may not restart Always"


# --- Ray heads: no work, no exposure -----------------------------------------------------------------------

def head_problems(docs) -> list[str]:
    problems = []
    for path, doc in docs:
        for where, spec in ray_cluster_specs(doc):
            head = spec["headGroupSpec"]
            here = name_of(path, doc, where)
            if str(head.get("rayStartParams", {}).get("num-cpus")) != "0":
                problems.append(f"{here}: the head advertises CPUs (rayStartParams num-cpus must be \"0\")")
            head_service = (head.get("headService") or {}).get("spec", {})
            types = {head.get("serviceType", "ClusterIP"), head_service.get("type", "ClusterIP")}
            if types - {"ClusterIP"}:
                problems.append(f"{here}: the head Service is {sorted(types - {'ClusterIP'})}")
    return problems


def exposure_problems(docs) -> list[str]:
    """Services (and Ingress-like routes) that would expose a Ray head's dashboard, job API, client or GCS port
    outside the cluster."""
    problems = head_problems(docs)
    services = [(path, doc, ("spec",), doc) for path, doc in docs if doc["kind"] == "Service"]
    services += [(path, doc, ("spec", "serveService"), doc["spec"]["serveService"]) for path, doc in docs
                 if doc["kind"] == "RayService" and "serveService" in doc["spec"]]
    for path, doc, where, service in services:
        spec = service.get("spec", {})
        ports = set()
        for port in spec.get("ports", []):
            ports |= {port.get("port"), port.get("targetPort"), RAY_PORTS.get(port.get("name"))}
        ray_ports = ports & set(RAY_PORTS.values()) | ports & set(RAY_PORTS)
        if ray_ports and (spec.get("type") in EXPOSING_TYPES or spec.get("externalIPs")):
            problems.append(f"{name_of(path, doc, where)}: {spec.get('type')} exposes {sorted(map(str, ray_ports))}")
    for path, doc in docs:
        if doc["kind"] in ("Ingress", "HTTPRoute", "GRPCRoute", "TCPRoute", "Gateway"):
            text = yaml.safe_dump(doc)
            if re.search(r"head-svc|\b(8265|10001|6379)\b", text):
                problems.append(f"{name_of(path, doc)} routes to a Ray head")
    return problems


def test_ray_heads_run_no_work_and_are_not_exposed():
    heads = [spec for _, doc in DOCS for _, spec in ray_cluster_specs(doc)]
    assert len(heads) == 4 == sum(1 for _, doc in DOCS for where, _ in walk(doc) if where[-1:] == ("headGroupSpec",))
    assert exposure_problems(DOCS) == []


def test_head_check_would_catch_a_working_or_exposed_head():
    def working_head(doc):
        doc["spec"]["headGroupSpec"]["rayStartParams"].pop("num-cpus")
        doc["spec"]["headGroupSpec"]["serviceType"] = "LoadBalancer"

    problems = exposure_problems(_mutated("RayCluster", working_head))
    assert any("the head advertises CPUs" in p for p in problems)
    assert any("the head Service is ['LoadBalancer']" in p for p in problems)
    node_port = copy.deepcopy(DOCS) + [(INFRA / "x.yaml", {
        "kind": "Service", "metadata": {"name": "dash"},
        "spec": {"type": "NodePort", "ports": [{"name": "dashboard", "port": 80, "targetPort": "dashboard"}]}})]
    assert any("Service dash" in p and "NodePort" in p for p in exposure_problems(node_port))
    ingress = copy.deepcopy(DOCS) + [(INFRA / "x.yaml", {
        "kind": "Ingress", "metadata": {"name": "dash"},
        "spec": {"rules": [{"http": {"paths": [{"backend": {"service": {"name": "tempme-head-svc",
                                                                        "port": {"number": 8265}}}}]}}]}})]
    assert any("Ingress dash routes to a Ray head" in p for p in exposure_problems(ingress))


# --- NetworkPolicy: who reaches which port -----------------------------------------------------------------

def _selects(selector: dict, labels: dict) -> bool:
    ok = all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok &= {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
               "Exists": key in labels, "DoesNotExist": key not in labels}[op]
    return ok


def admits(docs, target: dict, port: int, source: dict | None, namespace: dict | None = None) -> bool:
    """Whether the NetworkPolicies let `source` (pod labels; None: an address outside the cluster) reach `port`
    of a pod of this namespace labelled `target`. `namespace`: the source namespace's labels, None for this one.
    A named port in a rule counts as any port, an ipBlock as any address: both err towards "admitted"."""
    policies = [p for p in of_kind("NetworkPolicy", docs) if _selects(p["spec"].get("podSelector") or {}, target)
                and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") in (port, None) or isinstance(p.get("port"), str) for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    return True
                if source is None:
                    continue
                if "namespaceSelector" in peer:
                    in_namespace = _selects(peer["namespaceSelector"],
                                            namespace or {"kubernetes.io/metadata.name": "tempme"})
                else:
                    in_namespace = namespace is None
                if in_namespace and _selects(peer.get("podSelector") or {}, source):
                    return True
    return False


HEAD = {"ray.io/node-type": "head", "ray.io/is-ray-node": "yes", "ray.io/cluster": "tempme"}
WORKER = {"ray.io/node-type": "worker", "ray.io/is-ray-node": "yes", "ray.io/cluster": "tempme"}
A_POD = {"app.kubernetes.io/part-of": "tempme", "batch.kubernetes.io/job-name": "tempme-train-submit"}
OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}
OPERATOR_NS = {"kubernetes.io/metadata.name": "kuberay-system"}
ELSEWHERE = {"kubernetes.io/metadata.name": "elsewhere"}
MLFLOW = {"app.kubernetes.io/name": "mlflow"}
POSTGRES = {"app.kubernetes.io/name": "mlflow-postgres"}

# (what, target labels, port, source labels or None for outside the cluster, source namespace, admitted)
DOORS = [
    ("head dashboard/job API from a pod of the namespace", HEAD, 8265, A_POD, None, True),
    ("head dashboard/job API from the KubeRay operator", HEAD, 8265, OPERATOR, OPERATOR_NS, True),
    ("head dashboard/job API from another namespace", HEAD, 8265, A_POD, ELSEWHERE, False),
    ("head dashboard/job API from outside the cluster", HEAD, 8265, None, None, False),
    ("head client port from a pod of the namespace", HEAD, 10001, A_POD, None, True),
    ("head client port from the KubeRay operator", HEAD, 10001, OPERATOR, OPERATOR_NS, False),
    ("head client port from another namespace", HEAD, 10001, A_POD, ELSEWHERE, False),
    ("head client port from outside the cluster", HEAD, 10001, None, None, False),
    ("head GCS from a Ray worker", HEAD, 6379, WORKER, None, True),
    ("head GCS from a pod of the namespace", HEAD, 6379, A_POD, None, False),
    ("head GCS from another namespace", HEAD, 6379, WORKER, ELSEWHERE, False),
    ("head GCS from outside the cluster", HEAD, 6379, None, None, False),
    ("head dashboard agent from a pod of the namespace", HEAD, 52365, A_POD, None, False),
    ("worker raylet ports from the head", WORKER, 10002, HEAD, None, True),
    ("worker raylet ports from a pod of the namespace", WORKER, 10002, A_POD, None, False),
    ("worker dashboard agent from another namespace", WORKER, 52365, A_POD, ELSEWHERE, False),
    ("worker Serve proxy from another namespace", WORKER, 8000, A_POD, ELSEWHERE, True),
    ("worker Serve proxy from outside the cluster", WORKER, 8000, None, None, False),
    ("database from the MLflow server", POSTGRES, 5432, MLFLOW, None, True),
    ("database from a Ray pod", POSTGRES, 5432, WORKER, None, False),
]


def network_problems(docs) -> list[str]:
    return [f"{what}: {'admitted' if not allowed else 'refused'}" for what, target, port, source, namespace, allowed
            in DOORS if admits(docs, target, port, source, namespace) != allowed]


def test_network_policies_keep_the_ray_ports_inside():
    assert network_problems(DOCS) == []


def test_network_check_would_catch_an_open_door():
    open_rule = _mutated("NetworkPolicy", lambda d: d["spec"]["ingress"].append({}))
    assert "head GCS from outside the cluster: admitted" in network_problems(open_rule)
    no_head_policy = [(p, d) for p,
                      d in DOCS if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "ray-head")]
    assert "head dashboard/job API from another namespace: admitted" in network_problems(no_head_policy)
    everywhere = _mutated("NetworkPolicy", lambda d: [r.setdefault("from", [{}])[0].setdefault("namespaceSelector", {})
                                                      for r in d["spec"]["ingress"] if "ports" in r])
    assert "head client port from another namespace: admitted" in network_problems(everywhere)


# --- the search service ------------------------------------------------------------------------------------

def _container_port(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)


def search_problems(docs) -> list[str]:
    services = of_kind("RayService", docs)
    if len(services) != 1:
        return [f"{len(services)} RayServices for the search service"]
    (rayservice,) = services
    spec = rayservice["spec"]
    name = rayservice["metadata"]["name"]
    problems = []
    serve_service = spec.get("serveService") or {}
    service_name = (serve_service.get("metadata") or {}).get("name")
    if not service_name or service_name in (f"{name}-head-svc", f"{name}-serve-svc"):
        problems.append(f"the search Service is not named apart from the Ray Services: {service_name!r}")
    service = serve_service.get("spec") or {}
    service_type = service.get("type", spec["rayClusterConfig"]["headGroupSpec"].get("serviceType", "ClusterIP"))
    if service_type != "ClusterIP":
        problems.append(f"the search Service is {service_type}")
    ports = service.get("ports", [])
    if not ports or any(not re.fullmatch(r"serve(-.*)?", p.get("name", "")) for p in ports):
        problems.append("the search Service's ports must be Serve's (named serve or serve-*), nothing else")
    if not any(p.get("targetPort", p.get("port")) == 8000 for p in ports):
        problems.append("the search Service does not target port 8000")
    config = yaml.safe_load(spec.get("serveConfigV2") or "{}")
    if (config.get("http_options") or {}).get("port", 8000) != 8000:
        problems.append("Serve does not listen on 8000")
    if not spec.get("excludeHeadPodFromServeSvc"):
        problems.append("the head (dashboard, no CPUs, no replica) is behind the search Service")
    head = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    if _container_port(head, "serve") != 8000:
        problems.append("the head container has no port named serve on 8000 (KubeRay builds the Service from it)")
    for group in spec["rayClusterConfig"]["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
        if probe.get("path") != "/healthz" or _container_port(container, probe.get("port")) != 8000:
            problems.append(f"worker group {group['groupName']}: no readiness probe on GET :8000/healthz")
    return problems


def test_search_service_has_its_own_service_and_readiness():
    assert search_problems(DOCS) == []


def test_search_check_would_catch_a_bad_service():
    def broken(doc):
        doc["spec"]["serveService"]["spec"]["type"] = "LoadBalancer"
        doc["spec"]["serveService"]["spec"]["ports"] = [{"name": "dashboard", "port": 8265}]
        doc["spec"]["excludeHeadPodFromServeSvc"] = False
        for group in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
            group["template"]["spec"]["containers"][0].pop("readinessProbe")

    problems = search_problems(_mutated("RayService", broken))
    assert "the search Service is LoadBalancer" in problems
    assert "the search Service does not target port 8000" in problems
    assert "the head (dashboard, no CPUs, no replica) is behind the search Service" in problems
    assert any("no readiness probe on GET :8000/healthz" in p for p in problems)
    assert any("exposes" in p for p in exposure_problems(_mutated("RayService", broken)))


def test_search_application_is_the_package_builder():
    """The import path resolves in this checkout, once the Serve application (`tempme serve`) is in it."""
    (rayservice,) = of_kind("RayService")
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    module, _, attribute = app["import_path"].partition(":")
    if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None:
        pytest.skip(f"{module} is not in this checkout yet")
    built = getattr(importlib.import_module(module), attribute)
    assert callable(built)
