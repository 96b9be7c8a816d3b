"""Hostile alias records (docs/design.md §2.1): whatever is stored below models/<m>/aliases/, a
read is a clean IntegrityError (exit 5) naming the entry, never a traceback nor another version;
a history with a gap or an entry that lies about its past is reported, and gc neither deletes
alias entries nor reads them as versions."""

from __future__ import annotations

import json

import pytest

from aim_cli import api
from aim_cli.errors import IntegrityError
from aim_cli.format import alias as al
from aim_cli.format.layout import alias_entry_key
from tests.helpers import LOCAL_ONLY, commit_versions

pytestmark = pytest.mark.format_neutral
M = "m"


@pytest.fixture
def prod(repo):
    """Model ``m`` (v1, v2) with alias ``prod`` set to v1 (entry 1)."""
    commit_versions(repo.repository, M, ["v1", "v2"], chunks=3)
    repo.repository.set_alias(M, "prod", "v1", at="2026-03-01T00:00:00.000000Z", by="a@h")
    return repo


def _entry(repo, index: int) -> dict:
    return json.loads(repo.repository.backend.get(alias_entry_key(M, "prod", index)))


def _plant(repo, index: int, data: bytes) -> None:
    repo.repository.backend.put(alias_entry_key(M, "prod", index), data)


HOSTILE = {
    "not json": b"\xff{",
    "oversized": b'{"message": "' + b"x" * (al.MAX_RECORD_BYTES + 10) + b'"}',
    "unknown field": None,  # built from a valid one below
    "wrong index": None,
    "bad digest": None,
    "bool index": None,
    "huge int": None,
    "set without tag": None,
    "control chars in name": None,
}


def _variant(good: dict, kind: str) -> bytes:
    bad = dict(good)
    if kind == "unknown field":
        bad["extra"] = 1
    elif kind == "wrong index":
        bad["index"] = 7
    elif kind == "bad digest":
        bad["digest"] = "Z" * 64
    elif kind == "bool index":
        bad["index"] = True
    elif kind == "huge int":
        return json.dumps(bad).replace('"index": 2', '"index": ' + "9" * 5000).encode()
    elif kind == "set without tag":
        bad["tag"] = None
    elif kind == "control chars in name":
        bad["alias"] = "pr\nod"
    return json.dumps(bad).encode()


@LOCAL_ONLY
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_current_entry_is_exit_5_everywhere(prod, kind):
    good = _entry(prod, 1) | {
        "index": 2,
        "tag": "v2",
        "previous_tag": "v1",
        "previous_digest": _entry(prod, 1)["digest"],
    }
    good["digest"] = prod.repository.get_version(M, "v2").digest
    _plant(prod, 2, HOSTILE[kind] or _variant(good, kind))
    for read in (
        lambda: prod.repository.resolve_version(M, "prod", None),
        lambda: api.alias_set(prod.name, M, "prod", tag="v1", config=prod.config),
    ):
        with pytest.raises(IntegrityError) as e:
            read()
        assert e.value.exit_code == 5 and "prod/2.json" in e.value.message and "\n" not in e.value.message
    history = api.alias_history(prod.name, M, "prod", config=prod.config)
    assert [e.index for e in history.entries] == [1] and history.problems[0][0].endswith("prod/2.json")
    report = api.check_repo(prod.name, config=prod.config)
    assert any(key.endswith("prod/2.json") for key, _ in report.broken), report.broken


def test_a_gap_and_a_lying_entry_are_damage(prod):
    repository = prod.repository
    repository.set_alias(M, "prod", "v2", by="b@h")  # entry 2, from v1
    lie = _entry(prod, 2) | {"index": 3, "previous_tag": "v2", "previous_digest": "0" * 64}
    _plant(prod, 3, json.dumps(lie).encode())  # says it moved from another digest
    good = _entry(prod, 2) | {"index": 5, "previous_digest": _entry(prod, 2)["digest"], "previous_tag": "v2"}
    _plant(prod, 5, json.dumps(good).encode())  # entry 4 missing
    history = api.alias_history(prod.name, M, "prod", config=prod.config)
    assert [e.index for e in history.entries] == [1, 2, 3, 5]
    whys = dict(history.problems)
    assert "before" in whys[alias_entry_key(M, "prod", 3)]
    assert "entries 4 to 4 are missing" in whys[alias_entry_key(M, "prod", 5)]
    # The current value is entry 5's, whatever lies beneath: resolution reads the top entry alone.
    assert repository.resolve_version(M, "prod", None)[0].manifest.tag == "v2"
    report = api.check_repo(prod.name, config=prod.config)
    keys = {key for key, _ in report.broken}
    assert {alias_entry_key(M, "prod", 3), alias_entry_key(M, "prod", 5)} <= keys


def test_gc_keeps_alias_entries_and_never_reads_them_as_versions(prod):
    repository = prod.repository
    repository.set_alias(M, "prod", "v2")
    stray = "models/m/aliases/prod/02.json"  # not canonical: a stray, not an entry
    before = {i.key for i in repository.backend.list("models/m/aliases/")}
    assert all("versions" not in vk.key for vk in repository.iter_version_keys() if "aliases" in vk.key)
    assert not [vk for vk in repository.iter_version_keys() if "/aliases/" in vk.key]
    api.collect_garbage(prod.name, config=prod.config)
    assert {i.key for i in repository.backend.list("models/m/aliases/")} == before
    assert api.list_models(prod.name, config=prod.config) == [M]
    assert api.list_tags(prod.name, M, config=prod.config) == ["v1", "v2"]
    repository.backend.put(stray, b"{}")
    report = api.check_repo(prod.name, config=prod.config)
    assert any(key == stray and "alias entry" in why for key, why in report.broken), report.broken
