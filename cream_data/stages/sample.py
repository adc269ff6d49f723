"""Step 1 of a CREAM iteration: draw ``N`` responses per prompt from the current model.

    responses = { (x, i, y_i) : x in prompts, i = 0 … N-1, y_i ~ pi_{M_t}(. | x) }

with the chat template applied, temperature ``T`` and nucleus ``top_p`` (paper: N = 5, T = 0.8, p = 0.95,
768 new tokens). The result is a ``responses`` table written to a folder in parts as it goes.

Reproducibility is built on a *batch plan* that depends only on the input and the config, never on
which process runs it or how often it was interrupted:

1. prompts are sorted by templated length (longest first; ties by ``prompt_id``) and cut into batches of
   ``batch_size`` prompts, so padding is small and a batch's composition is fixed;
2. every prompt gets a seed ``s(x) = H(seed, prompt_id)``; an engine derives its randomness from the
   seeds of the batch it is given (the hf engine seeds one generator per batch; vLLM seeds each request);
3. shard ``i`` of ``k`` takes batches ``j`` with ``j mod k = i``, and a rerun skips batches already written.

So a batch is always computed from the same prompts, padding and seed: resumed and sharded runs give
exactly the rows of one uninterrupted run (same machine, same thread count: float reductions are only
reproducible for identical kernels). Each part holds whole batches, hence whole prompts, and is written
atomically; a ``kill -9`` loses at most the batches since the last part.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

import schemas
from cream_data.tables import io
from cream_data.engines.base import Generation, SamplingEngine, plan_batches, prompt_seed
from cream_data.errors import CreamError, missing_package
from cream_data.tables.outputs import check_resume, guard, has_table, locked
from cream_data.tables.shard import Shard, split_shard
from cream_data.progress import Progress
from cream_data.stages.sample_config import SampleConfig

# What an engine provides (Conversation … SamplingEngine) lives in engines/base.py: an engine never imports a stage.
# The settings live in sample_config.py (imported by `cream --help`).
logger = logging.getLogger("cream.sample")
WHAT = "sampling"  # the name of its progress
PART_SECONDS = 300.0  # also flush a part after this long, so a slow CPU run loses at most minutes to a crash
CONFIG_FILE = "_sample_config.json"  # written before the first part: lets a rerun check it resumes the same run


@dataclass(frozen=True)
class SampleSummary:
    out: Path
    prompts: int  # prompts this process is responsible for (its shard)
    prompts_sampled: int  # sampled in this call
    prompts_skipped: int  # already on disk from an earlier, interrupted call
    rows: int  # responses on disk for this shard
    tokens: int  # tokens generated in this call
    finish_reasons: dict = field(default_factory=dict)  # counts in this call
    seconds: float = 0.0  # the whole call, model loading included
    generate_seconds: float = 0.0  # inside the engine's generate: the basis of tokens/s
    shard: Shard | None = None  # this process's shard where the work is split, else None
    dtype: str = ""  # the dtype the engine ran in (bf16, fp32, …); "" when nothing was sampled in this call
    prompts_too_long: int = 0  # skipped: templated prompt + max_new_tokens beyond the model's context (all shards)
    notes: tuple[str, ...] = ()  # what the user should know (printed as warnings by `cream sample`)




# ---------------------------------------------------------------------------- the batch plan


def shard_batches(batches: list[list[int]], shard: tuple[int, int] | None) -> list[list[int]]:
    """Batch ``j`` belongs to shard ``j mod k``: disjoint, covering, and balanced in length."""
    split = split_shard(shard)
    return batches if split is None else batches[split.index::split.count]


def fingerprint(table: pa.Table) -> str:
    """Content hash of a prompts table (ids and conversations, in order)."""
    h = hashlib.sha256()
    for pid, conv in zip(table.column("prompt_id").to_pylist(), table.column("prompt").to_pylist()):
        h.update(json.dumps([pid, conv], ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- inputs and the output folder
def _load_prompts(prompts: str | Path | pa.Table) -> tuple[pa.Table, str]:
    if isinstance(prompts, pa.Table):
        from cream_data.tables.validate import check

        check(prompts, "prompts", "prompts table")
        return prompts, "<table>"
    return io.read_table(prompts, "prompts"), str(prompts)


def _check_out(out: Path, record: dict, overwrite: bool) -> None:
    """Refuse to mix runs: an existing folder must hold this very run (same settings, same input)."""
    if overwrite or not out.exists():
        return
    if not out.is_dir():
        raise CreamError(f"--out {out}: is a file; expected a folder for the responses table")

    def differences(old: dict) -> list[str]:
        detail = []
        for k in ("identity", "input_fingerprint", "shards"):
            if old.get(k) == record[k]:
                continue
            if k == "identity":
                detail += [f"the model at {record[k]['model']} changed since (content id {old[k].get(f)} -> {v})"
                           if f == "model_id" else f"{f} {old[k].get(f)!r} -> {v!r}"
                           for f, v in record[k].items() if old[k].get(f) != v]
            else:
                detail.append(f"{k} {old.get(k)!r} -> {record[k]!r}")
        return detail

    check_resume(out, CONFIG_FILE, record["identity"], overwrite, what="a sampling run", command="cream sample",
                 label="sampling settings", differences=differences)


def is_sample_output(path: Path) -> bool:
    """What `cream sample` writes: a responses table folder (finished or being written) with its run config."""
    return path.is_dir() and ((path / CONFIG_FILE).is_file() or has_table(path, ("responses",)))


def _clear_for_overwrite(out: Path, shard: Shard | None) -> None:
    """Remove table files that this process may replace: its own shard's and those of any other sharding.

    Files of sibling shards of the same sharding are left alone, so all k processes may pass --overwrite.
    """
    if not out.is_dir():
        return
    mine = f"{shard.suffix}." if shard else None
    same_sharding = f"-of-{shard.count:05d}." if shard else None
    for p in list(out.glob("part-*.parquet")) + list(out.glob("_manifest*.json")):
        if shard and same_sharding in p.name and mine not in p.name:
            continue
        p.unlink(missing_ok=True)


def make_engine(cfg: SampleConfig, ref) -> SamplingEngine:
    """Load the engine named in the config (the model weights are read here)."""
    if cfg.engine == "vllm":
        from cream_data.engines.vllm_engine import VllmSampler

        return VllmSampler.load(ref, tensor_parallel_size=cfg.tensor_parallel_size, seed=cfg.seed, dtype=cfg.dtype,
                                trust_remote_code=cfg.trust_remote_code)
    from cream_data.engines.hf_sample import HfSampler

    return HfSampler.load(ref, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)


def _rows(table: pa.Table, rows: list[int], gens: list[list[Generation]], cfg: SampleConfig, model: str) -> dict:
    pids, convs = table.column("prompt_id"), table.column("prompt")
    cols: dict[str, list] = {name: [] for name in schemas.get("responses").column_names}
    for r, outs in zip(rows, gens):
        pid, conv = pids[r].as_py(), convs[r].as_py()
        for i, g in enumerate(outs):
            cols["prompt_id"].append(pid)
            cols["prompt"].append(conv)
            cols["response_idx"].append(i)
            cols["response"].append(g.text)
            cols["finish_reason"].append(g.finish_reason)
            cols["n_tokens"].append(g.n_tokens)
    k = len(cols["prompt_id"])
    cols.update(model=[model] * k, iteration=[cfg.iteration] * k, seed=[cfg.seed] * k,
                temperature=[cfg.temperature] * k, top_p=[cfg.top_p] * k, max_new_tokens=[cfg.max_new_tokens] * k)
    return cols


def _concat(buffers: list[dict]) -> pa.Table:
    arrow = schemas.get("responses").arrow
    return pa.concat_tables([pa.Table.from_pydict(b, schema=arrow) for b in buffers])


# ---------------------------------------------------------------------------- the stage
def sample(prompts: str | Path | pa.Table, cfg: SampleConfig, out: str | Path, *,
           shard: tuple[int, int] | None = None, overwrite: bool = False, engine: SamplingEngine | None = None,
           progress: Progress | None = None) -> SampleSummary:
    """Sample ``cfg.n`` responses for every prompt (of this shard) into the responses folder ``out``.

    Resumes where an earlier call into the same folder stopped; refuses a folder holding another run
    unless ``overwrite``. Every user mistake is found before anything is written. ``engine`` reuses an
    already loaded engine (it must run ``cfg.model``).
    """
    t0 = time.perf_counter()
    out = Path(out)
    shard = split_shard(shard)  # None: one process does the whole table
    table, source = _load_prompts(prompts)
    if table.num_rows == 0:
        raise CreamError(f"{source}: empty prompts table; expected at least one prompt")
    if cfg.limit is not None:
        table = table.slice(0, cfg.limit)
    from cream_data.engines import models

    ref = models.resolve(cfg.model)
    if engine is None and cfg.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        from cream_data.engines.vllm_engine import VLLM_INSTALL

        raise missing_package("vllm", "--engine vllm", VLLM_INSTALL)
    guard(out, "sample", is_sample_output, overwrite=overwrite, what="responses table")
    record = {"stage": "sample", "identity": {**cfg.identity(ref.name), "model_id": models.content_id(ref)},
              "input_fingerprint": fingerprint(table), "shards": shard.count if shard else 1, "config": asdict(cfg),
              "input": source, "input_rows": table.num_rows}
    with locked(out, shard=shard):
        return _sample_locked(table, cfg, out, ref, record, shard, overwrite, engine, progress, t0)


def check_before_sampling(prompts: str | Path | pa.Table, cfg: SampleConfig) -> None:
    """What ``cream sample`` checks before any work, in one place for the command and the Python API: the prompts
    are not a pipe or a device, the device exists, and a model that resolves is a policy (config and tokenizer files
    only); a model that does not resolve is reported by :func:`sample`, after the prompts."""
    from cream_data.engines import models
    from cream_data.jsonfile import check_input

    if not isinstance(prompts, pa.Table):
        check_input(prompts, "a prompts table (a .parquet file or a table folder)")  # before the model is looked at
    models.check_device(cfg.device)
    try:
        ref = models.resolve(cfg.model)
    except CreamError:
        return  # the stage reports it, after the prompts
    models.check_policy(ref, trust_remote_code=cfg.trust_remote_code, what="--model")  # either engine, before work


def _sample_locked(table, cfg: SampleConfig, out: Path, ref, record: dict, shard, overwrite: bool, engine,
                   progress, t0: float) -> SampleSummary:
    """The stage body, run while this process holds the output's lock."""
    _check_out(out, record, overwrite)
    finished, notes = (None, ()) if overwrite else _finished(out, cfg, shard, progress, t0)
    if finished is not None:
        return finished
    engine = engine or make_engine(cfg, ref)
    convs = table.column("prompt").to_pylist()
    pids = table.column("prompt_id").to_pylist()
    lengths = engine.prompt_lengths(convs)
    keep, too_long = _fitting(pids, lengths, cfg, context_length(engine, ref), record.get("input", "prompts"))
    notes = (*notes, *too_long)
    record["prompts_too_long"] = len(pids) - len(keep)
    batches = shard_batches([[keep[i] for i in b] for b in plan_batches([pids[r] for r in keep],
                                                                        [lengths[r] for r in keep], cfg.batch_size)],
                            shard)
    mine = sum(len(b) for b in batches)

    if overwrite:
        _clear_for_overwrite(out, shard)
    writer = io.PartWriter(out, "responses", shard=shard)  # creates the folder: all checks are behind us
    _refuse_excess(writer, mine, cfg.n)  # before anything on disk changes
    notes = (*notes, *_prepare_resume(writer))
    io.atomic_write_json(out / CONFIG_FILE, record)
    have = writer.existing(columns=["prompt_id"])
    done_ids = set(have.column("prompt_id").to_pylist()) if have is not None else set()

    done = sum(1 for b in batches for r in b if pids[r] in done_ids)
    skipped, sampled, tokens, reasons, gen_seconds = done, 0, 0, Counter(stop=0, length=0), 0.0
    if progress:
        progress(WHAT, done, mine, 0)
    buffer: list[dict] = []
    buffered, last_flush = 0, time.perf_counter()
    for batch in batches:
        todo = [r for r in batch if pids[r] not in done_ids]
        if not todo:
            continue
        # The whole batch is regenerated even when part of it is on disk, so the numbers match the plan.
        t_gen = time.perf_counter()
        gens = engine.generate([convs[r] for r in batch], [prompt_seed(cfg.seed, pids[r]) for r in batch],
                               cfg.n, cfg.params)
        gen_seconds += time.perf_counter() - t_gen
        keep = [(r, g) for r, g in zip(batch, gens) if pids[r] not in done_ids]
        buffer.append(_rows(table, [r for r, _ in keep], [g for _, g in keep], cfg, ref.name))
        buffered += len(keep)
        batch_tokens = sum(x.n_tokens for _, g in keep for x in g)
        reasons.update(x.finish_reason for _, g in keep for x in g)
        tokens += batch_tokens
        sampled += len(keep)
        done += len(keep)
        if buffered >= cfg.prompts_per_part or time.perf_counter() - last_flush >= PART_SECONDS:
            writer.write(_concat(buffer))
            buffer, buffered, last_flush = [], 0, time.perf_counter()
        if progress:
            progress(WHAT, done, mine, batch_tokens)
    if buffer:
        writer.write(_concat(buffer))
    seconds = time.perf_counter() - t0
    rows_on_disk = _counted(writer, mine, cfg.n)
    writer.finish({"sample": {**record, "model_path": ref.path, "seconds_last_call": round(seconds, 3),
                              "tokens_last_call": tokens, "prompts": mine}})
    return SampleSummary(out, mine, sampled, skipped, rows_on_disk, tokens, dict(reasons), seconds, gen_seconds, shard,
                         getattr(engine, "dtype", ""), record["prompts_too_long"], notes)


