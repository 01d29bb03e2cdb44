"""Trained adapters in the MLflow model registry, and loading a model from any adapter URI.

An adapter directory (`model.save_adapter`: LoRA weights, clip positional embeddings and the model config
that names the preset and the pretrained source) is logged as an MLflow 3 *logged model* whose artifacts are
the directory's files plus, at the same top level, the pyfunc files of `pipelines.model.pyfunc` (MLmodel and
environment files), then registered as a new version of a registered model with an alias. So a downloaded
version is still an adapter directory, and `mlflow.pyfunc.load_model("models:/NAME@champion")` and
`mlflow models serve --env-manager local` embed texts and frame arrays with it. The backbone weights are not
part of it: loading rebuilds the preset from its recorded source and applies the adapter. Consumers name a
model by URI:

    models:/<name>@<alias>   models:/<name>/<version>   runs:/<run_id>/<artifact_path>   /a/local/adapter_dir

`open_model(uri)` is the one way every stage opens a model: it returns the model with its `ModelRef`, the
version the URI names now, pinned. Training points the alias `candidate` at each new version; `promote` moves
another alias (`champion`, which the nightly embedding follows) to a version once it has been checked.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tempme
from pipelines.model.pyfunc_files import PYFUNC_FILES, write_pyfunc_files
from pipelines.tracking import use_store
from tempme.errors import NotFound, UserError

MODEL_TYPE = "tempme-adapter"
RANDOM_INIT_SEED = 0
# Files of a registered version that are not the adapter's: the pyfunc files (`pipelines.model.pyfunc`) and
# what MLflow adds to a models:/ download.
NOT_ADAPTER_FILES = (*PYFUNC_FILES, "registered_model_meta")


class UnknownModel(UserError):
    """A models:/ URI that names no registered model, version or alias; the message names the URI."""


class ModelUnavailable(UserError):
    """A models:/ or runs:/ URI the MLflow store cannot serve; the message names the URI and the store."""


@dataclass(frozen=True)
class ModelRef:
    """A model version: what an index records its vectors came from. `uri` names exactly this version
    (`models:/<name>/<version>` for an alias, a runs:/ URI as given, a local adapter's absolute folder)."""

    name: str
    version: str
    uri: str

    def same_version(self, other: ModelRef | None) -> bool:
        return other is not None and (self.name, self.version) == (other.name, other.version)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> ModelRef | None:
        return cls(**json.loads(text)) if text else None


def register_adapter(adapter_dir: str | Path, name: str, alias: str) -> str:
    """Log `adapter_dir` (with the pyfunc files added) as a model, register it as a new version of `name`,
    point `alias` at it. Anything that is not an adapter directory is refused before anything is logged.

    Works inside an active run (the model is linked to it) or outside one (in the active experiment).
    Uses the current tracking URI. Returns the new version.
    """
    import mlflow

    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise NotFound(f"adapter directory {adapter_dir} does not exist")
    tempme.read_adapter_config(adapter_dir)     # an adapter directory, before anything is logged
    client = mlflow.MlflowClient()
    logged = mlflow.initialize_logged_model(name=name, model_type=MODEL_TYPE)  # linked to the active run
    try:
        with tempfile.TemporaryDirectory(prefix="tempme-model-") as tmp:
            staged = Path(tmp) / "model"
            # A downloaded version's pyfunc files (and MLflow's registered_model_meta) are written anew.
            shutil.copytree(adapter_dir, staged, ignore=shutil.ignore_patterns(*NOT_ADAPTER_FILES))
            write_pyfunc_files(staged, model_id=logged.model_id, run_id=logged.source_run_id,
                               artifact_path=logged.artifact_location)
            client.log_model_artifacts(logged.model_id, str(staged))
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    with _quiet_mlflow_prints():
        version = mlflow.register_model(logged.model_uri, name).version
    client.set_registered_model_alias(name, alias, version)
    return str(version)


@contextlib.contextmanager
def _quiet_mlflow_prints():
    """MLflow prints "Successfully registered model" and "Created version" itself, past its logger; unless the
    `mlflow` logger is set to INFO (a job's --verbose), they are left out: the caller says what it registered."""
    from mlflow.utils import logging_utils

    stream = logging_utils.MLFLOW_LOGGING_STREAM
    before = stream.enabled
    stream.enabled = before and logging.getLogger("mlflow").getEffectiveLevel() <= logging.INFO
    try:
        yield
    finally:
        stream.enabled = before


def _content_hash(directory: Path) -> str:
    """A short hash of the adapter files' names and bytes: a version for adapters outside the registry (a
    downloaded registered version hashes as the adapter directory it was registered from)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()
                       and p.relative_to(directory).as_posix() not in NOT_ADAPTER_FILES):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# What the registry answers for a name, version or alias it does not hold (a version that is not a number
# and an unknown alias are "invalid parameters" to it).
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _registered_version(uri: str) -> tuple[str, str]:
    """(name, version) that a `models:/name@alias` or `models:/name/version` URI points at, in the current
    tracking store; UnknownModel when the store holds no such model, version or alias."""
    import mlflow

    ref = uri[len("models:/"):] if uri.startswith("models:/") else ""
    name, at, alias = ref.partition("@")
    if not at:
        name, _, version = ref.rpartition("/")
    if not name or not (alias if at else version):
        raise UserError(f"model URI {uri!r} must look like models:/<name>@<alias> or models:/<name>/<version>")
    client = mlflow.MlflowClient()
    try:
        found = client.get_model_version_by_alias(name, alias) if at else client.get_model_version(name, version)
    except mlflow.MlflowException as err:
        if err.error_code not in _NOT_FOUND:
            raise
        raise UnknownModel(f"model URI {uri!r} names nothing in the registry at {mlflow.get_tracking_uri()}: "
                           f"{err.message}") from None
    return name, str(found.version)


def promote(uri: str, alias: str) -> str:
    """Point `alias` of the registered model that `uri` (models:/name@alias or models:/name/version) names at
    the version it names, in the current tracking store; returns that version.

    `promote("models:/tempme-msrvtt-b32@candidate", "champion")` makes the candidate the champion; the
    alias's previous version stays registered, so promoting it again by number rolls back.
    """
    import mlflow

    name, version = _registered_version(uri)
    try:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    except mlflow.MlflowException as err:
        if err.error_code != "INVALID_PARAMETER_VALUE":
            raise
        raise UserError(f"alias {alias!r} cannot be set on {name!r}: {err.message}") from None
    return version


def resolve_model(uri: str, dst: str | Path | None = None,
                  tracking_uri: str | None = None) -> tuple[ModelRef, Path]:
    """(pinned reference, local adapter folder) for any adapter URI; registry files are downloaded into `dst`,
    which the caller owns and removes (required for models:/ and runs:/ URIs).

    models:/ and runs:/ URIs are looked up in `tracking_uri` (default: MLflow's current one, which honours
    MLFLOW_TRACKING_URI and else is ./mlflow.db); that store must answer first (`TrackingUnavailable`), and
    becomes current. A name, version or alias it does not hold is `UnknownModel`.
    """
    if not uri.startswith(("models:/", "runs:/")):
        adapter_dir = Path(uri).expanduser()
        if not adapter_dir.is_dir():
            raise NotFound(f"model {uri!r} is neither a models:/ or runs:/ URI nor an adapter directory")
        adapter_dir = adapter_dir.resolve()
        return ModelRef(adapter_dir.name, _content_hash(adapter_dir), str(adapter_dir)), adapter_dir
    import mlflow

    store = use_store(tracking_uri or mlflow.get_tracking_uri())
    try:
        ref = None
        if uri.startswith("models:/"):
            name, version = _registered_version(uri)    # UnknownModel for what the registry does not hold
            ref = ModelRef(name, version, f"models:/{name}/{version}")
        if dst is None:
            raise TypeError(f"resolve_model({uri!r}) needs dst, the folder to download the registry's files into")
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        if ref is not None:
            return ref, Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(dst)))
        adapter_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except mlflow.MlflowException as e:
        raise ModelUnavailable(f"model {uri} cannot be loaded from the MLflow store {store}: {e.message}") from None
    return ModelRef(adapter_dir.name, _content_hash(adapter_dir), uri), adapter_dir


def open_model(uri: str, dst: str | Path | None = None, tracking_uri: str | None = None):
    """(tempme model in eval mode, its pinned `ModelRef`) for any adapter URI (see `resolve_model`): the
    adapter's recorded config (preset, merge schedule and pretrained source) with the adapter applied."""
    if dst is None and uri.startswith(("models:/", "runs:/")):    # the download is not needed once loaded
        with tempfile.TemporaryDirectory(prefix="tempme-adapter-") as tmp:
            return open_model(uri, tmp, tracking_uri)
    ref, adapter_dir = resolve_model(uri, dst, tracking_uri)
    return model_from_adapter(adapter_dir), ref


def model_from_adapter(adapter_dir: str | Path):
    """The tempme model a local adapter folder describes, in eval mode."""

    return build_model(tempme.read_adapter_config(adapter_dir), adapter=adapter_dir).eval()


def build_model(preset, pretrained: str | None = None, adapter: str | Path | None = None, device="cpu"):
    """`tempme.load_model` with its random draws taken from a fixed seed.

    A backbone without pretrained weights (the tiny presets) is then the same in every process: in each
    training worker and wherever the trained adapter is loaded later, so the adapter means the same thing.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return tempme.load_model(preset, pretrained=pretrained, adapter=adapter, device=device)
