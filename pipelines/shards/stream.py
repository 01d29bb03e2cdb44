"""The training and evaluation reader: a rank's part of a split, read in long sequential runs, shuffled within
windows, dealt out as whole batches to DataLoader workers.

An epoch's order is made of indices only, never bytes. The split's tars come in an order drawn from
(seed, epoch), or in name order without shuffling, their samples in file order, and each video's captions one
after another (mode "pairs") or each video once (mode "videos"). This stream is cut into `world_size`
contiguous parts whose sizes differ by at most one (rank r gets part r). Each part is cut into windows of
`window` videos whose items come in an order drawn from (seed, epoch, rank, window): a shuffle buffer whose
content is known in advance. The rank's items are cut into batches, the batches into `lanes` contiguous runs
(one per DataLoader worker), and the rank yields them lane by lane in turn: batch 0 of lane 0, batch 0 of
lane 1, ..., batch 1 of lane 0, ... Therefore:
- no item comes twice in an epoch, across ranks and DataLoader workers, and none is missed;
- the order is fixed by (seed, epoch, world_size, batch_size, lanes, window);
- `skip=n` starts after the rank's first n batches without reading them: each lane knows which of its
  batches those were, and starts reading at its first batch after them;
- a lane reads what it needs of a window with one ranged read per run of neighbouring samples in a tar (all of
  a tar when it needs all of it), and reads the next window while the current one is decoded.
Frames come out as uint8 (a quarter of float32's size), to be copied (pinned) and normalised on the device
(`shards.normalise`). A window's JPEG bytes are what a lane holds: `window` x about 200 KB at 224 px.
"""
from __future__ import annotations

import heapq
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipelines.shards.frames import decode_frames
from pipelines.shards.reader import SampleTable, neighbour_runs, parse_sample
from pipelines.storage.location import Location, retrying

MODES = ("pairs", "videos")
WINDOW = 1024            # videos shuffled together; a lane holds their JPEG bytes
READ_THREADS = 8         # ranged reads in flight per lane (object-store GETs are latency-bound)


class CorruptSample(ValueError):
    """A sample whose bytes cannot be parsed or decoded; the message names its tar and byte range."""


