"""Video-encoder throughput of presets side by side (videos/s), with ratios to `lora`."""
from __future__ import annotations

import argparse
import copy
import json
import sys

import jobs.cli

BACKBONE_KEYS = {"ViT-B-32": "b32", "ViT-B-16": "b16", "TempMe-Tiny": "tiny"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presets", default="lora,tome,tempme", help="methods to compare, comma-separated")
    parser.add_argument("--backbone", default="ViT-B-16", choices=sorted(BACKBONE_KEYS))
    parser.add_argument("--frames", type=int, default=12, choices=[12, 64])
    parser.add_argument("--batch", type=int, default=4, help="videos per forward pass")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before timing")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="auto: bfloat16 where the CPU or GPU supports it, else float32")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile each encoder first")
    parser.add_argument("--reference", action="store_true",
                        help="also time the reference (authors'-style, unfused) TempMe encoder on the same "
                             "backbone weights, in float32 (the authors' default) and in the benchmark dtype")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.epilog = "Example: tempme bench model --presets lora,tome,tempme --backbone ViT-B-16 --frames 12"


def _cuda() -> bool:
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return False
    import torch
    return torch.cuda.is_available()


def run(args) -> int:
    import logging

    import torch

    import tempme
    from tempme.benchmark import measure_side_by_side
    from tempme.reference import ReferenceVideoEncoder

    logging.getLogger().setLevel(logging.ERROR)
    device = torch.device(args.device)
    dtype = _pick_dtype(args.dtype, device)
    key = BACKBONE_KEYS[args.backbone]
    encoders, models = {}, {}
    for method in args.presets.split(","):
        torch.manual_seed(0)
        model = tempme.load_model(f"{method}-{key}-{args.frames}f", device=device).to(dtype)
        models[method] = model
        forward = model.video
        encoders[method] = torch.compile(forward) if args.compile else forward
    if args.reference:
        reference_base = models.get("tempme") or tempme.load_model(f"tempme-{key}-{args.frames}f")
        import open_clip
        torch.manual_seed(0)
        visual = open_clip.create_model(args.backbone, force_quick_gelu=True).visual.to(device).eval()
        reference = ReferenceVideoEncoder(visual, reference_base.config.schedule, args.frames)
        encoders["reference-fp32"] = reference
        if dtype != torch.float32:
            encoders[f"reference-{_short(dtype)}"] = copy.deepcopy(reference).to(dtype)
    size = next(iter(models.values())).image_size
    video = torch.randn(args.batch, args.frames, 3, size, size, device=device)
    results = measure_side_by_side(
        {name: (lambda v, e=e, n=name: e(v if n == "reference-fp32" else v.to(dtype))) for name, e in encoders.items()},
        video, rounds=args.rounds, warmup=args.warmup)
    base = {r.name: r.videos_per_s for r in results}
    rows = [{"model": r.name, "videos_per_s": round(r.videos_per_s, 3),
             "vs_lora": round(r.videos_per_s / base["lora"], 3) if "lora" in base else None,
             "vs_tome": round(r.videos_per_s / base["tome"], 3) if "tome" in base else None} for r in results]
    summary = {"backbone": args.backbone, "frames": args.frames, "batch": args.batch, "device": str(device),
               "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
               "compiled": args.compile, "results": rows}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.backbone}, {args.frames} frames, batch {args.batch}, {device} ({summary['dtype']}, "
              f"{summary['threads']} threads{', compiled' if args.compile else ''}); median of {args.rounds} rounds")
        print(f"{'model':<18}{'videos/s':>10}{'vs lora':>10}{'vs tome':>10}")
        for row in rows:
            ratios = [f"{row[k]:>9.2f}x" if row[k] else f"{'-':>10}" for k in ("vs_lora", "vs_tome")]
            print(f"{row['model']:<18}{row['videos_per_s']:>10.2f}" + "".join(ratios))
    return 0


def _short(dtype) -> str:
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(dtype), "fp32")


def _pick_dtype(choice: str, device):
    import torch
    if choice != "auto":
        return getattr(torch, choice)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.backends.mkldnn.is_available() and _cpu_has_bf16() else torch.float32


def _cpu_has_bf16() -> bool:
    try:
        return "avx512_bf16" in open("/proc/cpuinfo").read() or "amx_bf16" in open("/proc/cpuinfo").read()
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
