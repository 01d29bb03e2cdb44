"""Storage settings reach the workers: nodes started without the object store's endpoint and region (as a
cluster's nodes often are) read the driver's store, because `connect` hands them those settings; a node
without its own credentials is found by the check from a worker, before any work, with a message naming it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.storage.location import Location

ROOT = Path(__file__).resolve().parents[3]
NOT_ON_NODES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

# Starts a one-node cluster from an environment without the store's settings (the node's), then joins it as a
# driver with the settings, checks the store from a worker and reads an object there; prints what happened.
DRIVER = r"""
import json, os, sys
import ray
from ray.cluster_utils import Cluster
from pipelines.cluster.connect import check_stores_from_a_worker, connect
from pipelines.storage.location import Location, StoreError

driver_env, uri = json.loads(sys.argv[1])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
try:
    os.environ.update(driver_env)                    # the driver's settings, after the node started without
    connect(cluster.address)
    result = {}
    try:
        check_stores_from_a_worker([("--out", uri)])
        read = ray.remote(num_cpus=1)(lambda u: Location.of(u).child("hello.txt").read_text())
        result["read"] = ray.get(read.remote(uri), timeout=120)
    except StoreError as err:
        result["error"] = str(err)
    print("RESULT " + json.dumps(result), flush=True)
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def _run(uri: str, node_lacks: tuple[str, ...]) -> dict:
    driver_env = {k: v for k, v in os.environ.items() if k in NOT_ON_NODES + CREDENTIALS}
    node_env = {k: v for k, v in os.environ.items() if k not in node_lacks and k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([driver_env, uri])], cwd=ROOT,
                          env={**node_env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and found, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(found[-1].removeprefix("RESULT "))


@pytest.mark.slow
def test_nodes_without_the_store_settings_reach_the_store_of_the_driver(s3_server):
    uri = s3_server.prefix("connect")
    Location.of(uri).child("hello.txt").write_atomic(b"from the driver")
    assert _run(uri, node_lacks=NOT_ON_NODES) == {"read": "from the driver"}


@pytest.mark.slow
def test_a_node_without_credentials_is_named_before_any_work(s3_server):
    uri = s3_server.prefix("connect")
    result = _run(uri, node_lacks=NOT_ON_NODES + CREDENTIALS)
    assert "error" in result and "The driver reaches it but the worker on node" in result["error"], result
    assert "credentials must be the nodes' own" in result["error"]
