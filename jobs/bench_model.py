"""Video-encoder throughput of presets side by side: videos/s, GMAC/s and the share of the machine's own
matrix-product peak measured in the same run, ratios to `lora` and `tome`, agreement with fp32 (cosine).

Each preset runs in each of the asked forms (`--modes`): `eager` (LoRA as trained, a separate branch),
`folded` (LoRA folded into the frozen q,k,v weights) and `compiled` (folded, then `torch.compile` with one
graph), in the benchmark dtype, against the same batch.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys

import jobs.cli

BACKBONE_KEYS = {"ViT-B-32": "b32", "ViT-B-16": "b16", "TempMe-Tiny": "tiny"}
MODES = ("eager", "folded", "compiled")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presets", default="lora,tome,tempme", help="methods to compare, comma-separated")
    parser.add_argument("--backbone", default="ViT-B-16", choices=sorted(BACKBONE_KEYS))
    parser.add_argument("--frames", type=int, default=12, choices=[12, 64])
    parser.add_argument("--batch", type=int, default=None, help="videos per forward pass (default: 64 on a GPU, 4 on CPU)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before timing")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="auto: bf16 where the CPU or GPU computes it natively, else fp32")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    parser.add_argument("--modes", default="eager,folded,compiled",
                        help=f"forms of each encoder to time, comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--attention", default="sdpa",
                        help="attention kernels for the size bias, comma-separated: sdpa, flex (CUDA)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode for `compiled` (e.g. max-autotune, reduce-overhead: CUDA graphs)")
    parser.add_argument("--reference", action="store_true",
                        help="also time the authors'-style unfused TempMe encoder on the same backbone weights, "
                             "in float32 (the authors' default) and in the benchmark dtype")
    parser.add_argument("--memory", action="store_true",
                        help="also measure the peak memory of one forward pass per video (GPU memory on CUDA, "
                             "resident memory of a child process per preset on CPU)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.epilog = ("Example: tempme bench model --presets lora,tome,tempme --backbone ViT-B-16 --frames 12 "
                     "--modes eager,compiled --json")


def run(args) -> int:
    import logging

    import torch

    import tempme
    from tempme.attention import KERNELS, set_attention_kernel
    from tempme.benchmark import measure_side_by_side, peak_memory_per_video
    from tempme.flops import complexity_report

    logging.getLogger().setLevel(logging.ERROR)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = tempme.inference_dtype(args.precision, device)
    batch = args.batch or (64 if device.type == "cuda" else 4)
    modes = _choices(args.modes, MODES, "--modes")
    kernels = _choices(args.attention, KERNELS, "--attention")
    key = BACKBONE_KEYS[args.backbone]
    methods = args.presets.split(",")
    if args.reference and "tempme" not in methods:
        raise SystemExit("--reference compares with the tempme preset: include tempme in --presets")
    gmacs = {m: complexity_report(tempme.get_config(f"{m}-{key}-{args.frames}f"))["gmacs"] for m in methods}

    encoders, fp32_models, names = {}, {}, {}
    for method in methods:
        base = tempme.load_model(f"{method}-{key}-{args.frames}f", device=device)
        fp32_models[method] = base
        for mode in modes:
            for kernel in kernels:
                name = method if (len(modes), len(kernels)) == (1, 1) else \
                    "-".join([method, mode] + ([kernel] if len(kernels) > 1 else []))
                model = copy.deepcopy(base)
                if mode != "eager":
                    model.fold_lora()           # in fp32, then cast: the form `for_inference` ships
                model.to(dtype)
                set_attention_kernel(model, kernel)
                if mode == "compiled":
                    model.video.compile(fullgraph=True, mode=args.compile_mode)
                encoders[name], names[name] = model.video, (method, mode, kernel)
    if args.reference:
        encoders.update(_reference_encoders(args, key, device, dtype))

    size = fp32_models[methods[0]].image_size
    video = torch.randn(batch, args.frames, 3, size, size, device=device)
    inputs = {torch.float32: video, dtype: video.to(dtype)}
    cast = {name: (torch.float32 if name == "reference-fp32" else dtype) for name in encoders}
    results = measure_side_by_side({n: (lambda v, e=e, n=n: e(inputs[cast[n]])) for n, e in encoders.items()},
                                   video, rounds=args.rounds, warmup=args.warmup)

    first = fp32_models[methods[0]]
    peak = _peak(device, dtype, batch * args.frames * first.video.tokens_per_frame, first)
    with torch.inference_mode():
        truth = {m: model.video(video[:2]).float() for m, model in fp32_models.items()}
    rows = []
    speed = {r.name: r.videos_per_s for r in results}
    for r in results:
        method = names[r.name][0] if r.name in names else "tempme"
        with torch.inference_mode():
            out = encoders[r.name](inputs[cast[r.name]][:2]).float()
        row = {"model": r.name, "method": method, "mode": names.get(r.name, ("", "reference", ""))[1],
               "attention": names.get(r.name, ("", "", "unfused"))[2],
               "videos_per_s": round(r.videos_per_s, 3), "first_call_s": round(r.first_call_s, 2),
               "gmac_per_s": round(r.videos_per_s * gmacs[method], 1),
               "cosine_vs_fp32": round(torch.cosine_similarity(out, truth.get(method, out)).min().item(), 6)}
        row["share_of_peak"] = round(row["gmac_per_s"] / peak["gmac_per_s"], 3)
        same_form = names.get(r.name, (None,) * 3)[1:]
        for other in ("lora", "tome"):
            partner = next((n for n, v in names.items() if v == (other, *same_form)), None)
            row[f"vs_{other}"] = round(r.videos_per_s / speed[partner], 3) if partner else None
        if args.memory and device.type == "cuda":
            row["peak_mb_per_video"] = round(peak_memory_per_video(encoders[r.name], inputs[cast[r.name]]), 2)
        rows.append(row)
    if args.memory and device.type == "cpu":
        cpu_memory = {m: _cpu_memory_per_video(f"{m}-{key}-{args.frames}f", args.precision, batch) for m in methods}
        for row in rows:
            row["peak_mb_per_video"] = cpu_memory.get(row["method"]) if row["mode"] == "folded" else None

    reference = next((r for r in rows if r["model"] == "reference-fp32"), None)
    if reference:   # no encoder of the same MACs can beat the fp32 reference by more than this here
        for row in rows:
            row["vs_reference_fp32"] = round(row["videos_per_s"] / reference["videos_per_s"], 3)
        peak["ceiling_vs_reference_fp32"] = round(peak["gmac_per_s"] / reference["gmac_per_s"], 2)
    summary = {"backbone": args.backbone, "frames": args.frames, "batch": batch, "device": str(device),
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
               "gmacs_per_video": gmacs, "peak": peak, "rounds": args.rounds, "results": rows}
    print(json.dumps(summary) if args.json else _table(summary))
    return 0


def _choices(text: str, allowed, option: str) -> list[str]:
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in chosen if c not in allowed]
    if bad or not chosen:
        raise SystemExit(f"{option}: {', '.join(bad) or 'nothing'} not among {', '.join(allowed)}")
    return chosen


def _peak(device, dtype, tokens: int, model) -> dict:
    """The best of the encoder's own MLP product ([tokens, width] x [width, 4 width]) and a large square
    product: the machine's matrix-product peak in `dtype`, measured now, beside the encoders."""
    import torch

    from tempme.benchmark import matmul_gmacs_per_s

    width = model.video.visual.conv1.out_channels
    square = 8192 if device.type == "cuda" else 2048
    shapes = {"encoder_mlp": (tokens, width, 4 * width), "square": (square, square, square)}
    measured = {name: round(matmul_gmacs_per_s(*shape, device, dtype), 1) for name, shape in shapes.items()}
    fp32 = round(matmul_gmacs_per_s(square, square, square, device, torch.float32), 1)
    return {"gmac_per_s": max(measured.values()), **{f"{k}_gmac_per_s": v for k, v in measured.items()},
            "fp32_square_gmac_per_s": fp32, "shapes": {k: list(v) for k, v in shapes.items()}}


