"""The tests mirror the code: tests/<folder>/test_<module>[_<aspect>].py tests <folder>/<module>.py, so the
tests of a module are found by its path. tests/infra checks the shipped manifests, which are not modules."""
import ast
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


# Imports sit at the top of a module, except these, which a module may import where it uses them so that a
# process that never needs them (a planning driver, `tempme --help`, a test collection) never loads them: the
# heavy libraries, and the project's modules that load one at import (Torch: frames, stream, the training loop,
# retrieval evaluation; Ray: shard tasks, the Serve app).
HEAVY = ("ray", "mlflow", "lance", "torch", "torchvision", "open_clip", "matplotlib",
         "pipelines.shards.frames", "pipelines.shards.stream", "pipelines.preprocess.shard_tasks",
         "pipelines.serve.app", "pipelines.train.loop", "pipelines.evaluate.retrieval")
# A job imports its stage when it runs, so that `tempme --help` and a job's --help load none of it; a benchmark
# imports in each case what that case measures, in the process that measures it.
LAZY_FOLDERS = ("jobs", "pipelines/bench")


def _imports_inside_functions(path: Path):
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    yield node.lineno, [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    yield node.lineno, [node.module] + [f"{node.module}.{a.name}" for a in node.names]


def test_imports_inside_functions_are_of_heavy_libraries_only():
    files = [p for folder in (*CODE_FOLDERS, "tests") for p in (ROOT / folder).rglob("*.py")
             if not any(p.is_relative_to(ROOT / lazy) for lazy in LAZY_FOLDERS)]
    heavy = lambda name: any(name == h or name.startswith(h + ".") for h in HEAVY)   # noqa: E731
    light = [f"{p.relative_to(ROOT)}:{line} {names[0]}" for p in files
             for line, names in _imports_inside_functions(p) if not any(heavy(n) for n in names)]
    assert not light, f"imports that belong at the top of their module: {light}"
