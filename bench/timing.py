"""What the bench scripts share: timing several paths in rotated order."""

from __future__ import annotations

import time


def time_rotated(fns, repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Run each ``(name, fn)`` ``repeats`` times, rotating the order every round so no path always runs first;
    return the wall-clock seconds per name and each path's last value."""
    times = {name: [] for name, _ in fns}
    vals = {}
    for r in range(repeats):
        k = r % len(fns)
        for name, fn in fns[k:] + fns[:k]:
            t0 = time.perf_counter()
            vals[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return times, vals
