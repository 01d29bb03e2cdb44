"""The benchmarks' shared plumbing: comma-separated options, aligned tables, and `--json` on the command line."""
import argparse
import json

import pytest

from jobs.cli import main
from pipelines.bench import common
from tempme.errors import UserError


def test_a_bad_list_is_a_user_error_naming_the_option_and_the_text():
    assert common.numbers("1, 2,", "--workers") == [1, 2]
    assert common.numbers("0.5,2", "--lengths", kind=float) == [0.5, 2.0]
    assert common.numbers("320x240", "--size", sep="x", least=2, most=2) == [320, 240]
    assert common.numbers("", "--exact-sizes", least=0) == []
    with pytest.raises(UserError, match=r"--workers '1,two' is not a list of int numbers"):
        common.numbers("1,two", "--workers")
    with pytest.raises(UserError, match=r"--growth '200' has 1 numbers; it takes 2"):
        common.numbers("200", "--growth", least=2, most=2)
    with pytest.raises(UserError, match=r"--modes 'eager,fast': fast not among eager, folded"):
        common.names("eager,fast", "--modes", ("eager", "folded"))
    with pytest.raises(UserError, match=r"--presets ' ,': no name given"):
        common.names(" ,", "--presets")


def test_the_table_aligns_columns_by_their_widest_cell():
    assert common.table(["source", "workers", "videos/s"], [["as given", 1, "106.0"], ["local copy", 12, None]]) == (
        "source      workers  videos/s\n"
        "as given          1     106.0\n"
        "local copy       12         -")


def test_a_bad_list_on_the_command_line_is_one_line_and_exit_status_2(capsys):
    assert main(["bench", "search", "--sizes", "1000,lots"]) == 2
    err = capsys.readouterr().err
    assert err == "tempme bench search: --sizes '1000,lots' is not a list of int numbers separated by ','\n"


def test_json_is_one_document_with_the_machine(capsys):
    assert main(["bench", "search", "--sizes", "2000", "--exact-sizes", "2000", "--queries", "3", "--dim", "32",
                 "--kinds", "IVF_PQ", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    exact, *ann = result["rows"]
    assert exact["search"] == "exact" and "exact_p50_ms" in exact and {r["videos"] for r in result["rows"]} == {2000}
    assert {(r["kind"], r["refine"]) for r in ann} == {("IVF_PQ", 10), ("IVF_PQ", 30)} and all(
        0 <= r["recall"] <= 1 for r in ann)
    assert set(result["machine"]) == {"cpus", "load_average"}


def test_under_json_what_a_library_prints_while_measuring_goes_to_stderr(capsys):
    class Chatty:
        @staticmethod
        def measure(args):
            print("(raylet) a note from a library")
            return {"figure": 1}

    assert common.run(Chatty, argparse.Namespace(json=True)) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["figure"] == 1 and err == "(raylet) a note from a library\n"
