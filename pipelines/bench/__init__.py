"""Every `tempme bench <what>` benchmark, one module each, named by what it measures.

A benchmark module has `WORKDIR` (what its scratch folder holds, or None when it writes no files), `EXAMPLE` (a
command line for its help), `add_arguments(parser)` for its own options, `measure(args) -> dict` (JSON-able
figures, settings included) and `render(result) -> str` (the human table). `common` adds the shared options
(`--json`, `--workdir`) and runs one: measure, then print the JSON or the table. Heavy imports (torch, Ray,
Lance, MLflow) stay inside functions, so `tempme bench X --help` stays fast.
"""
