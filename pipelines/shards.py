"""Read the WebDataset shards that `tempme preprocess` writes: the contract between preprocessing and the
stages after it (training, evaluation, embedding).

Shard folder (local path or object-store URI)
---------------------------------------------
    train-000000.tar, train-000001.tar, ..., test-000000.tar   videos of a split sorted by id, in runs
    _summary.json          {"splits": {split: {samples, shards, bytes, frames, captions, failures}}, ...}
    _failures.csv          input, id, split, stage, error: every input that gave no sample, and why
    _index/<shard>.json    per shard: byte range of every member of every sample; present = shard finished
    _removed.parquet       id, split of videos that left the corpus: skipped by this reader
    _plans/                the preprocessing job's ledger (which video went into which shard)
An index file is JSON: {"shard", "split", "bytes", "frames", "planned": [ids assigned to the shard],
"samples": [{"key", "id", "captions": count, "valid", "span": [start, end), "members": {suffix: [offset,
size]}}], "failures": [{"input", "id", "split", "stage", "error"}]}; offsets are bytes into the tar.
Only finished shards have an index; this reader sees nothing else. Names starting with "_" or "." are
skipped by `ray.data.read_webdataset(folder)`, and every tar is a plain ustar archive (`tar tf` lists it).

Sample format (one sample per video)
------------------------------------
The key is the video id when it is made of letters, digits, "_" and "-" only; otherwise every other
character (dots included) becomes "_" and a 10-hex-digit hash of the id is appended. Members:
    <key>.json      UTF-8 JSON metadata:
                      id          the video id (str, as given by the inputs)
                      split       "train" | "val" | "test"
                      source      the input video path or URI
                      captions    [str, ...], at least one, none empty
                      duration    seconds (the container's, else what was decoded)
                      fps         the source's frame rate (null when unknown)
                      width, height, codec   of the source video stream
                      sample_fps  the rate frames were taken at before sampling (1.0 by default)
                      frames      T, the number of frames a model gets (12 by default)
                      valid       how many frames are real (= T, or fewer for short videos)
                      timestamps  seconds from the start, one per real frame
                      resolution  frame side in pixels (224 by default)
    <key>.000.jpg ... <key>.{frames-1:03d}.jpg
                    T frames, RGB JPEG, resolution x resolution (short side scaled with bicubic
                    interpolation and centre-cropped, inside ffmpeg). The first `valid` are the sampled
                    frames in time order; the rest are black padding, stored so that every sample has the
                    same members (tools that build a table per member, like ray.data.read_webdataset,
                    need that).
Frames are taken at `sample_fps`, then T of them spread uniformly (as in the paper's code); a video with
fewer keeps them all. Its mask is True for the first `valid` frames and False for the padding, which this
reader fills with zeros after normalisation (as the paper's code does), not with the stored black frames.

Reader
------
    from torch.utils.data import DataLoader
    from pipelines.shards import ShardDataset, collate

    ds = ShardDataset("shards/", "train", mode="pairs", rank=rank, world_size=world_size,
                      augment=True, seed=0, epoch=epoch)
    loader = DataLoader(ds, batch_size=64, num_workers=2, collate_fn=collate)
    for batch in loader:   # video [B,T,3,H,W] float (CLIP mean/std), mask [B,T] bool, caption [str], id [str]
        ...

mode="pairs": an epoch is every (video, caption) pair of the split once, shuffled by (seed, epoch).
augment=True: torchvision RandAugment, one draw per item (seeded by seed, epoch, item) applied to all of
the video's frames alike.
mode="videos": every video once, in shard order unless shuffle=True; items carry all its captions.
Items are cut into `world_size` contiguous parts of the epoch's order (rank r gets part r, sizes differ by at
most one), and each rank's part is dealt out across its DataLoader workers (every num_workers-th item), so no
item is seen twice in an epoch, none is missed, and the DataLoader yields a rank's part in order whatever
its worker count. `skip=n` starts a rank's part after its first n items without reading them (a resume). Samples are read by byte range (the index), so a worker reads only its own items.
For equal step counts on every rank, stop after `ds.total // world_size // batch_size` batches.

Lower level, for stages that schedule samples themselves (e.g. embedding with Ray Data): `shard_index`
lists a split's samples with their byte ranges, `SampleReader().read(sample)` returns (metadata, JPEG
frames) with one ranged read, `decode_frames` makes uint8 (video, mask) from the frames and `normalise`
turns them into the model's input (`frames_to_tensor` does both).
`shard_paths` gives the tar files for `webdataset.WebDataset` or `ray.data.read_webdataset`.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipelines.preprocess.layout import INDEX_DIR, META_MEMBER, SUMMARY, frame_member, index_pattern
from pipelines.preprocess.plan import read_removed
from pipelines.storage import Location, retrying
from tempme import CLIP_MEAN, CLIP_STD

MODES = ("pairs", "videos")


@dataclass(frozen=True)
class IndexedSample:
    """Where one video's sample lies: its tar, the byte span of its members and each member's range."""

    shard: str
    key: str
    id: str
    captions: int
    valid: int
    span: tuple[int, int]
    members: dict


def shard_index(shards: str, split: str) -> list[IndexedSample]:
    """Every sample of `split` in the finished shards, in shard order, less the videos recorded as removed."""
    root = Location.of(shards)
    files = root.child(INDEX_DIR).list(index_pattern(split))
    if not files:
        raise FileNotFoundError(f"{root.uri}: no finished shards of split {split!r} "
                                f"(is it the output folder of `tempme preprocess`?)")
    removed = set(read_removed(root)["id"].to_pylist())
    samples = []
    for loc in files:
        index = json.loads(retrying(loc.read_text))
        tar = root.child(index["shard"]).uri
        samples += [IndexedSample(tar, s["key"], s["id"], s["captions"], s["valid"], tuple(s["span"]),
                                  {k: tuple(v) for k, v in s["members"].items()})
                    for s in index["samples"] if s["id"] not in removed]
    return samples


def shard_paths(shards: str, split: str) -> list[str]:
    """The split's tar files, for `webdataset.WebDataset(...)` or `ray.data.read_webdataset(...)`."""
    return sorted({s.shard for s in shard_index(shards, split)})


