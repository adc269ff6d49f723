"""The one rule for which folder names an iteration (``RUN/iter-<t>/…``), shared by sql, publish and the reports.

``cream run`` writes ``iter-<t>``; a folder renamed or made by hand is still read as iteration ``t`` when it is
spelled ``iter-<t>``, ``iter_<t>``, ``iter<t>``, ``iteration-<t>`` … in any case, so ``cream sql`` and
``cream publish`` always split a run the same way.

>>> parse_iteration_dir("iter-2"), parse_iteration_dir("Iteration-2"), parse_iteration_dir("ITER_11")
(2, 2, 11)
>>> parse_iteration_dir("iter2"), parse_iteration_dir("literature-2"), parse_iteration_dir("iter-")
(2, None, None)
>>> iteration_from_path("/r/iter-1/Iteration_3/scores")  # the nearest component wins
3
>>> iteration_from_path("/r/iter-2/scores", root="/r/iter-2") is None  # only the components below root
True
>>> iteration_dir(4)
'iter-4'
"""

from __future__ import annotations

import re
from pathlib import Path

# A path component naming an iteration: iter-2, iter_2, iteration-2, iter2, in any case.
ITER_DIR = re.compile(r"^iter(?:ation)?[-_]?(\d+)$", re.IGNORECASE)


def parse_iteration_dir(name: str) -> int | None:
    """The iteration a single folder name stands for (``"Iteration-2"`` → 2), else None."""
    m = ITER_DIR.match(name)
    return int(m.group(1)) if m else None


def iteration_from_path(path: str | Path, root: str | Path | None = None) -> int | None:
    """The iteration named by the nearest iteration component of ``path`` (``RUN/iter-2/scores`` → 2).

    Without ``root`` every component of the resolved path counts; with it only those below ``root`` (a table
    published from inside ``iter-2/`` takes its iteration from its own column instead).
    """
    if root is None:
        parts = Path(path).resolve().parts
    else:  # not resolved: a table linked in from another run (``--reuse-from``) keeps this run's folder names
        try:
            parts = Path(path).relative_to(Path(root)).parts
        except ValueError:
            parts = ()
    for part in reversed(parts):
        t = parse_iteration_dir(part)
        if t is not None:
            return t
    return None


def iteration_dir(t: int) -> str:
    """The folder name ``cream run`` writes for iteration ``t``."""
    return f"iter-{t}"
