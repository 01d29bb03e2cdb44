"""Shared fixtures live in tests/fixtures/, one module per area, registered here."""
pytest_plugins = [
    "tests.fixtures.ray_fixtures",
    "tests.fixtures.model_fixtures",
    "tests.fixtures.video_fixtures",
    "tests.fixtures.s3_fixtures",
    "tests.fixtures.index_fixtures",
]


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is present."""
    import pytest
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