def _reference_encoders(args, key, device, dtype) -> dict:
    """The authors'-style encoder over the same frozen backbone as the presets (seeded random weights)."""
    import open_clip
    import torch

    import tempme
    from tempme.reference import ReferenceVideoEncoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        visual = open_clip.create_model(args.backbone, force_quick_gelu=True).visual.to(device).eval()
    schedule = tempme.get_config(f"tempme-{key}-{args.frames}f").schedule
    reference = ReferenceVideoEncoder(visual, schedule, args.frames)
    out = {"reference-fp32": reference}
    if dtype != torch.float32:
        out[f"reference-{str(dtype).replace('torch.', '')}"] = copy.deepcopy(reference).to(dtype)
    return out


def _cpu_memory_per_video(preset: str, precision: str, batch: int) -> float:
    """MB of resident memory one forward pass adds per video, in a fresh child process per preset (so that
    no other model's pages count)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child_memory, (preset, precision, batch))


def _child_memory(preset: str, precision: str, batch: int) -> float:
    """Peak RSS during one forward pass above the RSS just before it, sampled every millisecond; freed heap
    is handed back to the system first so that loading the model does not hide the pass's own peak."""
    import ctypes
    import gc
    import os
    import threading
    import time

    import torch

    import tempme

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    model = tempme.load_model(preset).for_inference(precision)
    video = torch.randn(batch, model.config.frames, 3, model.image_size, model.image_size).to(model.dtype)
    with torch.inference_mode():
        model.encode_video(video[:1])       # allocator and kernel set-up, not the batch's activations
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        base = peak = rss()
        done = threading.Event()

        def watch():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss())
                time.sleep(0.001)

        watcher = threading.Thread(target=watch)
        watcher.start()
        model.encode_video(video)
        done.set()
        watcher.join()
    return round((max(peak, rss()) - base) / 2**20 / batch, 1)


