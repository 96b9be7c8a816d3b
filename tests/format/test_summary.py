"""Per-version summaries (issue 9, "listing without reading manifests"): summary.py's strict
decoding, and the store's use of them on the local backend and on S3 (the ``repo`` fixture of
tests/conftest.py), through the library and through the installed console script.

What must hold: listings and the newest-tag resolution read summaries, not manifests; a missing
summary is rebuilt from its manifest; a hostile or disagreeing one makes a listing show at worst
wrong metadata, never a pull fetch another version; `repo check` reports every damaged summary;
gc never reads them and deletions remove them with their version.
"""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.audit import gc
from aim_cli.audit.check import check_repo
from aim_cli.errors import IntegrityError, StorageError, VersionNotFoundError
from aim_cli.format import manifest as mf
from aim_cli.format import summary as sm
from aim_cli.format.layout import SummaryKey, VersionKey, manifest_key, parse_model_key, summary_key
from aim_cli.repository import Repository
from tests.fakes import Fault, FaultyBackend
from tests.helpers import LOCAL_ONLY, make_variant_model, ok, one_line_error, version_bytes

#: Nothing here depends on the storage format: no format 1 run of the `repo` fixture (conftest.py).
pytestmark = pytest.mark.format_neutral

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
H = "ab" * 32


def _valid_doc(**changes) -> dict:
    doc = {
        "format": 1,
        "model": "m",
        "tag": "v1",
        "digest": H,
        "created_at": "2026-01-01T00:00:00.000000Z",
        "created_by": "u@h",
        "message": "first",
        "total_size": 10,
        "files": 2,
        "chunks": 3,
    }
    return doc | changes


def _push(repo, tmp_path, tag: str, variant: int):
    return repo.push("m", make_variant_model(tmp_path / f"src-{tag}", variant=variant), tag)


def _counted(repo) -> tuple[Repository, FaultyBackend]:
    """The same storage through a backend that records every call."""
    backend = FaultyBackend(repo.repository.backend)
    return Repository(backend, repo.name, jobs=4), backend


def _listed_no_earlier(repo, tag: str) -> list[str]:
    """The manifests of model m listed as written no earlier than ``tag``'s (itself included):
    those the newest-version resolution reads when ``tag`` is the newest (repository/versions.py)."""
    listed = {info.key: info.mtime for info in repo.repository.backend.list("models/m/versions/")}
    return sorted(k for k, t in listed.items() if t >= listed[manifest_key("m", tag)])


def _gets(backend: FaultyBackend, part: str) -> list[str]:
    return [key for op, key, _ in backend.calls if op == "get" and f"/{part}/" in key]


def _keys(repo) -> set[str]:
    return {i.key for i in repo.repository.backend.list("models/")}


# == summary.py ==================================================================================
def test_encode_decode_round_trip_and_key_order():
    s = sm.Summary(**_valid_doc())
    raw = sm.encode(s)
    assert list(json.loads(raw)) == [
        "format",
        "model",
        "tag",
        "digest",
        "created_at",
        "created_by",
        "message",
        "total_size",
        "files",
        "chunks",
    ]
    assert sm.decode(raw, where="k") == s


