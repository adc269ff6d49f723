"""The probe's fixtures, built once under one folder (reused by a later probe with ``--world DIR``): tiny random
models of a real architecture (a policy, a second policy, a one-logit reward model and models broken in the ways a
role check must catch), and real outputs of every stage — prompts, responses (two samplings of the same prompts),
two labelings, a preferences table, an eval table and a finished one-iteration ``cream run``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.hostile.core import run_cream
from tests.support.runs import tiny_run_config, write_yaml

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data"
TOKENIZER_FILES = ("tokenizer", "special_tokens", "chat_template", "vocab", "merges")


@dataclass
class World:
    root: Path

    def __getattr__(self, name: str) -> Path:  # w.tiny, w.responses, … : the fixture folders
        return self.root / name.replace("_", "-")

    def copy(self, name: str, d: Path, as_name: str | None = None) -> Path:
        src, dst = getattr(self, name), d / (as_name or name.replace("_", "-"))
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        return dst


def _cream(root: Path, *args) -> None:
    r = run_cream(list(args), root, 1800)
    if r.code != 0:
        raise SystemExit(f"building the probe's world failed: cream {' '.join(map(str, args))}\n{r.err[-3000:]}")


def _models(root: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from tests.support.models import make_tiny_model

    make_tiny_model(root / "tiny", seed=0)
    make_tiny_model(root / "tiny-b", seed=1)
    rm = make_tiny_model(root / "rm", seed=5, num_labels=1)
    make_tiny_model(root / "rm2", seed=6, num_labels=2)
    no_tok = root / "no-tokenizer"
    shutil.copytree(root / "tiny", no_tok)
    for f in no_tok.iterdir():
        if f.name.startswith(TOKENIZER_FILES):
            f.unlink()
    small = AutoModelForSequenceClassification.from_pretrained(rm)
    small.resize_token_embeddings(small.config.vocab_size - 64)
    small.save_pretrained(root / "rm-small-vocab")
    for f in rm.iterdir():
        if f.name.startswith(TOKENIZER_FILES):
            shutil.copy(f, root / "rm-small-vocab" / f.name)
    short = root / "tiny-short"  # the same weights with a 64-position context
    shutil.copytree(root / "tiny", short)
    cfg = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 64}))


def finished_run_config(root: Path) -> dict:
    """The world's one-iteration run (tests/support/runs.py's tiny run): its run folder ``run`` beside the config."""
    return tiny_run_config(model=root / "tiny", iterations=1, seed=0, run_dir="run", sft={"limit": 8},
                           sample={"max_new_tokens": 8}, train={"warmup_ratio": 0.0, "batch_size": 4},
                           eval={"tasks": ["arc_easy"], "data_dir": DATA / "eval", "max_new_tokens": 4,
                                 "models": "last"})


def build(root: Path) -> World:
    """Build (or reuse: each piece is skipped when present) the world under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "tiny-short").is_dir():
        _models(root)
    steps = [
        ("prompts", ["prompts", DATA / "demo_prompts.jsonl", "--out", "prompts", "--limit", "4"]),
        ("prompts-gsm", ["prompts", DATA / "eval" / "gsm8k" / "test.jsonl", "--out", "prompts-gsm", "--limit", "3",
                         "--layout", "gsm8k"]),
        ("responses", ["sample", "prompts", "--out", "responses", "--model", "tiny", "--n", "3", "--max-new-tokens",
                       "8", "--batch-size", "4"]),
        ("responses-other", ["sample", "prompts", "--out", "responses-other", "--model", "tiny", "--n", "3",
                             "--max-new-tokens", "8", "--seed", "7", "--batch-size", "4"]),
        ("responses-gsm", ["sample", "prompts-gsm", "--out", "responses-gsm", "--model", "tiny", "--n", "3",
                           "--max-new-tokens", "8", "--batch-size", "4"]),
        ("labeled", ["label", "responses", "--out", "labeled", "--model", "tiny", "--prev-model", "tiny-b"]),
        ("labeled-other", ["label", "responses-other", "--out", "labeled-other", "--model", "tiny", "--prev-model",
                           "tiny-b"]),
        ("evaluated", ["eval", "--model", "tiny", "--out", "evaluated", "--tasks", "arc_easy", "--limit", "2",
                       "--data-dir", DATA / "eval", "--max-new-tokens", "4"]),
    ]
    for name, args in steps:
        if not (root / name).exists():
            _cream(root, *args)
    if not (root / "run" / "report").exists():
        write_yaml(root / "run.yaml", finished_run_config(root))
        _cream(root, "run", "run.yaml")
    return World(root)