def _table(summary: dict) -> str:
    peak = summary["peak"]
    lines = [f"{summary['backbone']}, {summary['frames']} frames, batch {summary['batch']}, {summary['device_name']} "
             f"({summary['dtype']}, {summary['threads']} threads); median of {summary['rounds']} rounds",
             f"matrix-product peak measured now: {peak['gmac_per_s']:.0f} GMAC/s "
             f"(encoder MLP shape {peak['encoder_mlp_gmac_per_s']:.0f}, square {peak['square_gmac_per_s']:.0f}; "
             f"fp32 square {peak['fp32_square_gmac_per_s']:.0f})",
             f"{'model':<26}{'videos/s':>10}{'GMAC/s':>10}{'of peak':>9}{'vs lora':>9}{'vs tome':>9}"
             f"{'cos fp32':>10}{'vs ref32':>9}{'1st call':>9}"
             + (f"{'MB/video':>10}" if any('peak_mb_per_video' in r for r in summary['results']) else "")]
    for r in summary["results"]:
        ratios = "".join(f"{r[k]:>8.2f}x" if r[k] else f"{'-':>9}" for k in ("vs_lora", "vs_tome"))
        memory = r.get("peak_mb_per_video")
        lines.append(f"{r['model']:<26}{r['videos_per_s']:>10.2f}{r['gmac_per_s']:>10.0f}{r['share_of_peak']:>9.2f}"
                     f"{ratios}{r['cosine_vs_fp32']:>10.5f}"
                     + (f"{r['vs_reference_fp32']:>8.2f}x" if "vs_reference_fp32" in r else f"{'-':>9}")
                     + f"{r['first_call_s']:>8.1f}s" + (f"{memory:>10.1f}" if memory is not None else ""))
    if "ceiling_vs_reference_fp32" in peak:
        lines.append(f"an encoder of the same MACs at 100% of the peak would be "
                     f"{peak['ceiling_vs_reference_fp32']:.2f}x reference-fp32")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
