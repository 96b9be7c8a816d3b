"""The chain policy (aim_cli/deltas/policy.py, docs/design.md §3.5) on random histories: whatever
the versions, the order in which pairs are planned, the deltas the store declines and the
re-encoders killed midway, no chain ever loops or passes max_depth, the newest version's chunks
are whole after its push, and a plan carried out leaves nothing to do. Golden shapes pin what the
rules lay out on a model's linear history."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.deltas.pairing import Pair, TensorKey
from aim_cli.deltas.policy import Action, ChainState, plan


class Store:
    """A repository's deltas as a re-encoder leaves them: markers (never deleted unless asked)
    and the truth, each action stored step by step and the chains checked after every step."""

    def __init__(self, max_depth: int):
        self.max_depth = max_depth
        self.markers: dict[str, set[str]] = {}
        self.deltas: dict[str, str] = {}

    def chain(self, chunk: str) -> list[str]:
        out = [chunk]
        while out[-1] in self.deltas:
            out.append(self.deltas[out[-1]])
            assert len(out) == len(set(out)), f"a cycle through {chunk}: {out}"
        return out

    def check(self) -> None:
        for chunk in self.deltas:
            depth = len(self.chain(chunk)) - 1
            assert depth <= self.max_depth, f"{chunk} at depth {depth} > {self.max_depth}"

    def store(self, action: Action, *, crash: bool = False) -> None:
        """Store ``action`` as the re-encoder does; ``crash``: killed before it deleted the old
        markers (they stay, stale)."""
        old = {x: self.deltas.get(x) for x in (*action.cuts, action.chunk)}
        for x in action.cuts:
            self.deltas.pop(x, None)
            self.check()
        if action.base is not None:
            self.markers.setdefault(action.base, set()).add(action.chunk)  # the marker first
            self.deltas[action.chunk] = action.base
        else:
            self.deltas.pop(action.chunk, None)
        self.check()
        for x, base in old.items():
            if base is not None and not crash and base != action.base:
                self.markers[base].discard(x)

    def drop_stale_markers(self) -> None:
        for b, ds in self.markers.items():
            ds.intersection_update({d for d in ds if self.deltas.get(d) == b})

    def run(self, pairs, keep=frozenset(), *, rng=None, kill=False, **kw) -> set[tuple[str, str]]:
        """Plan and store until nothing is left (or, ``kill``, stop at a random step); a delta the
        store declines (``rng``) is passed back as declined. Returns the declined pairs."""
        declined: set[tuple[str, str]] = set()
        while True:
            actions = plan(pairs, self.markers, self.deltas, self.max_depth, keep_whole=keep, declined=declined, **kw)
            for a in actions:
                if kill and rng.random() < 0.1:
                    self.store(a, crash=True)
                    return declined
                if a.base is not None and rng is not None and rng.random() < 0.2:
                    declined.add((a.chunk, a.base))
                    break
                self.store(a)
            else:
                return declined


def consecutive_pairs(versions: list[list[str]], upto: int) -> list[Pair]:
    """Pairs of every two consecutive versions up to ``upto``, the newest first."""
    out, seen = [], set()
    for k in range(upto, 0, -1):
        for pos, (a, b) in enumerate(zip(versions[k - 1], versions[k], strict=True)):
            if a != b and (a, b) not in seen:
                seen.add((a, b))
                out.append(Pair(a, b, 8, 2, TensorKey(f"t{pos}", "BF16", (4,)), 0))
    return out


histories = st.integers(1, 3).flatmap(
    lambda positions: st.lists(
        st.lists(st.integers(0, 9), min_size=positions, max_size=positions), min_size=2, max_size=12
    )
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=histories,
    shared=st.booleans(),
    max_depth=st.integers(1, 4),
    max_cuts=st.integers(0, 2),
    attach=st.booleans(),
    rng=st.randoms(use_true_random=False),
)
def test_random_histories_keep_every_rule(values, shared, max_depth, max_cuts, attach, rng):
    # ``shared``: chunk digests shared across positions (a value reappears anywhere: reverts,
    # duplicates), else each position has its own.
    versions = [[f"c{v}" if shared else f"p{pos}c{v}" for pos, v in enumerate(row)] for row in values]
    store = Store(max_depth)
    for i in range(1, len(versions)):
        keep = set(versions[i])
        inline = consecutive_pairs(versions, i)[: len(versions[i])]
        store.run(inline, keep, rng=rng, kill=rng.random() < 0.3, max_cuts=max_cuts, attach=attach)
        if rng.random() < 0.5:
            store.drop_stale_markers()  # `repo optimize` deletes stale markers
        pairs = consecutive_pairs(versions, i)
        rng.shuffle(pairs)
        declined = store.run(pairs, keep, rng=rng, max_cuts=max_cuts, attach=attach)
        assert not keep & store.deltas.keys(), "a chunk of the newest version is a delta"
        again = plan(
            pairs,
            store.markers,
            store.deltas,
            max_depth,
            keep_whole=keep,
            declined=declined,
            max_cuts=max_cuts,
            attach=attach,
        )
        assert again == [], "a plan carried out left work to do"


def shape(versions: int, max_depth: int, **kw) -> str:
    """Push a linear history of ``versions`` distinct chunks at one position, planning every
    consecutive pair after each push; W a whole chunk, < a delta against the next newer one, > a
    delta against the next older one."""
    chunks = [[f"v{i:02d}"] for i in range(versions)]
    store = Store(max_depth)
    for i in range(1, versions):
        store.run(consecutive_pairs(chunks, i), set(chunks[i]), **kw)
    out = ""
    for i, [c] in enumerate(chunks):
        base = store.deltas.get(c)
        out += "W" if base is None else "<" if base > c else ">"
        assert base is None or abs(int(base[1:]) - i) == 1
    return out


def test_the_first_rule_leaves_two_whole_neighbours_every_max_depth_plus_one():
    assert shape(12, 3, max_cuts=0) == "<<<W<<<W<<<W"
    assert shape(13, 3, max_cuts=0) == "<<<W<<<W<<<WW"  # the newest pair: both whole


def test_cutting_the_old_end_always_links_the_newest_pair():
    for n in range(2, 20):
        s = shape(n, 3, max_cuts=1, attach=False)
        assert s.endswith("<W"), (n, s)
        assert s.count("W") <= -(-n // 4) + 1, (n, s)


def test_cut_and_attach_settle_into_runs_of_two_max_depth_plus_one():
    assert shape(25, 3) == "<<<W>>><<<W>>><<<W>>><<<W"
    assert shape(23, 2) == "<<W>><<W>><<W>><<W>><<W"


def test_the_newest_is_made_whole_and_its_older_pair_linked():
    # v1 was a delta against v0 (pushed with --base of another model, say); v1 is the newest.
    p = Pair("v0", "v1", 8, 2, TensorKey("t", "BF16", (4,)), 0)
    assert plan([p], {"v0": {"v1"}}, {"v1": "v0"}, 3, keep_whole={"v1"}) == [
        Action("v1", None),
        Action("v0", "v1"),
    ]


def test_a_stale_marker_counts_against_a_cycle():
    # The truth says nothing, but a marker says v1 may be a delta against v0: v0 must not take
    # v1 as base.
    p = Pair("v0", "v1", 8, 2, TensorKey("t", "BF16", (4,)), 0)
    assert plan([p], {"v0": {"v1"}}, {}, 3, keep_whole={"v1"}) == []
    assert plan([p], {}, {}, 3, keep_whole={"v1"}) == [Action("v0", "v1")]


def test_a_wide_subtree_is_not_cut():
    # b (a base model's chunk) has three fine-tunes' chunks as dependents; linking b under the
    # newest chunk n with max_depth 1 would need three cuts.
    p = Pair("b", "n", 8, 2, TensorKey("t", "BF16", (4,)), 0)
    deltas = {"f1": "b", "f2": "b", "f3": "b"}
    assert plan([p], {}, deltas, 1, keep_whole={"n"}) == []
    assert plan([p], {}, deltas, 1, keep_whole={"n"}, max_cuts=3) == [Action("b", "n", ("f1", "f2", "f3"))]
    assert plan([p], {}, deltas, 2, keep_whole={"n"}) == [Action("b", "n")]


def test_a_delta_moves_off_its_base_only_when_asked():
    p = Pair("f1", "f2", 8, 2, TensorKey("t", "BF16", (4,)), 0)
    deltas = {"f1": "b"}  # fine-tune version 1 against its base model's chunk b
    assert plan([p], {}, deltas, 4, keep_whole={"f2"}) == []
    assert plan([p], {}, deltas, 4, keep_whole={"f2"}, rebase_from={"b"}) == [Action("f1", "f2")]


def test_declined_pairs_are_not_planned():
    p = Pair("v0", "v1", 8, 2, TensorKey("t", "BF16", (4,)), 0)
    assert plan([p], {}, {}, 2, declined={("v0", "v1")}) == []


def test_chain_state_records_what_an_action_changes():
    state = ChainState({}, {"a": "b", "b": "c"})
    assert state.depth("a") == 2 and state.level("c", 2) == {"a"}
    state.apply(Action("b", "d", ("a",)))
    assert state.depth("a") == 0 and state.depth("b") == 1 and state.level("d", 1) == {"b"}
    assert state.depends_on("b", "d") and not state.depends_on("d", "b")
    assert not state.depends_on("a", "b")  # the re-encoder deleted the stale marker b -> a
    assert ChainState({"b": {"a"}}, {}).depends_on("a", "b")  # a marker alone counts
    assert ChainState({}, {"a": "b", "b": "a"}).depth("a") is None


def test_max_depth_is_checked():
    with pytest.raises(ValueError):
        plan([], {}, {}, 0)
