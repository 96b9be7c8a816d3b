"""An offline estimate of format 3's storage (issue 18) over a series of safetensors checkpoints,
made before format 3's push exists: the cuts of format 3, the delta blob of codec 4 (format 3 as
decided: 48-byte header + a codec 0-3 blob of ``raw XOR base``), and the chain policies of item 4,
simulated chunk by chunk. training_bench.py calls ``estimate_series`` and ``estimate_pair``;
replace them with real format 3 pushes once push stores deltas.

What is estimated, and how:
- cuts: a tensor of at least LARGE_TENSOR_BYTES is cut at multiples of TENSOR_CHUNK_BYTES from
  its own start; chunk i of tensor T pairs with chunk i of T (same name, dtype, shape) in another
  version. Everything else (the header, runs of small tensors between large ones) is a plain
  chunk, never a delta: format 3 cuts it as format 2 does and pairs only tensor chunks. (Format 2
  cuts a group of small tensors where content decides; here a run is one chunk, whatever its
  size: the small tensors are a few percent of these checkpoints.)
- sizes: a whole chunk costs ``len(blob_codec.encode(chunk, element_size))``; a delta
  ``DELTA_HEADER + len(blob_codec.encode(chunk ^ base, element_size))``. A chunk equal to one
  already stored costs nothing (same BLAKE3, same blob).
- min_saving: a chunk is stored as a delta only when the delta blob is at most
  (1 - MIN_SAVING) x its whole blob; otherwise it stays whole (a keyframe), and chains restart.
- a version's cold pull fetches, for each of its chunks, the chain down to a whole chunk;
  pulling version N into a directory that holds N-1 fetches, per chunk, nothing if the chunk is
  unchanged, the delta linking the two if one is stored (either way round: XOR is symmetric),
  else the cold chain of N's chunk.

Policies (per chunk position, over the versions in push order):
- forward: each version's chunk a delta against the previous version's; ``depth`` bounds the
  chain (a chunk that would be deeper stays whole);
- first: each against the first version's chunk (depth 1);
- reverse: the newest stays whole, and when a version is pushed, the previous newest becomes a
  delta against it if that keeps every chain through it within ``depth`` (a chain that would grow
  past it stays as it is: the previous newest stays whole). The rule is the product's own
  (aim_cli.deltas.policy.plan), run after each push over every pair of consecutive versions so far;
- reverse, cut the old end: the same with ``max_cuts=1``: when linking the previous newest would
  make a chain too deep, its deepest chunk is stored whole first (docs/design.md §3.5).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import blake3
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_run import read_safetensors

from aim_cli.deltas import policy
from aim_cli.deltas.pairing import Pair, TensorKey
from aim_cli.format import blob_codec

# The values format 3 pins in aim-repo.json (docs: format 3 as decided; provisional).
LARGE_TENSOR_BYTES = 256 * 1024
TENSOR_CHUNK_BYTES = 1 << 20
MIN_SAVING = 0.1
DELTA_HEADER = 48
ELEMENT_SIZE = {"BF16": 2, "F16": 2, "F32": 4}


@dataclass(frozen=True)
class Piece:
    """One chunk: ``key`` pairs it across versions (None: a plain chunk, never a delta)."""

    key: tuple | None
    data: bytes
    element_size: int

    @property
    def digest(self) -> bytes:
        return blake3.blake3(self.data).digest()


def cut(path: Path) -> list[Piece]:
    """A safetensors file cut as format 3 cuts it (see the module docstring)."""
    header_len, tensors = read_safetensors(path)
    pieces = [Piece(None, path.read_bytes()[:header_len], 1)]
    small: list[bytes] = []
    small_sizes: set[int] = set()

    def flush() -> None:
        if small:
            pieces.append(Piece(None, b"".join(small), small_sizes.pop() if len(small_sizes) == 1 else 1))
            small.clear()
            small_sizes.clear()

    for name, (dtype, shape, raw) in tensors.items():
        size = ELEMENT_SIZE.get(dtype, 1)
        if len(raw) < LARGE_TENSOR_BYTES:
            small.append(raw)
            small_sizes.add(size)
            continue
        flush()
        for i, at in enumerate(range(0, len(raw), TENSOR_CHUNK_BYTES)):
            pieces.append(Piece((name, dtype, shape, i), raw[at : at + TENSOR_CHUNK_BYTES], size))
    flush()
    return pieces


def xor(a: bytes, b: bytes) -> bytes:
    return (np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).tobytes()


@cache
def whole_size(data: bytes, element_size: int) -> int:
    return len(blob_codec.encode(data, element_size)[0])


@cache
def delta_size(data: bytes, base: bytes, element_size: int) -> int:
    """The stored size of ``data`` as a codec 4 blob against ``base`` (both are raw chunks)."""
    return DELTA_HEADER + len(blob_codec.encode(xor(data, base), element_size)[0])


# -- one chunk position over the versions ---------------------------------------------------------
@dataclass
class Layout:
    """How the versions' chunks at one position are stored: ``base[i]`` the index of the version
    whose chunk version i's chunk is a delta against (None: whole), ``cost[i]`` its stored size
    (0 when version i's chunk equals an earlier one's: ``same[i]`` names that one)."""

    pieces: list[Piece]
    base: list[int | None] = field(default_factory=list)
    cost: list[int] = field(default_factory=list)
    same: list[int] = field(default_factory=list)
    rewritten: int = 0  # raw bytes of stored chunks stored again (re-encoded or made whole)
    # update(i) right after version i was pushed and the policy ran (before later versions
    # changed the layout); filled by the policies that re-encode older chunks.
    at_push: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[bytes, int] = {}
        for i, p in enumerate(self.pieces):
            self.same.append(seen.setdefault(p.digest, i))
        self.base = [None] * len(self.pieces)
        self.cost = [self.whole(i) if self.same[i] == i else 0 for i in range(len(self.pieces))]

    def whole(self, i: int) -> int:
        p = self.pieces[i]
        return whole_size(p.data, p.element_size)

    def delta_cost(self, i: int, j: int) -> int | None:
        """The stored size of version i's chunk as a delta against version j's, None when that
        does not save MIN_SAVING."""
        i, j = self.same[i], self.same[j]
        if i == j or self.pieces[i].key is None:
            return None
        p = self.pieces[i]
        size = delta_size(p.data, self.pieces[j].data, p.element_size)
        return None if size > (1 - MIN_SAVING) * self.whole(i) else size

    def try_delta(self, i: int, j: int) -> bool:
        """Store version i's chunk as a delta against version j's if that saves MIN_SAVING."""
        size = self.delta_cost(i, j)
        if size is None:
            return False
        i, j = self.same[i], self.same[j]
        self.base[i], self.cost[i] = j, size
        return True

    def chain(self, i: int) -> list[int]:
        """The stored chunks version i's chunk needs, itself first, down to a whole one."""
        out, i = [], self.same[i]
        while i is not None:
            out.append(i)
            i = self.base[i]
            assert len(out) <= len(self.pieces), "a cycle"
        return out

    def depth(self, i: int) -> int:
        return len(self.chain(i)) - 1

    def stored(self) -> int:
        return sum(self.cost)

    def cold(self, i: int) -> int:
        return sum(self.cost[k] for k in self.chain(i))

    def update(self, i: int) -> int:
        """Bytes fetched to pull version i's chunk when version i-1's is at hand."""
        a, b = self.same[i], self.same[i - 1]
        if a == b:
            return 0
        if self.base[a] == b:
            return self.cost[a]
        if self.base[b] == a:
            return self.cost[b]
        return self.cold(i)


