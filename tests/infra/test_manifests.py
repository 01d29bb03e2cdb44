"""infra/: every manifest parses and holds what its kind needs; entrypoints name real jobs."""
import argparse
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import ray
import yaml
from ray.serve.schema import ServeDeploySchema

import jobs.nightly
import jobs.train
from jobs.cli import COMMANDS
from pipelines.serve.ingress import controller_options
from pipelines.train.config import TrainJobConfig, check_config, load_config

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
JOB_MODULES = {f"jobs.{module}" for module, _ in COMMANDS.values()}
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def load_all() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(INFRA.rglob("*.yaml")):
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


DOCS = load_all()


def of_kind(kind):
    return [d for _, d in DOCS if d["kind"] == kind]


def assert_cron(schedule: str):
    fields = schedule.split()
    assert len(fields) == 5 and all(CRON_FIELD.match(f) for f in fields), f"bad cron schedule {schedule!r}"


def assert_pod_spec(spec: dict):
    assert spec["containers"], "pod without containers"
    for c in spec["containers"]:
        assert c["name"] and c["image"], c
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", c["name"])


def assert_ray_cluster_spec(spec: dict, autoscaling: bool = False, gpu_workers: bool = True):
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    assert "rayStartParams" in head
    assert_pod_spec(head["template"]["spec"])
    ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0].get("ports", [])}
    assert 8265 in ports, "head does not expose the job API"
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and "rayStartParams" in group
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert_pod_spec(group["template"]["spec"])
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["cpu"]) >= 1, "worker group without CPUs"
        if gpu_workers:
            assert int(limits["nvidia.com/gpu"]) >= 1, "worker group without GPUs"
    if autoscaling:
        assert spec["enableInTreeAutoscaling"] is True
        assert any(g["maxReplicas"] > g["minReplicas"] for g in spec["workerGroupSpecs"])


def assert_entrypoint(entrypoint: str):
    words = shlex.split(entrypoint)
    assert words[:2] == ["python", "-m"] and words[2] in JOB_MODULES, entrypoint


def test_every_document_has_the_basics():
    assert len(DOCS) >= 8
    for path, d in DOCS:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"]["name"], path
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "tempme", (path, d["kind"])


def test_ray_cluster_autoscales_gpu_workers():
    (cluster,) = of_kind("RayCluster")
    assert_ray_cluster_spec(cluster["spec"], autoscaling=True)


def training_config(entrypoint: str) -> TrainJobConfig:
    """The config a `python -m jobs.train ...` entrypoint trains with: its arguments parsed as the job parses
    them, the config file (in the image at /home/ray/tempme) loaded from this checkout with the overrides."""
    words = shlex.split(entrypoint)
    assert words[:3] == ["python", "-m", "jobs.train"], entrypoint
    parser = argparse.ArgumentParser()
    jobs.train.add_arguments(parser)
    args = parser.parse_args(words[3:])
    config = REPO / args.config.removeprefix("/home/ray/tempme/")
    assert config.is_file(), args.config
    cfg = load_config(config, args.set)
    check_config(cfg)
    return cfg


def _gpu_group_capacity(cluster_spec: dict) -> tuple[int, int]:
    """(GPUs the job can count on, fewest CPUs of a GPU worker pod) of a RayCluster spec."""
    gpus, cpus = 0, []
    for group in cluster_spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        replicas = group["maxReplicas"] if cluster_spec.get("enableInTreeAutoscaling") else group["replicas"]
        if int(limits.get("nvidia.com/gpu", 0)):
            gpus += replicas * int(limits["nvidia.com/gpu"])
            cpus.append(int(limits["cpu"]))
    return gpus, min(cpus, default=0)


def _is_shared_storage(location: str) -> bool:
    """An object-store (or other remote) URI: the same place from every node of a multi-node cluster."""
    return re.match(r"^[a-z][a-z0-9+.-]*://", location) is not None and not location.startswith("file://")


