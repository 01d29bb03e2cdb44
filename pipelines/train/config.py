"""The training job's configuration: dataclasses loaded from YAML, with dotted `--set key=value` overrides.

Every value is checked against its field's type when loaded (YAML reads `6e-4` as a string; it becomes a
float here, and `abc` becomes an error naming `optim.lr`), and `check_config` rejects settings that cannot
run before any worker starts. Every error is a `ConfigError` that names the key.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipelines.evaluate.options import DEFAULT_V2T_PROTOCOL, V2T_PROTOCOLS
from pipelines.shards.reader import BAD_SHARDS, shard_folders
from tempme.config import PRECISIONS, ModelConfig, get_config
from tempme.errors import UserError

# The shipped recipes (the paper's MS-R&VTT runs and a tiny CPU one); `--config NAME` finds one by name.
CONFIGS = Path(__file__).resolve().parent / "configs"
TINY_CONFIG = CONFIGS / "tiny.yaml"


class ConfigError(UserError):
    """A configuration value that cannot run; the message starts with the dotted key."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass
class ModelSection:
    preset: str = "tempme-tiny-12f"     # a tempme preset name (`tempme flops` lists them)
    pretrained: str | None = None       # "openai", a local CLIP checkpoint, or None (the preset's random init)

    @functools.cached_property
    def config(self) -> ModelConfig:
        """The preset resolved, once for the run; no such preset is a ConfigError naming model.preset."""
        try:
            return get_config(self.preset)
        except ValueError as err:
            raise ConfigError("model.preset", str(err)) from None


@dataclass
class DataSection:
    shards: tuple[str, ...] = ()        # the preprocessing job's output folders (a list, or comma-separated)
    train_split: str = "train"
    eval_split: str | None = "val"      # evaluated every epoch; the best checkpoint is chosen on it
    test_split: str | None = "test"     # evaluated once with the best adapter at the end
    select_on_test: bool = False        # must be true to allow eval_split == test_split (the run is tagged)
    augment: bool = True                # RandAugment, the same for all frames of a video
    loader_workers: int = 1             # DataLoader processes per training worker
    shuffle_window: int = 1024          # videos whose pairs are shuffled together (a loader holds their JPEGs)
    bad_shards: str = "error"           # a missing or truncated shard: "error" (listing them) or "skip" (counted)
    max_corrupt: int = 100              # corrupt samples met in training, skipped and logged (tar, bytes), before
                                        # the run stops with a message; 0: the first one stops it


@dataclass
class OptimSection:
    lr: float = 6e-4
    weight_decay: float = 0.2
    warmup_ratio: float = 0.1           # share of all steps spent warming up, then cosine decay to 0
    grad_clip: float = 1.0              # max global gradient norm; 0 disables clipping
    grad_average_over: int = 4          # the authors' DDP averaged gradients over their 4 GPUs before clipping:
                                        # the gradient of the global loss is divided by this, whatever the
                                        # worker count, so clipping and the update are theirs; 1: the plain gradient


@dataclass
class TrainSection:
    epochs: int = 5
    batch_size: int = 128               # global batch: (video, caption) pairs per step over all workers
    eval_batch_size: int = 64           # videos per forward pass when evaluating, per worker
    max_steps: int | None = None        # stop early after this many steps (smoke runs, benchmarks)
    seed: int = 0
    precision: str = "auto"             # auto (bf16 on GPUs that compute it natively, fp16 on older ones,
                                        # fp32 on CPU), fp32, bf16, fp16
    # video-to-text: other videos count by their best caption (the authors')
    v2t_protocol: str = DEFAULT_V2T_PROTOCOL
                                        # or "per_caption" (each caption counts); metrics are tagged with it
    log_every: int = 10                 # steps between logged loss / lr / throughput / memory
    checkpoint_every: int = 200         # steps between mid-epoch checkpoints: at most this much work is lost
                                        # with a worker (a few minutes); 0: only at the end of each epoch


