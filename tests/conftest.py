"""Shared fixtures live in tests/fixtures/, one module per area, registered here."""
pytest_plugins = [
    "tests.fixtures.ray_fixtures",
    "tests.fixtures.model_fixtures",
    "tests.fixtures.video_fixtures",
]
