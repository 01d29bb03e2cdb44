"""Search service under load: queries per second and p50/p99 latency over HTTP by index size and replica count,
and the seconds from a published index version to its being served."""
from __future__ import annotations

import argparse
import json
import sys

import jobs.cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="100000,1000000", help="videos in the synthetic indexes (default %(default)s)")
    parser.add_argument("--replicas", default="1,2", help="replica counts (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=15.0, help="load per measurement, at most (default %(default)s)")
    parser.add_argument("--max-requests", type=int, default=5000, help="requests per measurement, at most")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default %(default)s)")
    parser.add_argument("--port", type=int, default=8123, help="port on 127.0.0.1 (default %(default)s)")
    parser.add_argument("--refresh-s", type=float, default=10.0,
                        help="the service's look for new versions (default %(default)s, as `tempme serve`)")
    parser.add_argument("--workdir", help="keep the indexes here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.epilog = "Example: tempme bench serve --sizes 100000 --replicas 1,2 --seconds 10 --json"


def run(args) -> int:
    from pipelines.serve.benchmark import measure

    result = measure([int(s) for s in args.sizes.split(",")], [int(r) for r in args.replicas.split(",")],
                     args.seconds, args.max_requests, args.clients, args.port, args.refresh_s, args.workdir,
                     log=(lambda line: None) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{'videos':>9} {'replicas':>8} {'clients':>7} {'QPS':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for r in result["load"]:
        print(f"{r['videos']:>9} {r['replicas']:>8} {r['clients']:>7} {r['qps']:>7} {r['p50_ms']:>7} "
              f"{r['p99_ms']:>7} {r['errors']:>6}")
    for f in result["follow"]:
        print(f"{f['videos']} videos: a published version served after {f['publish_to_served_s']} s "
              f"(the service looks every {f['refresh_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