def context_length(engine, ref) -> int | None:
    """The model's context in tokens: the loaded model's ``max_position_embeddings`` (vLLM: ``max_model_len``), else
    its config.json's; None when it says none."""
    config = getattr(getattr(engine, "model", None), "config", None)
    value = getattr(engine, "max_model_len", None) or getattr(config, "max_position_embeddings", None)
    if value is None and Path(ref.path, "config.json").is_file():
        value = json.loads(Path(ref.path, "config.json").read_text()).get("max_position_embeddings")
    return int(value) if value else None


def _fitting(pids: list, lengths: list[int], cfg: SampleConfig, context: int | None,
             source: str) -> tuple[list[int], tuple[str, ...]]:
    """Rows whose templated prompt plus ``max_new_tokens`` fits the context, and the note on the rest: skipped
    (counted, one warning line) or, ``long_prompts: error``, refused in one line naming them."""
    long = [r for r, n in enumerate(lengths) if context and n + cfg.max_new_tokens > context]
    if not long:
        return list(range(len(pids))), ()
    first = max(long, key=lambda r: lengths[r])
    what = (f"{len(long)} of {len(pids)} prompts do not fit the model's context of {context} tokens with "
            f"max_new_tokens {cfg.max_new_tokens} (longest: prompt_id {pids[first]!r}, {lengths[first]} tokens)")
    if cfg.long_prompts == "error" or len(long) == len(pids):
        hint = "shorten them, lower --max-new-tokens, or --long-prompts skip" if len(long) < len(pids) else \
            "nothing left to sample: shorten them or lower --max-new-tokens"
        raise CreamError(f"{source}: {what}; {hint}")
    note = f"{source}: skipped {what} (--long-prompts skip)"
    logger.warning(note)
    skip = set(long)
    return [r for r in range(len(pids)) if r not in skip], (note,)


