"""Derived data never decides which version a tag-less command gets (issue 17, item 1).

A summary is derived from its manifest; anyone who can write the repository can edit it. An edit
that makes the newest version look older (its summary's created_at set to 2020) must not make a
tag-less `model pull`, `model info` or `model verify` use an older version: the listing's own
modification times point at the newer manifest, which is read, and its summary's disagreement
is damage (exit 5). An order difference alone (a copy, clock skew, S3's 1-second LastModified)
is not. A tag-less `pull --require-signature` never takes "the newest", which no signature covers:
it takes the signed alias `latest`, and with none is refused (exit 2). Through the console
script on the local backend and on S3 (the ``repo`` fixture), and a hypothesis property over
listing orders and lies on the local backend.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli import api
from aim_cli.backends.local import LocalBackend
from aim_cli.errors import IntegrityError, UsageError
from aim_cli.format import summary as sm
from aim_cli.format.layout import manifest_key, summary_key
from aim_cli.repository import Repository
from tests.fakes import FaultyBackend
from tests.helpers import make_variant_model, ok, one_line_error, write_keys

#: Nothing here depends on the storage format: no format 1 run of the `repo` fixture (conftest.py).
pytestmark = pytest.mark.format_neutral

OLD = "2020-01-01T00:00:00.000000Z"


def _push(repo, tmp_path: Path, tag: str, variant: int):
    return repo.push("m", make_variant_model(tmp_path / f"src-{tag}", variant=variant), tag)


def _lie(repo, tag: str, **changes) -> str:
    """Rewrite the stored summary of m:``tag`` with ``changes``; returns its key."""
    key = summary_key("m", tag)
    repo.repository.backend.put(
        key, sm.encode(msgspec.structs.replace(repo.repository.get_summary("m", tag), **changes))
    )
    return key


def _tagless(repo, dest: Path) -> dict[str, tuple[str, ...]]:
    return {
        "pull": ("model", "pull", repo.name, "m", str(dest), "-q"),
        "info": ("model", "info", repo.name, "m"),
        "verify": ("model", "verify", repo.name, "m", "-q"),
    }


def test_a_summary_made_to_look_older_never_rolls_a_tagless_command_back(repo, tmp_path):
    """The issue's case: v2's summary says 2020. Before the fix, pull, info and verify used v1."""
    _push(repo, tmp_path, "v1", 1)
    v2 = _push(repo, tmp_path, "v2", 2)
    key = _lie(repo, "v2", created_at=OLD)
    # The listing shows the lie (wrong metadata is the worst a summary can do to a listing) ...
    listed = json.loads(ok(repo.cli("model", "versions", repo.name, "m", "--json")).stdout)
    assert [v["tag"] for v in listed] == ["v2", "v1"]  # oldest first: v1 looks newest
    # ... but no tag-less command takes v1 for the newest.
    dest = tmp_path / "dest"
    for args in _tagless(repo, dest).values():
        one_line_error(repo.cli(*args), 5, key, "disagrees with its manifest", "created_at", "--tag")
    assert not dest.exists() or not any(dest.iterdir())
    checked = repo.cli("repo", "check", repo.name)
    assert checked.returncode == 5 and f"broken    {key}: disagrees with its manifest (created_at)" in checked.stdout

    repo.repository.backend.delete(key)  # as check says: the next listing rebuilds it
    pulled = ok(repo.cli(*_tagless(repo, dest)["pull"]))
    assert "m:v2 (newest)" in pulled.stdout
    assert v2.digest in ok(repo.cli(*_tagless(repo, dest)["info"])).stdout
    ok(repo.cli(*_tagless(repo, dest)["verify"]))
    ok(repo.cli("repo", "check", repo.name))


def test_an_order_difference_alone_is_not_damage(repo, tmp_path):
    """v1's manifest rewritten with its own bytes after v2 (as a copy or a skewed clock leaves it):
    the listing says v1 was written last, the summaries say v2 is newest. Both manifests are read,
    they agree with their summaries, and v2 is the newest: no error, no warning."""
    _push(repo, tmp_path, "v1", 1)
    v2 = _push(repo, tmp_path, "v2", 2)
    backend = repo.repository.backend
    backend.put(manifest_key("m", "v1"), backend.get(manifest_key("m", "v1")))
    if repo.kind == "local":  # make the inversion certain, whatever the filesystem's time resolution
        os.utime(Path(backend.root) / manifest_key("m", "v1"), (4e9, 4e9))
    listed = {info.key: info.mtime for info in backend.list("models/m/versions/")}
    assert listed[manifest_key("m", "v1")] >= listed[manifest_key("m", "v2")]

    dest = tmp_path / "dest"
    pulled = ok(repo.cli(*_tagless(repo, dest)["pull"]))
    assert "m:v2 (newest)" in pulled.stdout and pulled.stderr == ""
    info = ok(repo.cli(*_tagless(repo, dest)["info"]))
    assert v2.digest in info.stdout and info.stderr == ""
    assert ok(repo.cli(*_tagless(repo, dest)["verify"])).stderr == ""

    counted = FaultyBackend(backend)
    ref = Repository(counted, repo.name).newest_version("m")
    reads = [key for op, key, _ in counted.calls if op == "get" and "/versions/" in key]
    assert ref.manifest.tag == "v2" and reads == [manifest_key("m", "v2"), manifest_key("m", "v1")]


def test_a_signed_v1_and_an_unsigned_v2_with_a_lying_summary(repo, tmp_path):
    """v1 is validly signed, v2 is not, and v2's summary says 2020. A tag-less signed pull used to
    verify and deliver v1; with no signed alias `latest` it is refused now (exit 2, pass --tag), dry
    run and API alike, before DEST is touched, and a plain tag-less pull or verify stops on the lie (exit 5)."""
    _push(repo, tmp_path, "v1", 1)
    _push(repo, tmp_path, "v2", 2)
    _key, pem, pub = write_keys(tmp_path / "keys")
    ok(repo.cli("model", "sign", repo.name, "m", "--tag", "v1", "--key", str(pem)))
    key = _lie(repo, "v2", created_at=OLD)

    dest = tmp_path / "dest"
    signed = ("model", "pull", repo.name, "m", str(dest), "--require-signature", str(pub))
    for extra in ((), ("--dry-run",), ("--dry-run", "--json")):
        one_line_error(repo.cli(*signed, *extra), 2, "--require-signature", "--tag")
    assert not dest.exists()
    for call in (api.plan_pull, api.pull):
        with pytest.raises(UsageError, match="--tag"):
            call(repo.name, "m", dest, config=str(repo.config), require_signature=pub)
    assert not dest.exists()
    # A signature check names its version too (it did before this issue).
    one_line_error(repo.cli("model", "verify", repo.name, "m", "--public-key", str(pub)), 2, "--tag")
    one_line_error(repo.cli(*_tagless(repo, dest)["verify"]), 5, key, "disagrees with its manifest")
    one_line_error(repo.cli(*_tagless(repo, dest)["pull"]), 5, key, "disagrees with its manifest")
    assert not dest.exists() or not any(dest.iterdir())

    # Naming the version works: v1 is signed, v2 is not.
    pulled = ok(repo.cli(*signed, "--tag", "v1", "-q"))
    assert "m:v1" in pulled.stdout
    other = ("model", "pull", repo.name, "m", str(tmp_path / "d2"), "--require-signature", str(pub), "--tag", "v2")
    one_line_error(repo.cli(*other), 5, "no signature")
    assert not (tmp_path / "d2").exists()


# == the guarantee, as a property ===================================================================
TAGS = ("v1", "v2", "v3")


@pytest.fixture(scope="module")
def three_versions(tmp_path_factory) -> Path:
    """A local repository with v1, v2, v3 of model m, pushed in that order (never modified)."""
    from aim_cli import push as pushmod
    from aim_cli.chunking.cdc import ChunkingParams

    root = tmp_path_factory.mktemp("newest")
    repository = Repository(LocalBackend(root / "repo"), "r")
    repository.init(ChunkingParams.for_average(4096))
    for i, tag in enumerate(TAGS, start=1):
        pushmod.push(repository, "m", tag, make_variant_model(root / f"src-{tag}", variant=i, size=20_000))
    return root / "repo"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mtimes=st.lists(st.integers(1_000, 1_010), min_size=3, max_size=3),
    lies=st.dictionaries(st.sampled_from(TAGS), st.sampled_from([OLD, "2099-01-01T00:00:00.000000Z"]), max_size=3),
)
def test_a_lie_is_caught_unless_the_listing_itself_is_rolled_back(three_versions, mtimes, lies):
    """Any manifests' modification times (ties included) and any summaries made older or newer:
    the newest version resolves to v3 (the manifests' newest), or fails with exit 5 naming a
    lying summary, or, only when the listing itself says v3 was written before the version the
    summaries chose, to that version (the documented limit: such a writer can delete v3 too)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "repo"
        shutil.copytree(three_versions, store)
        repository = Repository(LocalBackend(store), "r")
        for tag, created_at in lies.items():
            lie = msgspec.structs.replace(repository.get_summary("m", tag), created_at=created_at)
            repository.backend.put(summary_key("m", tag), sm.encode(lie))
        for tag, mtime in zip(TAGS, mtimes, strict=True):
            os.utime(store / manifest_key("m", tag), (mtime, mtime))
        try:
            got = repository.newest_version("m").manifest.tag
        except IntegrityError as e:
            assert e.exit_code == 5 and any(summary_key("m", t) in e.message for t in lies)
            return
    when = dict(zip(TAGS, mtimes, strict=True))
    assert got == "v3" or ("v3" in lies and when["v3"] < when[got])
