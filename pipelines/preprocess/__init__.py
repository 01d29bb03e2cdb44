"""Preprocessing: a video corpus (MSR-VTT layout or a manifest) into WebDataset shards, one Ray task per shard.

    from pipelines.preprocess import PreprocessOptions, run_preprocess
    report = run_preprocess(PreprocessOptions(out="shards/", manifest="corpus/manifest.csv"))
    report.ok, report.summary, report.failures

Modules: sources (inputs), plan (the ledger: video -> shard, growth and removals), decode (ffmpeg, streamed),
sample (tar bytes of one video), writer (a shard streamed to its final place, then its rows of the sample
table), shard_tasks (the Ray tasks that decode and write shards), summary (summary and failure table), job
(the run), upgrade (a folder of the catalog era into the sample table). The names in the output folder are
`pipelines.shards.format`'s; the sample format is documented in `pipelines.shards.reader`.
"""
from pipelines.preprocess.job import OptionsError, PreprocessOptions, PreprocessReport, run_preprocess

__all__ = ["OptionsError", "PreprocessOptions", "PreprocessReport", "run_preprocess"]
