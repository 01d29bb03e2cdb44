"""TempMe: frozen CLIP + LoRA + temporal token merging for efficient text-video retrieval.

    import tempme
    model = tempme.load_model("tempme-b32-12f", pretrained="openai")
    video_emb = model.encode_video(frames, mask)        # [B, T, 3, 224, 224] -> [B, 512]
    text_emb = model.encode_text(["a man is cooking"])  # -> [1, 512]
    logits = model.similarity(text_emb, video_emb)

The library imports torch, open_clip, peft and safetensors (numpy and Pillow for `tempme.visualize`; open_clip
fetches hub weights through huggingface_hub); never Ray or MLflow, which are the pipelines'.
"""
import importlib

# What `tempme.X` gives, by the module that defines it: imported on first use, so that `tempme.config` or
# `tempme.errors` alone (what a planning driver needs) never loads torch.
_EXPORTS = {"read_adapter_config": "adapter", "CheckpointError": "backbone", "MergeSchedule": "config",
            "ModelConfig": "config", "get_config": "config", "preset_names": "config", "PRECISIONS": "config",
            "CLIP_MEAN": "model", "CLIP_STD": "model", "TempMeModel": "model", "load_model": "model",
            "inference_dtype": "precision"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tempme' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
