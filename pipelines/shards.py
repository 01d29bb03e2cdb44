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
A catalog is JSON: {"shard", "split", "bytes", "frames", "planned": [ids assigned to the shard],
"samples": [{"key", "id", "captions": count, "valid", "span": [start, end), "members": {suffix: [offset,
size]}}], "failures": [{"input", "id", "split", "stage", "error"}]}; offsets are bytes into the tar.
Only finished shards have a catalog; this reader sees nothing else. Names starting with "_" or "." are
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

Reading
-------
    from pipelines.shards import SampleTable
    from pipelines.stream import ShardStream, stream_batches

    table = SampleTable.build("shards/", "train")          # once per process: the split, column-wise
    stream = ShardStream(table, batch_size=32, mode="pairs", rank=rank, world_size=world_size,
                         lanes=2, augment=True, seed=0, epoch=epoch)
    for batch in stream_batches(stream, pin_memory=True):  # uint8 video [B,T,3,H,W], mask [B,T], caption, id
        video = normalise(batch["video"].to(device, non_blocking=True), batch["mask"])

`shards` may name several folders, comma-separated (a corpus grown in several places); a video id may be in
only one of them. `SampleTable` holds a split's samples as numpy and Arrow columns (a few dozen bytes per
video), checked against the tar files it names: a missing or truncated shard, or a unreadable catalog, is
an error listing them, or skipped and counted with `bad_shards="skip"`. `ShardStream` (pipelines.stream)
reads whole runs of samples with one ranged read each, shuffles within windows and deals out batches.

