"""The tests mirror the code: tests/<folder>/test_<module>[_<aspect>].py tests <folder>/<module>.py, so the
tests of a module are found by its path. tests/infra checks the shipped manifests, which are not modules."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("tempme", "pipelines", "jobs")


def _tested_module(test: Path) -> Path | None:
    """The module `test` names, or None when none matches."""
    folder = ROOT / test.parent.relative_to(ROOT / "tests")
    words = test.stem[len("test_"):].split("_")
    for n in range(len(words), 0, -1):
        for candidate in (folder / ("_".join(words[:n]) + ".py"), folder / "_".join(words[:n]) / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def test_every_test_file_names_the_module_it_tests():
    tests = [t for folder in CODE_FOLDERS for t in (ROOT / "tests" / folder).rglob("test_*.py")]
    assert len(tests) > 40
    strays = [str(t.relative_to(ROOT)) for t in tests if _tested_module(t) is None]
    assert not strays, f"test files that name no module beside them: {strays}"


def test_only_the_layout_test_lives_at_the_top():
    assert sorted(p.name for p in (ROOT / "tests").glob("test_*.py")) == ["test_layout.py"]
