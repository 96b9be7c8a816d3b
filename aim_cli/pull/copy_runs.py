"""Chunks of a file that local files hold, put in place as runs (docs/design.md §6).

A pull into a directory holding an earlier version takes most chunks of each changed file from
the earlier file, in the kernel (``copy_file_range``). Copied one chunk per task, the tasks of one
file wrote into it from every worker at once, and buffered writes to one file take its inode lock
for each 64 KiB the kernel moves: on 2 cores, 9% of an in-place pull's CPU went to spinning on
that lock (`perf record -g`, `rwsem_spin_on_owner`). So a file's copies are grouped:

- chunks next to each other in the file, found next to each other in the same local file, form
  one run, copied with one call (at most ``MAX_RUN`` bytes, so the whole-file digest, hashed as
  runs land, follows closely);
- a file's runs go to ``segments``: one per worker's share of all the bytes copied, so that
  four changed shards on two cores are copied by four tasks, one per file, and a single large
  file by two, never one task per chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Bytes of one copy call at most: the digest of a run is hashed once it is copied.
MAX_RUN = 16 * 1024 * 1024


@dataclass
class CopyRun:
    """Chunks ``indexes`` (in order, adjacent in the file) copied from ``source`` at
    ``source_offset``, ``size`` bytes, to ``offset`` of the partial file."""

    source_name: str  # the SourceChain's name of the local source, for its counts
    source: str
    source_offset: int
    offset: int
    size: int
    indexes: list[int] = field(default_factory=list)

    def follows(self, source_name: str, source: str, source_offset: int, offset: int, size: int) -> bool:
        """Whether a chunk at ``offset`` found at ``source``/``source_offset`` extends this run."""
        return (
            source == self.source
            and source_name == self.source_name
            and source_offset == self.source_offset + self.size
            and offset == self.offset + self.size
            and self.size + size <= MAX_RUN
        )


def plan_copies(
    chunks: Sequence[tuple[str, int]],
    offsets: Sequence[int],
    indexes: Sequence[int],
    locate: Callable[[str], tuple[str, str, int] | None],
) -> tuple[list[CopyRun], list[int]]:
    """The runs of the chunks ``indexes`` (ascending) that ``locate`` finds in a local file, and
    the indexes of the others, to fetch."""
    runs: list[CopyRun] = []
    fetch: list[int] = []
    for i in indexes:
        digest, size = chunks[i]
        where = locate(digest)
        if where is None:
            fetch.append(i)
            continue
        name, source, source_offset = where
        last = runs[-1] if runs and runs[-1].indexes[-1] == i - 1 else None
        if last is not None and last.follows(name, source, source_offset, offsets[i], size):
            last.size += size
        else:
            last = CopyRun(name, source, source_offset, offsets[i], size)
            runs.append(last)
        last.indexes.append(i)
    return runs, fetch


def segments(runs: list[CopyRun], share: int) -> list[list[CopyRun]]:
    """``runs`` cut into consecutive groups of about ``share`` bytes each, one task each (none
    for no runs, else at least one)."""
    total = sum(r.size for r in runs)
    if not runs:
        return []
    parts = max(1, min(len(runs), math.ceil(total / max(1, share))))
    target = total / parts
    groups: list[list[CopyRun]] = [[]]
    filled = 0
    for run in runs:
        if groups[-1] and filled + run.size / 2 > target * len(groups) and len(groups) < parts:
            groups.append([])
        groups[-1].append(run)
        filled += run.size
    return groups
