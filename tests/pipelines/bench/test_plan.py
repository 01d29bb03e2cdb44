"""`tempme bench plan`: the drivers' planning holds a bounded number of bytes per video of the corpus.

Measured as the growth of peak resident memory from a corpus of 100,000 videos to one of 400,000 (fixed costs,
such as the libraries and Lance's caches, cancel out), each case in a fresh process as the benchmark runs it.
"""
import json

import pytest

from jobs.cli import main
from pipelines.bench.plan import build_corpus, complete_index, run_case

BOUND = 100   # bytes per video the head node may hold: 1 GB at 10M videos


@pytest.mark.slow
def test_planning_holds_at_most_a_hundred_bytes_per_video(tmp_path):
    sizes = (100_000, 400_000)
    peaks = {}
    for videos in sizes:
        folder = tmp_path / f"corpus-{videos}"
        build_corpus(folder, videos)
        nightly = run_case("embed-nightly", folder)
        assert nightly["todo"] == videos // 100               # the 1% the index lacks
        peaks["embed-nightly", videos] = nightly["peak_mb"]
        peaks["train-table", videos] = run_case("train-table", folder)["peak_mb"]
        planned = run_case("train-plan", folder)
        assert planned["todo"] == videos - 2 * (videos // 20)          # the train split's pairs, one caption each
        peaks["train-plan", videos] = planned["peak_mb"]
        grown = run_case("preprocess", folder)
        assert grown["todo"] == videos // 100                  # the 1% the manifest grew by
        peaks["preprocess", videos] = grown["peak_mb"]
        complete_index(folder, videos)
        nothing = run_case("embed-nothing", folder)
        peaks["embed-nothing", videos] = nothing["peak_mb"]
        assert nothing["todo"] == 0 and nothing["read_mb"] < 0.1 * videos / 1000   # a few columns, no vectors
    grown = sizes[1] - sizes[0]
    per_video = {case: (peaks[case, sizes[1]] - peaks[case, sizes[0]]) * 2**20 / grown
                 for case in ("preprocess", "embed-nightly", "embed-nothing", "train-plan", "train-table")}
    assert all(b <= BOUND for b in per_video.values()), per_video


def test_the_benchmark_prints_its_table_and_json(tmp_path, capsys):
    argv = ["bench", "plan", "--videos", "2000", "--cases", "embed-nightly,train-table", "--workdir", str(tmp_path)]
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["case"], r["videos"]) for r in rows] == [("embed-nightly", 2000), ("train-table", 2000)]
    assert all(r["peak_mb"] >= r["base_mb"] > 0 and r["seconds"] >= 0 for r in rows)
