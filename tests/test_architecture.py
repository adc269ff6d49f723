"""The import contracts of pyproject.toml (``[tool.importlinter]``) hold, a forbidden import breaks them, and the light
entry points (``import cream_data``, ``cream --help``) import no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "cream_data", "cream_train", "cli")
HEAVY = ("torch", "transformers", "trl", "vllm")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """The `lint-imports` console script of the interpreter running the tests, on the pyproject.toml in ``cwd``."""
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.exists():
        pytest.fail("lint-imports is not installed (import-linter, in the dev extra: run `make install`)")
    return subprocess.run([str(exe), "--no-cache", "--no-logo"], cwd=cwd, capture_output=True, text=True, timeout=300)


def copy_of_the_tree(dst: Path) -> Path:
    """The packages and pyproject.toml, copied: a contract can be broken there without touching the real tree."""
    for name in PACKAGES:
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_import_contracts_hold():
    r = lint_imports(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "6 kept" in r.stdout, r.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("cream_data/engines/hf_sample.py", "from cream_data.stages.sample import GenerationParams", "never imports a stage"),
    ("cream_data/engines/models.py", "from cream_data.stages import label", "never imports a stage"),
    # indirectly: an engine imports a module (judge_engine imports rewards.judge) that imports a stage
    ("cream_data/rewards/judge.py", "import cream_data.stages.evaluate", "never imports a stage"),
    ("cream_data/rewards/ranking.py", "import cream_train.loss", "a lower layer never imports a higher one"),
    ("cream_data/rewards/pairing.py", "from cream_data.tables import validate", "rewards is pure"),
    ("cream_data/rewards/agreement.py", "import torch", "rewards is pure"),
    ("cream_data/tables/io.py", "from cream_data.stages import label", "publish, reports > stages"),
    ("cream_data/inputs/prompts.py", "from cream_data.engines import models", "siblings independent"),
    ("cream_train/loss.py", "from cli import common", "a lower layer never imports a higher one"),
    ("schemas/__init__.py", "import cream_data.errors", "a lower layer never imports a higher one"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, contract):
    tree = copy_of_the_tree(tmp_path)
    clean = lint_imports(tree)
    assert clean.returncode == 0, clean.stdout + clean.stderr  # the copy alone keeps every contract
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    r = lint_imports(tree)
    assert r.returncode != 0, r.stdout
    assert "0 broken" not in r.stdout, r.stdout
    broken = r.stdout[r.stdout.index("Broken contracts"):]
    assert contract in " ".join(broken.split())
    dotted = module.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    assert dotted in broken, broken


NO_CYCLES = "no import cycle between sibling modules"  # the name of the acyclic_siblings contract


def _cycle_lines(stdout: str, package: str) -> list[str]:
    """The dependencies the no-cycle contract says to remove in ``package`` (``- .a -> .b (1 import)``)."""
    if f"No cycles are allowed in {package}." not in stdout:
        return []
    block = stdout.split(f"No cycles are allowed in {package}.", 1)[1].split("No cycles are allowed in", 1)[0]
    return [ln.strip() for ln in block.splitlines() if ln.strip().startswith("- .")]


@pytest.mark.parametrize("module, line, package, other", [
    # two modules of a subpackage, the new import at module level
    ("cream_data/tables/table_files.py", "from cream_data.tables import io", "cream_data.tables", "io"),
    # inside a function: a lazy import is an import all the same
    ("cream_data/reports/figures.py", "def _planted():\n    from cream_data.reports import inspect",
     "cream_data.reports", "inspect"),
    # top-level modules of a root package
    ("cream_data/errors.py", "import cream_data.settings", "cream_data", "settings"),
    ("cream_train/precision.py", "import cream_train.train", "cream_train", "train"),
    ("cli/common.py", "from cli import main", "cli", "main"),
])
def test_a_new_import_cycle_breaks_the_no_cycle_contract(tmp_path, module, line, package, other):
    """A module that imports a sibling which (directly) imports it back: the acyclic_siblings contract fails and
    names the pair. Checked against the same copy before the import is planted, where that pair is not named."""
    tree = copy_of_the_tree(tmp_path)
    planted = Path(module).stem
    pair = {f".{planted}", f".{other}"}

    def named(stdout: str) -> list[str]:  # the lines "- .a -> .b (n imports)" of this very pair
        return [ln for ln in _cycle_lines(stdout, package) if set(ln[2:].split(" (")[0].split(" -> ")) == pair]

    before = lint_imports(tree)
    assert not named(before.stdout), before.stdout  # no cycle between these two yet
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    r = lint_imports(tree)
    assert r.returncode != 0, r.stdout
    broken = r.stdout[r.stdout.index("Broken contracts"):]
    assert NO_CYCLES in " ".join(broken.split()), broken
    assert len(named(broken)) == 1, broken


def _loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which of the heavy libraries it left in ``sys.modules``."""
    probe = f"""
import json, sys
def heavy():
    return [m for m in {HEAVY!r} if m in sys.modules]
result = {{}}
{code}
print(json.dumps(result))
"""
    r = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_import_cream_data_imports_no_torch():
    result = _loaded_after("import cream_data\nresult['import cream_data'] = heavy()")
    assert result == {"import cream_data": []}


