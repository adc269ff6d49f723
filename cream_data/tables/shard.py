"""Which part of the work one process does: shard ``index`` of ``count`` (``--shard i/k``, 0 <= i < k).

A stage takes its shard once (:meth:`Shard.of`) and asks it rather than testing ``shard and shard[1] > 1``: only a
shard that splits the work (k > 1) writes files of its own (``part-….shard-0000i-of-0000k.parquet``, its own
manifest and lock); shard 0 of 1 is the whole table. A Shard is a ``(index, count)`` tuple, so the table writer and
the locks take it as the pair they always took.
"""

from __future__ import annotations

from typing import NamedTuple


class Shard(NamedTuple):
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    @classmethod
    def of(cls, value) -> "Shard | None":
        """A ``(i, k)`` pair (or a Shard) as a Shard; None stays None (the whole table, one process)."""
        return None if value is None else cls(int(value[0]), int(value[1]))

    @property
    def is_split(self) -> bool:
        """Whether the work is split between processes (k > 1): only then does this shard write files of its own."""
        return self.count > 1

    @property
    def suffix(self) -> str:
        """What this shard's file names carry: ``.shard-0000i-of-0000k`` (the table folder's part and manifest
        names, its lock)."""
        return f".shard-{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def split_shard(value) -> Shard | None:
    """The shard of ``value`` (a pair, a Shard or None) where it splits the work, else None: what the table writer,
    the locks and the row filters take (None: the whole table)."""
    shard = Shard.of(value)
    return shard if shard is not None and shard.is_split else None
