"""A run directory's ``manifest.json`` (stages with status, fingerprint, timings and outputs; models; versions),
and the helpers of the loop that do not depend on its stages.

The manifest says what was done; what is on disk says whether it still is. :meth:`Manifest.decide` is the one place
that turns both into what becomes of a stage — the loop runs by it, ``--plan`` prints it, the other machines of a
run wait by it: a stage is done only when its record says so for these inputs *and* its outputs are in place and
whole (a model: config, weights as long as their headers say, tokenizer; a table: complete by
:func:`cream_data.tables.io.complete_parts`). A manifest that cannot be read, or whose fields have the wrong types,
is refused with one line: nothing it says can be trusted."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cream_data.errors import CreamError
from cream_data.hashing import json_hash
from cream_data.jsonfile import read_json_object
from cream_data.tables import io

FIX = "restore it, or start afresh in another run directory"
MODEL_STAGES = re.compile(r"(train-M\d+|future-train-\d+)")  # their output is a checkpoint; every other one a table


@dataclass(frozen=True)
class Decision:
    """What becomes of a stage: ``done`` (skipped), ``reuse`` (linked from ``source``, a ``--reuse-from`` run:
    (run, its record, its outputs)), ``resume`` (same inputs, not finished or no longer whole: what is there is
    kept), ``stale`` (other inputs: redone) or ``to run``; ``note`` says why (a damaged output) or from where.

    ``redone``: how often the stage was (or now is) redone because its finished outputs were damaged. Its new outputs
    need not equal the old ones (training is not bit-reproducible), so the fingerprint the stages downstream read
    (:meth:`chained`) changes with it, and they are redone too."""

    status: str
    note: str = ""
    source: tuple[Path, dict, list[Path]] | None = None
    redone: int = 0

    def chained(self, fp: str) -> str:
        """The fingerprint of a stage with inputs ``fp`` as the stages downstream read it."""
        return fp if not self.redone else json_hash([fp, {"redone": self.redone}])


@dataclass
class Manifest:
    """RUN/manifest.json: stages (status, fingerprint, timings, outputs), versions, seeds; written atomically."""

    path: Path
    data: dict = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path) -> "Manifest":
        p = Path(run_dir) / "manifest.json"
        data = _checked(p, read_json_object(p, what="run manifest", fix=FIX)) if p.exists() else {}
        data.setdefault("stages", {})
        data.setdefault("models", {})
        return cls(p, data)

    def save(self) -> None:
        io.atomic_write_json(self.path, self.data)

    def decide(self, name: str, fp: str, outputs: list[Path],
               reuse: Callable[[], tuple | None] | None = None) -> Decision:
        """What becomes of stage ``name`` with inputs ``fp`` and ``outputs``; ``reuse()`` finds a ``--reuse-from``
        run's finished copy (None: not looked for)."""
        rec = self.data["stages"].get(name) or {}
        same = rec.get("fingerprint") == fp
        redone = rec.get("redone", 0) if same else 0
        problem = ""
        if same and rec.get("status") == "done":
            problem = self.outputs_problem(name, rec, outputs)
            if not problem:
                return Decision("done", redone=redone)
        found = reuse() if reuse and outputs else None
        if found:
            return Decision("reuse", f"from {found[0]}", found, found[1].get("redone", 0))
        if same:
            return Decision("resume", problem, redone=redone + bool(problem))
        return Decision("stale" if rec else "to run")

    def outputs_problem(self, name: str, rec: dict, outputs: list[Path]) -> str:
        """Why a finished stage's outputs cannot be taken as they are ("" when they can): the record names other
        outputs, or one is missing or not whole."""
        run = self.path.parent
        expected = [Path(o).relative_to(run).as_posix() for o in outputs]
        if "outputs" in rec and [Path(o).as_posix() for o in rec["outputs"]] != expected:
            return f"{self.path}: {name} records its outputs as {rec['outputs']}, expected {expected}"
        for o in outputs:
            problem = output_problem(name, Path(o))
            if problem:
                return problem
        return ""


