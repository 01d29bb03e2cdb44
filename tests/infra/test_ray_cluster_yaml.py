"""ray_cluster.yaml: valid for the cluster launcher of the installed Ray, with a CPU head and GPU workers."""
import json
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
    assert f"pip install" in setup and package_dir in setup
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}")
