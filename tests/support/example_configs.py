"""The example run configs offline: examples/paper.yaml, examples/scale/*.yaml and examples/study-gpu/*.yaml read
their D_U's task questions (``{task, split: train}`` entries) from the Hub; the tests read them from the shared data
folder instead (``prompts.data_dir``), which holds every task's train questions but SIQA's (only its train labels),
so the SIQA entry is left out: the D_U of those runs offline is D_S's prompts + the ARC-Easy, ARC-Challenge,
OpenBookQA and GSM8K train files, 16,597 prompts.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HUB_ONLY = "siqa"  # the task whose train questions the shared data folder lacks


def local_prompts(config: Path, data: Path) -> dict:
    """The ``prompts`` settings that make ``config`` read its task entries from the folder ``data`` (without the
    SIQA entry): an override for ``load_run_config(config, {"prompts": local_prompts(config, data)})``."""
    entries = yaml.safe_load(config.read_text(encoding="utf-8"))["prompts"]["sources"]
    assert any(e.get("task") == HUB_ONLY for e in entries), f"{config}: no {HUB_ONLY} entry to leave out"
    return {"data_dir": str(data), "sources": [e for e in entries if e.get("task") != HUB_ONLY]}


def offline_copy(config: Path, folder: Path, data: Path) -> Path:
    """A copy of the run config ``config`` in ``folder`` (same file name) that reads its task prompts from ``data``
    (:func:`local_prompts`), every relative path written absolute against ``config``'s folder, so `cream run COPY
    --check` (or ``--plan``) validates what ``config`` says offline."""
    from cream_train.run.config import RunConfig
    from cream_train.run.config_paths import path_keys

    raw, base = yaml.safe_load(config.read_text(encoding="utf-8")), config.parent
    for key, kind in path_keys(RunConfig).items():
        *sections, name = key.split(".")
        holder = raw
        for section in sections:
            holder = holder.get(section) if isinstance(holder, dict) else None
        value = holder.get(name) if isinstance(holder, dict) else None
        if kind == "sources" and isinstance(value, list):
            for e in value:
                if isinstance(e, dict) and isinstance(e.get("source"), str) and (base / e["source"]).exists():
                    e["source"] = str((base / e["source"]).resolve())
        elif isinstance(value, str) and (kind == "path" or (base / value).exists()):
            holder[name] = str((base / value).resolve())
    raw["prompts"].update(local_prompts(config, data))
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / config.name
    copy.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return copy
