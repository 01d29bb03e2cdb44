"""`tempme nightly`: the nightly embedding follows the registry alias, re-embedding when it moves; its crontab
line spells out every embedding option."""
import argparse
import dataclasses
import shlex
import tempfile

import mlflow
import pytest

from jobs.cli import main
from jobs.nightly import DEFAULT_MODEL, add_arguments
from jobs.options import from_args, to_argv
from pipelines import tracking
from pipelines.embed import TextSearch
from pipelines.embed.options import EmbedOptions
from pipelines.index import IndexStore
from pipelines.model.registry import register_adapter

NAME = "tempme-synthetic"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A SQLite MLflow store under tmp_path, current for this test only (env vars, restored after)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", tracking.get_or_create_experiment("models", uri))
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(previous)


def test_nightly_run_follows_the_alias(ray_cluster, synthetic_shards, trained_adapter, untrained_adapter,
                                       registry, tmp_path, monkeypatch):

    out, scratch = tmp_path / "index", tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))      # where the registry's download goes
    nightly = ["nightly", "--shards", str(synthetic_shards), "--out", str(out), "--model", f"models:/{NAME}@champion",
               "--tracking-uri", registry, "--workers", "1", "--batch-size", "4"]
    assert register_adapter(trained_adapter, NAME, "champion") == "1"
    assert main(nightly) == 0
    first = IndexStore(out).open()
    assert (first.model.version, first.model.uri, len(first)) == ("1", f"models:/{NAME}/1", 16)
    assert not list(scratch.glob("tempme-adapter-*"))                        # the download is gone
    assert register_adapter(untrained_adapter, NAME, "champion") == "2"      # the alias moves to a new version
    assert main(nightly) == 0
    second = IndexStore(out).open()
    assert (second.model.version, second.model.uri, len(second)) == ("2", f"models:/{NAME}/2", 16)
    assert second.version > first.version and len(IndexStore(out).open(first.version)) == 16

    # Search loads the exact version the index records, from the registry, not whatever the alias says now.
    searcher = TextSearch(out, tracking_uri=registry)
    assert searcher.model_ref.version == "2" and len(searcher.search("a red bar moving up", k=3)[0]) == 3

    runs = mlflow.MlflowClient(registry).search_runs(
        [mlflow.MlflowClient(registry).get_experiment_by_name("tempme-embed").experiment_id])
    assert sorted(r.data.params["model_version"] for r in runs) == ["1", "2"]
    assert all(r.data.metrics["embedded"] == 16 for r in runs)


def test_print_cron_gives_a_self_contained_crontab_line(capsys):
    assert main(["nightly", "--print-cron", "--shards", "/corpus/shards", "--out", "/corpus/index",
                 "--tracking-uri", "http://mlflow:5000"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("#")][0]
    fields = line.split(maxsplit=5)
    assert fields[:5] == ["0", "2", "*", "*", "*"]
    words = shlex.split(fields[5])
    command = words[words.index("-m") - 1:]
    assert command[1:3] == ["-m", "jobs.nightly"]
    assert {"--shards": "/corpus/shards", "--out": "/corpus/index", "--model": DEFAULT_MODEL,
            "--tracking-uri": "http://mlflow:5000"}.items() <= dict(zip(command[3::2], command[4::2])).items()


def test_print_cron_keeps_every_embedding_option(capsys):
    assert main(["nightly", "--print-cron", "--shards", "s3://c/shards", "--out", "s3://c/index",
                 "--precision", "fp32", "--compile", "--part-rows", "500", "--progress-every", "30"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("#")][0]
    words = shlex.split(line.split(maxsplit=5)[5])
    command = words[words.index("-m") + 2: words.index(">>")]
    assert command[-1] == "--compile"
    assert {"--precision": "fp32", "--part-rows": "500", "--progress-every": "30.0"}.items() \
        <= dict(zip(command[:-1:2], command[1:-1:2])).items()


def test_nightly_without_shards_says_what_is_missing(capsys):
    assert main(["nightly", "--out", "/x"]) == 2
    assert "missing --shards" in capsys.readouterr().err


def test_the_old_name_schedule_still_runs_with_a_note(capsys):
    assert main(["schedule", "--out", "/x"]) == 2
    err = capsys.readouterr().err
    assert "tempme schedule is now `tempme nightly`" in err and "missing --shards" in err


def _cron_options(capsys, argv: list[str]) -> EmbedOptions:
    """The options that the printed crontab line's command parses into."""
    assert main(["nightly", "--print-cron", *argv]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("#")][0]
    words = shlex.split(line.split(maxsplit=5)[5])
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(EmbedOptions, parser.parse_args(words[words.index("-m") + 2: words.index(">>")]))


def test_the_cron_line_parses_back_into_every_option_given(capsys):
    """Each field set to a value that is not its default, so an option the line dropped would show."""
    given = EmbedOptions(shards="s3://c/shards", model="models:/m/7", out="s3://c/index", workers=5, min_workers=2,
                         batch_size=3, cpus_per_worker=4, device="gpu", precision="fp16", compile=True,
                         part_rows=77, progress_every=2.5, ray_address="ray://head:10001",
                         tracking_uri="http://mlflow:5000", experiment="nightly-x")
    assert all(getattr(given, f.name) != f.default for f in dataclasses.fields(EmbedOptions))
    assert _cron_options(capsys, to_argv(given)) == given