def forward(layout: Layout, depth: int | None) -> None:
    for i in range(1, len(layout.pieces)):
        j = layout.same[i - 1]
        if layout.same[i] == i and (depth is None or layout.depth(j) + 1 <= depth):
            layout.try_delta(i, j)


def against_first(layout: Layout, depth: int | None = None) -> None:
    for i in range(1, len(layout.pieces)):
        if layout.same[i] == i:
            layout.try_delta(i, 0)


def reverse(layout: Layout, depth: int | None, max_cuts: int = 0, attach: bool = False) -> None:
    """The product's chain policy (aim_cli.deltas.policy.plan) after each push: the newest version's
    chunk whole, every pair of consecutive versions so far planned again (what push inline and then
    `repo optimize` do), each action stored in order, a delta that does not save MIN_SAVING declined
    (the policy is asked again without it). ``max_cuts`` 0: the previous newest stays whole when
    its chain would be too deep; 1: the old end of the chain is cut instead."""
    bound = depth if depth is not None else len(layout.pieces) + 1
    markers: dict[str, set[str]] = {}  # base -> dependents, as the re-encoder keeps them
    for i in range(1, len(layout.pieces)):
        pairs = []
        for k in range(i, 0, -1):  # the newest pair first
            old, new = layout.same[k - 1], layout.same[k]
            p = layout.pieces[old]
            if old != new and p.key is not None:
                name, dtype, shape, index = p.key
                key = TensorKey(name, dtype, shape)
                pairs.append(Pair(str(old), str(new), len(p.data), p.element_size, key, index))
        apply_plan(layout, pairs, markers, bound, {str(layout.same[i])}, max_cuts, attach)
        layout.at_push[i] = layout.update(i)