@dataclass
class ScalingSection:
    num_workers: int = 1
    use_gpu: bool = False               # GPUs with NCCL when true, CPUs with gloo when false
    cpus_per_worker: int = 1
    max_failures: int = 3               # worker failures Ray Train recovers from (from the latest checkpoint)
    collective_timeout_s: int = 1800    # how long a worker waits for the others in a collective (NCCL, gloo)
    shared_filesystem: bool = False     # local paths are on a filesystem every node mounts (NFS): allow them


@dataclass
class RunSection:
    name: str = "tempme-run"            # Ray Train run name and MLflow run name; re-running it resumes it
    storage_path: str = "outputs/ray"   # checkpoints; shared storage (NFS, s3://) on a multi-node cluster


@dataclass
class TrackingSection:
    uri: str | None = None              # MLflow tracking URI; else $MLFLOW_TRACKING_URI; else sqlite:///mlflow.db
    experiment: str = "tempme"
    registered_model: str = "tempme"    # the final adapter is registered under this name ...
    alias: str = "candidate"            # ... with this alias: models:/<registered_model>@<alias>
    system_metrics: bool = True         # CPU, memory, disk, network (and GPU with pynvml) of rank 0's machine ...
    system_metrics_interval_s: float = 10.0   # ... sampled this often
    visualize_videos: int = 2           # evaluation videos whose merges are drawn as an artifact


