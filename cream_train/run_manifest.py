"""A run directory's ``manifest.json`` (stages with status, fingerprint, timings and outputs; models; versions),
and the helpers of the loop that do not depend on its stages."""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cream_data.tables import io


@dataclass
class Manifest:
    """RUN/manifest.json: stages (status, fingerprint, timings, outputs), versions, seeds; written atomically."""

    path: Path
    data: dict = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path) -> "Manifest":
        p = run_dir / "manifest.json"
        data = json.loads(p.read_text()) if p.exists() else {}
        data.setdefault("stages", {})
        data.setdefault("models", {})
        return cls(p, data)

    def save(self) -> None:
        io.atomic_write_json(self.path, self.data)

    def is_done(self, name: str, fp: str, outputs: list[Path]) -> bool:
        rec = self.data["stages"].get(name)
        return bool(rec and rec.get("status") == "done" and rec.get("fingerprint") == fp
                    and all(Path(o).exists() for o in outputs))

    def previous_fingerprint(self, name: str) -> str | None:
        rec = self.data["stages"].get(name)
        return rec.get("fingerprint") if rec else None


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
    """What `cream run` writes: a run directory with the loop's manifest.json (and config.yaml)."""
    mf = path / "manifest.json"
    if not (path.is_dir() and mf.is_file()):
        return False
    try:
        return isinstance(json.loads(mf.read_text()).get("stages"), dict)
    except (OSError, ValueError, AttributeError):
        return False
