"""`model copy` between format 3 repositories: a delta blob copied as stored, with the bases it
needs (docs/design.md §3.5).

    chain   the chunk's blob and every base its decoding reads, down to one stored whole
            (Repository.get_stored_chain: one decode verifies them all, each by BLAKE3)
    meet    the first base of the chain the destination holds (or this run writes): the chain is
            copied down to there, bottom up, so a delta's base is stored before it, and each
            delta's edge marker before the delta (no delta without its marker: gc keeps bases
            through markers, transitively, so bases that no version names stay)
    depth   the chain the destination would then hold (its part below the meeting base read
            from its headers) must fit the destination's max_depth; else the chunk is stored
            whole (decoded) and no base is copied for it

Threads: chunks are copied on ``jobs`` threads and two chains may share a base. Each blob is
written by one thread: the first to claim it, claiming its chain's blobs down to the meeting
point at once, under the lock. A chain that meets a blob another thread claimed waits for it to
be stored before writing a delta against it; claims are taken by running threads only and a
claimer never waits on a claim made after its own (the chain below a claimed blob was claimed
with it, or earlier), so waits never form a cycle.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from aim_cli.repository import Repository


@dataclass
class Moved:
    """What copying one chunk did."""

    read: int = 0  # stored bytes read from the source (the chain's bases included)
    written: int = 0  # stored bytes written for chunks of the version being copied
    bases: int = 0  # bases written that no chunk of that version names
    base_bytes: int = 0  # their stored bytes
    deltas: int = 0  # chunks of that version stored as deltas, as the source stores them


class ChainCopier:
    """Copies chunks with their chains into ``dst``. ``known`` (shared with the caller, under
    ``lock``) maps each blob the destination holds, as far as this run knows, to its stored
    size; ``chunks`` is the set of the version being copied (what is not a base)."""

    def __init__(self, src: Repository, dst: Repository, known: dict[str, int | None], lock: threading.Lock):
        deltas = dst.format().deltas
        assert deltas is not None
        self.src, self.dst, self.known, self.lock = src, dst, known, lock
        self.max_depth = deltas.max_depth
        self.claims: dict[str, threading.Event] = {}  # blobs a thread is writing
        self.depth: dict[str, int] = {}  # deltas below each blob this run met, in the destination
        self.chunks: set[str] = set()

    def move(self, digest: str, size: int, where: str) -> Moved:
        chain, raw = self.src.get_stored_chain(digest, size, context=where)
        names = [d for d, _ in chain]
        moved = Moved(read=sum(len(s) for _, s in chain))
        while True:
            self._learn(names[1:])
            claim = self._claim(names)
            if claim is not None:
                break
        count, whole, wait_for = claim
        try:
            if whole:
                written = self.dst.put_blob(digest, raw)  # element size 1, as across formats
                self._stored(digest, written, moved, delta=False)
                return moved
            if wait_for is not None:
                wait_for.wait()
            for i in reversed(range(count)):
                d, stored = chain[i]
                if i + 1 < len(chain):
                    self.dst.put_stored_delta(d, stored, names[i + 1])
                else:
                    self.dst.put_stored_blob(d, stored)
                self._stored(d, len(stored), moved, delta=i + 1 < len(chain), first=i == 0)
        finally:
            with self.lock:  # a failed write: release what is left, so no waiter hangs
                for d in names[:count]:
                    event = self.claims.pop(d, None)
                    if event is not None:
                        event.set()
        return moved

    def _stored(self, digest: str, size: int, moved: Moved, *, delta: bool, first: bool = True) -> None:
        with self.lock:
            self.known[digest] = size
            event = self.claims.pop(digest, None)
        if event is not None:
            event.set()
        if first or digest in self.chunks:
            moved.written += size
            moved.deltas += delta
        else:
            moved.bases += 1
            moved.base_bytes += size

    def _learn(self, bases: list[str]) -> None:
        """Ask the destination which of ``bases`` it holds, and how deep the first one it holds
        sits in its chains (one 48-byte read a level)."""
        with self.lock:
            unknown = [b for b in bases if b not in self.known and b not in self.claims]
        held = self.dst.stored_sizes(unknown) if unknown else {}
        with self.lock:
            self.known.update(held)
            meet = next((b for b in bases if b in self.known or b in self.claims), None)
            if meet is None or meet in self.depth:
                return
        depth = self._depth_in_dst(meet)
        with self.lock:
            self.depth.setdefault(meet, depth)

    def _depth_in_dst(self, digest: str) -> int:
        """The deltas below ``digest`` in the destination (past max_depth: max_depth + 1)."""
        depth, at = 0, self.dst.delta_base_of(digest)
        while at is not None and depth <= self.max_depth:
            depth += 1
            at = self.dst.delta_base_of(at)
        return depth

    def _claim(self, names: list[str]) -> tuple[int, bool, threading.Event | None] | None:
        """Claim the blobs of the chain ``names`` to write: (how many, from the chunk down; the
        chunk is to be stored whole; the claim to wait for before writing the lowest delta).
        None when what ``_learn`` found changed meanwhile: learn again."""
        with self.lock:
            first = names[0]
            if first in self.known or first in self.claims:  # another chain writes it (as its base)
                return 0, False, self.claims.get(first)
            meet = next((i for i, b in enumerate(names) if i and (b in self.known or b in self.claims)), len(names))
            if meet < len(names) and names[meet] not in self.depth:
                return None
            below = self.depth[names[meet]] if meet < len(names) else -1  # the last blob is whole
            if meet + below > self.max_depth:
                meet, below = 1, -1  # too deep for the destination: the chunk alone, whole
                whole = True
            else:
                whole = False
            for i in range(meet):
                self.claims[names[i]] = threading.Event()
                self.depth[names[i]] = 0 if whole else meet - i + below
            wait_for = self.claims.get(names[meet]) if meet < len(names) and not whole else None
            return meet, whole, wait_for
