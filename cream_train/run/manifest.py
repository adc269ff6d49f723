"""A run directory's ``manifest.json`` (stages with status, fingerprint, timings and outputs; models, the ones
carried forward; versions; how the run ended), and the helpers of the run that do not depend on its stages.

The manifest says what was done; what is on disk says whether it still is. :meth:`Manifest.decide` is the one place
that turns both into what becomes of a stage (:class:`cream_train.run.stage.Stage`) — the run executes by it,
``--plan`` prints it, the other machines of a run wait by it: a stage is done only when its record says so for these
inputs *and* its outputs are in place and whole (a model: config, weights as long as their headers say, tokenizer; a
table: complete by :func:`cream_data.tables.io.complete_parts`). What the run records goes through the manifest's
methods (``record_running``, ``record_done``, ``carry``, ``mark_stopped``, …), never by writing its dict; a plan and
the other machines open it read-only (``writable=False``). A manifest that cannot be read, or whose fields have the
wrong types, is refused with one line: nothing it says can be trusted."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cream_data.errors import CreamError
from cream_data.hashing import json_hash
from cream_data.jsonfile import read_json_object
from cream_data.tables import io
from cream_train.run.stage import Stage

FIX = "restore it, or start afresh in another run directory"
NOW = "%Y-%m-%dT%H:%M:%S"  # how the manifest writes a time


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
    """RUN/manifest.json: stages (status, fingerprint, timings, outputs), models, versions, seeds; written atomically
    by its methods. Opened not ``writable`` (a plan, another machine of the run), it keeps what the run would record
    in memory only — the stages that read it (a carried model's path) see it — and writes nothing."""

    path: Path
    data: dict = field(default_factory=dict)
    writable: bool = True

    @classmethod
    def open(cls, run_dir: Path, writable: bool = True) -> "Manifest":
        p = Path(run_dir) / "manifest.json"
        return cls(p, _read(p), writable)

    def save(self) -> None:
        if self.writable:
            io.atomic_write_json(self.path, self.data)

    def reload(self) -> None:
        """What the file holds now (another machine's manifest, read again on every look)."""
        fresh = _read(self.path)
        self.data.clear()
        self.data.update(fresh)

    # ------------------------------------------------------------------ the decision
    def decide(self, stage: Stage, *, outputs: list[Path] | None = None,
               reuse: Callable[[], tuple | None] | None = None) -> Decision:
        """What becomes of ``stage`` (its name and fingerprint) with its outputs (or ``outputs``: the same stage in
        another run); ``reuse()`` finds a ``--reuse-from`` run's finished copy (None: not looked for)."""
        name, fp = stage.name, stage.fingerprint
        outputs = list(stage.outputs if outputs is None else outputs)
        rec = self.data["stages"].get(name) or {}
        same = rec.get("fingerprint") == fp
        redone = rec.get("redone", 0) if same else 0
        problem = ""
        if same and rec.get("status") == "done":
            problem = self.outputs_problem(name, rec, outputs, stage.checkpoint)
            if not problem:
                return Decision("done", redone=redone)
        found = reuse() if reuse and outputs else None
        if found:
            return Decision("reuse", f"from {found[0]}", found, found[1].get("redone", 0))
        if same:
            return Decision("resume", problem, redone=redone + bool(problem))
        return Decision("stale" if rec else "to run")

    def outputs_problem(self, name: str, rec: dict, outputs: list[Path], checkpoint: bool) -> str:
        """Why a finished stage's outputs cannot be taken as they are ("" when they can): the record names other
        outputs, or one is missing or not whole (``checkpoint``: a model's checkpoint, else a table)."""
        run = self.path.parent
        expected = [Path(o).relative_to(run).as_posix() for o in outputs]
        if "outputs" in rec and [Path(o).as_posix() for o in rec["outputs"]] != expected:
            return f"{self.path}: {name} records its outputs as {rec['outputs']}, expected {expected}"
        for o in outputs:
            problem = output_problem(Path(o), checkpoint)
            if problem:
                return problem
        return ""

    # ------------------------------------------------------------------ a stage's record
    def record_running(self, name: str, fp: str, inputs: dict, redone: int) -> None:
        """Stage ``name`` starts with inputs ``inputs`` (fingerprint ``fp``; the upstream fingerprints recorded)."""
        self.data["stages"][name] = {"status": "running", "fingerprint": fp, "started": time.strftime(NOW),
                                     "inputs": {k: v for k, v in inputs.items() if k.endswith("_fp")},
                                     **({"redone": redone} if redone else {})}
        self.save()

    def record_done(self, name: str, seconds: float, outputs: list[Path], info: dict) -> None:
        """Stage ``name`` (recorded running) finished in ``seconds``, its ``outputs`` in place; ``info``: its record."""
        self.data["stages"][name].update(status="done", finished=time.strftime(NOW), seconds=round(seconds, 2),
                                         outputs=[str(Path(o).relative_to(self.path.parent)) for o in outputs], **info)
        self.save()

    def restore(self, name: str, record: dict | None) -> None:
        """Stage ``name``'s earlier ``record`` back (none: no record), with the outputs it describes."""
        self.data["stages"][name] = record
        self.data["stages"] = {k: v for k, v in self.data["stages"].items() if v is not None}
        self.save()

    def record_reused(self, name: str, record: dict, source: Path) -> None:
        """Stage ``name`` taken from the run ``source``, whose ``record`` it was."""
        self.data["stages"][name] = {**record, "reused_from": str(source)}
        self.save()

    def record_carried(self, name: str, record: dict) -> None:
        """The evaluation ``name`` of a model carried forward: ``record``, that of the model it copies."""
        self.data["stages"][name] = record
        self.save()

    # ------------------------------------------------------------------ models carried forward
    def carried_from(self, model: str) -> str | None:
        """The model ``model`` (``M<k>``) copies when a pair-less iteration carried it forward, else None."""
        return self.data.get("carried", {}).get(model)

    def carry(self, model: str, source: str, path: str) -> None:
        """``model`` is ``source`` (at ``path``) carried forward: a pair-less iteration trained nothing."""
        self.data["models"][model] = path
        self.data.setdefault("carried", {})[model] = source
        self.save()

    def uncarry(self, model: str) -> None:
        """``model`` is trained (again): no longer a copy (written with the next record)."""
        self.data["models"].pop(model, None)
        self.data.get("carried", {}).pop(model, None)

    # ------------------------------------------------------------------ the run
    def forget_all(self) -> None:
        """Every stage and model forgotten (``--no-resume``: each stage then replaces its outputs as it runs)."""
        self.data["stages"], self.data["models"] = {}, {}
        self.data.pop("carried", None)
        self.save()

    def begin(self, **header) -> None:
        """A run starts: its settings' summary (method, versions, …); the marks of how the last one ended go
        (``finished`` comes back when this one ends: cream publish reads it)."""
        self.data.update(header)
        for mark in ("stopped", "finished"):
            self.data.pop(mark, None)
        self.save()

    def mark_stopped(self, error: str) -> None:
        """The run stopped with ``error``: the other machines of the run stop waiting."""
        self.data["stopped"] = {"time": time.time(), "error": error}
        self.save()

    def mark_finished(self) -> None:
        self.data["finished"] = time.strftime(NOW)
        self.save()


def _read(path: Path) -> dict:
    """A manifest file's checked content (an empty manifest when there is none)."""
    data = _checked(path, read_json_object(path, what="run manifest", fix=FIX)) if path.exists() else {}
    data.setdefault("stages", {})
    data.setdefault("models", {})
    return data


def output_problem(path: Path, checkpoint: bool) -> str | None:
    """Why a stage's output ``path`` (``checkpoint``: a model's checkpoint, else a table) is not in place and whole;
    None when it is."""
    if checkpoint:
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
