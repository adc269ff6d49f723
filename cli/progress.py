"""The one progress display of every command (sample, label, eval, train, run): a rich bar per piece of work on
stderr, with items/s, tokens/s (where counted) and the time left at the rate so far, fed by the stages'
:data:`cream_data.progress.Progress` callback.

Only on a terminal: elsewhere (a log file, CI) even a transient bar leaves empty lines behind, and the commands'
own log lines say what happened. In a stage process of `cream run` (``CREAM_PROGRESS=lines``) the steps go to stderr
as marked lines instead, which the parent turns into its own bars (cream_data/processes.py).
"""

from __future__ import annotations

import time

from cli.common import log
from cream_data.processes import progress_line, progress_lines


class Bars:
    """``with Bars("prompts") as bars: stage(…, progress=bars.update)``."""

    def __init__(self, unit: str = "items"):  # what one step of the bar counts: prompts, responses…
        self.unit = unit

    def __enter__(self) -> "Bars":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rates]}"), TimeElapsedColumn(), console=log,
                                  transient=True, disable=not log.is_terminal)
        self._progress.__enter__()
        self._bars: dict[str, list] = {}  # what -> [bar id, start time, items done at the start, tokens since]
        self._lines = progress_lines()
        self._last: dict[str, list] = {}  # what -> [time of the last line, tokens since]
        return self

    def _line(self, what: str, done: int, total: int, tokens: int) -> None:
        """At most two lines a second per piece of work (and its last step), tokens added up in between."""
        import sys

        last = self._last.setdefault(what, [0.0, 0])
        last[1] += tokens
        now = time.monotonic()
        if now - last[0] >= 0.5 or done >= total:
            sys.stderr.write(progress_line(what, done, total, last[1]) + "\n")
            sys.stderr.flush()
            last[0], last[1] = now, 0

    def update(self, what: str, done: int, total: int, tokens: int = 0) -> None:
        if self._lines:  # a stage process of `cream run`: the parent draws the bar
            self._line(what, done, total, tokens)
            return
        if what not in self._bars:  # the first call: where this call starts (a resumed stage starts part-way)
            bar = self._progress.add_task(what, total=total, completed=done, rates="")
            self._bars[what] = [bar, time.perf_counter(), done, 0]
            return
        entry = self._bars[what]
        entry[3] += tokens
        dt = max(time.perf_counter() - entry[1], 1e-9)
        self._progress.update(entry[0], completed=done, total=total,
                              rates=rates(self.unit, done - entry[2], total - done, dt, entry[3]))

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)


def rates(unit: str, done: int, left: int, seconds: float, tokens: int) -> str:
    """The text beside a bar: ``done`` items in ``seconds`` as items/s, tokens/s where tokens are counted, and the
    ETA of the ``left`` items at that rate (rich's own remaining-time column needs two steps within 30 s, which a
    slow training step never gives)."""
    seconds = max(seconds, 1e-9)
    text = f"{done / seconds:.2f} {unit}/s" + (f"  {tokens / seconds:.0f} tok/s" if tokens else "")
    if done > 0 and left > 0:
        eta = round(left * seconds / done)
        text += f"  eta {eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}"
    return text
