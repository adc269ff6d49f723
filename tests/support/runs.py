"""One tiny `cream run` config, for every test and benchmark that needs a run.

:func:`tiny_run_config` is the mapping: the tiny model's sizes (an SFT on 16 demo examples, 4 prompts an iteration,
3 responses of at most 10 tokens, one epoch of DPO, 2 items of two evaluation tasks), changed by overrides given as
nested mappings, ``tiny_run_config(sample={"n": 2}, iterations=1)``: a mapping merges into its section, any other
value replaces the key, and :data:`DEFAULT` removes a key (the run then takes cream's default). :func:`write_yaml`
writes a mapping as the YAML file users write, and :func:`write_tiny_run_config` both, beside the run it names.

The model defaults to the embedded model's alias, which `cream run --check` and `--plan` resolve without loading;
a test that runs passes ``model=`` (the tiny random model). ``eval.data_dir`` is not set: a run that evaluates passes
the benchmark data folder (the ``shared_data`` fixture).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from tests.support import DEMO_DATA

ALIAS = "smollm2-135m-instruct"  # the embedded model: `--check` and `--plan` read nothing of it (fast)


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()  # an override that removes the key: cream's own default applies


def _tiny() -> dict:
    return {
        "model": ALIAS, "method": "cream", "iterations": 2,
        "sft": {"data": str(DEMO_DATA / "demo_sft.jsonl"), "lr": 1.0e-3, "epochs": 1, "batch_size": 4, "limit": 16},
        "prompts": {"source": str(DEMO_DATA / "demo_prompts.jsonl"), "per_iteration": 4},
        "sample": {"n": 3, "max_new_tokens": 10, "batch_size": 4},
        "label": {"batch_size": 8, "judge_max_new_tokens": 6},
        "train": {"lr": 1.0e-3, "epochs": 1, "batch_size": 2},
        "eval": {"tasks": ["arc_easy", "gsm8k"], "limit": 2, "max_new_tokens": 6, "batch_size": 4},
    }


def _plain(value):
    """``value`` as YAML holds it: paths as strings, mappings and lists copied."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _apply(config: dict, overrides: Mapping) -> None:
    """``overrides`` applied to ``config`` in place: a mapping merges into the mapping under its key (a new one when
    there is none), :data:`DEFAULT` removes the key, anything else replaces it."""
    for key, value in overrides.items():
        if value is DEFAULT:
            config.pop(key, None)
        elif isinstance(value, Mapping):
            if not isinstance(config.get(key), dict):
                config[key] = {}
            _apply(config[key], value)
        else:
            config[key] = _plain(value)


def tiny_run_config(*layers: Mapping, **overrides) -> dict:
    """The tiny run's config with each of ``layers``, then ``overrides``, applied in turn (a mapping merges into the
    mapping it names, at any depth; any other value replaces the key; :data:`DEFAULT` removes it). Paths become
    strings. A new mapping each call."""
    config = _tiny()
    for layer in (*layers, overrides):
        _apply(config, layer)
    return config


def write_yaml(path: Path, config: Mapping, *, text: str = "") -> Path:
    """``config`` as a YAML file at ``path`` (block style, keys in their order, non-ASCII as typed, as `cream run`
    saves ``RUN/config.yaml``), then ``text`` as typed: the lines a mapping cannot hold (a timestamp, an integer of
    5,000 digits, a key given twice). An empty ``config`` writes ``text`` alone. Its folder is made."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True) if config else "") + text)
    return path


def write_tiny_run_config(folder: Path, *layers: Mapping, name: str = "run", text: str = "", **overrides) -> Path:
    """``FOLDER/NAME.yaml``: :func:`tiny_run_config` of ``layers`` and ``overrides``, its ``run_dir`` ``FOLDER/NAME``
    unless they set one, then ``text`` (:func:`write_yaml`)."""
    folder = Path(folder)
    return write_yaml(folder / f"{name}.yaml", tiny_run_config({"run_dir": folder / name}, *layers, **overrides),
                      text=text)


def finished_up_to(run: Path, stages: tuple[str, ...], dest: Path) -> Path:
    """``dest``: ``run`` as it stood when ``stages`` had finished, before the next began (their records and outputs,
    hard-linked): `cream run --reuse-from DEST` links those stages (same fingerprints) and computes the rest."""
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.pop("finished")
    manifest["stages"] = {name: manifest["stages"][name] for name in stages}
    for out in (o for rec in manifest["stages"].values() for o in rec["outputs"]):
        shutil.copytree(run / out, dest / out, copy_function=os.link)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest
