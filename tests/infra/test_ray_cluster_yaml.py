"""ray_cluster.yaml: valid for the cluster launcher of the installed Ray, with a head that takes no work and keeps its
dashboard local, autoscaling GPU workers, and instance profiles instead of keys."""
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text())


def test_validates_against_the_schema_ray_ships(config):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)


def test_schema_check_would_catch_a_broken_config(config):
    """The validation above has teeth: a node type without resources is rejected."""
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    broken = json.loads(json.dumps(config))
    del broken["available_node_types"]["gpu_worker"]["resources"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_cpu_head_and_autoscaling_gpu_workers(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu = [t for name, t in types.items() if name != config["head_node_type"] and t["resources"].get("GPU", 0) > 0]
    assert gpu, "no GPU worker type"
    assert all(t.get("min_workers", 0) < t["max_workers"] <= config["max_workers"] for t in gpu)


def test_setup_installs_ffmpeg_and_this_package(config):
    setup = " ".join(config["setup_commands"])
    assert "ffmpeg" in setup
    mounted = {remote: local for remote, local in config["file_mounts"].items()}
    assert "." in mounted.values(), "the checkout is not synced to the nodes"
    package_dir = next(remote for remote, local in mounted.items() if local == ".")
    assert "pip install" in setup and package_dir in setup
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}")


def _head_start(config) -> str:
    (start,) = [c for c in config["head_start_ray_commands"] if c.startswith("ray start --head")]
    return start


def head_problems(config) -> list[str]:
    """What would let work land on the head, or its dashboard and job API be reached from the network."""
    problems = []
    head = config["available_node_types"][config["head_node_type"]]
    start = _head_start(config).split()
    if head["resources"].get("CPU") != 0:
        problems.append(f"the head type advertises {head['resources'].get('CPU')} CPUs")
    if "--num-cpus=0" not in start:
        problems.append("`ray start --head` does not pass --num-cpus=0")
    hosts = [word.split("=", 1)[1] for word in start if word.startswith("--dashboard-host=")]
    if hosts != ["127.0.0.1"] and hosts != ["localhost"]:
        problems.append(f"the dashboard listens on {hosts or 'the default'}, not the head's loopback")
    published = re.compile(r"(^|\s)(-p|--publish)[\s=]\S*(8265|10001|6379)")
    if any(published.search(option) for option in config["docker"].get("run_options", [])):
        problems.append("the container publishes a Ray port")
    return problems


def test_head_runs_no_work_and_keeps_its_dashboard_local(config):
    assert head_problems(config) == []


def test_head_check_would_catch_a_working_open_head(config):
    broken = json.loads(json.dumps(config))
    broken["available_node_types"][config["head_node_type"]]["resources"] = {"CPU": 8}
    broken["head_start_ray_commands"] = [c.replace("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")
                                         .replace(" --num-cpus=0", "") for c in config["head_start_ray_commands"]]
    assert head_problems(broken) == ["the head type advertises 8 CPUs", "`ray start --head` does not pass --num-cpus=0",
                                     "the dashboard listens on ['0.0.0.0'], not the head's loopback"]


STATIC_KEYS = re.compile(r"AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|aws_access_key_id|aws_secret_access_key|"
                         r"aws configure set|AKIA[0-9A-Z]{16}")


def test_nodes_reach_the_object_store_by_instance_profile_not_keys(config):
    text = (REPO / "ray_cluster.yaml").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert not STATIC_KEYS.search(code), "static AWS keys in the cluster config"
    for name, node_type in config["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile", {})
        assert profile.get("Name") or profile.get("Arn"), f"{name} has no IAM instance profile"
