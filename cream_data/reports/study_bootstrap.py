"""Paired differences in average accuracy between two models evaluated on the same questions, with a percentile
bootstrap interval: the study's (:mod:`cream_data.reports.study`) comparison of methods, and the resample count its
Markdown (:mod:`cream_data.reports.study_markdown`) names."""

from __future__ import annotations

import numpy as np

from cream_data.errors import CreamError
from cream_data.reports.run_tables import TASK_ORDER

BOOTSTRAP = 4000  # resamples of the questions per interval


def paired_difference(a: dict, b: dict, *, n_boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Avg(a) − Avg(b) over the tasks both have, with a 95 % percentile bootstrap interval over questions.

    ``a``/``b``: task → (ids, 0/1 array) as the study reads them from an eval table; questions are matched by id
    (both models must have answered the same questions). The same resampled indices are applied to both (paired).
    """
    tasks = sorted(set(a) & set(b), key=lambda t: TASK_ORDER.index(t) if t in TASK_ORDER else 99)
    if not tasks:
        return {"delta": None, "ci_low": None, "ci_high": None, "tasks": 0}
    rng = np.random.default_rng(seed)
    deltas, boots = [], np.zeros(n_boot)
    for task in tasks:
        ids_a, xa = a[task]
        ids_b, xb = b[task]
        if ids_a != ids_b:
            raise CreamError(f"task {task}: the two models were evaluated on different questions "
                             f"({len(ids_a)} vs {len(ids_b)}); compare runs with the same eval.limit and data")
        d = xa - xb
        deltas.append(d.mean())
        idx = rng.integers(0, d.size, size=(n_boot, d.size))
        boots += d[idx].mean(axis=1)
    k = len(tasks)
    boots /= k
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"delta": float(np.mean(deltas)), "ci_low": float(lo), "ci_high": float(hi), "tasks": k,
            "n": int(sum(a[t][1].size for t in tasks))}
