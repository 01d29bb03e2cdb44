"""The whole pipeline end to end on one machine, on embedded defaults: what `tempme demo` runs.

generate a captioned corpus (real H.264 files made with ffmpeg) -> preprocess it into WebDataset shards ->
train with 2 Ray Train workers (gloo on CPU), tracked in a local MLflow SQLite store -> evaluate on the
held-out split -> register the model -> embed the corpus into a Lance index -> search it with text.

Each stage is the same function its own job calls (`run_preprocess`, `run_training`, `evaluate_model`,
`embed_corpus`, `TextSearch`); the demo only chooses small settings and says where everything went.
Everything lands under one working folder; re-running it reuses the corpus and the finished shards.

Weights: a CLIP checkpoint is used when one can be had (a local file, or the open_clip hub when it answers),
with the real ViT-B/32 preset; otherwise the tiny random-weight preset, and the demo says so plainly.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import tempme
from pipelines.demo.options import PRETRAINED_PRESET, RANDOM_PRESET, DemoOptions
from pipelines.demo.synthetic import make_synthetic_corpus
from pipelines.embed import EmbedOptions, embed_corpus
from pipelines.embed.search import TextSearch
from pipelines.evaluate.options import EvaluateOptions
from pipelines.evaluate.retrieval import evaluate_model
from pipelines.preprocess import PreprocessOptions, run_preprocess
from pipelines.shards.format import FAILURES, SUMMARY
from pipelines.train.config import TINY_CONFIG, load_config
from pipelines.train.job import run_training
from tempme.errors import NotFound, UserError

# Where the OpenAI `clip` package caches ViT-B/32, and the hub open_clip downloads "openai" weights from.
OPENAI_CACHE = Path("~/.cache/clip/ViT-B-32.pt").expanduser()
HUB = ("huggingface.co", 443)


@dataclass
class DemoResult:
    workdir: Path
    shards: Path
    index: Path
    tracking_uri: str
    model_uri: str
    version: str
    preset: str
    pretrained: str | None
    test_metrics: dict[str, float]
    chance_r1: float
    embedded: int
    hits: dict[str, list[tuple[str, float, str]]] = field(default_factory=dict)   # query -> (id, score, caption)


def _hub_answers(timeout_s: float = 3.0) -> bool:
    try:
        with socket.create_connection(HUB, timeout=timeout_s):
            return True
    except OSError:
        return False


def choose_weights(requested: str, say: Callable[[str], None]) -> str | None:
    """The CLIP weights the demo can really use: a local file, "openai" when the hub answers, or None."""
    if requested == "none":
        return None
    if requested not in ("auto", "openai"):
        if not Path(requested).is_file():
            raise NotFound(f"--pretrained {requested}: no such file")
        return requested
    local = os.environ.get("TEMPME_PRETRAINED") or (str(OPENAI_CACHE) if OPENAI_CACHE.is_file() else None)
    if requested == "auto" and local:
        return local
    if _hub_answers():
        return "openai"
    say(f"the open_clip hub ({HUB[0]}) does not answer and no local CLIP checkpoint was found "
        f"(TEMPME_PRETRAINED, {OPENAI_CACHE})")
    return None


def _load_weights_once(preset: str, pretrained: str, say: Callable[[str], None]) -> bool:
    """Fetch (or read) the weights in the driver, so workers find them cached; False if that fails."""

    try:
        tempme.load_model(preset, pretrained=pretrained)
        return True
    except Exception as e:   # a download cut off, a wrong file: the demo goes on with random weights
        say(f"could not load CLIP weights {pretrained!r}: {e}")
        return False


def _captions(manifest: Path) -> dict[str, str]:

    with manifest.open(newline="") as f:
        return {row["id"]: json.loads(row["captions"])[0] for row in csv.DictReader(f)}


def _model_choice(options: DemoOptions, say: Callable[[str], None]) -> tuple[str, str | None]:
    """(preset, pretrained weights or None): real CLIP where it can be had, else the tiny random one."""
    pretrained = choose_weights(options.pretrained, say)
    preset = options.preset or (PRETRAINED_PRESET if pretrained else RANDOM_PRESET)
    if pretrained and not _load_weights_once(preset, pretrained, say):
        pretrained, preset = None, options.preset or RANDOM_PRESET
    say(f"weights: {pretrained} ({preset})" if pretrained else
        f"weights: RANDOM — no pretrained CLIP weights are used; {preset} starts from a random backbone and "
        f"only its LoRA and clip positional embeddings learn. Retrieval quality is a learning check, not CLIP's.")
    return preset, pretrained


def _search(engine, options: DemoOptions, captions: dict[str, str], say: Callable[[str], None]) -> dict:
    """The demo's queries against the index: {query: [(video id, score, caption)]}, each hit told."""
    hits = {}
    for query, found in zip(options.queries, engine.search(list(options.queries), options.top_k)):
        hits[query] = [(h.video_id, h.score, captions.get(h.video_id, "")) for h in found]
        say(f'      "{query}"')
        for video_id, score, caption in hits[query]:
            say(f"        {score:6.3f}  {video_id}  ({caption})")
    return hits


