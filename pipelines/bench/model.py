"""Video-encoder throughput of presets side by side: videos/s, GMAC/s and the share of the machine's own
matrix-product peak measured in the same run, ratios to `lora` and `tome`, agreement with fp32 (cosine).

Each preset runs in each of the asked forms (`--modes`): `eager` (LoRA as trained, a separate branch),
`folded` (LoRA folded into the frozen q,k,v weights) and `compiled` (folded, then `torch.compile` with one
graph), in the benchmark dtype, against the same batch.

Merging cost does not depend on training, so random weights and inputs are used. Each round times every
model once on the same batch; rounds interleave so that load changes on the machine hit all models alike,
and the median round is reported. Warm-up rounds (allocator, kernel selection, compilation) are excluded.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import logging
import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import tempme
from pipelines.bench import common
from tempme.errors import UserError

WORKDIR = None
EXAMPLE = ("tempme bench model --presets lora,tome,tempme --backbone ViT-B-16 --frames 12 --modes eager,compiled "
           "--json")
BACKBONE_KEYS = {"ViT-B-32": "b32", "ViT-B-16": "b16", "TempMe-Tiny": "tiny"}
MODES = ("eager", "folded", "compiled")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presets", default="lora,tome,tempme", help="methods to compare, comma-separated")
    parser.add_argument("--backbone", default="ViT-B-16", choices=sorted(BACKBONE_KEYS))
    parser.add_argument("--frames", type=int, default=12, choices=[12, 64])
    parser.add_argument("--batch", type=int, default=None, help="videos per forward pass (default: 64 on a GPU, 4 on "
                                                                "CPU)")
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


def measure(args) -> dict:

    import torch

    from tempme.attention import KERNELS, set_attention_kernel
    from tempme.flops import complexity_report

    logging.getLogger().setLevel(logging.ERROR)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = tempme.inference_dtype(args.precision, device)
    batch = args.batch or (64 if device.type == "cuda" else 4)
    modes = common.names(args.modes, "--modes", MODES)
    kernels = common.names(args.attention, "--attention", KERNELS)
    key = BACKBONE_KEYS[args.backbone]
    methods = common.names(args.presets, "--presets")
    if args.reference and "tempme" not in methods:
        raise UserError("--reference compares with the tempme preset: include tempme in --presets")
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
    return {"backbone": args.backbone, "frames": args.frames, "batch": batch, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
            "gmacs_per_video": gmacs, "peak": peak, "rounds": args.rounds, "results": rows}


def render(result: dict) -> str:
    peak, results = result["peak"], result["results"]
    memory = any("peak_mb_per_video" in r for r in results)
    rows = [[r["model"], f"{r['videos_per_s']:.2f}", f"{r['gmac_per_s']:.0f}", f"{r['share_of_peak']:.2f}",
             *(f"{r[k]:.2f}x" if r[k] else None for k in ("vs_lora", "vs_tome")), f"{r['cosine_vs_fp32']:.5f}",
             f"{r['vs_reference_fp32']:.2f}x" if "vs_reference_fp32" in r else None, f"{r['first_call_s']:.1f}s"]
            + ([None if r.get("peak_mb_per_video") is None else f"{r['peak_mb_per_video']:.1f}"] if memory else [])
            for r in results]
    lines = [f"{result['backbone']}, {result['frames']} frames, batch {result['batch']}, {result['device_name']} "
             f"({result['dtype']}, {result['threads']} threads); median of {result['rounds']} rounds",
             f"matrix-product peak measured now: {peak['gmac_per_s']:.0f} GMAC/s "
             f"(encoder MLP shape {peak['encoder_mlp_gmac_per_s']:.0f}, square {peak['square_gmac_per_s']:.0f}; "
             f"fp32 square {peak['fp32_square_gmac_per_s']:.0f})",
             common.table(["model", "videos/s", "GMAC/s", "of peak", "vs lora", "vs tome", "cos fp32", "vs ref32",
                           "1st call"] + (["MB/video"] if memory else []), rows)]
    if "ceiling_vs_reference_fp32" in peak:
        lines.append(f"an encoder of the same MACs at 100% of the peak would be "
                     f"{peak['ceiling_vs_reference_fp32']:.2f}x reference-fp32")
    return "\n".join(lines)


def _peak(device, dtype, tokens: int, model) -> dict:
    """The best of the encoder's own MLP product ([tokens, width] x [width, 4 width]) and a large square
    product: the machine's matrix-product peak in `dtype`, measured now, beside the encoders."""
    import torch

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

    import tempme.backbone  # noqa: F401  (registers the project's backbone configs with open_clip)
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
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child_memory, (preset, precision, batch))


def _child_memory(preset: str, precision: str, batch: int) -> float:
    """Peak RSS during one forward pass above the RSS just before it, sampled every millisecond; freed heap
    is handed back to the system first so that loading the model does not hide the pass's own peak."""

    import torch

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


@dataclass
class Throughput:
    name: str
    videos_per_s: float
    seconds_per_batch: list[float]
    first_call_s: float           # the first call alone: set-up, and compilation for a compiled encoder


def measure_side_by_side(encoders: dict[str, Callable], video, rounds: int = 5, warmup: int = 2) -> list[Throughput]:
    """Median videos/s of each encoder over `rounds` interleaved rounds on the batch `video`."""
    import torch

    times: dict[str, list[float]] = {name: [] for name in encoders}
    first: dict[str, float] = {}
    with torch.inference_mode():
        for round_ in range(warmup + rounds):
            for name, encode in encoders.items():
                _synchronize(video.device)
                start = time.perf_counter()
                encode(video)
                _synchronize(video.device)
                if round_ == 0:
                    first[name] = time.perf_counter() - start
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
    return [Throughput(name, video.shape[0] / statistics.median(t), t, first[name]) for name, t in times.items()]


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gmacs_per_s(m: int, k: int, n: int, device, dtype, rounds: int = 5) -> float:
    """GMAC/s of one plain [m, k] x [k, n] matrix product in `dtype`: the peak an encoder is measured against."""
    import torch

    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    times = []
    with torch.inference_mode():
        for round_ in range(rounds + 2):
            _synchronize(device)
            start = time.perf_counter()
            a @ b
            _synchronize(device)
            if round_ >= 2:
                times.append(time.perf_counter() - start)
    return m * k * n / statistics.median(times) / 1e9


def peak_memory_per_video(encode: Callable, video) -> float | None:
    """MB of GPU memory one forward pass takes per video above what was allocated before it (None on CPU,
    where no allocator keeps a peak: `--memory` measures CPU memory in child processes instead)."""
    import torch

    if video.device.type != "cuda":
        return None
    torch.cuda.synchronize(video.device)
    torch.cuda.reset_peak_memory_stats(video.device)
    before = torch.cuda.memory_allocated(video.device)
    with torch.inference_mode():
        encode(video)
    torch.cuda.synchronize(video.device)
    return (torch.cuda.max_memory_allocated(video.device) - before) / 2**20 / video.shape[0]
