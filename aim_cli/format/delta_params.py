"""The delta parameters a format 3 repository pins in aim-repo.json (``"deltas"``, docs/design.md §3.1).

    {"algorithm": "xor-v1", "min_saving": 0.1, "max_depth": 4}

- ``min_saving``: a chunk is stored as a delta only when the delta blob is at most
  ``(1 - min_saving)`` times its plain (format 2) blob;
- ``max_depth``: the longest chain of deltas down to a whole chunk (1: a delta whose base is
  whole); decoding refuses a deeper chain.

Pinned so that every client decides alike. The values are provisional: the training benchmark
picks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALGORITHM = "xor-v1"
#: The deepest chain a repository may pin: decoding a chunk may fetch this many bases.
MAX_DEPTH_LIMIT = 64


@dataclass(frozen=True)
class DeltaParams:
    """Invalid values raise ValueError on construction."""

    min_saving: float = 0.1
    max_depth: int = 4

    def __post_init__(self):
        saving, depth = self.min_saving, self.max_depth
        if type(saving) is not float or not math.isfinite(saving) or not 0 <= saving < 1:
            raise ValueError(f"delta min_saving out of range: {saving!r}")
        if type(depth) is not int or not 1 <= depth <= MAX_DEPTH_LIMIT:
            raise ValueError(f"delta max_depth out of range: {depth!r}")

    def as_dict(self) -> dict:
        return {"algorithm": ALGORITHM, "min_saving": self.min_saving, "max_depth": self.max_depth}

    @classmethod
    def from_dict(cls, d: dict) -> DeltaParams:
        """ValueError for anything that is not what as_dict writes: other or missing keys, another
        algorithm, a min_saving that is not a number in [0, 1), a max_depth that is not an integer
        in [1, MAX_DEPTH_LIMIT] (a bool is neither)."""
        if type(d) is not dict or set(d) != {"algorithm", "min_saving", "max_depth"} or d["algorithm"] != ALGORITHM:
            raise ValueError(f"unsupported deltas {d!r}")
        saving = d["min_saving"]
        if type(saving) not in (int, float):
            raise ValueError(f"delta min_saving is not a number: {saving!r}")
        return cls(float(saving), d["max_depth"])
