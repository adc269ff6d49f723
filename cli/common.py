"""Helpers shared by the CLI commands: consoles, shard parsing."""

from __future__ import annotations

import os
from typing import Optional

from rich.console import Console

from cream_data.errors import CreamError
from cream_data.settings import shown
from cream_data.tables.shard import Shard

# Results go to stdout; logs, progress and errors go to stderr.
out = Console(soft_wrap=True)
log = Console(stderr=True, soft_wrap=True)


def parse_shard(text: Optional[str]) -> Shard | None:
    """``"i/k"`` → ``Shard(i, k)``. Without it, use accelerate's process index/count when launched by it."""
    if text is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            return Shard(int(os.environ.get("RANK", "0")), world)
        return None
    try:
        i_s, k_s = text.split("/")
        i, k = int(i_s), int(k_s)
    except ValueError:
        raise CreamError(f"--shard {shown(text)}: expected i/k with integers, e.g. 0/4") from None
    if k < 1 or not 0 <= i < k:
        raise CreamError(f"--shard {text!r}: expected 0 <= i < k and k >= 1")
    return Shard(i, k)

