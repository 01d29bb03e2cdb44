"""Find the videos of an embedding index that best match a text query."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import jobs.cli
from jobs.options import add_options, from_args
from pipelines.index.search import DEFAULT_K
from pipelines.options import TrackingOptions, option, precision_option
from tempme.errors import UserError


@dataclass
class SearchOptions(TrackingOptions):
    query: list[str] = option(help="text query (several queries: one search each)", positional=True, nargs="+")
    index: str = option(help="index directory or URI written by `tempme embed`")
    k: int = option(DEFAULT_K, "videos per query", names=("-k",))
    model: str | None = option(None, "model URI to encode queries with; must be the index's model version "
                                     "(default: the model the index records)")
    precision: str = precision_option("text-encoder precision")
    version: int | None = option(None, "index version to search (default the latest; see `tempme index info`)")
    json: bool = option(False, "print JSON instead of a table")

    def __post_init__(self):
        if self.k < 1:
            raise UserError(f"-k must be at least 1, got {self.k}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, SearchOptions)
    parser.epilog = 'Example: tempme search "a man is cooking" --index outputs/index -k 10 --json'


def run(args) -> int:
    from pipelines.embed.search import TextSearch

    args = from_args(SearchOptions, args)
    searcher = TextSearch(args.index, args.model, args.tracking_uri, args.precision, args.version)
    results = searcher.search(args.query, args.k)
    ref = searcher.index_model
    if args.json:
        print(json.dumps({"index": args.index, "index_version": searcher.index.version,
                          "model": {"name": ref.name, "version": ref.version, "uri": ref.uri},
                          "results": [{"query": q, "hits": [{"rank": r + 1, "video_id": h.video_id,
                                                             "score": round(h.score, 6), "caption": h.caption,
                                                             **({"start": h.start, "end": h.end}
                                                                if h.start is not None else {})}
                                                            for r, h in enumerate(hits)]}
                                      for q, hits in zip(args.query, results)]}, indent=1))
        return 0
    print(f"index {args.index} version {searcher.index.version}: {len(searcher.index)} videos "
          f"({searcher.index.kind} search), model {ref.name} v{ref.version}")
    for q, hits in zip(args.query, results):
        print(f"\n{q!r}")
        for r, h in enumerate(hits, 1):
            when = "" if h.start is None else f"  {clock(h.start)}-{clock(h.end)}"
            print(f"{r:4d}  {h.score:+.4f}  {h.video_id}{when}  {h.caption}")
    return 0


def clock(seconds: float) -> str:
    """Seconds as m:ss (h:mm:ss past an hour)."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