def training_job_problems(spec: dict) -> list[str]:
    """What would keep a training RayJob from running on its own cluster, one line each."""
    cfg = training_config(spec["entrypoint"])
    gpus, pod_cpus = _gpu_group_capacity(spec["rayClusterSpec"])
    problems = []
    if cfg.scaling.use_gpu and gpus < cfg.scaling.num_workers:
        problems.append(f"scaling.num_workers={cfg.scaling.num_workers} GPU workers, but the cluster has {gpus} GPUs")
    if cfg.scaling.use_gpu and pod_cpus < cfg.scaling.cpus_per_worker:
        problems.append(f"scaling.cpus_per_worker={cfg.scaling.cpus_per_worker}, but GPU pods have {pod_cpus} CPUs")
    places = [("data.shards", folder) for folder in cfg.data.shards] + [("run.storage_path", cfg.run.storage_path)]
    for key, location in places:
        if not _is_shared_storage(location):
            problems.append(f"{key}={location!r} is local to one node")
    env_uri = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}").get("env_vars", {}).get("MLFLOW_TRACKING_URI")
    uri = cfg.tracking.uri or env_uri
    if not (uri or "").startswith(("http://", "https://")) or (env_uri and uri != env_uri):
        problems.append(f"tracking URI {uri!r} is not the in-cluster MLflow server {env_uri!r}")
    return problems


def test_training_rayjob():
    (job,) = of_kind("RayJob")
    spec = job["spec"]
    assert_entrypoint(spec["entrypoint"])
    assert shlex.split(spec["entrypoint"])[2] == "jobs.train"
    assert training_job_problems(spec) == []
    assert spec["shutdownAfterJobFinishes"] is True
    assert "MLFLOW_TRACKING_URI" in yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert_ray_cluster_spec(spec["rayClusterSpec"])


def test_training_job_check_would_catch_the_shipped_config_unchanged():
    """The checks above have teeth: the paper's config as it ships asks for 4 GPUs and local paths."""
    (job,) = of_kind("RayJob")
    spec = dict(job["spec"], entrypoint="python -m jobs.train --config pipelines/train/configs/msrvtt-tempme-b32.yaml",
                runtimeEnvYAML="")
    problems = training_job_problems(spec)
    assert len(problems) == 4, problems
    assert "scaling.num_workers=4 GPU workers, but the cluster has 2 GPUs" in problems
    assert any(p.startswith("data.shards='data/msrvtt/shards'") for p in problems)
    assert any(p.startswith("run.storage_path='outputs/ray'") for p in problems)
    assert any(p.startswith("tracking URI None") for p in problems)


def _model_option(words: list[str]) -> str:
    return words[words.index("--model") + 1]


def test_nightly_embedding_follows_the_champion_of_what_training_registers():
    """Training registers <registered_model>@candidate; `tempme promote` moves @champion, which every nightly
    runner (both manifests and `tempme nightly`'s default) embeds with."""
    (job,) = of_kind("RayJob")
    cfg = training_config(job["spec"]["entrypoint"])
    champion = f"models:/{cfg.tracking.registered_model}@champion"
    assert cfg.tracking.alias != "champion", "training must not bypass promotion"
    (raycron,) = of_kind("RayCronJob")
    (cron,) = of_kind("CronJob")
    nightly = {"RayCronJob": _model_option(shlex.split(raycron["spec"]["jobTemplate"]["entrypoint"])),
               "CronJob": _model_option(
                   cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]),
               "tempme nightly": jobs.nightly.DEFAULT_MODEL}
    assert nightly == dict.fromkeys(nightly, champion)


def test_nightly_raycronjob():
    (cron,) = of_kind("RayCronJob")
    assert_cron(cron["spec"]["schedule"])
    template = cron["spec"]["jobTemplate"]        # a RayJob spec, as KubeRay's RayCronJobSpec defines it
    assert_entrypoint(template["entrypoint"])
    assert "models:/" in template["entrypoint"]
    assert_ray_cluster_spec(template["rayClusterSpec"])