def apply_plan(
    layout: Layout, pairs: list[Pair], markers: dict, bound: int, keep: set[str], max_cuts: int, attach: bool
) -> None:
    declined: set[tuple[str, str]] = set()
    while True:
        deltas = {str(k): str(b) for k, b in enumerate(layout.base) if b is not None}
        actions = policy.plan(
            pairs, markers, deltas, bound, keep_whole=keep, declined=declined, max_cuts=max_cuts, attach=attach
        )
        for a in actions:
            if a.base is not None and layout.delta_cost(int(a.chunk), int(a.base)) is None:
                declined.add((a.chunk, a.base))
                break
            for x in (*a.cuts, a.chunk):
                old = layout.base[int(x)]
                if old is not None:  # its marker, stale once x is stored again
                    markers[str(old)].discard(x)
                layout.base[int(x)], layout.cost[int(x)] = None, layout.whole(int(x))
                layout.rewritten += len(layout.pieces[int(x)].data)
            if a.base is not None:
                markers.setdefault(a.base, set()).add(a.chunk)
                layout.try_delta(int(a.chunk), int(a.base))
        else:
            return


def reverse_cut(layout: Layout, depth: int | None) -> None:
    reverse(layout, depth, max_cuts=1)


def reverse_cut_attach(layout: Layout, depth: int | None) -> None:
    reverse(layout, depth, max_cuts=1, attach=True)


Policy = tuple[str, Callable[[Layout, int | None], None], int | None]
POLICIES: list[Policy] = [
    ("forward, unbounded", forward, None),
    ("forward, depth <= 3", forward, 3),
    ("each against the first", against_first, None),
    ("reverse, depth <= 3", reverse, 3),
    ("reverse, depth <= 4", reverse, 4),
    ("reverse, depth <= 4, cut the old end", reverse_cut, 4),
    ("reverse, depth <= 3, cut and attach", reverse_cut_attach, 3),
    ("reverse, depth <= 4, cut and attach", reverse_cut_attach, 4),
    ("reverse, unbounded", reverse, None),
]


# -- a series of versions -------------------------------------------------------------------------
@dataclass
class PolicyFigures:
    policy: str
    stored: list[int]  # new stored bytes each version adds (after the whole series is laid out)
    total: int
    cold: list[int]  # bytes fetched by a cold pull of each version
    update: list[int]  # bytes fetched pulling version i into version i-1's directory (0 for i = 0)
    max_depth: int
    rewritten: int = 0  # raw bytes of chunks of older versions stored again, over the series
    # bytes fetched pulling version i into version i-1's directory just after version i's push
    at_push: list[int] = field(default_factory=list)


def positions(versions: list[list[Piece]]) -> list[list[Piece]]:
    """The pieces of every version at each chunk position: pairable ones by key, plain ones by
    their place among the plain pieces."""
    out: dict[tuple, list[Piece]] = {}
    for v, pieces in enumerate(versions):
        plain = 0
        for p in pieces:
            key = p.key if p.key is not None else ("plain", plain)
            plain += p.key is None
            out.setdefault(key, [])
            assert len(out[key]) == v, f"chunk {key} missing from a version"
            out[key].append(p)
    return list(out.values())


def plain_position(pieces: list[Piece]) -> bool:
    return pieces[0].key is None


def estimate_series(paths: list[Path]) -> list[PolicyFigures]:
    """Each policy's figures over the checkpoints ``paths`` (safetensors files, oldest first)."""
    series = positions([cut(p) for p in paths])
    figures = [estimate_policy(series, name, policy, depth) for name, policy, depth in POLICIES]
    figures.append(estimate_policy(series, "format 3 without deltas", lambda layout, depth: None, None))
    return figures


def estimate_policy(series: list[list[Piece]], name: str, policy, depth: int | None) -> PolicyFigures:
    n = len(series[0])
    stored, cold, update, at_push = [0] * n, [0] * n, [0] * n, [0] * n
    max_depth = rewritten = 0
    for pieces in series:
        layout = Layout(pieces)
        if not plain_position(pieces):
            policy(layout, depth)
        for i in range(n):
            stored[i] += layout.cost[i]
            cold[i] += layout.cold(i)
            update[i] += layout.update(i) if i else 0
            at_push[i] += layout.at_push.get(i, layout.update(i)) if i else 0
            max_depth = max(max_depth, layout.depth(i))
        rewritten += layout.rewritten
    return PolicyFigures(name, stored, sum(stored), cold, update, max_depth, rewritten, at_push)


def estimate_pair(path: Path, base: Path) -> int:
    """Stored bytes that ``path`` adds to a repository holding ``base`` (pushed with ``--base``:
    the base stays whole, each chunk of ``path`` a delta against the base's if that saves
    MIN_SAVING, else whole)."""
    total = 0
    for base_piece, piece in positions([cut(base), cut(path)]):
        layout = Layout([base_piece, piece])
        if not plain_position([base_piece, piece]):
            layout.try_delta(1, 0)
        total += layout.cost[1]
    return total
