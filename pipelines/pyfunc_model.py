"""The pyfunc loader that models registered before the `pipelines.model` package name in their MLmodel file;
MLflow imports it by that name to load them. New versions name `pipelines.model.pyfunc`."""
from pipelines.model.pyfunc import _load_pyfunc

__all__ = ["_load_pyfunc"]
