"""Text queries against an embedding index, encoded by the very model version that embedded it.

A query vector from another model version lives in another space, and its scores would look plausible while
meaning nothing, so a model that differs from the one the index records is refused, never used.
"""
from __future__ import annotations

import os

import numpy as np

from pipelines.index import Hit, IndexStore, ModelRef, VideoIndex
from pipelines.index.search import DEFAULT_K
from pipelines.model.registry import open_model
from tempme.config import DEFAULT_PRECISION
from tempme.errors import UserError


class ModelMismatch(UserError):
    pass


def _load_query_model(index: VideoIndex, location: str, model_uri: str | None, tracking_uri: str | None):
    """The index's own model (its recorded pinned URI), or `model_uri` if it is the same name and version."""
    wanted = index.model
    uri = model_uri or wanted.uri
    try:
        model, ref = open_model(uri, tracking_uri=tracking_uri)
    except Exception as e:
        raise ModelMismatch(f"index {location} was embedded with {wanted.name} version {wanted.version} "
                            f"({wanted.uri}), which cannot be loaded here: {e}. Pass --model with a URI of "
                            f"that same version") from e
    if (ref.name, ref.version) != (wanted.name, wanted.version):
        raise ModelMismatch(f"index {location} was embedded with {wanted.name} version {wanted.version} "
                            f"({wanted.uri}), but {uri} is {ref.name} version {ref.version}: queries must be "
                            f"encoded by the index's model; search without --model, or re-embed the index "
                            f"with `tempme embed --model {uri}`")
    return model, ref


class TextSearch:
    """An opened index and its model: encode queries, return the top-k videos (reuse it across queries)."""

    def __init__(self, index: str | os.PathLike, model_uri: str | None = None, tracking_uri: str | None = None,
                 precision: str = DEFAULT_PRECISION, version: int | None = None, prewarm: bool = False):
        """`precision`: of the text encoder (auto: bf16 where the hardware computes it natively); `version`: the
        index version to search (default the latest; `tempme index info` lists them); `prewarm`: load the ANN
        index now, and on every reopen (a service that answers many queries)."""
        self.location, self.tracking_uri, self.precision, self.prewarm = str(index), tracking_uri, precision, prewarm
        self.index = IndexStore(index).open(version, prewarm)
        self.model, self.model_ref = _load_query_model(self.index, self.location, model_uri, tracking_uri)
        self.model.for_inference(precision)

    def latest_version(self) -> int:
        """The version readers search now: the newest on the store, or the one pinned while a new model
        version is embedded and indexed (a listing; nothing is opened for search)."""
        ds = IndexStore(self.location).dataset()
        return IndexStore.pinned_version(ds) or ds.version

    def reopened(self, version: int | None = None) -> TextSearch:
        """This search at another version of the index (default the latest), as a new object: the model is
        shared when that version's live model is the same name and version, else the index's new one is
        loaded. The old object keeps answering from its own version, so a query never mixes two."""
        index = IndexStore(self.location).open(version, self.prewarm)
        fresh = object.__new__(TextSearch)
        fresh.location, fresh.tracking_uri, fresh.precision, fresh.prewarm, fresh.index = (
            self.location, self.tracking_uri, self.precision, self.prewarm, index)
        if index.model.same_version(self.index.model):
            fresh.model, fresh.model_ref = self.model, self.model_ref
        else:
            fresh.model, fresh.model_ref = _load_query_model(index, self.location, None, self.tracking_uri)
            fresh.model.for_inference(self.precision)
        return fresh

    @property
    def index_model(self) -> ModelRef:
        return self.index.model

    def encode(self, queries: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model.encode_text(list(queries)).float().cpu().numpy()

    def search(self, queries: str | list[str], k: int = DEFAULT_K, moments: int = 0) -> list[list[Hit]]:
        """Top-k videos per query, best first (a single string gives a one-element list); a video cut into
        windows by its best window, with its next `moments` best."""
        queries = [queries] if isinstance(queries, str) else list(queries)
        if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
            raise UserError(f"queries must be non-empty strings, got {queries!r}")
        return self.index.search(self.encode(queries), k, moments)


def search(index: str | os.PathLike, queries: str | list[str], k: int = DEFAULT_K, model_uri: str | None = None,
           tracking_uri: str | None = None, precision: str = DEFAULT_PRECISION, version: int | None = None
           ) -> list[list[Hit]]:
    """One-shot search (loads the index and the model each call; keep a TextSearch for many queries)."""
    return TextSearch(index, model_uri, tracking_uri, precision, version).search(queries, k)
