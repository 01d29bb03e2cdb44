"""The lease of a shard folder: a second preprocess (or compaction) run stops before touching anything."""
import os

import pytest

from pipelines.preprocess import run_preprocess
from pipelines.preprocess.compact import CompactOptions, compact_shards
from pipelines.shards.format import FolderBusy, folder_lease
from pipelines.storage.location import Location
from tests.pipelines.preprocess.test_job_growth import clips, options, row, write_manifest  # noqa: F401


def test_a_second_run_on_a_folder_being_written_stops_naming_the_first(tmp_path, clips):  # noqa: F811
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.jsonl", [row("a", clips[0])])
    with folder_lease(Location.of(str(out)), "first-run", "preprocess run"):
        with pytest.raises(FolderBusy, match="preprocess run first-run .* is writing this shard folder"):
            run_preprocess(options(out, manifest), log=lambda line: None)
        with pytest.raises(FolderBusy, match="first-run"):
            compact_shards(CompactOptions(folder=str(out)), log=lambda line: None)
        assert os.listdir(out) == ["_lease.lance"]              # nothing else was touched


def test_the_folder_is_free_again_once_the_run_ends(tmp_path, clips, ray_cluster):  # noqa: F811
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.jsonl", [row("a", clips[0])])
    assert run_preprocess(options(out, manifest), log=lambda line: None).ok
    again = run_preprocess(options(out, manifest), log=lambda line: None)
    assert again.ok and again.processed == 0
