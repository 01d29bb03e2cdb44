"""Training with Ray Train, tracked in MLflow.

    from pipelines.train import load_config, run_training
    outcome = run_training(load_config("pipelines/train/configs/tiny.yaml", ["data.shards=shards/"]))
    outcome.model_uri   # models:/<name>@<alias>, what the embedding job loads

Modules: config (YAML + overrides, checks), data (what each worker reads, the step plan), loss (global-batch
InfoNCE), optim (AdamW, warm-up + cosine), checkpoint (adapter + optimiser state), runtime (model, device,
memory), run_logger (rank-0 MLflow logging), loop (the Ray Train worker function), job (the driver), bench
(throughput and learning-check measurements).
"""
from pipelines.train.config import ConfigError, TrainJobConfig, check_config, load_config
from pipelines.train.job import TrainOutcome, run_training

__all__ = ["ConfigError", "TrainJobConfig", "TrainOutcome", "check_config", "load_config", "run_training"]
