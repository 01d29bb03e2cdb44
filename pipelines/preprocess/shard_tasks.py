"""The Ray work of preprocessing: one task per shard plan, on whichever worker Ray picks.

Why one task per shard (and not Ray Data rows): the shard is the unit of commit, so the process that
decodes a shard's videos is the one that writes it, straight to the output folder, and the driver gets back
a few numbers per shard, never frame bytes. Tasks are submitted as demand (`run_shards` keeps up to
`max_in_flight` pending, `--decoders` or MAX_IN_FLIGHT), so an autoscaling cluster sees the queue and grows;
each task asks for one CPU, the memory a decode needs (`task_memory`) and, where the nodes declare it, the local
disk it may use (`spool_resources`).

A task whose worker dies (a video that runs it out of memory or crashes it) is run again in isolation: the
same shard, but every video decoded in a task of its own, one after the other, so the one that kills its
worker becomes a failure row (stage "worker") and the shard is written with the others. A task whose node is
lost (pre-empted, scaled down) is simply run again: what it wrote is committed only by the driver, from the
task's result.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ray
import ray.exceptions

from pipelines.preprocess.plan import ShardPlan, ShardRef
from pipelines.preprocess.sample import DecodeSettings, make_sample
from pipelines.preprocess.sequential import MAX_BUFFERED, FrameKeeper
from pipelines.preprocess.writer import ShardWriter
from pipelines.storage.location import Location, sweep_spool

MAX_IN_FLIGHT = 1024     # pending shard tasks without --decoders: demand for up to this many CPUs
BASE_MEMORY = 384 << 20  # a Python worker with numpy and PIL, and ffmpeg decoding one high-resolution stream
SPOOL_RESOURCE = "spool_gb"   # a node's local disk for decode tasks, in GB, as its `ray start --resources` declares
NODE_ATTEMPTS = 3        # tries of a shard whose node is lost (pre-empted, scaled down) before it counts as failed
# The worker process died while it ran: maybe because of one of its videos, so the shard is isolated.
WORKER_DIED = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError)
# The machine went away: nothing to do with the videos, so the shard is simply run again.
NODE_LOST = (ray.exceptions.NodeDiedError, ray.exceptions.LocalRayletDiedError, ray.exceptions.ObjectLostError,
             ray.exceptions.OwnerDiedError)
LOST_MESSAGE = ("the process decoding this video died (out of memory or a crash) and took no other video "
                "with it; `--retry-failed` tries it again")


@dataclass(frozen=True)
class ShardDone:
    """What the driver learns of one shard: a few numbers, or why it could not be written."""

    name: str
    videos: int
    node: str = ""              # the Ray node that wrote it
    failed: int = 0             # its videos that gave no sample
    samples: int = 0            # its samples (a video cut into windows gives several)
    seeked: int = 0             # of them, found by seeking to the kept frames (the rest decoded sequentially)
    fragments: tuple[str, ...] = ()   # its rows of the sample table, for the driver to commit
    error: str = ""             # set when the shard was not written (the next run writes it)


def task_memory(settings: DecodeSettings) -> int:
    """Bytes one decode task asks Ray for: a worker, ffmpeg, and the frames `FrameKeeper` may hold."""
    frame = settings.resolution ** 2 * 3
    most_kept = MAX_BUFFERED + (2 * FrameKeeper.WINDOW + 1) * settings.frames
    return BASE_MEMORY + most_kept * frame


def spool_resources(spool_gb: int, nodes: list[dict]) -> dict[str, float]:
    """The local disk a decode task asks Ray for: `spool_gb` of the custom resource `spool_gb` where live nodes
    declare it, so that no node runs more tasks than its disk holds (nothing where none does: each task still
    keeps to its limit). ValueError for a size no node declares, which Ray could never schedule."""
    declared = [n["Resources"].get(SPOOL_RESOURCE, 0) for n in nodes if n.get("Alive")]
    if spool_gb < 1:
        raise ValueError("must be at least 1")
    if not any(declared):
        return {}
    if spool_gb > max(declared):
        raise ValueError(f"no node has that much: the most a node declares is {max(declared):g} "
                         f"({SPOOL_RESOURCE})")
    return {SPOOL_RESOURCE: spool_gb}


def sample_row(plan: ShardPlan, pos: int) -> dict:
    v = plan.videos[pos]
    return {"shard": plan.name, "pos": pos, "id": v.id, "uri": v.uri, "captions": list(v.captions),
            "split": v.split, "origin": v.origin}


def _write(out_uri: str, plan: ShardPlan, results) -> ShardDone:
    writer = ShardWriter(Location.of(out_uri), plan)
    try:
        for r in results:
            writer.add(r)
        counts = writer.commit()
    except BaseException:
        writer.discard()
        raise
    return ShardDone(plan.name, len(plan.videos), ray.get_runtime_context().get_node_id(), counts["failures"],
                     counts["samples"], counts["seeked"], tuple(counts["fragments"]))


@ray.remote
def make_shard(ref: ShardRef, settings: DecodeSettings, out_uri: str) -> ShardDone:
    """Read the shard's plan, decode its videos one after the other in this worker and write the shard."""
    sweep_spool()          # what killed workers of this node left: partial downloads and shards
    plan = ref.load()
    return _write(out_uri, plan, (make_sample(sample_row(plan, i), settings) for i in range(len(plan.videos))))