@dataclass
class TrainJobConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    run: RunSection = field(default_factory=RunSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)

    def to_dict(self) -> dict:
        """Plain YAML/JSON values: lists for tuples."""
        return dataclasses.asdict(self, dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v
                                                                   for k, v in items})

    def flat(self) -> dict[str, typing.Any]:
        """`{"optim.lr": 0.0006, ...}`: the resolved config as MLflow params."""
        return {f"{section}.{key}": value
                for section, values in self.to_dict().items() for key, value in values.items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _coerce(key: str, value, hint):
    """`value` as the type `hint`, or a ConfigError naming `key`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if typing.get_origin(hint) is tuple:        # tuple[str, ...]: a list, or one comma-separated text
        if isinstance(value, str):
            return shard_folders(value)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(key, f"expected a list of strings or a comma-separated string, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, f"expected a string, got {value!r}")
    raise TypeError(f"{key}: unsupported config field type {hint!r}")


def _build(cls, data, prefix: str = ""):
    """An instance of dataclass `cls` from a (possibly partial) mapping; unknown keys are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix or "<config>", f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(dotted, f"unknown key; known keys here are {', '.join(sorted(names))}")
    return cls(**{key: _coerce(f"{prefix}.{key}" if prefix else key, value, hints[key])
                  for key, value in data.items()})


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each `section.key=value` in the nested dict `data` (values are parsed as YAML scalars)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(item, "an override must look like section.key=value")
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, f"{part!r} is not a section")
        node[leaf] = yaml.safe_load(raw) if raw.strip() else None
    return data


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _config_path(path: str | Path) -> Path:
    """`path`, or the shipped recipe a bare name (no folder) that is no file here names."""
    path = Path(path)
    shipped = CONFIGS / f"{path.stem}.yaml"
    bare = path.parent == Path(".") and path.name in (shipped.name, shipped.stem)
    return shipped if bare and not path.exists() and shipped.is_file() else path


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The mapping in `path`, on top of the file its `extends:` key names (relative to it), recursively."""
    if not path.is_file():
        raise ConfigError("--config" if not seen else f"{seen[-1]}: extends", f"no such file {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: extends", "configs extend each other in a circle")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping of sections")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(_read_yaml(path.parent / str(parent), seen + (path.resolve(),)), data)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainJobConfig:
    """The config in the YAML file at `path` (defaults when None) with `overrides` applied on top.

    A file may start from another with `extends: other.yaml` and change only what differs. A name that is
    no file but one of the shipped recipes (`tiny`, `msrvtt-tempme-b32`) is that recipe.
    """
    data = _read_yaml(_config_path(path)) if path is not None else {}
    return _build(TrainJobConfig, apply_overrides(data, list(overrides)))


def config_from_dict(data: dict) -> TrainJobConfig:
    """The inverse of `TrainJobConfig.to_dict` (how the config travels to the workers)."""
    return _build(TrainJobConfig, data)


def check_config(cfg: TrainJobConfig) -> None:
    """Settings that cannot run, found before any worker starts (the shards are checked in `data`)."""
    cfg.model.config     # resolving the preset is the check
    positive = {"train.epochs": cfg.train.epochs, "train.batch_size": cfg.train.batch_size,
                "train.eval_batch_size": cfg.train.eval_batch_size, "train.log_every": cfg.train.log_every,
                "scaling.num_workers": cfg.scaling.num_workers, "scaling.cpus_per_worker": cfg.scaling.cpus_per_worker,
                "scaling.collective_timeout_s": cfg.scaling.collective_timeout_s}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(key, f"must be >= 1, got {value}")
    if cfg.optim.grad_average_over < 1:
        raise ConfigError("optim.grad_average_over", f"must be >= 1, got {cfg.optim.grad_average_over}")
    if cfg.train.max_steps is not None and cfg.train.max_steps < 1:
        raise ConfigError("train.max_steps", f"must be >= 1 or null, got {cfg.train.max_steps}")
    if cfg.train.batch_size % cfg.scaling.num_workers:
        raise ConfigError("train.batch_size", f"{cfg.train.batch_size} is not divisible by "
                                              f"scaling.num_workers={cfg.scaling.num_workers}")
    if not cfg.optim.lr > 0:
        raise ConfigError("optim.lr", f"must be > 0, got {cfg.optim.lr}")
    if not 0 <= cfg.optim.warmup_ratio < 1:
        raise ConfigError("optim.warmup_ratio", f"must be in [0, 1), got {cfg.optim.warmup_ratio}")
    for key, value in {"optim.weight_decay": cfg.optim.weight_decay, "optim.grad_clip": cfg.optim.grad_clip,
                       "train.checkpoint_every": cfg.train.checkpoint_every,
                       "scaling.max_failures": cfg.scaling.max_failures,
                       "data.max_corrupt": cfg.data.max_corrupt,
                       "data.loader_workers": cfg.data.loader_workers,
                       "tracking.visualize_videos": cfg.tracking.visualize_videos}.items():
        if value < 0:
            raise ConfigError(key, f"must be >= 0, got {value}")
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError("train.precision", f"must be one of {', '.join(PRECISIONS)}, got {cfg.train.precision!r}")
    if cfg.train.v2t_protocol not in V2T_PROTOCOLS:
        raise ConfigError("train.v2t_protocol", f"must be one of {', '.join(V2T_PROTOCOLS)}, "
                                                f"got {cfg.train.v2t_protocol!r}")
    if cfg.data.shuffle_window < 1:
        raise ConfigError("data.shuffle_window", f"must be >= 1, got {cfg.data.shuffle_window}")
    if cfg.data.bad_shards not in BAD_SHARDS:
        raise ConfigError("data.bad_shards", f"must be one of {', '.join(BAD_SHARDS)}, got {cfg.data.bad_shards!r}")
    if not cfg.data.shards:
        raise ConfigError("data.shards", "is required: the preprocessing job's output directory")
    if cfg.data.eval_split is not None and cfg.data.eval_split == cfg.data.test_split and not cfg.data.select_on_test:
        raise ConfigError("data.eval_split", f"{cfg.data.eval_split!r} is the test split; set "
                                             "data.select_on_test=true to choose the model on it (the run is tagged)")
    if not cfg.tracking.system_metrics_interval_s > 0:
        raise ConfigError("tracking.system_metrics_interval_s",
                          f"must be > 0, got {cfg.tracking.system_metrics_interval_s}")
    if not cfg.run.name.strip():
        raise ConfigError("run.name", "must not be empty")
    if not cfg.tracking.registered_model.strip():
        raise ConfigError("tracking.registered_model", "must not be empty")
