"""Model configurations as data: a backbone, a frame count and a merge schedule; the presets are a table.

Presets are named `{method}-{backbone}-{frames}f` (`tempme-b32-12f`, `tome-b16-12f`, `lora-b32-64f`, ...);
users write their own `ModelConfig` (or a YAML/dict of the same fields) for other schedules or backbones.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from tempme.errors import UserError

DEFAULT_PRECISION = "auto"    # bf16 where the hardware computes it natively (tempme.precision says where)
PRECISIONS = (DEFAULT_PRECISION, "fp32", "bf16", "fp16")   # inference precisions
BACKBONE_CONFIGS = Path(__file__).parent / "model_configs"   # open_clip configs of the project's own backbones


@dataclass(frozen=True)
class MergeSchedule:
    """Which merges happen in which layer of the video encoder.

    - `imgme_r`: tokens merged inside each frame after attention, in every layer before the first ClipMe
      layer (in every layer when there is none): ToMe-style ImgMe blocks.
    - `clipme_layers` / `clip_groups`: the layers that join `M` adjacent clips, with `M` for each.
    - `p_cross` / `p_intra`: the shares of tokens merged away across the joined clips (before attention)
      and inside the clip (after attention); layers after the first ClipMe layer that join nothing merge
      `p_intra` of their tokens.
    """

    imgme_r: int = 0
    clipme_layers: tuple[int, ...] = ()
    clip_groups: tuple[int, ...] = ()
    p_cross: float = 0.0
    p_intra: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "clipme_layers", tuple(self.clipme_layers))
        object.__setattr__(self, "clip_groups", tuple(self.clip_groups))
        if len(self.clipme_layers) != len(self.clip_groups):
            raise UserError(f"merge schedule: clipme_layers {self.clipme_layers} and clip_groups "
                             f"{self.clip_groups} must have the same length")
        if list(self.clipme_layers) != sorted(set(self.clipme_layers)):
            raise UserError(f"merge schedule: clipme_layers {self.clipme_layers} must be increasing")
        if any(m < 2 for m in self.clip_groups):
            raise UserError(f"merge schedule: every clip group joins at least 2 clips, got {self.clip_groups}")
        if self.imgme_r < 0:
            raise UserError(f"merge schedule: imgme_r must be >= 0, got {self.imgme_r}")
        for key in ("p_cross", "p_intra"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise UserError(f"merge schedule: {key} must be in [0, 1), got {getattr(self, key)}")

    @property
    def frames_per_video_multiple(self) -> int:
        """Frame counts must be a multiple of this for the clips to join evenly."""
        out = 1
        for m in self.clip_groups:
            out *= m
        return out


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model, and what an adapter records about its base."""

    name: str
    backbone: str                      # open_clip model name
    frames: int = 12
    schedule: MergeSchedule = field(default_factory=MergeSchedule)
    lora_rank: int = 8
    lora_alpha: float | None = None    # None: equal to the rank (scale 1, as the paper)
    text_context: int = 32
    quick_gelu: bool = True            # OpenAI CLIP weights use QuickGELU
    pretrained: str | None = None      # "openai", a local checkpoint path, or None (random weights)

    def __post_init__(self):
        if self.frames < 1:
            raise UserError(f"model config {self.name!r}: frames must be >= 1, got {self.frames}")
        multiple = self.schedule.frames_per_video_multiple
        if self.frames % multiple:
            raise UserError(f"model config {self.name!r}: {self.frames} frames cannot be joined in groups "
                             f"{self.schedule.clip_groups}; use a multiple of {multiple}")
        if self.lora_rank < 1:
            raise UserError(f"model config {self.name!r}: lora_rank must be >= 1, got {self.lora_rank}")

    def backbone_config(self) -> dict:
        """The backbone's open_clip config (`embed_dim`, `vision_cfg`, `text_cfg`), read, not built: the
        project's own file in model_configs/, else open_clip's table."""
        own = BACKBONE_CONFIGS / f"{self.backbone}.json"
        if own.is_file():
            return json.loads(own.read_text())
        import open_clip

        found = open_clip.get_model_config(self.backbone)
        if found is None:
            raise UserError(f"model config {self.name!r}: backbone {self.backbone!r} is neither one of "
                            f"open_clip's models nor a file in {BACKBONE_CONFIGS}")
        return found

    @property
    def image_size(self) -> int:
        """Side of the square frames the video encoder takes."""
        return int(self.backbone_config()["vision_cfg"]["image_size"])

    @property
    def embed_dim(self) -> int:
        """Width of the embeddings the model makes."""
        return int(self.backbone_config()["embed_dim"])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = dict(data)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise UserError(f"model config: unknown keys {sorted(unknown)}")
        schedule = data.pop("schedule", None) or {}
        if not isinstance(schedule, MergeSchedule):
            bad = set(schedule) - {f.name for f in dataclasses.fields(MergeSchedule)}
            if bad:
                raise UserError(f"model config: unknown schedule keys {sorted(bad)}")
            schedule = MergeSchedule(**schedule)
        return cls(schedule=schedule, **data)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


