"""Lineage of a trained checkpoint (``cream_lineage.json``) and the staged, atomic output folder.

Lineage says where a model came from: parent model, a fingerprint of the training data, method, resolved
config, final metrics and library versions, so a run can be audited or reproduced.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from cream_data.hashing import files_hash, table_hash
from cream_data.tables import io
from cream_data.errors import CreamError

LINEAGE_FILE = "cream_lineage.json"
CONFIG_FILE = "cream_train_config.json"
LIBRARIES = ("cream", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "pyarrow")


def data_fingerprint(path: str | Path | None, table=None) -> str:
    """sha256 over the bytes of a table's Parquet file, or of a folder's complete parts in manifest order;
    for a source that is neither (a JSONL file through a loader is a file; a Hub id or a published dataset is not:
    ``path`` None), over ``table``'s Arrow IPC stream."""
    path = Path(path) if path is not None else None
    if path is None or not path.exists():
        return "sha256:" + table_hash(table, n=None)
    return "sha256:" + files_hash([path] if path.is_file() else io.complete_parts(path)[0], n=None)


def library_versions() -> dict[str, str | None]:
    from cream_data import installed_version

    return {name: installed_version(name) for name in LIBRARIES}


def lineage(*, parent_model: str, data: str, fingerprint: str, stage: str, method: str | None, config: dict,
            metrics: dict, extra: dict | None = None) -> dict[str, Any]:
    return {
        "parent_model": parent_model,
        "data": {"source": str(data), "fingerprint": fingerprint},
        "stage": stage,
        "method": method,
        "config": config,
        "metrics": metrics,
        "versions": library_versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }


def is_checkpoint_output(path: Path) -> bool:
    """What `cream train` writes: a checkpoint folder with its lineage or resolved training config."""
    return path.is_dir() and ((path / LINEAGE_FILE).is_file() or (path / CONFIG_FILE).is_file())


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole checkpoint (None when it is): config.json and the tokenizer's JSON files read as JSON
    objects, tokenizer files are there, and so are the weights (``model.safetensors``, or every file its index names),
    each ``*.safetensors`` file as long as its header says. What a resumable runner asks before it calls a training
    done; reads no weights."""
    path = Path(path)
    if not path.is_dir():
        return f"{path}: missing"
    try:
        _check_checkpoint(path)
    except CreamError as e:
        return str(e)
    return None


def _check_checkpoint(path: Path) -> None:
    from cream_data.engines.model_roles import check_weights  # the role check's own: files only, no torch
    from cream_data.engines.model_refs import ModelRef
    from cream_data.engines.model_roles import TOKENIZER_FILES
    from cream_data.jsonfile import read_json_object

    fix = "the checkpoint is incomplete; its stage trains it again"
    if not (path / "config.json").is_file():
        raise CreamError(f"{path / 'config.json'}: missing")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (path / name).is_file():
            read_json_object(path / name, what=name, fix=fix)
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise CreamError(f"{path}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES[:2])}, …)")
    index = path / "model.safetensors.index.json"
    weights = ["model.safetensors"]
    if index.is_file():
        weight_map = read_json_object(index, what="weights index", fix=fix).get("weight_map")
        if not (isinstance(weight_map, dict) and all(isinstance(f, str) for f in weight_map.values())):
            raise CreamError(f"{index}: corrupt weights index (no 'weight_map' of file names); {fix}")
        weights = sorted(set(weight_map.values()))
    for name in weights:
        if not (path / name).is_file():
            raise CreamError(f"{path / name}: missing (the model's weights)")
    check_weights(ModelRef(str(path), str(path), "local"), "model")


def check_output(out: str | Path, overwrite: bool) -> Path:
    """Before any work: refuse a path holding anything but an earlier `cream train` checkpoint, and refuse that
    too unless ``overwrite`` (which then replaces it, atomically, once the new one is saved)."""
    from cream_data.tables.outputs import guard

    out = guard(out, "train", is_checkpoint_output, overwrite=overwrite, what="checkpoint")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CreamError(f"--out {out}: holds an earlier `cream train` checkpoint; pass --overwrite to replace it")
    return out


def staging_dir(out: Path) -> Path:
    """A fresh sibling ``DIR.tmp-…`` to train into; the same name on every rank of a distributed run."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=not torch.cuda.is_available())  # as TrainingArguments(use_cpu=...) will set it up
    name = [f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"]
    if state.num_processes > 1:
        broadcast_object_list(name, from_process=0)
    tmp = out.parent / name[0]
    if state.is_main_process:
        _remove_stale_staging(out)
        tmp.mkdir(parents=True, exist_ok=False)
    state.wait_for_everyone()
    return tmp


def _remove_stale_staging(out: Path) -> None:
    """Staging folders of ``out`` left by a training that was killed (``kill -9`` runs no clean-up), a checkpoint's
    worth of disk each. No live training writes them: `cream train` holds ``out``'s lock and `cream run` its run
    directory's (a library caller must not train two models into one ``out`` at once)."""
    import shutil

    for old in out.parent.glob(f".{out.name}.tmp-*"):
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def publish(tmp: Path, out: Path) -> None:
    """Move the finished staging folder into place, replacing an older output only now that the new one is whole."""
    from cream_data.tables.io import replace_folder

    replace_folder(tmp, out)
