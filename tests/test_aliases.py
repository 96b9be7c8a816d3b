"""Aliases (docs/design.md §2.1): movable names of versions with an append-only history, on the
local backend and S3 (moto; Ceph RGW where it runs). Library level; tests/cli/test_alias_cli.py
runs the console script a few times."""

from __future__ import annotations

import threading

import pytest

from aim_cli import api
from aim_cli.errors import AliasMovedError, ConflictError, IntegrityError, NotFoundError, VersionNotFoundError
from aim_cli.format import alias as al
from aim_cli.format.layout import AliasKey, manifest_key, parse_model_key
from aim_cli.repository import Repository
from tests.fakes import HookedBackend
from tests.helpers import commit_versions

pytestmark = pytest.mark.format_neutral

M = "m"


@pytest.fixture
def versions(repo):
    """Model ``m`` with versions v1, v2, v3 (tiny manifests, no chunking)."""
    commit_versions(repo.repository, M, ["v1", "v2", "v3"], chunks=3)
    return repo


def test_set_move_list_delete_and_history(versions):
    r, cfg = versions.name, versions.config
    first = api.alias_set(r, M, "prod", tag="v1", message="first release", config=cfg)
    assert first.changed and first.alias.index == 1 and first.alias.previous_tag is None
    assert first.alias.digest == versions.repository.get_version(M, "v1").digest
    again = api.alias_set(r, M, "prod", tag="v1", config=cfg)
    assert not again.changed and again.alias.index == 1  # nothing written
    moved = api.alias_set(r, M, "prod", tag="v2", message="promote", config=cfg)
    assert (moved.alias.index, moved.alias.previous_tag, moved.alias.tag) == (2, "v1", "v2")
    api.alias_set(r, M, "staging", tag="v3", config=cfg)
    assert [(a.alias, a.tag) for a in api.alias_list(r, M, config=cfg)] == [("prod", "v2"), ("staging", "v3")]

    gone = api.alias_delete(r, M, "staging", message="retired", config=cfg)
    assert (gone.action, gone.tag, gone.previous_tag, gone.index) == ("delete", None, "v3", 2)
    assert [a.alias for a in api.alias_list(r, M, config=cfg)] == ["prod"]
    with pytest.raises(NotFoundError):
        api.alias_delete(r, M, "staging", config=cfg)
    history = api.alias_history(r, M, "staging", config=cfg)
    assert [(e.action, e.tag) for e in history.entries] == [("set", "v3"), ("delete", None)]
    assert history.problems == []
    # Set again after a delete: the history goes on, from "unset".
    back = api.alias_set(r, M, "staging", tag="v1", config=cfg)
    assert (back.alias.index, back.alias.previous_tag) == (3, None)
    assert api.alias_history(r, M, "staging", config=cfg).problems == []


def test_reads_resolve_an_alias_and_check_its_digest(versions):
    repository = versions.repository
    api.alias_set(versions.name, M, "prod", tag="v2", config=versions.config)
    ref, newest = repository.resolve_version(M, "prod", None)
    assert (ref.manifest.tag, newest, ref.alias.alias, ref.alias.index) == ("v2", False, "prod", 1)
    details = api.version_details(versions.name, M, tag="prod", config=versions.config)
    assert (details.tag, details.alias) == ("v2", "prod")
    assert api.diff(versions.name, M, "v1", "prod", config=versions.config).tag_b == "v2"
    # A pin applies to the version the alias names.
    with pytest.raises(IntegrityError, match="not the pinned"):
        repository.resolve_version(M, "prod", "0" * 64)
    # The tag deleted and pushed again with other content: the alias dangles, naming both digests.
    old = ref.digest
    repository.delete_version(M, "v2", force=True)
    api.alias_set(versions.name, M, "prod", tag="v1", config=versions.config)
    api.alias_set(versions.name, M, "canary", tag="v3", config=versions.config)
    repository.backend.delete(manifest_key(M, "v3"))
    commit_versions(repository, M, ["v3"], chunks=2, unique=2)
    new = repository.get_version(M, "v3").digest
    with pytest.raises(IntegrityError) as e:
        repository.resolve_version(M, "canary", None)
    assert e.value.exit_code == 5
    assert new in e.value.message and repository.current_alias(M, "canary").digest in e.value.message
    assert old != new
    # A tag that is gone: dangling too, exit 5, never "not found".
    repository.backend.delete(manifest_key(M, "v1"))
    with pytest.raises(IntegrityError, match="no longer stored"):
        repository.resolve_version(M, "prod", None)
    with pytest.raises(VersionNotFoundError):
        repository.resolve_version(M, "nothing", None)


def test_an_alias_never_shadows_a_tag(versions, tmp_path):
    r, cfg, repository = versions.name, versions.config, versions.repository
    with pytest.raises(ConflictError, match="is a tag") as e:
        api.alias_set(r, M, "v1", tag="v2", config=cfg)
    assert e.value.exit_code == 4
    with pytest.raises(VersionNotFoundError):
        api.alias_set(r, M, "prod", tag="nope", config=cfg)
    api.alias_set(r, M, "prod", tag="v1", config=cfg)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"x" * 100)
    with pytest.raises(ConflictError, match="is an alias"):
        versions.push(M, tmp_path / "src", "prod")
    assert not repository.has_version(M, "prod")
    # A race that still made both: the tag wins, and repo check reports the alias.
    commit_versions(repository, M, ["prod"], chunks=2)
    assert repository.resolve_version(M, "prod", None)[0].alias is None
    report = api.check_repo(r, config=cfg)
    assert any("prod" in key and "shadowed by the tag" in why for key, why in report.broken), report.broken


