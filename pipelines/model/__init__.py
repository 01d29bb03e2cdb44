"""A trained model outside training: the MLflow registry and loading from any adapter URI (`registry`), the
adapter shipped to workers as bytes (`adapter_bytes`), and the adapter as an MLflow pyfunc model (`pyfunc`,
with the files that declare it in `pyfunc_files`)."""
