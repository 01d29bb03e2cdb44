"""`tempme bench reader`: shards on the object store measured beside a local copy of them, in one run."""
import json

import pytest

from jobs.cli import main
from tests.pipelines.shards.test_stream import upload


@pytest.mark.slow
def test_reader_benchmark_compares_the_object_store_with_a_local_copy(synthetic_shards, s3_server, capsys):
    uri = upload(synthetic_shards, f"{s3_server.prefix('bench')}/shards")
    assert main(["bench", "reader", "--shards", uri, "--epochs", "1", "--workers", "0,1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(r["source"], r["workers"]): r for r in report["rows"]}
    assert set(rows) == {("as given", 0), ("local copy", 0), ("as given", 1), ("local copy", 1)}
    assert rows[("as given", 1)]["shards"] == uri and rows[("local copy", 1)]["shards"] != uri
    assert all(r["videos_per_s"] > 0 for r in rows.values())
    assert set(report["given_over_local"]) == {"0_workers", "1_workers"}
