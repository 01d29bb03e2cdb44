"""TempMeModel: frozen CLIP + LoRA + temporal token merging, behind a small encode/similarity API."""
from __future__ import annotations

from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from torch import nn

from tempme.adapter import add_lora, read_adapter_config, read_adapter_tensors, save_adapter
from tempme.backbone import create_backbone
from tempme.config import ModelConfig, get_config
from tempme.errors import UserError
from tempme.precision import inference_dtype
from tempme.text import TextEncoder
from tempme.video import VideoEncoder, VideoEncoding, check_mask

# CLIP's image normalisation, which frames must be given in.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class TempMeModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        clip = create_backbone(config.backbone, config.pretrained, config.quick_gelu)
        add_lora(clip, config.lora_rank, config.lora_alpha)
        self.video = VideoEncoder(clip.visual, config.schedule, config.frames)
        self.text = TextEncoder(clip, config.text_context)
        self.register_buffer("logit_scale", clip.logit_scale.detach().exp().clone())
        self._tokenizer = open_clip.get_tokenizer(config.backbone)

    @property
    def image_size(self) -> int:
        return self.video.image_size

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """LoRA matrices of both encoders and the clip positional embeddings: all that training changes."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        return self._tokenizer(list(texts), context_length=self.config.text_context).to(self.device)

    def encode_text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens).float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """[B] captions -> [B, D] L2-normalised embeddings."""
        return self.encode_text_tokens(self.tokenize(texts))

    def encode_video(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """video [B, T, 3, H, W] CLIP-normalised, mask [B, T] (True = real frame) -> [B, D] L2-normalised
        float32 (the encoder runs in the model's dtype). Give the mask on the CPU, where checking it for
        videos without frames costs no synchronisation; it is moved to the video's device here."""
        return self.video(video.to(self.dtype), self._checked(mask, video.device))

    def encode_video_full(self, video: torch.Tensor, mask: torch.Tensor | None = None,
                          trace: bool = False) -> VideoEncoding:
        """Video embeddings with per-frame embeddings, per-layer token shapes and, if traced, merge sources."""
        return self.video.encode(video.to(self.dtype), self._checked(mask, video.device), trace=trace)

    @staticmethod
    def _checked(mask: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        if mask is not None and mask.device.type == "cpu" and not torch.compiler.is_compiling():
            check_mask(mask)
        return None if mask is None else mask.to(device, non_blocking=True)

    @property
    def dtype(self) -> torch.dtype:
        return self.video.visual.conv1.weight.dtype

    def for_inference(self, precision: str = "auto", compile: bool = False) -> TempMeModel:
        """The fast inference form, in place: eval mode, LoRA folded, weights in the inference dtype (`auto`:
        bf16 where the hardware computes it natively), and with `compile` the video encoder compiled into
        one graph (worth it for long jobs: compiling takes seconds to minutes)."""
        self.eval().fold_lora()
        self.to(inference_dtype(precision, self.device))
        if compile:
            self.video.compile(fullgraph=True)
        return self

    @property
    def lora_folded(self) -> bool:
        return any(layer.merged for layer in self._lora_layers())

    def fold_lora(self, fold: bool = True) -> TempMeModel:
        """Fold each LoRA product into its frozen q,k,v weight (inference: one matrix product instead of
        three, same function), or take it back out (`fold=False`). Training always unfolds first."""
        for layer in self._lora_layers():
            if fold and not layer.merged:
                layer.merge()
            elif not fold and layer.merged:
                layer.unmerge()
        return self

    def train(self, mode: bool = True) -> TempMeModel:
        if mode:
            self.fold_lora(False)   # gradients must reach the LoRA matrices, not a folded copy
        return super().train(mode)

    def _lora_layers(self) -> list[LoraLayer]:
        return [m for m in self.modules() if isinstance(m, LoraLayer)]

    def similarity(self, text_emb: torch.Tensor, video_emb: torch.Tensor) -> torch.Tensor:
        """[Bt, D] x [Bv, D] normalised embeddings -> [Bt, Bv] logits (cosine times the logit scale)."""
        return self.logit_scale * text_emb @ video_emb.t()

    def save_adapter(self, directory: str | Path) -> Path:
        return save_adapter(directory, self.config, self.trainable_parameters())

    def load_adapter(self, directory: str | Path) -> None:
        tensors = read_adapter_tensors(directory)
        folded = self.lora_folded
        self.fold_lora(False)
        try:
            self._copy_adapter(directory, tensors)
        finally:
            self.fold_lora(folded)

    def _copy_adapter(self, directory, tensors: dict[str, torch.Tensor]) -> None:
        own = self.trainable_parameters()
        missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        if missing or unexpected:
            raise UserError(f"{directory}: adapter does not fit this model "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        with torch.no_grad():
            for name, value in tensors.items():
                if value.shape != own[name].shape:
                    raise UserError(f"{directory}: {name} has shape {tuple(value.shape)}, "
                                     f"the model expects {tuple(own[name].shape)}")
                own[name].copy_(value)


def load_model(preset: str | ModelConfig | None = None, pretrained: str | None = None,
               adapter: str | Path | None = None, device: str | torch.device = "cpu") -> TempMeModel:
    """A TempMe model from a preset name or config, optionally with backbone weights and a trained adapter.

    `pretrained`: "openai" (hub), a local checkpoint path, or None (random weights; or the adapter's own
    record of its backbone weights). With only `adapter`, the preset comes from the adapter's config.
    """
    if preset is None and adapter is None:
        raise UserError("load_model needs a preset, a ModelConfig or an adapter directory")
    if preset is None:
        config = read_adapter_config(adapter)
    else:
        config = preset if isinstance(preset, ModelConfig) else get_config(preset)
    if pretrained is not None:
        config = config.replace(pretrained=pretrained)
    model = TempMeModel(config)
    if adapter is not None:
        model.load_adapter(adapter)
    return model.to(device).eval()