def _finished(out: Path, cfg: SampleConfig, shard, progress, t0: float) -> tuple[SampleSummary | None, tuple]:
    """The summary of a shard that an earlier call finished and that is still whole (nothing left to do), else None
    and why a manifest on disk is not taken (a part missing or unreadable, counts that do not add up): the stage then
    resumes, redoing what is missing."""
    writer = io.PartWriter(out, "responses", shard=shard) if out.is_dir() else None
    if writer is None or not writer.manifest_path.exists():
        return None, ()
    problem = writer.problem()
    if problem is None:
        info = io.read_json_object(writer.manifest_path)
        rows, prompts = info["rows"], (info.get("sample") or {}).get("prompts")
        if prompts is None or rows == prompts * cfg.n:  # an older manifest records no prompt count
            done_prompts = rows // cfg.n
            if progress:
                progress(WHAT, done_prompts, done_prompts, 0)
            summary = SampleSummary(out, done_prompts, 0, done_prompts, rows, 0, {}, time.perf_counter() - t0, 0.0,
                                    shard)
            return summary, ()
        problem = f"{writer.manifest_path}: {rows} responses for {prompts} prompts x {cfg.n}"
    return None, (f"{problem}: not done; resuming (what is missing is sampled again)",)


def _counted(writer: io.PartWriter, prompts: int, n: int) -> int:
    """The responses on disk, which must add up to ``prompts`` x ``n`` before the manifest says the shard is done."""
    rows = sum(io.part_rows(p) for p in writer.parts())
    if rows != prompts * n:
        raise CreamError(f"--out {writer.folder}: its parts hold {rows} responses, expected {prompts} prompts x {n}; "
                         "a part that is not this run's? pass --overwrite to sample it afresh")
    return rows


def _refuse_excess(writer: io.PartWriter, prompts: int, n: int) -> None:
    """More responses in the readable parts than ``prompts`` x ``n`` (a part of another run copied in) is refused
    before a resume touches the folder."""
    rows = 0
    for part in writer.parts():
        try:
            rows += io.part_rows(part)
        except CreamError:  # unreadable: removed and its prompts sampled again by the resume
            pass
    if rows > prompts * n:
        raise CreamError(f"--out {writer.folder}: its parts hold {rows} responses, expected {prompts} prompts x {n}; "
                         "a part that is not this run's? pass --overwrite to sample it afresh")


def _prepare_resume(writer: io.PartWriter) -> tuple[str, ...]:
    """Before a resume: parts that cannot be read are removed (their prompts are sampled again), and so is a manifest
    that no longer describes the parts (it is written anew at the end), so the folder reads as unfinished meanwhile."""
    notes = tuple(writer.drop_unreadable())
    if writer.manifest_path.exists() and not writer.done():
        writer.manifest_path.unlink()
    return notes
