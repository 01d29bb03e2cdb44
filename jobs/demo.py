"""The whole pipeline end to end on a small generated corpus: preprocess, train, evaluate, register, embed,
search, on a local Ray cluster and a local MLflow store; then the search service on the demo's index until
Ctrl-C."""
from __future__ import annotations

import argparse
import sys

import jobs.cli
from jobs.options import add_options, from_args
from pipelines.demo.options import DemoOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, DemoOptions)
    parser.epilog = "Example: tempme demo --workdir demo_out --videos 96 --epochs 12"


def run(args) -> int:
    from pipelines.demo.end_to_end import run_demo
    from pipelines.serve import ServeOptions, ServiceOptions, run_service
    from pipelines.serve.ingress import haproxy_found

    options = from_args(DemoOptions, args)
    say = lambda line: print(line, flush=True)   # noqa: E731
    result = run_demo(options, say=say)
    if not options.no_serve:
        say(f"\nServing the demo index at http://127.0.0.1:{options.port}/ (a search page; the API is "
            f"/search?q=...&k=10)")
        run_service(ServeOptions(index=str(result.index), tracking_uri=result.tracking_uri),
                    ServiceOptions(port=options.port, ingress="haproxy" if haproxy_found() else "proxy"), say=say)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
