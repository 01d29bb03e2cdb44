"""The whole pipeline end to end on a small generated corpus: preprocess, train, evaluate, register, embed,
search, on a local Ray cluster and a local MLflow store; then the search service on the demo's index until
Ctrl-C."""
from __future__ import annotations

import argparse
import sys

import jobs.cli
from pipelines.demo.end_to_end import DemoOptions, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="demo_out", help="where everything goes (default %(default)s)")
    parser.add_argument("--videos", type=int, default=96, help="videos in the generated corpus (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers and embedding actors")
    parser.add_argument("--pretrained", default="auto",
                        help="CLIP weights: auto (a local checkpoint in $TEMPME_PRETRAINED or ~/.cache/clip, "
                             "else the open_clip hub if it answers, else random), none, openai, or a file")
    parser.add_argument("--preset", help="model preset (default: tempme-b32-12f with weights, tempme-tiny-12f "
                                         "with random ones)")
    parser.add_argument("--port", type=int, default=8000, help="port of the search service it ends with "
                                                               "(default %(default)s)")
    parser.add_argument("--no-serve", action="store_true", help="end after the search instead of serving the index")
    parser.epilog = "Example: tempme demo --workdir demo_out --videos 96 --epochs 12"


def run(args) -> int:

    options = DemoOptions(workdir=args.workdir, videos=args.videos, epochs=args.epochs, workers=args.workers,
                          pretrained=args.pretrained, preset=args.preset)
    say = lambda line: print(line, flush=True)   # noqa: E731
    result = run_demo(options, say=say)
    if not args.no_serve:
        from pipelines.serve import ServeOptions, run_service

        say(f"\nServing the demo index at http://127.0.0.1:{args.port}/ (a search page; the API is "
            f"/search?q=...&k=10)")
        run_service(ServeOptions(index=str(result.index), tracking_uri=result.tracking_uri), port=args.port, say=say)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
