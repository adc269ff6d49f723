"""How a stage reports progress: one callback shape for every stage, drawn by the command line's one progress display
(``cli/progress.py``); the library itself draws nothing.

    progress(what, done, total, tokens)   # what: "sampling", a task, "scoring with M", "DPO training";
                                          # tokens: since the last call (0 where tokens are not counted)

A piece of work starts at its first call (``done`` 0, or where a resumed stage starts) and ends when ``done``
reaches ``total``: the display takes its rate and ETA from that, so a stage reports once before its first step
(training: optimizer steps, from ``on_train_begin``).

Pure: the standard library only.
"""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str, int, int, int], None]


def counting(progress: Progress | None, what: str, total: int) -> Callable[[int, int], None]:
    """A ``tick(n, tokens)`` for work counted in increments (n more items done): calls ``progress`` with the running
    count, once at 0 first. Without ``progress``, a tick that does nothing."""
    if progress is None:
        return lambda n, tokens: None
    done = 0
    progress(what, 0, total, 0)

    def tick(n: int, tokens: int) -> None:
        nonlocal done
        done += n
        progress(what, done, total, tokens)

    return tick
