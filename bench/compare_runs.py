"""Compare the tables of two `cream run` folders value for value: a refactor's check that outputs did not change.

    python bench/compare_runs.py RUN_BEFORE RUN_AFTER

Every Parquet table folder under each run (models/, logs/ and hidden folders left out) is read whole, its rows sorted,
and compared column by column. Strings that name the checkout a run lives in (``<repo>/runs/<name>``: the folder two
levels up) are compared with that prefix replaced, so the runs of two clones compare equal. Label caches are named by
a hash of their model's path, so between two clones they show as "only in A" / "only in B". Exit status 1 when a
table differs or is missing on one side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TIMING_COLUMNS = ("seconds", "created", "time", "elapsed", "tokens_per_s")


def table_folders(run: Path) -> dict[str, list[Path]]:
    """Each table folder of ``run`` (relative name) and its Parquet parts."""
    out: dict[str, list[Path]] = {}
    for part in sorted(run.rglob("*.parquet")):
        rel = part.relative_to(run)
        if any(p.startswith(".") for p in rel.parts) or rel.parts[0] in ("models", "logs"):
            continue
        out.setdefault(str(rel.parent), []).append(part)
    return out


def normalized(value, checkout: str):
    if isinstance(value, str):
        return value.replace(checkout, "REPO")
    if isinstance(value, list):
        return [normalized(v, checkout) for v in value]
    if isinstance(value, dict):
        return {k: normalized(v, checkout) for k, v in value.items()}
    return value


def sorted_rows(parts: list[Path], run: Path) -> tuple[list[dict], list[str]]:
    table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    table = table.drop_columns([c for c in table.column_names if c in TIMING_COLUMNS])
    checkout = str(run.parent.parent)
    rows = [normalized(r, checkout) for r in table.to_pylist()]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str)), table.column_names


def compare(a: Path, b: Path) -> int:
    """Print one line per table folder; the number of folders that differ or exist on one side only."""
    ta, tb = table_folders(a), table_folders(b)
    bad = 0
    for name in sorted(set(ta) | set(tb)):
        if name not in ta or name not in tb:
            print(f"{name}: only in {'A' if name in ta else 'B'}")
            bad += 1
            continue
        (ra, ca), (rb, cb) = sorted_rows(ta[name], a), sorted_rows(tb[name], b)
        if ca != cb:
            print(f"{name}: columns differ {ca} vs {cb}")
            bad += 1
            continue
        diffs = [c for c in ca if [r[c] for r in ra] != [r[c] for r in rb]]
        same = not diffs and len(ra) == len(rb)
        verdict = "identical" if same else f"DIFFER in {diffs} ({len(ra)} vs {len(rb)} rows)"
        print(f"{name}: {len(ra)} rows x {len(ca)} columns: {verdict}")
        bad += not same
    print(f"tables: {len(set(ta) | set(tb))}, differing or on one side only: {bad}")
    return bad


if __name__ == "__main__":
    sys.exit(1 if compare(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()) else 0)
