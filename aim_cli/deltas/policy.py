"""The chain policy of format 3 (docs/design.md §3.5): which chunks to re-encode, as a pure function.

"Newest stays whole": for a version P and the next newer version N of a model, each pair (P_i, N_i)
(pairing.py) asks to store P_i as a delta against N_i, so that a cold pull of the newest fetches
whole chunks and a pull of N into P's directory fetches only the deltas (XOR is symmetric). A
delta's base may itself be a delta; a chain is bounded by ``max_depth`` (1: a delta whose base is
whole) and must never loop (a chunk never takes as base a chunk that depends on it).

``plan`` decides, ``ChainState.apply`` records what an action changes; the re-encoder (push inline,
`repo optimize`) stores each action in order: for ``Action(c, b, cuts)``, store every chunk of
``cuts`` whole, then ``c`` as a delta against ``b``; for ``Action(c, None)`` store ``c`` whole. Each
state between two stores keeps every chain within ``max_depth`` and free of cycles, so a reader
decodes whatever it finds, even beside a killed re-encoder. An action the store declines (the delta
does not save ``min_saving``) is skipped with its cuts, and the caller plans again with that pair in
``declined``: later actions assumed it.

When the bound is hit. Linking P_i under N_i puts P_i's whole subtree (the older chunks that depend
on it) one level below N_i. Format 3's first rule left P_i whole when that went past ``max_depth``:
then every ``max_depth + 1`` versions two neighbours are both whole and a pull of the newest into
the one before fetches a whole checkpoint, just when a pull of the newest matters most. Two rules
replace it:
- cut the old end: when N_i is to stay whole (the newest version's chunk, in ``keep_whole``), the
  chunks of P_i's subtree that would land one level too deep (at most ``max_cuts`` of them; on a
  model's own history there is one, the oldest of the chain) are stored whole first, then P_i is
  linked. The newest pair is always linked; the break moves back to the cut chunk.
- attach: a whole chunk that nothing depends on and that need not stay whole (the chunk just cut),
  whose older neighbour cannot take it as base the usual way (that neighbour's subtree is full),
  is stored as a delta against that neighbour (a forward delta) when the neighbour's chain leaves
  room. The next cuts attach to it in turn, so the history settles into runs of
  ``2 * max_depth + 1`` versions around one whole chunk (``max_depth`` reverse deltas before it,
  ``max_depth`` forward deltas after it) where the first rule made runs of ``max_depth + 1``:
  half the whole chunks, every chain still within ``max_depth``, at the price of about three
  chunks stored again per chunk pushed instead of one (benchmarks/training_bench.py measures both).
A subtree wider than ``max_cuts`` at the cut level (a base model's chunk with many fine-tunes
depending on it) is not cut: P_i stays as it is. Between two older versions (N_i not in
``keep_whole``) nothing is ever cut, so planning the whole history again converges: a plan applied,
a second plan is empty.

Idempotent: a P_i already a delta against N_i is skipped, and so is a P_i that is a delta against
anything else unless that base is in ``rebase_from`` (the caller's "older or absent" bases, e.g. the
chunks of the base model a fine-tune was pushed against with ``--base``): the pure function cannot
tell an older base from a newer one, and moving deltas between two newer bases would never settle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from aim_cli.deltas.pairing import Pair


@dataclass(frozen=True, slots=True)
class Action:
    """Store ``cuts`` whole, then ``chunk`` as a delta against ``base`` (whole when None)."""

    chunk: str
    base: str | None
    cuts: tuple[str, ...] = ()


class ChainState:
    """The deltas of a repository as the policy sees them.

    ``deltas`` (dependent -> base) is the truth: every blob stored as a delta, as its header says
    (the caller reads the headers of the dependents that the edge markers name). ``edges`` (base ->
    dependents, Edges.edges()) may hold stale markers too (left by a killed re-encoder); they
    count for the cycle check only (never under-estimating who depends on whom), while depths
    follow ``deltas``. A stale marker can refuse a link that was safe, so the re-encoder deletes
    a chunk's old marker once the chunk is stored in its new form (``apply`` does the same), and
    `repo optimize` deletes the stale ones before it plans."""

    def __init__(self, edges: Mapping[str, Set[str]], deltas: Mapping[str, str]):
        self.base: dict[str, str] = dict(deltas)
        self.children: dict[str, set[str]] = {}
        self.links: dict[str, set[str]] = {b: set(ds) for b, ds in edges.items()}
        for d, b in self.base.items():
            self.children.setdefault(b, set()).add(d)
            self.links.setdefault(b, set()).add(d)

    def apply(self, action: Action) -> None:
        for x in action.cuts:
            self._detach(x)
        self._detach(action.chunk)
        if action.base is not None:
            self.base[action.chunk] = action.base
            self.children.setdefault(action.base, set()).add(action.chunk)
            self.links.setdefault(action.base, set()).add(action.chunk)  # the marker written first

    def _detach(self, chunk: str) -> None:
        old = self.base.pop(chunk, None)
        if old is not None:
            self.children[old].discard(chunk)
            self.links[old].discard(chunk)  # the re-encoder deletes the marker once it is stale

    def depth(self, chunk: str) -> int | None:
        """The deltas between ``chunk`` and a whole chunk (0: whole); None on a loop."""
        n = 0
        while chunk in self.base:
            chunk = self.base[chunk]
            n += 1
            if n > len(self.base):
                return None
        return n

    def level(self, chunk: str, r: int) -> set[str]:
        """The chunks that depend on ``chunk`` through exactly ``r`` deltas (its own subtree is a
        tree: each chunk has one base)."""
        nodes = {chunk}
        for _ in range(r):
            nodes = {d for n in nodes for d in self.children.get(n, ())}
            if not nodes:
                break
        return nodes

    def depends_on(self, a: str, b: str) -> bool:
        """Whether ``a`` is ``b`` or may depend on it, through deltas or (stale) markers."""
        seen, todo = {b}, [b]
        while todo:
            n = todo.pop()
            if n == a:
                return True
            for d in self.links.get(n, ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return False


def plan(
    pairs: Sequence[Pair],
    edges: Mapping[str, Set[str]],
    deltas: Mapping[str, str],
    max_depth: int,
    *,
    keep_whole: Set[str] = frozenset(),
    rebase_from: Set[str] = frozenset(),
    declined: Set[tuple[str, str]] = frozenset(),
    max_cuts: int = 1,
    attach: bool = True,
) -> list[Action]:
    """The re-encodes that link each pair's older chunk under its newer one where the rules above
    allow, in the order to store them. ``pairs`` are tried in the order given (newest version
    pairs first is best), again until nothing changes; ``keep_whole`` (the chunks of the newest
    version, less those a ``--base`` push stored against its base model) are made whole first if
    any is a delta, and only a link under one of them may cut; ``max_cuts`` = 0 is the first rule (P_i stays
    whole when the chain would be too deep); ``attach``: a lone whole N_i that P_i cannot take as
    base is stored as a delta against P_i instead (see above)."""
    if max_depth < 1:
        raise ValueError(f"max_depth out of range: {max_depth}")
    state = ChainState(edges, deltas)
    actions: list[Action] = []

    def act(action: Action) -> None:
        actions.append(action)
        state.apply(action)

    for x in sorted(keep_whole):
        if x in state.base:
            act(Action(x, None))
    # Each pass links at least one chunk, and a chunk linked under a keep_whole chunk is never cut
    # again, so passes are few (the cap only guards that argument).
    for _ in range(2 + len(pairs) * (max_cuts + 2)):
        changed = False
        for p in pairs:
            action = _link(state, p, max_depth, keep_whole, rebase_from, declined, max_cuts)
            if action is None and attach:
                action = _attach(state, p, max_depth, keep_whole, declined)
            if action is not None:
                act(action)
                changed = True
        if not changed:
            break
    return actions


def _link(
    state: ChainState,
    p: Pair,
    max_depth: int,
    keep_whole: Set[str],
    rebase_from: Set[str],
    declined: Set[tuple[str, str]],
    max_cuts: int,
) -> Action | None:
    """The action linking ``p.older`` under ``p.newer`` now, or None."""
    old, new = p.older, p.newer
    if old == new or old in keep_whole or new in rebase_from or (old, new) in declined:
        return None
    current = state.base.get(old)
    if current == new or (current is not None and current not in rebase_from):
        return None
    up = state.depth(new)
    if up is None or state.depth(old) is None or state.depends_on(new, old):
        return None
    room = max_depth - up - 1  # how deep P's subtree may reach below P
    if room < 0:
        return None
    over = state.level(old, room + 1)
    if over and not (new in keep_whole and len(over) <= max_cuts):
        return None
    return Action(old, new, tuple(sorted(over)))


def _attach(
    state: ChainState, p: Pair, max_depth: int, keep_whole: Set[str], declined: Set[tuple[str, str]]
) -> Action | None:
    """The action storing ``p.newer`` as a delta against ``p.older`` (a forward delta), or None:
    only for a whole chunk that nothing depends on and that need not stay whole."""
    old, new = p.older, p.newer
    # The same XOR as the pair's other way round: declined one way, it is not tried the other.
    if old == new or new in keep_whole or new in state.base or state.children.get(new):
        return None
    if (new, old) in declined or (old, new) in declined:
        return None
    up = state.depth(old)
    if up is None or up + 1 > max_depth or state.depends_on(old, new):
        return None
    return Action(new, old)