def read_summary(shards: str) -> dict:
    return json.loads(Location.of(shards).child(SUMMARY).read_text())


def decode_frames(jpegs: Sequence[bytes], frames: int, augment: bool = False, seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG frames -> (video [frames,3,H,W] uint8, mask [frames] bool): the stored frames fill the first
    slots and the mask, the rest are zeros. With `augment`, one RandAugment draw (seeded by `seed`) is applied
    to all frames alike, so motion between frames is kept. uint8 travels at a quarter of float32's size."""
    from torchvision.io import ImageReadMode, decode_jpeg

    pics = torch.stack(decode_jpeg([torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs],
                                   mode=ImageReadMode.RGB))
    if augment:
        pics = _rand_augment(pics, seed)
    video = torch.zeros((frames, *pics.shape[1:]), dtype=torch.uint8)
    video[: len(pics)] = pics
    mask = torch.zeros(frames, dtype=torch.bool)
    mask[: len(pics)] = True
    return video, mask


def normalise(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """uint8 frames [..., T, 3, H, W] -> float32 normalised with CLIP mean/std, padding frames zero (as the
    paper's code has them); runs wherever `video` lives, e.g. on the GPU after a uint8 copy."""
    x = video.float().div_(255)
    x.sub_(_CLIP_MEAN.to(x.device)).div_(_CLIP_STD.to(x.device))
    return x.mul_(mask[..., None, None, None].to(x.device))


def frames_to_tensor(jpegs: Sequence[bytes], frames: int, augment: bool = False, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG frames -> (video [frames,3,H,W] float32 normalised, mask [frames] bool), for readers on the CPU."""
    video, mask = decode_frames(jpegs, frames, augment, seed)
    return normalise(video, mask), mask


def collate(items: list[dict]) -> dict:
    """Batch items: tensors stacked, everything else (captions, ids) kept as lists."""
    return {k: torch.stack([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor)
            else [it[k] for it in items] for k in items[0]}


class ShardDataset(IterableDataset):
    """(video, caption) pairs or whole videos of one split, for one rank, shared out across DataLoader workers.

    Items are dicts: video [T,3,H,W] float, mask [T] bool, id, key, and caption (pairs) or captions (videos).
    Call `set_epoch(e)` before iterating each epoch (and create the DataLoader iterator after it; do not
    use persistent_workers, which would keep the old epoch).
    """

    def __init__(self, shards: str, split: str, *, mode: str = "pairs", rank: int = 0, world_size: int = 1,
                 augment: bool = False, shuffle: bool | None = None, seed: int = 0, epoch: int = 0,
                 skip: int = 0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.shards, self.split, self.mode = shards, split, mode
        self.rank, self.world_size = rank, world_size
        self.augment, self.seed, self.epoch, self.skip = augment, seed, epoch, skip
        self.shuffle = (mode == "pairs") if shuffle is None else shuffle
        self.samples = shard_index(shards, split)
        if mode == "pairs":
            self._items = [(i, c) for i, s in enumerate(self.samples) for c in range(s.captions)]
        else:
            self._items = [(i, -1) for i in range(len(self.samples))]

    @property
    def total(self) -> int:
        """Items in one epoch across all ranks."""
        return len(self._items)

    def __len__(self) -> int:
        """Items this rank yields in one epoch (all its DataLoader workers together), after `skip`."""
        return max(len(_part(range(self.total), self.rank, self.world_size)) - self.skip, 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> list[tuple[int, int]]:
        """All (sample, caption) items of this epoch in the order they are shared out."""
        if not self.shuffle:
            return list(self._items)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self._items))
        return [self._items[i] for i in order]

    def my_items(self) -> list[tuple[int, int]]:
        """The items of this rank after its first `skip`, and of the calling DataLoader worker (all of the
        rank's outside one). Workers take every num_workers-th item, so the DataLoader, which asks its workers
        in turn, yields the rank's items in their order whatever the worker count, and a resumed epoch
        (`skip`) continues exactly where the interrupted one stopped without reading what it skips."""
        mine = _part(self.epoch_order(), self.rank, self.world_size)[self.skip:]
        worker = get_worker_info()
        return mine[worker.id::worker.num_workers] if worker else mine

    def __iter__(self) -> Iterator[dict]:
        reader = SampleReader()
        try:
            for sample_no, caption_no in self.my_items():
                sample = self.samples[sample_no]
                meta, jpegs = reader.read(sample)
                seed = _item_seed(self.seed, self.epoch, sample_no, caption_no)
                video, mask = frames_to_tensor(jpegs, meta["frames"], self.augment, seed)
                item = {"video": video, "mask": mask, "id": meta["id"], "key": sample.key}
                if self.mode == "pairs":
                    item["caption"] = meta["captions"][caption_no]
                else:
                    item["captions"] = list(meta["captions"])
                yield item
        finally:
            reader.close()


class SampleReader:
    """Reads a sample's members (metadata, JPEG frames) with one ranged read; keeps each tar it opened open
    until `close()`. For stages that pick their own samples from `shard_index` (e.g. embedding)."""

    def __init__(self):
        self._files: dict[str, object] = {}

    def read(self, sample: IndexedSample) -> tuple[dict, list[bytes]]:
        """(metadata dict, JPEG bytes of the `valid` real frames) of one sample."""
        f = self._files.get(sample.shard)
        if f is None:
            loc = Location.of(sample.shard)
            f = self._files[sample.shard] = loc.fs.open_input_file(loc.path)
        start, end = sample.span
        blob = f.read_at(end - start, start)

        def member(name: str) -> bytes:
            offset, size = sample.members[name]
            return blob[offset - start: offset - start + size]

        meta = json.loads(member(META_MEMBER))
        return meta, [member(frame_member(i)) for i in range(sample.valid)]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _part(items: Sequence, part: int, parts: int) -> Sequence:
    """The `part`-th of `parts` contiguous, near-equal slices (sizes differ by at most one)."""
    n = len(items)
    return items[part * n // parts: (part + 1) * n // parts]


def _item_seed(seed: int, epoch: int, sample_no: int, caption_no: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, sample_no, caption_no + 1]).generate_state(1)[0])


_CLIP_MEAN = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
_CLIP_STD = torch.tensor(CLIP_STD).view(1, 3, 1, 1)


@functools.lru_cache(maxsize=1)
def _rand_augment_op():
    from torchvision.transforms import v2

    return v2.RandAugment()


def _rand_augment(pics: torch.Tensor, seed: int) -> torch.Tensor:
    """torchvision RandAugment on [V,3,H,W] uint8: one draw of ops for the whole stack, from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _rand_augment_op()(pics)
