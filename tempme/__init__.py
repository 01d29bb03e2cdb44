"""TempMe: frozen CLIP + LoRA + temporal token merging for efficient text-video retrieval.

    import tempme
    model = tempme.load_model("tempme-b32-12f", pretrained="openai")
    video_emb = model.encode_video(frames, mask)        # [B, T, 3, 224, 224] -> [B, 512]
    text_emb = model.encode_text(["a man is cooking"])  # -> [1, 512]
    logits = model.similarity(text_emb, video_emb)

This library depends on torch, open_clip and peft only.
"""
from .adapter import read_adapter_config
from .backbone import CheckpointError
from .config import MergeSchedule, ModelConfig, get_config, preset_names
from .model import CLIP_MEAN, CLIP_STD, TempMeModel, load_model
from .precision import PRECISIONS, inference_dtype

__all__ = ["CLIP_MEAN", "CLIP_STD", "CheckpointError", "MergeSchedule", "ModelConfig", "PRECISIONS", "TempMeModel",
           "get_config", "inference_dtype", "load_model", "preset_names", "read_adapter_config"]
