"""The label stage's per-model score cache: one value per response under one model (a log-prob, or a reward
model's reward), kept in ``OUT/logps/<model>/`` (``OUT/rm/<model>/``) by the model's *content* identity and the
dtype it was scored in.

Stored values are reused (a rerun after a crash, or re-pairing, scores nothing twice); the rest is scored and written
part by part every ``flush_rows`` rows, so a killed run resumes where it stopped. A checkpoint retrained in place at
the same path has another content id: its cache is emptied and it is scored again; so is a cache scored in another
dtype (bf16 log-probs are not fp32 ones: the stored values are the next training's reference).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from cream_data.errors import CreamError
from cream_data.tables import io
from cream_data.tables.shard import Shard

MODEL_ID_FILE = "_model_id.json"


@dataclass(frozen=True)
class Cache:
    """What one model's cache folder holds: its table kind, the value column, what it calls the values."""

    kind: str
    column: str
    what: str


LOGPS = Cache("logps", "logp", "log-probs")
RM_REWARDS = Cache("rm_rewards", "reward", "rewards")


def slug(name: str) -> str:
    """A model's cache folder name: the tail of its name and a hash of the whole."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", name.rstrip("/").split("/")[-1])[-40:]
    return f"{tail}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def cached_scores(cache: Cache, ref, responses: pa.Table, tokenized, *, folder: Path, shard: Shard | None,
                  template_hash: str, load_scorer, flush_rows: int, dtype: str = "fp32", progress=None,
                  log=None) -> tuple[np.ndarray, np.ndarray, bool]:
    """One value per row of ``responses`` under the model ``ref`` run in ``dtype``: read from ``folder`` where
    stored, the rest scored by ``load_scorer()`` (called only if something is left) on the ``tokenized`` distinct
    items, written part by part every ``flush_rows`` rows (this process's ``shard``'s parts; the rows' tokenizer
    and chat template are ``template_hash``). ``progress(rows, tokens)`` is told of each batch, ``log`` of a cache
    that could not be used.

    Returns (value per row, n_tokens per row, scored_now)."""
    from cream_data.engines import models

    model_id = cache_id(models.content_id(ref), dtype)
    forget_if_changed(folder, ref, model_id, cache.what, log)
    store = _Store(cache=cache, ref=ref, responses=responses, tokenized=tokenized, folder=folder, shard=shard,
                   th=template_hash)
    store.load(log)
    scored_now = not store.done.all()
    scorer = load_scorer() if scored_now else None
    writer = io.PartWriter(folder, cache.kind, shard=shard)  # the folder is made only once the model has loaded
    mark(folder, ref, model_id)
    if scored_now:
        store.score(scorer, writer, flush_rows, progress)
        del scorer
    store.finish(writer)
    inverse = tokenized.inverse
    return store.values[inverse], tokenized.n_tokens[inverse].astype(np.int32), scored_now


@dataclass
class _Store:
    """The values of one model's cache while it is read, completed and written."""

    cache: Cache
    ref: object
    responses: pa.Table
    tokenized: object
    folder: Path
    shard: Shard | None
    th: str
    stored_rows: set = field(default_factory=set)

    def __post_init__(self):
        n_items = len(self.tokenized.ids)
        self.values = np.full(n_items, np.nan)
        self.done = np.zeros(n_items, dtype=bool)
        self.row_keys = [f"{p}\x00{i}" for p, i in zip(self.responses["prompt_id"].to_pylist(),
                                                        self.responses["response_idx"].to_pylist())]
        self.rows_of = [[] for _ in range(n_items)]
        for j, it in enumerate(self.tokenized.inverse):
            self.rows_of[it].append(j)

    def load(self, log=None) -> None:
        """Take every stored value of a row of this table that is still its value: a part that cannot be read is
        removed (its rows are scored again), and a value stored with another token count than the row has now (another
        response at that prompt_id and response_idx) is not taken."""
        if not self.folder.is_dir():
            return
        writer = io.PartWriter(self.folder, self.cache.kind, shard=self.shard)
        for note in writer.drop_unreadable():
            if log:
                log(f"[yellow]{note}[/]")
        cached = writer.existing()
        if cached is None:
            return
        if set(cached["template_hash"].to_pylist()) - {self.th}:
            raise CreamError(f"{self.folder}: cached {self.cache.what} were computed under another tokenizer/template; "
                             "remove it")
        pos = {k: j for j, k in enumerate(self.row_keys)}
        keys = [f"{p}\x00{i}" for p, i in zip(cached["prompt_id"].to_pylist(), cached["response_idx"].to_pylist())]
        for key, v, n in zip(keys, cached[self.cache.column].to_pylist(), cached["n_tokens"].to_pylist()):
            j = pos.get(key)
            it = self.tokenized.inverse[j] if j is not None else None
            if it is not None and n == self.tokenized.n_tokens[it]:
                self.values[it] = v
                self.done[it] = True
                self.stored_rows.add(key)

    def part(self, rows: list[int]) -> pa.Table:
        items = self.tokenized.inverse[rows]
        sub = self.responses.take(pa.array(rows, pa.int64()))
        return pa.table({
            "prompt_id": sub["prompt_id"], "response_idx": sub["response_idx"],
            "model": pa.array([self.ref.name] * len(rows), pa.string()),
            "template_hash": pa.array([self.th] * len(rows), pa.string()),
            self.cache.column: pa.array(np.asarray(self.values[items], dtype=np.float64)),
            "n_tokens": pa.array(np.asarray(self.tokenized.n_tokens[items], dtype=np.int32)),
        })

    def score(self, scorer, writer, flush_rows: int, progress) -> None:
        """Score the items not stored, writing a part whenever ``flush_rows`` rows are buffered."""
        buffer: list[int] = []

        def flush():
            if buffer:
                rows = [j for it in buffer for j in self.rows_of[it]]
                writer.write(self.part(rows))
                self.stored_rows.update(self.row_keys[j] for j in rows)
                buffer.clear()

        def on_batch(items, v):
            self.values[items] = v
            buffer.extend(int(i) for i in items)
            if progress:
                progress(len(items), int(self.tokenized.n_tokens[items].sum()))
            if sum(len(self.rows_of[i]) for i in buffer) >= flush_rows:
                flush()

        scorer.score(self.tokenized, todo=~self.done, on_batch=on_batch)
        flush()

    def finish(self, writer) -> None:
        """Rows whose item is done but that were not stored (a duplicate of a stored item), then the manifest."""
        missing = [j for j, k in enumerate(self.row_keys) if k not in self.stored_rows]
        if missing:
            writer.write(self.part(missing))
        writer.finish({"model": self.ref.name, "template_hash": self.th})