def test_cream_help_imports_no_torch():
    commands = ["prompts", "sample", "label", "train", "run", "eval", "sql", "inspect", "publish"]
    code = f"""
import contextlib, io
from cli.main import main
for args in [["--help"]] + [[c, "--help"] for c in {commands!r}]:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
        except SystemExit:
            pass
    result["cream " + " ".join(args)] = heavy()
"""
    result = _loaded_after(code)
    assert len(result) == 1 + len(commands)
    assert {k: v for k, v in result.items() if v} == {}


def _string_tuples(tree) -> list[tuple[int, tuple[str, ...]]]:
    """(line, value) of every tuple/list literal of two or more plain strings in a module."""
    import ast

    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) >= 2 and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            found.append((node.lineno, tuple(e.value for e in node.elts)))
    return found


def test_vocabulary_lists_are_written_once():
    """A list of names that cream_data/vocab.py defines (tasks, methods, scopes, engines, scorer roles…) is not
    written out again anywhere in the library: every other module imports it."""
    import ast

    from cream_data import vocab

    names = {tuple(v): k for k, v in vars(vocab).items() if k.isupper() and isinstance(v, tuple) and len(v) >= 2
             and all(isinstance(x, str) for x in v)}
    assert {"TASKS", "SCOPES", "PAIR_POLICIES", "CONSISTENCY_MEASURES", "SCORER_ROLES", "TRAIN_METHODS"} <= set(
        names.values())
    repeats = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            if path.name == "vocab.py":
                continue
            for line, value in _string_tuples(ast.parse(path.read_text())):
                if value in names:
                    repeats.append(f"{path.relative_to(REPO)}:{line} repeats vocab.{names[value]}")
    assert not repeats, "\n".join(repeats)


def test_progress_counting_reports_running_totals():
    from cream_data.progress import counting

    calls = []
    tick = counting(lambda *a: calls.append(a), "scoring", 10)
    tick(4, 100)
    tick(6, 50)
    assert calls == [("scoring", 0, 10, 0), ("scoring", 4, 10, 100), ("scoring", 10, 10, 50)]
    counting(None, "x", 3)(1, 1)  # no callback: nothing to call, nothing fails


def test_no_progress_bar_is_drawn_by_the_library():
    """Progress is drawn by cli/progress.py only: no module of the library imports rich."""
    import ast

    users = []
    for pkg in ("schemas", "cream_data", "cream_train"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n == "rich" or n.startswith("rich.") for n in names):
                    users.append(str(path.relative_to(REPO)))
    assert not users, users


def test_the_wheel_lists_every_package():
    """A package folder missing from [tool.setuptools] packages is missing from a non-editable install (the wheel the
    GPU pack builds): every folder with an __init__.py under the root packages is listed, and nothing else."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for root in ("schemas", "cream_data", "cream_train", "cli")
               for p in (REPO / root).rglob("__init__.py")}
    assert listed == on_disk
