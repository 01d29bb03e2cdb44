"""Preprocessing: a video corpus (MSR-VTT layout or a manifest) into WebDataset shards, with Ray Data.

    from pipelines.preprocess import PreprocessOptions, run_preprocess
    report = run_preprocess(PreprocessOptions(out="shards/", manifest="corpus/manifest.csv"))
    report.ok, report.summary, report.failures

Modules: sources (inputs), plan (video -> shard), decode (ffmpeg), sample (tar bytes of one video),
writer (atomic shards + index), summary (summary and failure table), job (the Ray Data run), layout
(names in the output folder). The sample format is documented in `pipelines.shards`.
"""
from pipelines.preprocess.job import OptionsError, PreprocessOptions, PreprocessReport, run_preprocess

__all__ = ["OptionsError", "PreprocessOptions", "PreprocessReport", "run_preprocess"]