def run_demo(options: DemoOptions, say: Callable[[str], None] = print) -> DemoResult:
    """Run every stage in order under `options.workdir`, telling `say` what happens; returns what it made."""

    if options.videos < 8 or options.epochs < 1 or options.workers < 1:
        raise UserError("the demo needs at least 8 videos, 1 epoch and 1 worker, got "
                         f"{options.videos}, {options.epochs}, {options.workers}")
    work = Path(options.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"

    preset, pretrained = _model_choice(options, say)

    say(f"[1/6] generating {options.videos} captioned videos with ffmpeg in {work / 'corpus'}")
    manifest = make_synthetic_corpus(work / "corpus", n_videos=options.videos)

    say("[2/6] preprocessing into WebDataset shards (a Ray task per shard)")
    shards = work / "shards"
    prep = run_preprocess(PreprocessOptions(out=str(shards), manifest=str(manifest), samples_per_shard=8,
                                            progress_every=5.0), log=say)
    if not prep.ok:
        raise RuntimeError(f"preprocessing failed for {len(prep.failures)} videos; see {shards / FAILURES}")

    say(f"[3/6] training {preset} with {options.workers} Ray Train workers for {options.epochs} epochs "
        f"(MLflow: {tracking_uri})")
    cfg = load_config(TINY_CONFIG, [
        f"model.preset={preset}", f"model.pretrained={pretrained or 'null'}", f"data.shards={shards}",
        f"train.epochs={options.epochs}", f"scaling.num_workers={options.workers}",
        f"run.name=demo-{time.strftime('%Y%m%d-%H%M%S')}", f"run.storage_path={work / 'ray'}",
        f"tracking.uri={tracking_uri}", "tracking.experiment=tempme-demo",
        "tracking.registered_model=tempme-demo", "tracking.alias=champion"])
    outcome = run_training(cfg)
    say(f"      registered {outcome.model_uri} = version {outcome.version} (MLflow run {outcome.run_id})")

    say("[4/6] evaluating the registered model on the held-out test split")
    result, _ = evaluate_model(EvaluateOptions(model=outcome.model_uri, shards=str(shards), split="test",
                                               tracking_uri=tracking_uri))
    chance = 100.0 / result.videos
    say(f"      {result.videos} test videos: text->video R@1 {result.metrics['t2v_r1']:.1f} "
        f"R@5 {result.metrics['t2v_r5']:.1f}, video->text R@1 {result.metrics['v2t_r1']:.1f} "
        f"(chance R@1 {chance:.1f})")

    say(f"[5/6] embedding the whole corpus with {options.workers} actors (Ray Data)")
    index = work / "index"
    report = embed_corpus(EmbedOptions(shards=str(shards), model=outcome.model_uri, out=str(index),
                                       workers=options.workers, tracking_uri=tracking_uri))
    say("      " + report.summary().replace("\n", "\n      "))

    say("[6/6] searching the index")
    hits = _search(TextSearch(index, tracking_uri=tracking_uri), options, _captions(manifest), say)

    say("\nWhere things are:")
    say(f"  shards        {shards}   (summary: {shards / SUMMARY})")
    say(f"  index         {index}")
    say(f"  MLflow UI     mlflow ui --backend-store-uri {tracking_uri} --port 5000   then http://127.0.0.1:5000")
    say(f"  search again  tempme search \"a yellow bar moving right\" --index {index} "
        f"--tracking-uri {tracking_uri}")
    return DemoResult(work, shards, index, tracking_uri, outcome.model_uri, outcome.version, preset, pretrained,
                      result.metrics, chance, report.embedded, hits)