# The paper's merge schedules. B/32 at 12 frames is the authors' default; B/16 and 64 frames give the paper's
# token counts. The tiny backbone takes B/32's, so tests run the real schedule.
TEMPME_B32_12F = MergeSchedule(imgme_r=2, clipme_layers=(8, 9, 10), clip_groups=(2, 2, 3), p_cross=0.3, p_intra=0.1)
TEMPME_B32_64F = MergeSchedule(imgme_r=2, clipme_layers=(8, 9, 10), clip_groups=(4, 4, 4), p_cross=0.3, p_intra=0.1)
TEMPME_B16_12F = MergeSchedule(imgme_r=10, clipme_layers=(8, 9, 10), clip_groups=(2, 2, 3), p_cross=0.4, p_intra=0.2)
TOME_B32 = MergeSchedule(imgme_r=2)      # ToMe in every layer, the paper's ToMe baseline
TOME_B16 = MergeSchedule(imgme_r=10)
LORA = MergeSchedule()                   # no merging: the LoRA baseline

# Every preset, `{method}-{backbone}-{frames}f`. `TempMe-Tiny` is a random-weight ViT with the real 12-layer,
# 50-tokens-per-frame shape, for tests and CPU demos.
PRESETS: dict[str, ModelConfig] = {config.name: config for config in [
    #           name               open_clip backbone  frames  merge schedule
    ModelConfig("tempme-b32-12f",  "ViT-B-32",         12,     TEMPME_B32_12F),
    ModelConfig("tempme-b32-64f",  "ViT-B-32",         64,     TEMPME_B32_64F),
    ModelConfig("tempme-b16-12f",  "ViT-B-16",         12,     TEMPME_B16_12F),
    ModelConfig("tempme-tiny-12f", "TempMe-Tiny",      12,     TEMPME_B32_12F),
    ModelConfig("tempme-tiny-64f", "TempMe-Tiny",      64,     TEMPME_B32_64F),
    ModelConfig("tome-b32-12f",    "ViT-B-32",         12,     TOME_B32),
    ModelConfig("tome-b32-64f",    "ViT-B-32",         64,     TOME_B32),
    ModelConfig("tome-b16-12f",    "ViT-B-16",         12,     TOME_B16),
    ModelConfig("tome-tiny-12f",   "TempMe-Tiny",      12,     TOME_B32),
    ModelConfig("tome-tiny-64f",   "TempMe-Tiny",      64,     TOME_B32),
    ModelConfig("lora-b32-12f",    "ViT-B-32",         12,     LORA),
    ModelConfig("lora-b32-64f",    "ViT-B-32",         64,     LORA),
    ModelConfig("lora-b16-12f",    "ViT-B-16",         12,     LORA),
    ModelConfig("lora-tiny-12f",   "TempMe-Tiny",      12,     LORA),
    ModelConfig("lora-tiny-64f",   "TempMe-Tiny",      64,     LORA),
]}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_config(name: str) -> ModelConfig:
    """The preset called `name`, e.g. `tempme-b32-12f`."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; presets are: {', '.join(PRESETS)}")
    return PRESETS[name]