def cache_id(content_id: str, dtype: str) -> str:
    """What a cache's values belong to: the model's content and the dtype it ran in (fp32, the reference numerics,
    adds nothing, so caches written before dtypes were recorded stay valid)."""
    return content_id if dtype == "fp32" else f"{content_id}+{dtype}"


def forget_if_changed(folder: Path, ref, model_id: str, what: str, log=None) -> None:
    """The cache belongs to the model's content, not its path: a checkpoint retrained in place at the same path
    invalidates every stored value, so the folder is emptied and the model scored again."""
    marker = folder / MODEL_ID_FILE
    if folder.is_dir() and any(folder.iterdir()):
        stored = None
        if marker.is_file():
            try:
                stored = json.loads(marker.read_text()).get("model_id")
            except (OSError, ValueError, AttributeError):
                stored = None
        if stored == model_id:
            return
        if log:
            log(f"[yellow]{ref.name} changed since its {what} were cached in {folder} "
                f"(content id and dtype {stored} -> {model_id}): scoring it again[/]")
        shutil.rmtree(folder)


def mark(folder: Path, ref, model_id: str) -> None:
    if not (folder / MODEL_ID_FILE).is_file():
        io.atomic_write_json(folder / MODEL_ID_FILE, {"model": ref.name, "model_id": model_id})