class ShardStream(IterableDataset):
    """One rank's batches of a split for one epoch. Batches are dicts: video [B,T,3,H,W] uint8, mask [B,T]
    bool, id [str], caption [str] (pairs) or captions [[str]] (videos), seq (the batch's place in the rank's
    order), corrupt (what was skipped, with `skip_corrupt`). Iterate it through `stream_batches`, which runs
    one DataLoader worker per lane and puts the batches in order. Call `set_epoch(e)` before each epoch.

    A sample that cannot be read raises, naming its tar and bytes; with `skip_corrupt` it is left out of its
    batch instead (which is then smaller, or holds only `seq` and `corrupt`), so that batch boundaries, and
    resuming at a step, stay as they were."""

    def __init__(self, table: SampleTable, *, batch_size: int, mode: str = "pairs", rank: int = 0,
                 world_size: int = 1, lanes: int = 1, augment: bool = False, shuffle: bool | None = None,
                 seed: int = 0, epoch: int = 0, skip: int = 0, window: int = WINDOW, skip_corrupt: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        for name, value in (("batch_size", batch_size), ("lanes", lanes), ("window", window)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.table, self.mode, self.batch_size = table, mode, batch_size
        self.rank, self.world_size, self.lanes, self.window = rank, world_size, lanes, window
        self.augment, self.seed, self.epoch, self.skip = augment, seed, epoch, skip
        self.shuffle = (mode == "pairs") if shuffle is None else shuffle
        self.skip_corrupt = skip_corrupt

    @property
    def total(self) -> int:
        """Items in one epoch across all ranks."""
        return self.table.pairs if self.mode == "pairs" else len(self.table)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _part(self) -> tuple[int, int]:
        """This rank's stream positions [lo, hi)."""
        n = self.total
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size

    def batches(self) -> int:
        """Batches this rank has in the epoch, before `skip`."""
        lo, hi = self._part()
        return -(-(hi - lo) // self.batch_size)

    def __len__(self) -> int:
        """Batches this rank yields in the epoch, after `skip`."""
        return max(self.batches() - self.skip, 0)

    def _rng(self, *more: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, *more])

    def _stream(self) -> tuple[np.ndarray, np.ndarray]:
        """(table rows in stream order, stream position of each row's first item plus the total at the end)."""
        tars = len(self.table.tars)
        rows = self.table.rows(self._rng().permutation(tars) if self.shuffle else np.arange(tars))
        counts = self.table.captions[rows] if self.mode == "pairs" else np.ones(len(rows), np.int64)
        return rows, np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    def order(self) -> np.ndarray:
        """This rank's items of the epoch in order, as stream positions."""
        windows = [items for _, items in self._windows(self._stream()[1], *self._part())]
        return np.concatenate(windows or [np.zeros(0, np.int64)])

    def _windows(self, first: np.ndarray, lo: int, hi: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(rank position of its first item, its items as stream positions, shuffled) for each window of the
        rank's part, from the window holding rank position `start` on."""
        edges = first[:: self.window]
        if edges[-1] != first[-1]:
            edges = np.append(edges, first[-1])
        position = 0
        for w in range(len(edges) - 1):
            a, b = max(edges[w], lo), min(edges[w + 1], hi)
            if a >= b:
                continue
            if position + (b - a) > start:
                items = np.arange(a, b)
                yield position, self._rng(self.rank, w).permutation(items) if self.shuffle else items
            position += b - a

    def _lanes(self) -> list[tuple[int, int]]:
        """Each lane's batches [first, stop) of the rank's batches."""
        n = self.batches()
        return [(lane * n // self.lanes, (lane + 1) * n // self.lanes) for lane in range(self.lanes)]

    def sequence_number(self, lane: int, i: int) -> int:
        """Where lane `lane`'s i-th batch comes in the rank's order (lanes take turns; a finished one is passed)."""
        sizes = [stop - first for first, stop in self._lanes()]
        return sum(min(size, i) for size in sizes) + sum(size > i for size in sizes[:lane])

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        mine = range(self.lanes) if worker is None else range(worker.id, self.lanes, worker.num_workers)
        with _Reader(self.table) as reader:
            yield from heapq.merge(*(self._lane(lane, reader) for lane in mine), key=lambda b: b["seq"])

    def _lane(self, lane: int, reader: _Reader) -> Iterator[dict]:
        first_batch, stop_batch = self._lanes()[lane]
        done = 0
        while first_batch + done < stop_batch and self.sequence_number(lane, done) < self.skip:
            done += 1
        if first_batch + done >= stop_batch:
            return
        rows, first = self._stream()
        lo, hi = self._part()
        begin, end = (first_batch + done) * self.batch_size, min(stop_batch * self.batch_size, hi - lo)

        def pieces():   # the lane's items of each window it touches, with the stream rows they need
            for position, items in self._windows(first, lo, hi, begin):
                if position >= end:
                    return
                items = items[max(begin - position, 0): end - position]
                at = _row_of(first, items)
                yield items, at, [int(r) for r in rows[np.unique(at)]]

        windows = pieces()
        current = next(windows, None)
        reads = reader.start(current[2]) if current else {}
        pending, corrupt, batch_no = [], [], done
        while current is not None:
            following = next(windows, None)
            next_reads = reader.start(following[2]) if following else {}   # read ahead while decoding
            items, at, _ = current
            for p, k in zip(items, at):
                row = int(rows[k])
                try:
                    pending.append(self._item(row, int(p - first[k]), reads[row].result()))
                except CorruptSample as err:
                    if not self.skip_corrupt:
                        raise
                    pending.append(None)
                    corrupt.append(str(err))
                if len(pending) == self.batch_size:
                    yield self._batch(pending, self.sequence_number(lane, batch_no), corrupt)
                    pending, corrupt, batch_no = [], [], batch_no + 1
            current, reads = following, next_reads
        if pending:
            yield self._batch(pending, self.sequence_number(lane, batch_no), corrupt)

    def _item(self, row: int, caption: int, blob: bytes) -> dict:
        tar = self.table.tars[self.table.shard[row]]
        try:
            meta, jpegs = parse_sample(blob)
            seed = _item_seed(self.seed, self.epoch, row, caption)
            video, mask = decode_frames(jpegs, int(meta["frames"]), self.augment, seed)
        except Exception as err:
            raise CorruptSample(f"{tar}: the sample of video {self.table.ids[row].as_py()!r} at bytes "
                             f"{self.table.start[row]}-{self.table.end[row]} cannot be read ({type(err).__name__}: "
                             f"{err}); re-run `tempme preprocess` to write the shard again") from None
        item = {"video": video, "mask": mask, "id": meta["id"]}
        if self.mode == "pairs":
            item["caption"] = meta["captions"][caption]
        else:
            item["captions"] = list(meta["captions"])
        return item

    @staticmethod
    def _batch(items: list[dict | None], seq: int, corrupt: list[str]) -> dict:
        items = [it for it in items if it is not None]
        batch = {k: torch.stack([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor)
                 else [it[k] for it in items] for k in items[0]} if items else {}
        batch["seq"] = seq
        if corrupt:
            batch["corrupt"] = corrupt
        return batch


def stream_batches(stream: ShardStream, pin_memory: bool = False, workers: int | None = None) -> Iterator[dict]:
    """The stream's batches in their order, decoded by `workers` DataLoader processes (default: one per lane;
    0: in this process), in pinned memory when asked (for copies to a GPU that do not block)."""
    workers = stream.lanes if workers is None else workers
    # Workers start from a clean server process, not a fork of this one: a fork would copy threads that CUDA,
    # Lance and the object-store client run here, which the child cannot use.
    # The server is started once per process and keeps the environment it started with: the object store's
    # settings as they are now go to each worker explicitly.
    loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                        multiprocessing_context="forkserver" if workers else None,
                        worker_init_fn=_StoreSettings() if workers else None)
    early, want = {}, stream.skip
    for batch in loader:   # the DataLoader takes turns among its workers much as the lanes do: little waits here
        early[batch["seq"]] = batch
        while want in early:
            yield early.pop(want)
            want += 1
    if early:
        raise RuntimeError(f"batches {sorted(early)[:5]} of rank {stream.rank} came without batch {want}")


class _StoreSettings:
    """A DataLoader worker's start: the parent's object-store settings (the AWS_* variables) as they are now."""

    def __init__(self):
        self.settings = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}

    def __call__(self, worker_id: int) -> None:
        os.environ.update(self.settings)


class _Reader:
    """Ranged reads of whole samples, several in flight, runs of neighbouring samples in one request."""

    def __init__(self, table: SampleTable):
        self.table = table
        self.pool = ThreadPoolExecutor(READ_THREADS)
        self.files: dict[int, object] = {}

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(cancel_futures=True)
        for f in self.files.values():
            f.close()

    def start(self, rows: list[int]) -> dict[int, Future]:
        """Start reading the samples of table `rows`; {row: future of its bytes}."""
        t = self.table
        futures: dict[int, Future] = {}
        for positions in neighbour_runs(t.shard[rows], t.start[rows], t.end[rows]):
            run = [rows[i] for i in positions]
            whole = self.pool.submit(self._read_run, run)
            for k, member in enumerate(run):
                futures[member] = _Part(whole, k)
        return futures

    def _read_run(self, run: list[int]) -> list[bytes]:
        t = self.table
        shard = int(t.shard[run[0]])
        if shard not in self.files:
            loc = Location.of(t.tars[shard])
            self.files[shard] = retrying(lambda: loc.fs.open_input_file(loc.path))
        start, stop = int(t.start[run[0]]), int(t.end[run[-1]])
        blob = _read_range(self.files[shard], start, stop)
        return [blob[t.start[r] - start: t.end[r] - start] for r in run]


class _Part:
    """The k-th sample's bytes of a run being read (the `result()` of a Future, like the run's own)."""

    def __init__(self, run: Future, k: int):
        self.run, self.k = run, k

    def result(self) -> bytes:
        return self.run.result()[self.k]


def _read_range(f, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of an open file: one request on an object store."""
    return retrying(lambda: f.read_at(stop - start, start))


def _row_of(first: np.ndarray, positions) -> np.ndarray:
    """Index into the stream's rows of the sample holding each stream position."""
    return np.searchsorted(first, positions, side="right") - 1


def _item_seed(seed: int, epoch: int, row: int, caption: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, row, caption + 1]).generate_state(1)[0])


def split_videos(folders: Sequence[str], split: str) -> Iterator[dict]:
    """Every video of a split once, in shard order, read in this process: dicts of video [T,3,H,W] uint8,
    mask [T], id, captions (for tools, notebooks and checks)."""
    stream = ShardStream(SampleTable.build(folders, split), batch_size=8, mode="videos")
    for batch in stream_batches(stream, workers=0):
        for i, video_id in enumerate(batch["id"]):
            yield {"video": batch["video"][i], "mask": batch["mask"][i], "id": video_id,
                   "captions": batch["captions"][i]}