def output_problem(name: str, path: Path) -> str | None:
    """Why stage ``name``'s output ``path`` is not in place and whole; None when it is."""
    if MODEL_STAGES.fullmatch(name):
        from cream_train.lineage import checkpoint_problem

        return checkpoint_problem(path)
    return table_problem(path)


def table_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete table whose manifest its parts bear out (:func:`io.complete_parts`); None when
    it is."""
    try:
        if not path.exists():
            return f"{path}: missing"
        io.complete_parts(path) if path.is_dir() else io.part_rows(path)
    except CreamError as e:
        return str(e)
    return None


def _checked(path: Path, data: dict) -> dict:
    """``data`` when its fields have the types the loop reads; a one-line CreamError naming the first that does not."""
    def refuse(what: str) -> CreamError:
        return CreamError(f"{path}: corrupt run manifest ({what}); {FIX}")

    stages = data.get("stages")
    if not isinstance(stages, dict):
        raise refuse(f"'stages' is {_shown(stages)}, expected an object of stage records")
    for name, rec in stages.items():
        if not isinstance(rec, dict):
            raise refuse(f"stage {name} is {_shown(rec)}, expected an object")
        for key in ("status", "fingerprint"):
            if not isinstance(rec.get(key), str):
                raise refuse(f"stage {name}: '{key}' is {_shown(rec.get(key))}, expected a string")
        outs = rec.get("outputs", [])
        if not (isinstance(outs, list) and all(isinstance(o, str) for o in outs)):
            raise refuse(f"stage {name}: 'outputs' is {_shown(outs)}, expected a list of paths")
        redone = rec.get("redone", 0)
        if not (isinstance(redone, int) and not isinstance(redone, bool) and redone >= 0):
            raise refuse(f"stage {name}: 'redone' is {_shown(redone)}, expected a count")
    for key in ("models", "carried"):
        value = data.get(key, {})
        if not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
            raise refuse(f"'{key}' is {_shown(value)}, expected an object of model names")
    for k, v in data.get("carried", {}).items():  # a pair-less iteration t carries M_t forward as M_{t+1}
        m = re.fullmatch(r"M(\d+)", k)
        if not (m and int(m[1]) >= 2 and v == f"M{int(m[1]) - 1}"):
            raise refuse(f"'carried' says {k} is {v}, expected M<k+1>: M<k> for an iteration k >= 1")
    return data


def _shown(value) -> str:
    return json.dumps(value)[:40]


def link_outputs(srcs: list[Path], outputs: list[Path]) -> None:
    """Each ``outputs[i]`` replaced by a hard-linked copy of ``srcs[i]`` (a file or a folder), built beside it and
    moved into place, so an interruption leaves either the old output or the whole new one."""
    for src, dst in zip(srcs, outputs):
        dst = Path(dst)
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        tmp = dst.with_name(f".{dst.name}.reuse-tmp")
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        tmp.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, tmp, copy_function=link_or_copy)
        else:
            link_or_copy(src, tmp)
        os.replace(tmp, dst)


def link_or_copy(src, dst) -> None:
    """Hard link (no extra disk for checkpoints), else copy (another file system)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def versions() -> dict:
    from cream_data import installed_version

    out = {"python": platform.python_version()}
    for pkg in ("cream", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "pyarrow"):
        out[pkg] = installed_version(pkg)
    return out


def is_run_output(path: Path) -> bool:
    """What `cream run` writes: a run directory with the loop's manifest.json, or with a manifest.json that is
    damaged beside the run's config.yaml (the loop then says what is wrong with it, and writes nothing)."""
    mf = path / "manifest.json"
    if not (path.is_dir() and mf.is_file()):
        return False
    try:
        return isinstance(json.loads(mf.read_text()).get("stages"), dict) or (path / "config.yaml").is_file()
    except (OSError, ValueError, AttributeError):
        return (path / "config.yaml").is_file()