@ray.remote(max_retries=0)
def _decode_one(row: dict, settings: DecodeSettings) -> dict:
    return make_sample(row, settings)


@ray.remote
def make_shard_isolated(ref: ShardRef, settings: DecodeSettings, out_uri: str, memory: int) -> ShardDone:
    """The same shard with every video in a task of its own, one at a time (as many CPUs as the shard's own
    task took): a video that kills its worker is one failure."""
    plan = ref.load()

    def results():
        for i in range(len(plan.videos)):
            row = sample_row(plan, i)
            try:
                yield ray.get(_decode_one.options(memory=memory).remote(row, settings))
            except WORKER_DIED:
                yield {**row, "samples": [], "captions": 0, "method": "", "stage": "worker", "error": LOST_MESSAGE}
    return _write(out_uri, plan, results())


def run_shards(plans: list[ShardRef], settings: DecodeSettings, out: Location, max_in_flight: int | None,
               on_done: Callable[[ShardDone], None], resources: dict[str, float] | None = None) -> list[ShardDone]:
    """Make every shard of `plans`, at most `max_in_flight` tasks pending at once; `on_done` hears of each.
    Each task asks for `resources` beside its CPU and memory (its spool)."""
    memory = task_memory(settings)
    normal = make_shard.options(num_cpus=1, memory=memory, max_retries=0, resources=resources or {})
    # Ray frees the CPU while it waits for its videos' tasks; the spool it keeps holds the shard being written
    isolated = make_shard_isolated.options(num_cpus=1, max_retries=2, resources=resources or {})
    limit = max_in_flight or MAX_IN_FLIGHT
    queue = [(plan, "normal", 1) for plan in reversed(plans)]
    running: dict[ray.ObjectRef, tuple[ShardRef, str, int]] = {}
    done: list[ShardDone] = []

    def submit(plan: ShardRef, how: str, attempt: int) -> None:
        ref = (isolated.remote(plan, settings, out.uri, memory) if how == "isolated"
               else normal.remote(plan, settings, out.uri))
        running[ref] = (plan, how, attempt)

    while queue or running:
        while queue and len(running) < limit:
            submit(*queue.pop())
        ready, _ = ray.wait(list(running), num_returns=1)
        plan, how, attempt = running.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except WORKER_DIED:
            if how == "isolated":
                result = ShardDone(plan.name, plan.videos, error="its worker died even in isolation")
            else:
                submit(plan, "isolated", 1)
                continue
        except NODE_LOST as e:     # whatever it wrote is not committed: the shard is made again
            if attempt < NODE_ATTEMPTS:
                submit(plan, how, attempt + 1)
                continue
            else:
                result = ShardDone(plan.name, plan.videos, error=f"its node was lost {attempt} times: "
                                                                      f"{type(e).__name__}")
        except ray.exceptions.RayTaskError as e:
            result = ShardDone(plan.name, plan.videos, error=_last_line(e))
        done.append(result)
        on_done(result)
    return done


def _last_line(error: Exception) -> str:
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:300] if str(cause).strip() else ''}"
