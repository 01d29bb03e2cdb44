"""Shared fixtures live in tests/fixtures/, one module per area, registered here."""
import pytest

pytest_plugins = [
    "tests.fixtures.ray_fixtures",
    "tests.fixtures.model_fixtures",
    "tests.fixtures.video_fixtures",
    "tests.fixtures.s3_fixtures",
    "tests.fixtures.index_fixtures",
]


# A test that takes one of these starts a Ray cluster or a server: it is `slow` whatever file it is in, so
# `make test-fast` (-m "not slow") never waits for one.
SLOW_FIXTURES = {"ray_cluster", "ray_head", "s3_server", "mlflow_server"}


def pytest_collection_modifyitems(config, items):
    """Fixture-implied `slow` markers; `gpu` tests run only where CUDA is present."""
    import torch

    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
