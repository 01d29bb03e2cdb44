"""Which video goes into which shard, decided up front and deterministically.

Videos of a split are sorted by id and cut into runs of `samples_per_shard`; each run is one shard, an
idempotent unit of work: a shard is written whole or not at all, and a re-run skips finished shards.
Whether a file is missing or broken does not move anything (that is found while decoding), so the same
inputs always give the same plan.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from pipelines.preprocess.layout import shard_name
from pipelines.preprocess.sources import VideoInput


@dataclass(frozen=True)
class ShardPlan:
    split: str
    name: str                         # e.g. train-000000.tar
    videos: tuple[VideoInput, ...]    # in the order they are written

    @property
    def ids(self) -> list[str]:
        return [v.id for v in self.videos]


def plan_shards(inputs: list[VideoInput], samples_per_shard: int) -> list[ShardPlan]:
    by_split: dict[str, list[VideoInput]] = defaultdict(list)
    for video in inputs:
        by_split[video.split].append(video)
    plans = []
    for split in sorted(by_split):
        videos = sorted(by_split[split], key=lambda v: v.id)
        for number, start in enumerate(range(0, len(videos), samples_per_shard)):
            plans.append(ShardPlan(split, shard_name(split, number), tuple(videos[start:start + samples_per_shard])))
    return plans
