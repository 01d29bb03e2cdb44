"""The decode benchmark at its smallest: both ways on a generated video, the frames they picked compared."""
import argparse

import pytest

from pipelines.bench import decode


def args(**given):
    parser = argparse.ArgumentParser()
    decode.add_arguments(parser)
    return argparse.Namespace(**{**vars(parser.parse_args([])), "workdir": None, "json": True, **given})


def test_both_ways_give_the_same_frames_and_the_sampler_reads_less(tmp_path):
    result = decode.measure(args(cases="360p:30:1,360p:4:250f", repeat=1, workdir=str(tmp_path)))
    long, short = result["cases"]
    assert long["same_frames"] and short["same_frames"]
    assert long["method"] == "seek" and long["read_bytes"] < long["bytes"]
    assert short["method"] == "sequential" and short["read_bytes"] == short["bytes"]   # decoded whole
    assert "same frames" in decode.render({**result, "machine": {}})


def test_a_case_that_cannot_be_read_names_the_option():
    with pytest.raises(Exception, match="--cases '720p:ten:1'"):
        decode.measure(args(cases="720p:ten:1"))
