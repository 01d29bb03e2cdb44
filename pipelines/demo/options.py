"""The demo's options: one record that `run_demo` takes and `tempme demo` turns into flags (apart from the demo
itself, which loads every stage, so that --help does not)."""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.options import option
from pipelines.serve.options import DEFAULT_PORT

RANDOM_PRESET = "tempme-tiny-12f"
PRETRAINED_PRESET = "tempme-b32-12f"
DEFAULT_QUERIES = ("a red square moving left", "a blue bar moving up", "the green square moves down")


@dataclass
class DemoOptions:
    workdir: str = option("demo_out", "where everything goes")
    videos: int = option(96, "videos in the generated corpus (a quarter held out for test)")
    epochs: int = option(12, "training epochs")
    workers: int = option(2, "Ray Train workers and embedding actors")
    pretrained: str = option("auto", "CLIP weights: auto (a local checkpoint in $TEMPME_PRETRAINED or "
                                     "~/.cache/clip, else the open_clip hub if it answers, else random), none, "
                                     "openai, or a file")
    preset: str | None = option(None, f"model preset (default: {PRETRAINED_PRESET} with weights, {RANDOM_PRESET} "
                                      "with random ones)")
    port: int = option(DEFAULT_PORT, "port of the search service it ends with")
    no_serve: bool = option(False, "end after the search instead of serving the index")
    queries: tuple[str, ...] = DEFAULT_QUERIES      # searched at the end (no flag: fields without help have none)
    top_k: int = 3
