"""What a stage's process and the `cream run` that started it share (``cream run`` starts every model stage as
its own ``cream sample|label|train|eval`` process; cream_train/run/stage_process.py is the parent's side).

Environment variables set by the parent and read by the child's command:

    CREAM_RESULT_FILE   the child writes its stage record there (JSON, atomically) when it finishes;
                        under accelerate/torchrun only rank 0 writes it
    CREAM_PROGRESS      "lines": progress goes to stderr as marked lines the parent turns into its own bars
                        (:func:`progress_line`: ``[what, done, total, tokens]`` as JSON after a marker; a piece of
                        work starts at its first line, so done/total and the parent's clock give its rate and ETA)
    CREAM_TRACKER_DIR   where a training stage's trackers (``report_to``: TensorBoard, W&B) write:
                        ``RUN/logs/tb/<stage>``, beside the run's other logs (cream_train/train.py, tracker_dir)
    CREAM_RUN_NAME      the tracker's run name: ``<run dir name>/<stage>``
    CREAM_RUN_PID       the parent's pid: a child (and any process a launcher starts under it) exits when that
                        process is gone, so a ``kill -9`` of ``cream run`` leaves no stage running

A stage record is the small JSON the run manifest keeps per stage (rows, tokens, pairing, accuracy, metrics);
:func:`record` makes it from a stage's summary, in this process or in a child, so both modes record the same, and
:func:`merge` joins the records of a stage's shard processes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

RESULT_ENV = "CREAM_RESULT_FILE"
PROGRESS_ENV = "CREAM_PROGRESS"
PARENT_ENV = "CREAM_RUN_PID"
TRACKER_DIR_ENV = "CREAM_TRACKER_DIR"
RUN_NAME_ENV = "CREAM_RUN_NAME"
PROGRESS_MARK = "\x1ecream-progress "  # starts a progress line (an ASCII record separator: never in a log message)
# (read the output line by line on "\n": str.splitlines() also breaks at \x1e and so strips the mark off)


# ---------------------------------------------------------------------------- stage records
def record(command: str, summary: Any) -> dict:
    """The manifest record of a finished ``command`` (sample, label, train, eval, harness) from its summary."""
    dtype = {"dtype": summary.dtype} if getattr(summary, "dtype", "") else {}  # what the models ran in
    if command == "sample":
        return {"rows": summary.rows, "tokens": summary.tokens, "finish_reasons": dict(summary.finish_reasons), **dtype}
    if command == "label":
        pairing = summary.pairing
        return {"pairing": pairing.to_dict() if pairing is not None else None,
                "models_scored": list(summary.models_scored), "judge_unparsed": summary.judge_unparsed,
                "judge_appended": summary.judge_appended, **dtype}
    if command == "train":
        return {"metrics": small(summary.metrics), "reference": summary.reference, **summary.precision}
    if command == "eval":
        return {"accuracy": dict(summary.accuracy), "average": summary.average, **dtype}
    if command == "harness":
        return {"metrics": summary.metrics(), **dtype}
    raise ValueError(f"no stage record for {command!r}")


def merge(command: str, records: list[dict]) -> dict:
    """One record from the records of a stage's shard processes: counts added up, the pairing from the shard that
    built the preferences (the last to finish), everything else from the first."""
    if len(records) == 1:
        return records[0]
    out = dict(records[0])
    if command == "sample":
        out["rows"] = sum(r["rows"] for r in records)
        out["tokens"] = sum(r["tokens"] for r in records)
        out["finish_reasons"] = dict(sum((Counter(r["finish_reasons"]) for r in records), Counter()))
    elif command == "label":
        out["pairing"] = next((r["pairing"] for r in records if r.get("pairing") is not None), None)
        for key in ("judge_unparsed", "judge_appended"):
            out[key] = sum(r.get(key, 0) for r in records)
    return out


def small(metrics: dict | None) -> dict:
    """The scalar metrics with short names (what a manifest keeps of a trainer's metrics)."""
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str)) and len(str(k)) < 60}


def write_result(command: str, summary: Any) -> None:
    """In a stage process started by `cream run`: write its record where the parent reads it (rank 0 only)."""
    path = os.environ.get(RESULT_ENV)
    if not path or os.environ.get("RANK", "0") != "0":
        return
    from cream_data.tables.io import atomic_write_json

    atomic_write_json(Path(path), {**record(command, summary), **peak_memory()})


def peak_memory() -> dict:
    """This process's peak resident memory and, where it used CUDA, its peak GPU memory (torch's allocator), in
    GiB: what a stage process held (vLLM's engine runs in processes of its own and is not counted)."""
    import resource
    import sys

    peak = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}  # KiB on Linux
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["peak_gpu_gib"] = round(sum(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count()))
                                     / 2**30, 3)
    return peak


def read_result(path: Path) -> dict | None:
    """A child's record, or None when it wrote none."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- progress across the process boundary
def progress_lines() -> bool:
    """Whether this process reports progress as lines for a parent (``CREAM_PROGRESS=lines``)."""
    return os.environ.get(PROGRESS_ENV) == "lines"


def progress_line(what: str, done: int, total: int, tokens: int = 0) -> str:
    return PROGRESS_MARK + json.dumps([what, done, total, tokens])


def parse_progress(line: str) -> tuple[str, int, int, int] | None:
    """``(what, done, total, tokens)`` from a progress line; None for any other line."""
    if not line.startswith(PROGRESS_MARK):
        return None
    try:
        what, done, total, tokens = json.loads(line[len(PROGRESS_MARK):])
        return str(what), int(done), int(total), int(tokens)
    except (ValueError, TypeError):
        return None


# ---------------------------------------------------------------------------- no stage outlives its run
def watch_parent(interval: float = 1.0) -> bool:
    """Under `cream run`: a daemon thread that ends this process as soon as the run's process is gone (``kill -9``
    reaches no child by itself). True when started."""
    pid = os.environ.get(PARENT_ENV)
    if not pid or not pid.isdigit():
        return False

    def watch():
        while True:
            time.sleep(interval)
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                os._exit(137)  # as if killed with the run: written parts are whole (atomic writes); rerun resumes
            except PermissionError:
                pass  # alive, owned by someone else (pid reuse is not a concern within a run's lifetime)

    threading.Thread(target=watch, name="cream-run-watch", daemon=True).start()
    return True
