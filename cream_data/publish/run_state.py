"""Whether a run directory is finished, for `cream publish`: a run still going (or stopped halfway) publishes
splits named by the iterations it holds so far — ``train`` while it holds one, ``iter_1``, ``iter_2`` … once it
holds several — so the same repository's split names would change when the run ends."""

from __future__ import annotations

import json
from pathlib import Path

from cream_data.errors import CreamError


def unfinished(root: Path) -> str | None:
    """What of the run directory ``root`` is not done (``"sample-2 (running), label-2 (not started)"``), or None
    when it finished — or is no run directory (a labeled folder, a table), which has nothing to finish.

    A run is finished when its manifest says so (``finished``, which `cream run` writes last and removes when it
    starts again), no stage is recorded as anything but done, none started after it finished, and it was not
    stopped by an error."""
    manifest = Path(root) / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # an unreadable manifest is reported where the card reads it
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        return None
    finished = data.get("finished")
    records = [(name, rec if isinstance(rec, dict) else {}) for name, rec in stages.items()]
    if isinstance(finished, str) and any(str(rec.get("started", "")) > finished for _, rec in records):
        finished = None  # started again since (a manifest of before `cream run` removed the mark at its start)
    pending = [f"{name} ({rec.get('status', '?')})" for name, rec in records if rec.get("status") != "done"]
    stopped = data.get("stopped")
    if isinstance(finished, str) and not pending and not stopped:
        return None
    last = next(reversed(stages), None)
    what = ", ".join(pending) + " not done" if pending else \
        f"the stages after {last} not started" if last else "no stage started"
    if isinstance(stopped, dict) and stopped.get("error"):
        what += f"; it stopped with: {' '.join(str(stopped['error']).split())[:160]}"
    return what


def check_finished(root: Path, allow_unfinished: bool) -> str | None:
    """Refuse an unfinished run in one line (CreamError), or, ``allow_unfinished``, return the one-line warning."""
    what = unfinished(root)
    if what is None:
        return None
    if not allow_unfinished:
        raise CreamError(f"{root}: the run is not finished ({what}); its split names can still change (train becomes "
                         "iter_1, iter_2 … as iterations end): finish it (rerun `cream run`) or pass "
                         "--allow-unfinished")
    return f"{root}: publishing an unfinished run ({what}); its split names can change when it ends"
