"""Heartbeats of a run on several machines under ``nodes.launcher: followers``: how each machine learns, through the
shared run directory alone, that the others are there and still running.

While a machine's `cream run` runs, a daemon thread rewrites ``RUN/.machines/<rank>.alive`` every few seconds
(:class:`Heartbeat`: host, pid and a beat counter). Another machine watches that file (:class:`Pulse`) and counts
the machine alive while the file keeps changing — a change seen by the watcher's own clock, so no two machines'
clocks are compared (a shared file system's timestamps are its server's). The file is rewritten in place rather
than renamed into place: an NFS client re-reads a file it opens (close-to-open consistency) but may keep an old
name → file mapping for up to a minute.

    machine r > 0, starting        machine 0's heartbeat must change within nodes.start_timeout
    machine r > 0, waiting         machine 0's must keep changing (nodes.alive_timeout)
    machine 0, waiting for shards  every other machine's must keep changing (nodes.alive_timeout)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Iterator, Self

from cream_train.run.layout import RunLayout

BEAT = 5.0  # seconds between beats at most; a short alive_timeout beats faster (4 beats per timeout)


def heartbeat_file(run: Path, rank: int) -> Path:
    """Machine ``rank``'s heartbeat in the run directory ``run`` (hidden: the run directory's guard ignores it)."""
    return RunLayout(run).heartbeat(rank)


class Heartbeat:
    """Machine ``rank``'s heartbeat while the ``with`` block runs (``timeout``: how long the others wait for a beat).
    However the block ends (done, an error, Ctrl-C; SIGTERM too inside :func:`sigterm_exits`) the file is removed, and
    so is the ``.machines`` folder when this heartbeat made it and it is left empty: a stopped machine leaves no
    heartbeat behind."""

    def __init__(self, run: Path, rank: int, timeout: float):
        self.path, self.interval = heartbeat_file(run, rank), min(BEAT, timeout / 4)
        self.beats = 0
        self._made = False  # whether this heartbeat made the .machines folder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cream-heartbeat-{rank}", daemon=True)

    def __enter__(self) -> Self:
        self._made = not self.path.parent.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.beat()
            self._thread.start()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._remove()

    def _remove(self) -> None:
        self.path.unlink(missing_ok=True)
        if self._made:
            try:
                self.path.parent.rmdir()
            except OSError:  # another machine's heartbeat is there
                pass

    def beat(self) -> None:
        self.beats += 1
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.write(f"{socket.gethostname()} pid {os.getpid()} beat {self.beats}\n")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except OSError:
                pass  # a hiccup of the file system: the next beat tries again (watchers allow alive_timeout)


class Pulse:
    """Machine ``rank``'s heartbeat as this machine sees it. What the file holds when watching begins (a previous
    run's last beat, say) does not count: only a change does."""

    def __init__(self, run: Path, rank: int):
        self.path, self.rank = heartbeat_file(run, rank), rank
        self.last = self._read()
        self.changed = time.monotonic()
        self.seen = False  # a change has been seen: the machine is there

    def silence(self) -> float:
        """Seconds since the file last changed, by this machine's clock (since watching began, before a change)."""
        now, text = time.monotonic(), self._read()
        if text != self.last:
            self.last, self.changed, self.seen = text, now, True
        return now - self.changed

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except OSError:
            return None


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM (a scheduler ending the job, ``kill``) ends the block as ``SystemExit(143)`` instead of killing the
    process on the spot, so every ``with`` and ``finally`` on the way out runs: heartbeats are removed, stage
    processes stopped. Only in the main thread (where Python delivers signals); elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
