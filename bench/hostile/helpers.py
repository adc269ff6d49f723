"""Small builders the cases share: case constructors, tables edited as a hostile user would, configs, checks."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.hostile.core import Case
from bench.hostile.world import DATA
from tests.support.runs import tiny_run_config, write_yaml


def refuse(klass, name, setup, *needles, **kw) -> Case:
    return Case(klass, name, setup, "refuse", tuple(needles), **kw)


def ok(klass, name, setup, check=None, **kw) -> Case:
    return Case(klass, name, setup, "ok", check=check, **kw)


def either(klass, name, setup, check, **kw) -> Case:
    return Case(klass, name, setup, "either", check=check, **kw)


# ---------------------------------------------------------------------------- tables
def read(path: Path) -> pa.Table:
    from cream_data.tables.io import read_table

    return read_table(path)


def write(table: pa.Table, path: Path) -> Path:
    """A plain Parquet file, as another tool would write it (no cream metadata, no checks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def edited(w, name: str, d: Path, fn, out: str | None = None) -> Path:
    """The fixture table ``name`` read, passed through ``fn(table) -> table`` and written as ``d/out``."""
    return write(fn(read(getattr(w, name))), d / (out or f"{name}.parquet"))


def set_col(table: pa.Table, col: str, values) -> pa.Table:
    i = table.schema.get_field_index(col)
    return table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))


def rows_of(path: Path) -> int:
    return read(path).num_rows


def parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


# ---------------------------------------------------------------------------- configs
def run_config(d: Path, w, extra: str = "", *, drop: tuple[str, ...] = (), name: str = "c.yaml", **keys) -> Path:
    """A valid one-iteration run config on the tiny model (tests/support/runs.py's tiny run), one line a top-level
    key, with ``keys`` replacing whole lines (each value YAML text, as a user types it), the ``drop`` lines left out
    and ``extra`` appended."""
    base = tiny_run_config(model=w.tiny, iterations=1, seed=0, run_dir="run", sft={"limit": 8},
                           sample={"max_new_tokens": 8},
                           eval={"tasks": ["arc_easy"], "data_dir": DATA / "eval", "max_new_tokens": 4})
    first = ("model", "method", "iterations", "seed", "run_dir")  # the cases name lines by number: sample is line 8
    lines = {key: _one_line(base.pop(key)) for key in first} | {key: _one_line(value) for key, value in base.items()}
    lines.update(keys)
    return write_yaml(d / name, {}, text="".join(f"{k}: {v}\n" for k, v in lines.items() if k not in drop) + extra)


def _one_line(value) -> str:
    """``value`` as YAML on one line (a mapping or list in flow style)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=2**31)
    return text.strip().removesuffix("\n...").strip()  # a plain scalar's document ends in "..."


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------------------- checks
def has_rows(rel: str, n: int):
    """The table at ``d/rel`` reads with exactly ``n`` rows and no duplicate key."""
    def check(d: Path, r) -> str | None:
        try:
            t = read(d / rel)
        except Exception as e:  # noqa: BLE001 - any failure to read is the finding
            return f"{rel} unreadable after exit 0: {type(e).__name__}: {str(e)[:120]}"
        if t.num_rows != n:
            return f"{rel}: {t.num_rows} rows, expected {n}"
        keys = [c for c in ("prompt_id", "response_idx", "scorer", "task", "example_id") if c in t.column_names]
        if keys and len(set(zip(*(t.column(k).to_pylist() for k in keys)))) != n:
            return f"{rel}: duplicate keys"
        return None
    return check


def says(*needles):
    """stdout+stderr mention every needle (an honest warning or count)."""
    def check(d: Path, r) -> str | None:
        text = (r.out + r.err).lower()
        missing = [n for n in needles if n.lower() not in text]
        return f"output does not mention {missing}" if missing else None
    return check


def both(*checks):
    def check(d: Path, r) -> str | None:
        for c in checks:
            why = c(d, r)
            if why:
                return why
        return None
    return check