def test_nightly_kubernetes_cronjob_submits_to_the_cluster():
    (cron,) = of_kind("CronJob")
    assert cron["apiVersion"] == "batch/v1"
    assert_cron(cron["spec"]["schedule"])
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert_pod_spec(pod)
    command = pod["containers"][0]["command"]
    assert command[:2] == ["tempme", "submit"] and command[2] in COMMANDS and "--follow" in command
    address = command[command.index("--address") + 1]
    (cluster,) = of_kind("RayCluster")
    assert f"{cluster['metadata']['name']}-head-svc" in address and address.endswith(":8265")


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_mlflow_server_has_a_database_and_an_object_store():
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    mlflow = deployments["mlflow"]
    pod = mlflow["spec"]["template"]["spec"]
    assert_pod_spec(pod)
    assert mlflow["spec"]["selector"]["matchLabels"].items() <= mlflow["spec"]["template"]["metadata"]["labels"].items()
    args = pod["containers"][0]["args"]
    assert " ".join(args[:2]) == "mlflow server"
    (store,) = [a.split("=", 1)[1] for a in args if a.startswith("--backend-store-uri=")]
    (artifacts,) = [a.split("=", 1)[1] for a in args if a.startswith("--artifacts-destination=")]
    assert re.match(r"(s3|gs|wasbs)://", artifacts) and "--serve-artifacts" in args
    # The database is the StatefulSet's, reached through its Service; its password comes from the Secret both
    # containers read (PGPASSWORD for the server's libpq, POSTGRES_PASSWORD for the database's first start).
    (postgres,) = of_kind("StatefulSet")
    assert postgres["spec"]["volumeClaimTemplates"]
    url = urlparse(store)
    assert url.scheme == "postgresql" and url.password is None and url.username
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    assert url.hostname == f"{postgres['spec']['serviceName']}.tempme.svc.cluster.local" and url.port == 5432
    assert services[postgres["spec"]["serviceName"]]["spec"]["selector"].items() \
        <= postgres["spec"]["template"]["metadata"]["labels"].items()
    db_env = _env(postgres["spec"]["template"]["spec"]["containers"][0])
    assert url.username == db_env["POSTGRES_USER"]["value"] and url.path == "/" + db_env["POSTGRES_DB"]["value"]
    server_env = _env(pod["containers"][0])
    secret_of = lambda env, name: env[name]["valueFrom"]["secretKeyRef"]   # noqa: E731
    assert secret_of(server_env, "PGPASSWORD") == secret_of(db_env, "POSTGRES_PASSWORD")
    assert services["mlflow"]["spec"]["selector"].items() <= mlflow["spec"]["template"]["metadata"]["labels"].items()


def test_in_cluster_services_resolve():
    """Every *.svc.cluster.local URL the manifests use names a Service (or a KubeRay head service)."""
    names = {s["metadata"]["name"] for s in of_kind("Service")}
    names |= {f"{c['metadata']['name']}-head-svc" for c in of_kind("RayCluster") + of_kind("RayService")}
    names |= {s["spec"]["serveService"]["metadata"]["name"] for s in of_kind("RayService")
              if "serveService" in s["spec"]}
    text = "\n".join(p.read_text() for p in INFRA.rglob("*.yaml"))
    used = set(re.findall(r"([a-z0-9-]+)\.tempme\.svc\.cluster\.local", text))
    assert used and used <= names, used - names


def test_search_rayservice():
    (service,) = of_kind("RayService")
    assert_ray_cluster_spec(service["spec"]["rayClusterConfig"], gpu_workers=False)
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = config["applications"]
    assert app["import_path"] == "pipelines.serve.app:build" and app["route_prefix"] == "/"
    assert _is_shared_storage(app["args"]["index"]), app["args"]["index"]
    assert isinstance(app["args"]["replicas"], int) and app["args"]["replicas"] >= 1
    ServeDeploySchema.model_validate(config)        # what Serve's REST API (KubeRay's way in) accepts
    # HAProxy ingress, as `tempme serve` starts it, its replicas reachable from other pods
    assert config["controller_options"] == controller_options("haproxy")
    assert config["http_options"]["host"] == "0.0.0.0"


def test_dockerfile_builds_the_package_on_the_pinned_ray_image():
    text = (INFRA / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert froms[0] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert "ffmpeg" in text and "-c constraints.txt" in text
    for folder in ("tempme", "pipelines", "jobs"):
        assert re.search(rf"^COPY .*\b{folder}\b", text, flags=re.M), folder
    assert re.search(r"AS mlflow", text) and "psycopg2" in text and "boto3" in text
    assert '"mlflow[auth]"' in text, "the MLflow image lacks the basic-auth app's requirements (Flask-WTF)"