Lower level, for stages that schedule samples themselves (e.g. embedding with Ray Data): `shard_samples`
lists a split's samples with their byte ranges, `SampleReader().read(sample)` returns (metadata, JPEG
frames) with one ranged read, `decode_frames` makes uint8 (video, mask) from the frames and `normalise`
turns them into the model's input (`frames_to_tensor` does both).
`shard_paths` gives the tar files for `webdataset.WebDataset` or `ray.data.read_webdataset`.
"""
from __future__ import annotations

import functools
import io
import json
import logging
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipelines.preprocess.layout import CATALOG_DIR, META_MEMBER, SUMMARY, frame_member, catalog_pattern
from pipelines.preprocess.plan import read_removed
from pipelines.storage import Location, retrying
from tempme import CLIP_MEAN, CLIP_STD
from tempme.errors import NotFound, UserError

BAD_SHARDS = ("error", "skip")
CATALOG_READERS = 32       # catalogs read at once (object-store GETs are latency-bound)
log = logging.getLogger(__name__)
T = TypeVar("T")


class BadShards(UserError):
    """Shards whose catalog names a tar that is missing or shorter than recorded, or whose catalog is unreadable."""


@dataclass(frozen=True)
class ShardSample:
    """Where one video's sample lies: its tar, the byte span of its members and each member's range."""

    shard: str
    key: str
    id: str
    captions: int
    valid: int
    span: tuple[int, int]
    members: dict


def shard_folders(shards: str) -> list[str]:
    """The folders `shards` names: one, or several separated by commas."""
    folders = [f.strip() for f in str(shards).split(",") if f.strip()]
    if not folders:
        raise UserError("no shard folder given")
    return folders


def _folder_indexes(root: Location, split: str, bad_shards: str, keep: Callable[[Location, dict], T]
                    ) -> tuple[list[T], list[str]]:
    """`keep(root, catalog)` of each finished shard's catalog of `split` in one folder, less the removed videos
    (read in parallel, in name order; each catalog is let go once kept), checked against one listing of the
    tars; (what was kept, bad shards skipped)."""
    files = retrying(lambda: root.child(CATALOG_DIR).list(catalog_pattern(split)))
    sizes = root.sizes("*.tar")
    removed = set(read_removed(root)["id"].to_pylist()) if files else set()

    def read(loc: Location) -> tuple[T | None, str | None]:
        try:
            catalog = json.loads(retrying(loc.read_text))
            if not isinstance(catalog.get("samples"), list) or not isinstance(catalog.get("shard"), str):
                raise ValueError("it lists no samples or no shard")
        except (OSError, ValueError, AttributeError) as err:
            return None, f"{loc.uri}: unreadable catalog ({type(err).__name__}: {err})"
        have = sizes.get(catalog["shard"])
        if catalog["samples"] and have is None:
            return None, f"{root.child(catalog['shard']).uri}: missing"
        if catalog["samples"] and have < catalog.get("bytes", 0):
            return None, f"{root.child(catalog['shard']).uri}: truncated ({have} of {catalog['bytes']} bytes)"
        catalog["samples"] = [s for s in catalog["samples"] if s["id"] not in removed]
        return (keep(root, catalog) if catalog["samples"] else None), None

    with ThreadPoolExecutor(CATALOG_READERS) as pool:
        found = list(pool.map(read, files))
    bad = [problem for _, problem in found if problem]
    if bad and bad_shards != "skip":
        raise BadShards(f"{root.uri}: {len(bad)} bad shards of split {split!r}: " + "; ".join(bad[:10])
                        + (" ..." if len(bad) > 10 else "") + " (re-run `tempme preprocess` on the folder to "
                        "write them again, or skip them: data.bad_shards=skip)")
    if bad:
        log.warning("%s: skipping %d bad shards of split %r: %s", root.uri, len(bad), split, "; ".join(bad[:3]))
    return [kept for kept, _ in found if kept is not None], bad


def _split_indexes(shards: str, split: str, keep: Callable[[Location, dict], T], bad_shards: str = "error"
                   ) -> tuple[list[T], list[str]]:
    """`_folder_indexes` over every folder `shards` names: what was kept of the shards that hold samples of
    `split`, and the bad shards skipped. No finished sample at all is an error."""
    if bad_shards not in BAD_SHARDS:
        raise UserError(f"bad_shards must be one of {', '.join(BAD_SHARDS)}, got {bad_shards!r}")
    kept, skipped = [], []
    for folder in shard_folders(shards):
        found, bad = _folder_indexes(Location.of(folder), split, bad_shards, keep)
        kept += found
        skipped += bad
    if not kept:
        raise NotFound(f"{shards}: no finished shards of split {split!r} "
                                f"(is it the output folder of `tempme preprocess`?)")
    return kept, skipped


def shard_samples(shards: str, split: str) -> list[ShardSample]:
    """Every sample of `split` in the finished shards, in shard order, less the videos recorded as removed."""
    def samples(root: Location, catalog: dict) -> list[ShardSample]:
        tar = root.child(catalog["shard"]).uri
        return [ShardSample(tar, s["key"], s["id"], s["captions"], s["valid"], tuple(s["span"]),
                              {k: tuple(v) for k, v in s["members"].items()}) for s in catalog["samples"]]

    return [s for shard in _split_indexes(shards, split, samples)[0] for s in shard]


@dataclass(frozen=True)
class SampleTable:
    """A split's samples as columns, in shard order (row i is in tar `tars[shard[i]]`, bytes [start, end)):
    a few dozen bytes per video, so every training process can hold a corpus of millions, built once and
    shared by its epochs and DataLoader workers."""

    tars: tuple[str, ...]
    shard: np.ndarray       # int32 into `tars`
    start: np.ndarray       # int64 byte offsets of the sample's first tar header ...
    end: np.ndarray         # ... and of the end of its last member
    captions: np.ndarray    # int32 captions per video
    ids: pa.Array           # video ids (strings)
    skipped: tuple[str, ...] = ()   # bad shards left out (bad_shards="skip")

    @classmethod
    def build(cls, shards: str, split: str, bad_shards: str = "error") -> "SampleTable":
        def columns(root: Location, catalog: dict) -> tuple:   # what a shard's catalog leaves behind
            samples = catalog["samples"]
            return (root.child(catalog["shard"]).uri, np.array([s["span"][0] for s in samples], np.int64),
                    np.array([s["span"][1] for s in samples], np.int64),
                    np.array([s["captions"] for s in samples], np.int32), pa.array([s["id"] for s in samples],
                                                                                   pa.string()))

        kept, skipped = _split_indexes(shards, split, columns, bad_shards)
        table = cls(tuple(k[0] for k in kept),
                    np.concatenate([np.full(len(k[1]), i, np.int32) for i, k in enumerate(kept)]),
                    np.concatenate([k[1] for k in kept]), np.concatenate([k[2] for k in kept]),
                    np.concatenate([k[3] for k in kept]), pa.concat_arrays([k[4] for k in kept]), tuple(skipped))
        if len(pc.unique(table.ids)) != len(table):
            counts = pc.value_counts(table.ids)
            twice = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
            raise UserError(f"{shards}: video {twice!r} of split {split!r} is in more than one shard folder")
        return table

    def __len__(self) -> int:
        return len(self.shard)

    @property
    def pairs(self) -> int:
        """(video, caption) pairs of the split."""
        return int(self.captions.sum())

    def shard_bounds(self) -> np.ndarray:
        """Row offsets where each tar's samples begin, and the row count at the end (len(tars) + 1 values)."""
        return np.searchsorted(self.shard, np.arange(len(self.tars) + 1))


def shard_paths(shards: str, split: str) -> list[str]:
    """The split's tar files, for `webdataset.WebDataset(...)` or `ray.data.read_webdataset(...)`."""
    return sorted({s.shard for s in shard_samples(shards, split)})


def read_summary(shards: str) -> dict:
    """The summary of `shards` (of its first folder when it names several)."""
    return json.loads(Location.of(shard_folders(shards)[0]).child(SUMMARY).read_text())


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


class SampleReader:
    """Reads a sample's members (metadata, JPEG frames) with one ranged read; keeps each tar it opened open
    until `close()`. For stages that pick their own samples from `shard_samples` (e.g. embedding)."""

    def __init__(self):
        self._files: dict[str, object] = {}

    def read(self, sample: ShardSample) -> tuple[dict, list[bytes]]:
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


def parse_sample(blob: bytes) -> tuple[dict, list[bytes]]:
    """(metadata, JPEG bytes of the `valid` real frames) from a sample's own tar bytes (its span)."""
    members = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        for info in tar:
            members[info.name.split(".", 1)[1]] = tar.extractfile(info).read()
    meta = json.loads(members[META_MEMBER])
    return meta, [members[frame_member(i)] for i in range(int(meta["valid"]))]


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
