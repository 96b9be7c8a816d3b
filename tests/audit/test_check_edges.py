"""`repo check` judges format 3's edge markers against the blob headers (audit/check_edges.py),
without decoding: a delta without its marker, a missing base, a loop or a chain over max_depth is
damage; a stale or dangling marker is a note; the report stays bounded. Deltas are stored by hand
(tests/audit/deltas.py)."""

from __future__ import annotations

import json

from aim_cli.audit.check import MAX_EXAMPLES, check_repo
from aim_cli.format.layout import EDGES, blob_key, edge_key
from aim_cli.repository import Repository
from tests.audit.deltas import NAME, delta_repo
from tests.fakes import HookedBackend
from tests.helpers import altered_blob, ok


def _problems(report) -> dict[str, tuple[str, str]]:
    return {p.digest: (p.problem, p.detail) for p in report.problems}


def _sound_chain(tmp_path):
    """A version of three chunks stored as the chain x1 -> x2 -> x3 (x3 whole)."""
    r = delta_repo(tmp_path)
    x3 = r.chunk(3)
    x2 = r.chunk(2, like=x3)
    x1 = r.chunk(1, like=x2)
    r.commit("m", "v1", [x1, x2, x3])
    r.as_delta(x2, x3)
    r.as_delta(x1, x2)
    return r, (x1, x2, x3)


def test_a_sound_chain_passes_and_is_counted(tmp_path):
    r, _ = _sound_chain(tmp_path)
    report = check_repo(r.repository)
    assert report.ok and (report.deltas, report.markers, report.stale_markers, report.dangling_markers) == (2, 2, 0, 0)
    res = ok(r.cli("repo", "check", NAME))
    assert "deltas: 2 blobs stored as deltas, 2 edge markers\n" in res.stdout


def test_a_delta_without_its_marker_is_damage(tmp_path):
    r = delta_repo(tmp_path)
    base = r.chunk(1)
    dependent = r.chunk(2, like=base)
    r.commit("m", "v1", [base, dependent])
    r.as_delta(dependent, base, marker=False)
    report = check_repo(r.repository)
    problem, detail = _problems(report)[dependent]
    assert problem == "edge" and base in detail and edge_key(base, dependent) in detail
    res = r.cli("repo", "check", NAME)
    assert res.returncode == 5 and f"edge      blob {dependent}" in res.stdout
    assert "used by m:v1/weights.bin" in res.stdout
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1


def test_stale_and_dangling_markers_are_notes(tmp_path):
    r = delta_repo(tmp_path)
    base = r.chunk(1)
    whole = r.chunk(2, like=base)
    r.commit("m", "v1", [base, whole])
    r.repository.edges.put_edge(base, whole)  # a re-encoder wrote the marker, then was killed: still whole
    r.repository.edges.put_edge(base, "e" * 64)  # ... or its delta never landed at all
    report = check_repo(r.repository)
    assert report.ok and (report.deltas, report.markers, report.stale_markers, report.dangling_markers) == (0, 2, 1, 1)
    out = json.loads(ok(r.cli("repo", "check", NAME, "--json")).stdout)
    assert (out["ok"], out["stale_markers"], out["dangling_markers"]) == (True, 1, 1)
    text = ok(r.cli("repo", "check", NAME)).stdout
    assert f"1 stale marker (`aim_cli repo optimize {NAME}` removes them)" in text
    assert f"1 marker of deltas not stored (`aim_cli repo gc {NAME}` removes them)" in text


def test_a_chain_longer_than_max_depth_and_a_loop_are_damage(tmp_path):
    r = delta_repo(tmp_path)
    assert r.repository.format().deltas.max_depth == 4
    chain = [r.chunk(10)]
    for i in range(5):
        chain.append(r.chunk(11 + i, like=chain[-1]))
    chain.reverse()  # chain[0] the oldest, chain[5] the newest, whole
    r.commit("m", "v1", chain)
    for older, newer in zip(chain, chain[1:], strict=False):
        r.as_delta(older, newer)
    a = r.chunk(20)
    b = r.chunk(21, like=a)
    r.commit("m", "v2", [a, b])
    r.as_delta(a, b)
    r.as_delta(b, a)  # each the other's base: neither can be decoded
    problems = _problems(check_repo(r.repository))
    assert set(problems) == {chain[0], a, b}  # chain[1] is 4 deltas from a whole chunk: fine
    assert problems[chain[0]][0] == "chain" and "longer than max_depth 4" in problems[chain[0]][1]
    assert all(problems[d][0] == "chain" and "loops" in problems[d][1] for d in (a, b))


def test_a_header_that_is_no_blob_s_is_corrupt_without_read_data(tmp_path):
    r = delta_repo(tmp_path)
    digest = r.chunk(1)
    r.commit("m", "v1", [digest])
    r.repository.backend.put(blob_key(digest), b"NOPE" + bytes(60))
    assert _problems(check_repo(r.repository)) == {digest: ("corrupt", "no blob header")}


def test_damage_to_many_deltas_is_reported_bounded(tmp_path):
    r = delta_repo(tmp_path)
    base = r.chunk(0)
    dependents = [r.chunk(1 + i, like=base) for i in range(MAX_EXAMPLES + 20)]
    r.commit("m", "v1", [base, *dependents])
    for d in dependents:
        r.as_delta(d, base, marker=False)
    report = check_repo(r.repository)
    assert len(report.problems) == MAX_EXAMPLES and report.problems_omitted == 20
    assert report.problem_count == MAX_EXAMPLES + 20 and all(p.problem == "edge" for p in report.problems)


class _ListHooked(HookedBackend):
    def list(self, prefix):
        self.before("list", prefix)
        return self.inner.list(prefix)


def test_a_delta_moved_to_a_new_base_while_check_runs_is_not_damage(tmp_path):
    """A re-encoder moves d from base b1 to b2 between check's read of d's header and its listing
    of edges/: marker (b2, d), then the delta, then the old marker goes. The listing lacks (b1, d):
    check reads d again and finds it marked."""
    r = delta_repo(tmp_path)
    b1 = r.chunk(1)
    b2 = r.chunk(2, like=b1)
    d = r.chunk(3, like=b1)
    r.commit("m", "v1", [b1, b2, d])
    r.as_delta(d, b1)
    moved = []

    def re_encode(op, key):
        if op == "list" and key == EDGES and not moved:
            moved.append(True)
            r.as_delta(d, b2)
            r.repository.edges.delete_edges([(b1, d)])

    report = check_repo(Repository(_ListHooked(r.repository.backend, before=re_encode), NAME))
    assert moved and report.ok and report.deltas == 1 and report.markers == 1


def test_read_data_decodes_every_chain_and_names_what_a_damaged_base_breaks(tmp_path):
    """--read-data decodes each delta through its chain: a sound chain reads clean; once the
    whole chunk at its end is altered, it is corrupt and so are the deltas whose chain reaches it."""
    r, (x1, x2, x3) = _sound_chain(tmp_path)
    report = check_repo(r.repository, read_data=True)
    assert report.ok and report.read == 3
    backend = r.repository.backend
    backend.put(blob_key(x3), altered_blob(r.repository, backend.get(blob_key(x3)), 0, 0x01))
    report = check_repo(r.repository, read_data=True)
    problems = _problems(report)
    assert not report.ok and set(problems) == {x1, x2, x3}
    assert all(kind == "corrupt" for kind, _ in problems.values())