@pytest.mark.parametrize(
    "change, why",
    [
        ({"format": 2}, "unknown format"),
        ({"model": "../x"}, "invalid model name"),
        ({"tag": "v1\n"}, "invalid tag name"),
        ({"tag": ""}, "invalid tag name"),
        ({"digest": H.upper()}, "digest"),
        ({"digest": H[:-1]}, "digest"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": "2026-13-01T00:00:00Z"}, "created_at"),
        ({"created_at": "2026-01-01T00:00:00.000000Z\n"}, "created_at"),
        ({"message": "x" * (sm.MAX_MESSAGE_CHARS + 1)}, "too long"),
        ({"created_by": "x" * (sm.MAX_CREATED_BY_CHARS + 1)}, "too long"),
        ({"total_size": -1}, "total_size"),
        ({"files": 2**63}, "files"),
        ({"chunks": 10**400}, "chunks"),
        ({"total_size": 1.0}, "cannot be parsed"),
        ({"files": True}, "cannot be parsed"),
        ({"extra": 1}, "cannot be parsed"),
        ({"message": None}, "cannot be parsed"),
    ],
)
def test_decode_refuses_every_bad_field(change, why):
    raw = json.dumps(_valid_doc(**change)).encode()
    with pytest.raises(IntegrityError, match=why) as err:
        sm.decode(raw, where="models/m/summaries/v1.json")
    assert err.value.exit_code == 5 and "models/m/summaries/v1.json" in err.value.message


def test_decode_refuses_oversized_input_before_parsing():
    raw = json.dumps(_valid_doc(message=" " * sm.MAX_SUMMARY_BYTES)).encode()
    with pytest.raises(IntegrityError, match="larger than"):
        sm.decode(raw, where="k")


def test_of_manifest_cuts_text_so_every_summary_fits_its_bound():
    """The worst message a manifest may hold (control characters, escaped to 6 bytes each) and
    the longest author still give a summary under MAX_SUMMARY_BYTES, with the largest counts."""
    m = mf.Manifest(
        1, "m" * 128, "t" * 128, "2026-01-01T00:00:00.123456789Z", "\x01" * 10_000, "\x1f" * 100_000, 2**63 - 1, []
    )
    s = sm.of_manifest(m, H, where="x")
    assert len(s.message) == sm.MAX_MESSAGE_CHARS and len(s.created_by) == sm.MAX_CREATED_BY_CHARS
    raw = sm.encode(msgspec.structs.replace(s, files=2**63 - 1, chunks=2**63 - 1))
    assert len(raw) < sm.MAX_SUMMARY_BYTES
    assert sm.decode(raw, where="x").message == "\x1f" * sm.MAX_MESSAGE_CHARS


def test_of_manifest_bytes_matches_the_full_decode():
    h = "cd" * 32
    files = [mf.FileEntry(f"f{i}", 6, 0o644, h, [(h, 2), (h, 4)]) for i in range(3)]
    m = mf.Manifest(1, "m", "v1", "2026-01-01T00:00:00.000000Z", "u@h", "msg", 18, files)
    raw = mf.encode(m)
    light = sm.of_manifest_bytes(raw, model="m", tag="v1", where="m:v1")
    assert light == sm.of_manifest(mf.decode(raw, where="m:v1"), mf.digest_of(raw), where="m:v1")
    assert (light.files, light.chunks, light.total_size, light.digest) == (3, 6, 18, mf.digest_of(raw))
    with pytest.raises(IntegrityError, match="names"):
        sm.of_manifest_bytes(raw, model="m", tag="v2", where="m:v2")
    with pytest.raises(IntegrityError, match="cannot be parsed"):
        sm.of_manifest_bytes(raw[:-1], model="m", tag="v1", where="m:v1")


def test_manifest_created_at_must_be_rfc3339_utc():
    raw = mf.encode(mf.Manifest(1, "m", "v1", "2026-01-01 00:00:00", "u@h", "", 0, []))
    with pytest.raises(IntegrityError, match="created_at"):
        mf.decode(raw, where="m:v1")
    with pytest.raises(IntegrityError, match="created_at"):
        sm.of_manifest_bytes(raw, model="m", tag="v1", where="m:v1")


def _decodes_or_refuses(raw: bytes) -> sm.Summary | None:
    try:
        s = sm.decode(raw, where="models/m/summaries/v1.json")
    except IntegrityError as e:
        assert e.exit_code == 5 and "\n" not in e.message and len(e.message) < 1000
        e.message.encode("utf-8")
        return None
    assert isinstance(s, sm.Summary) and sm._problem(s) is None
    assert len(sm.encode(s)) <= sm.MAX_SUMMARY_BYTES
    return s


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_decode_to_a_summary_or_integrity_error(raw):
    _decodes_or_refuses(raw)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@FAST
@given(st.dictionaries(st.sampled_from([*sm.Summary.__struct_fields__, "x"]), _json_values, max_size=4))
def test_mutated_summaries_decode_or_are_refused(changes):
    raw = json.dumps(_valid_doc(**changes)).encode()
    s = _decodes_or_refuses(raw)
    if s is not None:  # accepted: exactly the values written
        assert msgspec.structs.asdict(s) == {
            "stored_size": None,
            "delta_base": None,
            "new_stored_size": None,
        } | _valid_doc(**changes)


@FAST
@given(
    st.one_of(
        st.binary(max_size=300),
        st.dictionaries(st.sampled_from([*mf.Manifest.__struct_fields__, "x"]), _json_values, max_size=4),
    )
)
def test_summarising_any_stored_manifest_gives_a_summary_or_integrity_error(mutation):
    """What a listing's rebuild meets in storage: random bytes, or a valid manifest with fields
    replaced by random JSON."""
    if isinstance(mutation, bytes):
        raw = mutation
    else:
        doc = {
            "format": 1,
            "model": "m",
            "tag": "v1",
            "created_at": "2026-01-01T00:00:00Z",
            "created_by": "u",
            "message": "",
            "total_size": 3,
            "files": [{"path": "a", "size": 3, "mode": 420, "blake3": H, "chunks": [[H, 3]]}],
        }
        raw = json.dumps(doc | mutation).encode()
    try:
        s = sm.of_manifest_bytes(raw, model="m", tag="v1", where="m:v1")
    except IntegrityError as e:
        assert e.exit_code == 5 and "\n" not in e.message and len(e.message) < 1000
        return
    assert sm.decode(sm.encode(s), where="k") == s and s.digest == mf.digest_of(raw)


@FAST
@given(st.text(max_size=sm.MAX_MESSAGE_CHARS + 10), st.text(max_size=300), st.integers(0, 2**63 - 1))
def test_every_summary_of_a_manifest_round_trips(message, author, size):
    m = mf.Manifest(1, "m", "v1", "2026-01-01T00:00:00.000000Z", author, message, size, [])
    try:
        s = sm.of_manifest(m, H, where="m:v1")
    except IntegrityError:
        return
    assert sm.decode(sm.encode(s), where="k") == s


# == the layout ===================================================================================
def test_summary_keys_are_the_stores_own_never_strays():
    assert summary_key("m", "v1") == "models/m/summaries/v1.json"
    assert parse_model_key("models/m/summaries/v1.json") == SummaryKey("models/m/summaries/v1.json", "m", "v1")
    assert parse_model_key("models/m/versions/v1.json") == VersionKey("models/m/versions/v1.json", "m", "v1")
    for stray in (
        "models/m/summaries/v1 copy.json",
        "models/m/summaries/.DS_Store",
        "models/m/summaries/a/b.json",
        "models/m/summaries/v1.txt",
        "models/-m/summaries/v1.json",
    ):
        key = parse_model_key(stray)
        assert isinstance(key, VersionKey) and key.tag is None, stray


# == push writes it; listings read it =============================================================
def test_push_writes_the_summary_its_manifest_gives(repo, tmp_path):
    result = _push(repo, tmp_path, "v1", 1)
    stored = repo.repository.get_summary("m", "v1")
    ref = repo.repository.get_version("m", "v1")
    # stored_size and new_stored_size are the fields push measures rather than derives (formats 2 and 3).
    measured = repo.repository.summary_of(ref, stored.stored_size, new_stored_size=stored.new_stored_size)
    assert stored == measured and stored.digest == result.digest
    expected_stored = version_bytes(repo.repository, "m", "v1")[1] if repo.format != 1 else None
    # The first version: everything it stores is new.
    assert stored.stored_size == expected_stored and stored.new_stored_size == expected_stored
    assert (stored.files, stored.chunks) == (2, sum(len(f.chunks) for f in ref.manifest.files))


def test_listings_and_newest_pull_read_summaries_not_manifests(repo, tmp_path):
    for i in range(1, 6):
        _push(repo, tmp_path, f"v{i}", i)
    counted, backend = _counted(repo)
    summaries = counted.list_versions("m")
    assert [s.tag for s in summaries] == ["v1", "v2", "v3", "v4", "v5"]
    assert counted.list_models() == ["m"]
    assert _gets(backend, "versions") == []  # no manifest read to list
    assert [op for op, key, _ in backend.calls if op == "list"] == ["list", "list"]  # one listing each

    backend.calls.clear()
    ref, newest = counted.resolve_version("m", None, None)
    assert newest and ref.manifest.tag == "v5"
    # One manifest, not five, plus those the listing cannot tell apart from v5's by modification
    # time (S3's LastModified has 1-second resolution: pushes within that second tie).
    gets = _gets(backend, "versions")
    assert gets[0] == manifest_key("m", "v5") and sorted(gets) == _listed_no_earlier(repo, "v5")


def test_a_repository_without_summaries_gets_them_rebuilt_by_the_first_listing(repo, tmp_path):
    """As an older aim_cli left it: the first listing reads every manifest and writes the summaries
    back; from then on the newest-tag resolution reads one manifest."""
    for i in range(1, 4):
        _push(repo, tmp_path, f"v{i}", i)
    expected = repo.repository.list_versions("m")
    repo.repository.backend.delete_many([summary_key("m", f"v{i}") for i in range(1, 4)])
    counted, backend = _counted(repo)
    ref = counted.newest_version("m")
    assert ref.manifest.tag == "v3" and len(_gets(backend, "versions")) == 3 + 1
    # A rebuilt summary is derived from its manifest alone: no stored size (shown as "-").
    rebuilt = [msgspec.structs.replace(s, stored_size=None, new_stored_size=None) for s in expected]
    assert counted.list_versions("m") == rebuilt
    backend.calls.clear()
    assert counted.newest_version("m").digest == ref.digest
    gets = _gets(backend, "versions")
    assert gets[0] == manifest_key("m", "v3") and sorted(gets) == _listed_no_earlier(repo, "v3")


def test_a_read_only_user_lists_without_writing_summaries(repo, tmp_path):
    _push(repo, tmp_path, "v1", 1)
    repo.repository.backend.delete(summary_key("m", "v1"))
    backend = FaultyBackend(repo.repository.backend, Fault("put", "storage", "models/*", times=None))
    listed = Repository(backend, repo.name).list_versions("m")
    assert [s.tag for s in listed] == ["v1"] and ("put", summary_key("m", "v1"), "storage") in backend.struck
    assert summary_key("m", "v1") not in _keys(repo)


def test_a_failed_summary_write_is_a_warning_and_push_succeeds(repo, tmp_path, caplog):
    """A push killed, or failing, between its two writes: the version is committed; the next
    listing gives it its summary."""
    backend = FaultyBackend(repo.repository.backend, Fault("put", "storage", "models/*/summaries/*"))
    from aim_cli import push as pushmod

    result = pushmod.push(Repository(backend, repo.name), "m", "v1", make_variant_model(tmp_path / "src", variant=1))
    assert result.digest == repo.repository.get_version("m", "v1").digest
    assert "its summary could not be written" in caplog.text
    assert summary_key("m", "v1") not in _keys(repo)
    assert repo.repository.list_versions("m")[0].digest == result.digest
    assert summary_key("m", "v1") in _keys(repo)


# == hostile and damaged summaries ================================================================
HOSTILE = {
    "garbage": b"\xff\x00not json",
    "unknown field": json.dumps(_valid_doc(evil=1)).encode(),
    "other version": json.dumps(_valid_doc(tag="v2")).encode(),
    "huge int": json.dumps(_valid_doc(total_size=2**70)).encode(),
    "oversized": b"{" + b" " * (sm.MAX_SUMMARY_BYTES + 10) + b"}",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_summary_is_damage_and_listings_rebuild_it(repo, tmp_path, case):
    result = _push(repo, tmp_path, "v1", 1)
    key = summary_key("m", "v1")
    repo.repository.backend.put(key, HOSTILE[case])

    checked = repo.cli("repo", "check", repo.name)
    assert checked.returncode == 5 and "Traceback" not in checked.stderr
    assert f"broken    {key}: summary {key} is invalid" in checked.stdout

    counted, backend = _counted(repo)
    listed = ok(repo.cli("model", "versions", repo.name, "m", "--json"))
    assert json.loads(listed.stdout)[0]["digest"] == result.digest  # the manifest's, not the summary's
    assert listed.stderr.count("\n") == 1 and key in listed.stderr and "rebuilt it from its manifest" in listed.stderr
    assert counted.list_versions("m")[0].digest == result.digest and _gets(backend, "versions") == []
    assert all(bound == sm.MAX_SUMMARY_BYTES for op, k, bound in backend.calls if op == "get" and k == key)
    ok(repo.cli("repo", "check", repo.name))


def test_a_lying_summary_never_makes_pull_fetch_another_version(repo, tmp_path):
    """A summary of v1 that claims to be the newest, with v2's digest: listings show it, but the
    newest-tag pull reads v1's manifest, sees it is not what the summary says, and stops."""
    _push(repo, tmp_path, "v1", 1)
    v2 = _push(repo, tmp_path, "v2", 2)
    key = summary_key("m", "v1")
    lie = msgspec.structs.replace(
        repo.repository.get_summary("m", "v1"), created_at="2099-01-01T00:00:00Z", digest=v2.digest
    )
    repo.repository.backend.put(key, sm.encode(lie))

    listed = json.loads(ok(repo.cli("model", "versions", repo.name, "m", "--json")).stdout)
    assert [v["tag"] for v in listed] == ["v2", "v1"]  # wrong metadata: the worst a summary can do
    dest = tmp_path / "dest"
    for args in (
        ("model", "pull", repo.name, "m", str(dest), "-q"),
        ("model", "info", repo.name, "m"),
        ("model", "verify", repo.name, "m", "-q"),
    ):
        one_line_error(repo.cli(*args), 5, key, "disagrees with its manifest", "digest", "repo check")
    assert not dest.exists() or not any(dest.iterdir())
    ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v2", "-q"))  # a named tag still works

    checked = repo.cli("repo", "check", repo.name)
    assert (
        checked.returncode == 5
        and f"broken    {key}: disagrees with its manifest (digest, created_at)" in checked.stdout
    )
    repo.repository.backend.delete(key)  # as check says: the next listing rebuilds it
    pulled = ok(repo.cli("model", "pull", repo.name, "m", str(dest), "-q"))
    assert "m:v2 (newest)" in pulled.stdout
    ok(repo.cli("repo", "check", repo.name))


def test_an_orphan_summary_is_ignored_reported_and_removable(repo, tmp_path):
    """A summary whose version is gone (a listing rebuilt it while a delete ran)."""
    _push(repo, tmp_path, "v1", 1)
    _push(repo, tmp_path, "v2", 2)
    orphan = repo.repository.get_summary("m", "v2")
    ok(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v2"))
    key = summary_key("m", "v2")
    assert key not in _keys(repo)
    repo.repository.put_summary(orphan)
    repo.repository.put_summary(msgspec.structs.replace(orphan, model="ghost", tag="v9"))  # a model of orphans only

    assert [v["tag"] for v in json.loads(ok(repo.cli("model", "versions", repo.name, "m", "--json")).stdout)] == ["v1"]
    assert ok(repo.cli("model", "list", repo.name)).stdout.split() == ["m"]
    one_line_error(repo.cli("model", "versions", repo.name, "ghost"), 3, "'ghost'")
    assert "m:v1 (newest)" in ok(repo.cli("model", "pull", repo.name, "m", str(tmp_path / "d"), "-q")).stdout

    checked = repo.cli("repo", "check", repo.name)
    assert checked.returncode == 5
    assert f"broken    {key}: a summary without its version" in checked.stdout
    assert f"model delete-version {repo.name} m --tag v2" in checked.stdout
    gced = ok(repo.cli("repo", "gc", repo.name))  # gc neither reads nor minds summaries
    assert gced.stderr == "" and key in _keys(repo)
    ok(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v2"))
    ok(repo.cli("model", "delete-version", repo.name, "ghost", "--tag", "v9"))
    assert _keys(repo) == {manifest_key("m", "v1"), summary_key("m", "v1")}
    one_line_error(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v2"), 3, "'v2'")
    ok(repo.cli("repo", "check", repo.name))


# == deletion and gc ==============================================================================
def test_deletions_remove_summaries_with_their_versions(repo, tmp_path):
    for i in range(1, 4):
        _push(repo, tmp_path, f"v{i}", i)
    assert len([k for k in _keys(repo) if "/summaries/" in k]) == 3
    ok(repo.cli("model", "delete-version", repo.name, "m", "--tag", "v1"))
    assert summary_key("m", "v1") not in _keys(repo) and manifest_key("m", "v1") not in _keys(repo)
    res = ok(repo.cli("model", "delete", repo.name, "m", "--yes"))
    assert "(2 versions)" in res.stdout and _keys(repo) == set()


def test_a_delete_killed_between_its_two_writes_leaves_a_listed_version(repo, tmp_path):
    """The summary goes first: a delete that dies before the manifest's removal leaves a version
    that is still whole, and whose summary the next listing rebuilds."""
    _push(repo, tmp_path, "v1", 1)
    backend = FaultyBackend(repo.repository.backend, Fault("delete", "storage", "models/*/versions/*"))
    with pytest.raises(StorageError):
        Repository(backend, repo.name).delete_version("m", "v1")
    assert _keys(repo) == {manifest_key("m", "v1")}
    assert [s.tag for s in repo.repository.list_versions("m")] == ["v1"]
    assert summary_key("m", "v1") in _keys(repo)
    ok(repo.cli("repo", "check", repo.name))


def test_gc_never_reads_summaries_and_keeps_them(repo, tmp_path):
    v1 = _push(repo, tmp_path, "v1", 1)
    _push(repo, tmp_path, "v2", 2)
    counted, backend = _counted(repo)
    assert all("/summaries/" not in vk.key for vk in counted.iter_version_keys())
    result = gc.collect(counted)
    assert result.plan.versions == 2 and _gets(backend, "summaries") == []
    assert {summary_key("m", "v1"), summary_key("m", "v2")} <= _keys(repo)
    assert check_repo(repo.repository).ok
    assert repo.repository.get_summary("m", "v1").digest == v1.digest


def test_a_summary_written_while_gc_runs_does_not_stop_it(repo, tmp_path):
    """A listing may rebuild a summary at any time, gc's exclusive lease or not: gc's second
    listing (which stops it when a new manifest key appears) must not count summaries."""
    _push(repo, tmp_path, "v1", 1)
    late = summary_key("m", "v0")
    backend = FaultyBackend(repo.repository.backend, Fault("list", "extra", "models/", nth=2, arg=[late]))
    result = gc.collect(Repository(backend, repo.name))
    assert ("list", "models/", "extra") in backend.struck and result.plan.versions == 1


def test_an_old_repository_lists_through_the_console_script(repo, tmp_path):
    for i in (1, 2):
        _push(repo, tmp_path, f"v{i}", i)
    before = ok(repo.cli("model", "versions", repo.name, "m", "--json")).stdout
    repo.repository.backend.delete_many([summary_key("m", "v1"), summary_key("m", "v2")])
    listed = ok(repo.cli("model", "versions", repo.name, "m", "--json"))
    assert json.loads(listed.stdout) == [v | {"stored_size": None, "new_stored_size": None} for v in json.loads(before)]
    assert listed.stderr == ""
    assert {summary_key("m", "v1"), summary_key("m", "v2")} <= _keys(repo)


def test_a_stray_in_summaries_is_a_stray(repo, tmp_path):
    """Only ``summaries/<valid tag>.json`` is a summary; anything else there is a stray, as
    anywhere below models/: listed with a warning, reported by check, and (not parsing as a
    manifest) a reason for gc to stop rather than guess."""
    _push(repo, tmp_path, "v1", 1)
    stray = "models/m/summaries/v1 copy.json"
    repo.repository.backend.put(stray, b"junk")
    listed = ok(repo.cli("model", "versions", repo.name, "m"))
    assert stray in listed.stderr
    checked = repo.cli("repo", "check", repo.name)
    assert checked.returncode == 5 and f"broken    {stray}" in checked.stdout
    one_line_error(repo.cli("repo", "gc", repo.name), 5, "gc refuses", stray)


@LOCAL_ONLY
def test_a_link_in_place_of_summaries_is_damage(repo, tmp_path):
    from pathlib import Path

    _push(repo, tmp_path, "v1", 1)
    root = Path(repo.repository.backend.root)
    (root / "models/m/summaries").rename(tmp_path / "elsewhere")
    (root / "models/m/summaries").symlink_to(tmp_path / "elsewhere")
    for args in (
        ("model", "versions", repo.name, "m"),
        ("model", "pull", repo.name, "m", str(tmp_path / "d")),
        ("repo", "check", repo.name),
        ("repo", "gc", repo.name),
    ):
        one_line_error(repo.cli(*args), 5, "models/m/summaries", "symbolic link")


# == through the console script ===================================================================
def test_versions_table_shows_a_message_on_one_line(repo, tmp_path):
    ok(
        repo.cli(
            "model",
            "push",
            repo.name,
            "m",
            str(make_variant_model(tmp_path / "src")),
            "--tag",
            "v1",
            "-q",
            "--message",
            "line one\nline two\x1b[31m",
        )
    )
    rows = ok(repo.cli("model", "versions", repo.name, "m")).stdout.splitlines()
    assert len(rows) == 2 and rows[1].endswith("line one\\nline two\\x1b[31m")
    info = ok(repo.cli("model", "info", repo.name, "m")).stdout
    assert "message:  line one\\nline two\\x1b[31m" in info
    as_json = json.loads(ok(repo.cli("model", "versions", repo.name, "m", "--json")).stdout)
    assert as_json[0]["message"] == "line one\nline two\x1b[31m" and as_json[0]["chunks"] > 0


@LOCAL_ONLY
def test_push_warns_when_its_summary_cannot_be_written(repo, tmp_path):
    """A file where the summaries directory belongs: the push succeeds with one warning line, and
    listings work from the manifest (their write-back fails quietly)."""
    from pathlib import Path

    root = Path(repo.repository.backend.root)
    (root / "models/m").mkdir(parents=True)
    (root / "models/m/summaries").write_bytes(b"in the way")
    pushed = ok(
        repo.cli("model", "push", repo.name, "m", str(make_variant_model(tmp_path / "src")), "--tag", "v1", "-q")
    )
    assert pushed.stderr.count("\n") == 1 and "its summary could not be written" in pushed.stderr
    listed = json.loads(ok(repo.cli("model", "versions", repo.name, "m", "--json")).stdout)
    assert [v["tag"] for v in listed] == ["v1"]
    assert "m:v1 (newest)" in ok(repo.cli("model", "pull", repo.name, "m", str(tmp_path / "d"), "-q")).stdout


def test_not_found_when_every_version_vanished_during_the_listing(repo, tmp_path):
    _push(repo, tmp_path, "v1", 1)
    inner = repo.repository.backend

    def delete_first(op, key):
        if op == "get" and key == summary_key("m", "v1"):
            inner.delete(key)
            inner.delete(manifest_key("m", "v1"))

    from tests.fakes import HookedBackend

    with pytest.raises(VersionNotFoundError):
        Repository(HookedBackend(inner, before=delete_first), repo.name).list_versions("m")