def test_delete_version_refuses_an_aliased_version_unless_forced(versions):
    r, cfg = versions.name, versions.config
    api.alias_set(r, M, "prod", tag="v2", config=cfg)
    api.alias_set(r, M, "also", tag="v2", config=cfg)
    with pytest.raises(ConflictError, match="alias") as e:
        api.delete_versions(r, M, ["v2"], config=cfg)
    assert e.value.exit_code == 4 and versions.repository.has_version(M, "v2")
    result = api.delete_versions(r, M, ["v2"], force=True, config=cfg)
    assert sorted(result.aliases_removed) == ["also", "prod"] and not versions.repository.has_version(M, "v2")
    assert api.alias_list(r, M, config=cfg) == []
    last = api.alias_history(r, M, "prod", config=cfg).entries[-1]
    assert (last.action, last.previous_tag) == ("delete", "v2") and "--force" in last.message
    # A whole model deleted takes its aliases and their histories with it.
    api.delete_versions(r, M, config=cfg)
    assert not any(isinstance(parse_model_key(i.key), AliasKey) for i in versions.repository.backend.list("models/"))


def test_history_at_answers_what_an_alias_was_then(versions):
    repository = versions.repository
    repository.set_alias(M, "prod", "v1", at="2026-03-01T09:00:00.000000Z")
    repository.set_alias(M, "prod", "v2", at="2026-03-03T10:00:00.000000Z")
    repository.set_alias(M, "prod", "v3", at="2026-03-03T15:00:00Z")
    repository.set_alias(M, "prod", "v1", at="2026-03-05T00:00:00.000000Z")

    def tags(at):
        return [e.tag for e in api.alias_history(versions.name, M, "prod", at=at, config=versions.config).entries]

    assert tags("2026-03-03") == ["v1", "v2", "v3"]  # in force when the day began, then each change
    assert tags("2026-03-03T12:00:00Z") == ["v2"]
    assert tags("2026-03-03T15:00:00") == ["v3"]  # no zone: UTC
    assert tags("2026-02-01") == []
    assert tags("2026-03-04") == ["v3"]


def _racing(repository: Repository, barrier: threading.Barrier) -> Repository:
    """The repository with every alias entry's create held until both writers reach it: both
    have read the same latest entry, so both create the same next one."""

    def before(op, key):
        if "/aliases/" in key and op == "put_if_absent":
            barrier.wait(timeout=60)

    hooked = HookedBackend(repository.backend, before=before)
    hooked.put_if_absent = lambda key, data: (
        before("put_if_absent", key),
        repository.backend.put_if_absent(key, data),
    )[1]
    return Repository(hooked, repository.name)


def test_two_writers_moving_an_alias_at_once_exactly_one_wins(versions):
    repository = versions.repository
    for alias in ("prod", "canary", "shadow"):  # three races, each from entry 1 to entry 2
        repository.set_alias(M, alias, "v1")
        barrier = threading.Barrier(2)
        outcomes: dict[str, object] = {}

        def move(tag, alias=alias, barrier=barrier, outcomes=outcomes):
            try:
                outcomes[tag] = _racing(repository, barrier).set_alias(M, alias, tag, by=f"writer-{tag}")[0]
            except AliasMovedError as e:
                outcomes[tag] = e

        threads = [threading.Thread(target=move, args=(t,)) for t in ("v2", "v3")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        won = [o for o in outcomes.values() if isinstance(o, al.AliasRecord)]
        lost = [o for o in outcomes.values() if isinstance(o, AliasMovedError)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert lost[0].exit_code == 4 and lost[0].index == won[0].index == 2
        assert (lost[0].current_tag, lost[0].current_digest) == (won[0].tag, won[0].digest)
        assert won[0].tag in lost[0].message and won[0].by in lost[0].message
        assert repository.get_alias(M, alias) == won[0]
        assert api.alias_history(versions.name, M, alias, config=versions.config).problems == []


def test_verify_copy_and_signatures_take_an_alias(repo, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.helpers import write_model

    repo.push(M, write_model(tmp_path / "src", {"a.bin": b"alias" * 500}), "v1")
    api.alias_set(repo.name, M, "prod", tag="v1", config=repo.config)
    report = api.verify_version(repo.name, M, tag="prod", config=repo.config)
    assert report.ok and report.tag == "v1"
    assert api.verify_local(repo.name, M, tmp_path / "src", tag="prod", config=repo.config).ok

    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pub = tmp_path / "key.pub"
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    api.sign_version(repo.name, M, tag="v1", key=pem, config=repo.config)
    assert api.verify_signature(repo.name, M, tag="prod", public_key=pub, config=repo.config).tag == "v1"
    exported = api.export_signature(repo.name, M, tmp_path / "v1.sig", tag="prod", config=repo.config)
    assert exported.tag == "v1" and (tmp_path / "v1.sig").stat().st_size == exported.bytes

    other = tmp_path / "other"
    cfg = repo.config.read_text() + f"  other: {{type: local, path: {other}}}\n"
    repo.config.write_text(cfg)
    copied = api.copy(repo.name, M, "other", tags=["prod"], config=repo.config)
    assert [v.tag for v in copied.versions] == ["v1"]
    assert api.list_tags("other", M, config=repo.config) == ["v1"]
