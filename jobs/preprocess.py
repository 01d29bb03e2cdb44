"""Decode a video corpus (MSR-VTT layout or a manifest) into WebDataset shards, one Ray task per shard."""
from __future__ import annotations

import argparse
import sys

import jobs.cli
from jobs.options import from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("input (one of)")
    source.add_argument("--msrvtt", metavar="DIR", help="folder with MSRVTT_data.json, MSRVTT_train.9k.csv and "
                        "MSRVTT_JSFUSION_test.csv (9k train and 1k-A test splits)")
    source.add_argument("--videos", metavar="DIR", help="a folder or bucket prefix walked for video files, each "
                        "a corpus video named by its path under DIR; with --msrvtt: the folder of {video_id}.mp4")
    source.add_argument("--manifest", metavar="FILE", help="CSV, JSONL or Parquet with a column video (path or "
                        "URI, relative to the manifest) and optionally id (default: the video's path), captions "
                        "(list, or in CSV a JSON list or one caption; needed in train, val and test), split "
                        "(train, val, test or corpus, the default: embedded and searched, never trained on)")
    parser.add_argument("--out", required=True, help="output folder or URI; re-running over it completes it")
    parser.add_argument("--frames", type=int, default=12, help="frames per video (default %(default)s)")
    parser.add_argument("--fps", type=float, default=1.0,
                        help="rate frames are taken at before spreading --frames of them uniformly (default "
                             "%(default)s)")
    parser.add_argument("--resolution", type=int, default=224,
                        help="frame side: short side scaled (bicubic) and centre-cropped by ffmpeg (default "
                             "%(default)s)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1-100 (default %(default)s)")
    parser.add_argument("--samples-per-shard", type=int, default=256, help="videos per shard (default %(default)s)")
    parser.add_argument("--decoders", type=int, help="most shards decoded at once, one CPU each (default: no cap; "
                        "every unfinished shard is asked for, so an autoscaling cluster grows to the work)")
    parser.add_argument("--retry-failed", action="store_true", help="decode again, into new shards, the videos "
                        "whose last failure was transient (read error, timeout, worker lost)")
    parser.add_argument("--splits", type=lambda s: tuple(x for x in s.split(",") if x),
                        help="only these splits, comma-separated (train, val, test, corpus; default all)")
    parser.add_argument("--segment-seconds", type=float, metavar="S", help="cut each corpus video into windows of "
                        "S seconds (the last one shorter), each a sample searched on its own, so a hit says where in "
                        "a long video the match is (default: a video is one sample)")
    parser.add_argument("--segment-overlap", type=float, default=0.0, metavar="O",
                        help="seconds each window shares with the one before (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one video may take (default %(default)s)")
    parser.add_argument("--progress-every", type=float, default=10.0,
                        help="seconds between progress lines (default %(default)s)")
    parser.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    parser.epilog = ("Examples:\n"
                     "  tempme preprocess --msrvtt data/msrvtt --videos data/msrvtt/videos --out outputs/shards\n"
                     "  tempme preprocess --manifest corpus/manifest.csv --out s3://bucket/shards --decoders 16\n"
                     "  tempme preprocess --videos s3://bucket/library --out s3://bucket/library-shards\n"
                     "Re-running over the same --out after the corpus changed decodes only the new videos into new\n"
                     "shards and records the videos that left (OUT/_removed.parquet); finished shards stay as they "
                     "are.\n"
                     "Exit status: 0 all inputs made it into shards, 1 some failed (see OUT/_failures.csv), "
                     "2 bad options.")


def run(args) -> int:
    from pipelines.preprocess import PreprocessOptions, run_preprocess

    options = from_args(PreprocessOptions, args)
    report = run_preprocess(options, log=lambda line: print(line, flush=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
