"""A run's probe set (``prompts.probe: N`` of a `cream run` config): N prompts with a human-written answer, held out
of D_U before it is split into the iterations' subsets, so that every iteration's model is compared with the *same*
human answers (docs/REWARDS.md, "Self-preference: human answers"). No iteration samples them for its pairs.

Which prompts: those whose ``human_answer`` is non-empty (as ``cream label --human-answers`` counts them), ordered by
``sha256(f"probe:{seed}:{prompt_id}")``; the first N are the probe. Membership depends only on the ids, the answers
and the run's seed (the ``probe:`` salt keeps it apart from the subset assignment of
:func:`cream_data.inputs.prompts.split_prompts`, which orders by ``f"{seed}:{prompt_id}"``); both parts keep the
input's row order.

>>> import pyarrow as pa
>>> t = pa.table({"prompt_id": ["a", "b", "c", "d"], "human_answer": ["x", None, " ", "y"]})
>>> answered(t)
2
>>> probe, rest = set_aside_probe(t, 1, seed=0)
>>> probe.num_rows, rest.num_rows, set(probe["prompt_id"].to_pylist()) <= {"a", "d"}
(1, 3, True)
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from cream_data.errors import CreamError


def _answered_rows(table: pa.Table) -> list[int]:
    """The rows whose ``human_answer`` is non-empty (not null, not only white space)."""
    if "human_answer" not in table.column_names:
        return []
    return [i for i, a in enumerate(table.column("human_answer").to_pylist()) if a is not None and a.strip()]


def answered(table: pa.Table) -> int:
    """How many prompts of ``table`` have a human-written answer (the most a probe set can hold)."""
    return len(_answered_rows(table))


def set_aside_probe(table: pa.Table, n: int, *, seed: int) -> tuple[pa.Table, pa.Table]:
    """``(probe, rest)``: ``n`` prompts of ``table`` with a human answer, chosen by ``seed`` (module doc), and every
    other prompt; both in the input's row order. ``n`` = 0: no probe, ``rest`` is ``table``."""
    if n == 0:
        return table.slice(0, 0), table
    rows = _answered_rows(table)
    if len(rows) < n:
        raise CreamError(f"prompts.probe: {n} probe prompts need {n} prompts with a human_answer, but D_U has "
                         f"{len(rows)}")
    ids = table.column("prompt_id").to_pylist()
    chosen = set(sorted(rows, key=lambda i: hashlib.sha256(f"probe:{seed}:{ids[i]}".encode()).digest())[:n])
    keep = pa.array([i in chosen for i in range(table.num_rows)], pa.bool_())
    return table.filter(keep), table.filter(pc.invert(keep))
