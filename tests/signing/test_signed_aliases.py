"""Signed aliases (issue 20 item 4, docs/design.md §2.1, §12): `alias set --sign` stores a signed
statement beside the entry, and `pull --require-signature` refuses a statement that is not the
key's, not of the entry it sits beside, expired, or older than one it accepted before: whoever
writes the repository can neither roll a signed consumer back nor freeze it. Library level on
the local backend and S3 (moto); the CLI runs once at the end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from aim_cli import api
from aim_cli.errors import ConflictError, IntegrityError, NotFoundError, UsageError, VersionNotFoundError
from aim_cli.format import alias as al
from aim_cli.format.layout import AliasStatementKey, alias_entry_key, alias_statement_key, parse_model_key
from aim_cli.signing import alias_statement as st
from aim_cli.signing.alias_state import STATE_NAME
from aim_cli.signing.keys import SIGNER_HEX, key_hint
from tests.helpers import LOCAL_ONLY, make_variant_model, ok, one_line_error, write_keys

pytestmark = pytest.mark.format_neutral
M = "m"
T0 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def signed(repo, tmp_path, monkeypatch):
    """v1, v2, v3 of model m, each signed by the key; the per-user state in tmp_path/state."""
    monkeypatch.setenv("AIM_STATE_DIR", str(tmp_path / "state"))
    key, pem, pub = write_keys(tmp_path / "keys")
    for i, tag in enumerate(("v1", "v2", "v3"), start=1):
        repo.push(M, make_variant_model(tmp_path / f"src-{tag}", variant=i, size=8_000), tag)
        api.sign_version(repo.name, M, tag=tag, key=pem, config=repo.config)
    repo.key, repo.pem, repo.pub = key, pem, pub
    repo.signer = key_hint(key.public_key())[:SIGNER_HEX]
    return repo


def _set(repo, tag: str, alias: str = "prod", *, expires="30d", now=T0, pem=None):
    return api.alias_set(
        repo.name, M, alias, tag=tag, sign=pem or repo.pem, expires=expires, now=now, config=repo.config
    )


def _pull(repo, dest: Path, tag: str | None = "prod", *, now=T0, pub=None, **kw):
    return api.pull(repo.name, M, dest, tag=tag, require_signature=pub or repo.pub, now=now, config=repo.config, **kw)


def _seen(path: Path) -> list[tuple[str, str, int]]:
    return [(s["model"], s["alias"], s["index"]) for s in json.loads(path.read_bytes())["seen"]]


# == the round trip ===============================================================================
def test_sign_then_pull_verifies_both_and_records_the_sequence(signed, tmp_path):
    r = _set(signed, "v1")
    assert r.changed and r.statement is not None and r.statement.created
    assert (r.statement.index, r.statement.signer, r.statement.expires_at) == (
        1,
        signed.signer,
        "2026-04-02T10:00:00.000000Z",
    )
    key = alias_statement_key(M, "prod", 1, signed.signer)
    assert r.statement.key == key and isinstance(parse_model_key(key), AliasStatementKey)
    stored = signed.repository.backend.get(key)
    assert st.verify(stored, signed.key.public_key()).target == ("v1", signed.repository.get_version(M, "v1").digest)

    dest = tmp_path / "dest"
    assert _pull(signed, dest).tag == "v1"
    assert _seen(tmp_path / "state" / STATE_NAME) == [(M, "prod", 1)] == _seen(dest / ".aim" / STATE_NAME)
    _set(signed, "v2")
    assert _pull(signed, dest).tag == "v2"
    assert _seen(tmp_path / "state" / STATE_NAME) == [(M, "prod", 2)] == _seen(dest / ".aim" / STATE_NAME)
    # Listings, history and a dry run do not trip over the statements.
    assert [a.tag for a in api.alias_list(signed.name, M, config=signed.config)] == ["v2"]
    assert api.alias_history(signed.name, M, "prod", config=signed.config).problems == []
    plan = api.plan_pull(
        signed.name, M, tmp_path / "d2", require_signature=signed.pub, alias="prod", now=T0, config=signed.config
    )
    assert plan.tag == "v2" and not (tmp_path / "d2").exists()


def test_signing_again_signs_the_entry_or_writes_a_new_one(signed):
    plain = api.alias_set(signed.name, M, "prod", tag="v1", config=signed.config)
    assert plain.statement is None
    # Already at v1, unsigned: the entry itself is signed, nothing appended.
    first = _set(signed, "v1")
    assert (first.changed, first.alias.index, first.statement.index) == (False, 1, 1)
    # Signed by this key already: a new entry of the same value, with a fresh expiry.
    again = _set(signed, "v1", now=T0 + timedelta(days=20))
    assert (again.changed, again.alias.index, again.alias.previous_tag, again.statement.index) == (True, 2, "v1", 2)
    assert again.statement.expires_at == "2026-04-22T10:00:00.000000Z"
    assert api.alias_history(signed.name, M, "prod", config=signed.config).problems == []
    with pytest.raises(UsageError, match="--expires"):
        api.alias_set(signed.name, M, "prod", tag="v1", expires="30d", config=signed.config)
    for bad in ("30", "0d", "-1d", "11000d", "1y"):
        with pytest.raises(UsageError, match="--expires"):
            _set(signed, "v2", expires=bad)


def test_a_statement_under_the_signers_name_that_is_not_its_own_is_a_conflict(signed, tmp_path):
    """Planted ahead of the entry it will sit beside, by a writer without the key."""
    record, _ = signed.repository.set_alias(M, "prod", "v1")
    other, _, _ = write_keys(tmp_path / "other", name="other")
    forged = st.sign(other, msgspec.structs.replace(st.statement_of(record, T0, None), index=2))
    signed.repository.put_alias_statement(M, "prod", 2, signed.signer, forged)
    with pytest.raises(ConflictError) as e:
        _set(signed, "v2")
    assert e.value.exit_code == 4 and "another key" in e.value.message
    assert "remove models/m/aliases/prod/2." in e.value.hint


# == rollback =====================================================================================
def test_rollback_by_deleting_the_newest_entry_is_refused(signed, tmp_path):
    _set(signed, "v1")
    _set(signed, "v2")
    dest = tmp_path / "dest"
    assert _pull(signed, dest).tag == "v2"
    backend = signed.repository.backend
    backend.delete(alias_entry_key(M, "prod", 2))
    backend.delete(alias_statement_key(M, "prod", 2, signed.signer))
    with pytest.raises(IntegrityError, match=r"rolled back.*sequence number 1, lower than the 2") as e:
        _pull(signed, tmp_path / "fresh-dest")  # the per-user state remembers
    assert e.value.exit_code == 5 and not (tmp_path / "fresh-dest").exists()
    # DEST's own state remembers too, for another user (an empty per-user state).
    (tmp_path / "state" / STATE_NAME).unlink()
    with pytest.raises(IntegrityError, match="rolled back"):
        _pull(signed, dest)
    # A consumer that never saw entry 2 accepts entry 1: nothing tells it otherwise.
    assert _pull(signed, tmp_path / "new-user-dest").tag == "v1"


def test_an_old_statement_replayed_as_the_newest_entry_is_refused(signed, tmp_path):
    _set(signed, "v1")
    _set(signed, "v2")
    assert _pull(signed, tmp_path / "dest").tag == "v2"
    backend = signed.repository.backend
    old = signed.repository.alias_history(M, "prod").records[0]
    replayed = al.AliasRecord(
        **{f: getattr(old, f) for f in old.__struct_fields__}
        | {"index": 3, "previous_tag": "v2", "previous_digest": signed.repository.get_version(M, "v2").digest}
    )
    backend.put(alias_entry_key(M, "prod", 3), al.encode(replayed))
    backend.put(
        alias_statement_key(M, "prod", 3, signed.signer), backend.get(alias_statement_key(M, "prod", 1, signed.signer))
    )
    with pytest.raises(IntegrityError, match="rolled back"):
        _pull(signed, tmp_path / "dest")
    # A consumer that saw nothing still refuses: the statement signs entry 1, not 3.
    (tmp_path / "state" / STATE_NAME).unlink()
    with pytest.raises(IntegrityError, match=r"does not sign the entry.*entry 1"):
        _pull(signed, tmp_path / "other-dest")


def test_a_tag_pushed_over_a_signed_alias_is_refused(signed, tmp_path):
    """A signature binds files, not a tag: a tag named like the alias, holding an old signed
    version and its signature, would otherwise pass for the alias."""
    _set(signed, "v2")
    assert _pull(signed, tmp_path / "dest").tag == "v2"
    # Push refuses a tag named like an alias; a race (or a writer) commits one anyway.
    signed.repository.commit(msgspec.structs.replace(signed.repository.get_version(M, "v1").manifest, tag="prod"))
    api.sign_version(signed.name, M, tag="prod", key=signed.pem, config=signed.config)
    with pytest.raises(IntegrityError, match="is a tag, and also an alias"):
        _pull(signed, tmp_path / "dest")


@LOCAL_ONLY  # parsing and checks, the same on every backend
# == freeze: expiry, on an injected clock ============================================================
def test_an_expired_statement_is_refused_and_no_expiry_warns(signed, tmp_path, caplog):
    _set(signed, "v1", expires="1h")
    assert _pull(signed, tmp_path / "d1", now=T0 + timedelta(minutes=59)).tag == "v1"
    with pytest.raises(IntegrityError, match=r"expired at 2026-03-03T11:00:00") as e:
        _pull(signed, tmp_path / "d2", now=T0 + timedelta(hours=1))
    assert e.value.exit_code == 5 and not (tmp_path / "d2").exists()
    assert "no expiry" not in caplog.text
    _set(signed, "v2", expires=None)
    assert _pull(signed, tmp_path / "d3", now=T0 + timedelta(days=3650)).tag == "v2"
    assert "has no expiry" in caplog.text


@LOCAL_ONLY  # parsing and checks, the same on every backend
# == wrong key, wrong statement ====================================================================
def test_another_key_is_refused(signed, tmp_path):
    _set(signed, "v1")
    _, _, other_pub = write_keys(tmp_path / "other", name="other")
    with pytest.raises(IntegrityError, match="no statement signed by this key"):
        _pull(signed, tmp_path / "dest", pub=other_pub)
    # The other key's statement planted under this signer's name: its hint gives it away.
    record = signed.repository.current_alias(M, "prod")
    other = write_keys(tmp_path / "third", name="third")[0]
    key = alias_statement_key(M, "prod", 1, signed.signer)
    signed.repository.backend.put(key, st.sign(other, st.statement_of(record, T0, None)))
    with pytest.raises(IntegrityError, match="another key"):
        _pull(signed, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


@LOCAL_ONLY  # parsing and checks, the same on every backend
@pytest.mark.parametrize(
    "change, needle",
    [
        ({"alias": "staging"}, "statement of alias 'staging'"),
        ({"model": "other"}, "of model 'other'"),
        ({"digest": "0" * 64}, "signs digest 0000"),
        ({"tag": "v3"}, "signs tag v3"),
    ],
)
def test_a_statement_of_another_model_alias_or_digest_is_refused(signed, tmp_path, change, needle):
    _set(signed, "v1")
    record = signed.repository.current_alias(M, "prod")
    statement = msgspec.structs.replace(st.statement_of(record, T0, timedelta(days=1)), **change)
    signed.repository.backend.put(alias_statement_key(M, "prod", 1, signed.signer), st.sign(signed.key, statement))
    with pytest.raises(IntegrityError, match=needle):
        _pull(signed, tmp_path / "dest")


def _version_bundle(signed) -> bytes:
    from aim_cli.signing.verify import read_bundle

    ref = signed.repository.get_version(M, "v1")
    return read_bundle(signed.repository, ref, signed.signer)


@LOCAL_ONLY  # parsing and checks, the same on every backend
@pytest.mark.parametrize(
    "planted, needle",
    [
        (lambda s: b"", "not JSON"),
        (lambda s: b"{" * 10_000, "not JSON"),
        (lambda s: b" " * (st.MAX_STATEMENT_BYTES + 1), "larger than"),
        (lambda s: b'{"mediaType": 1}', "mediaType"),
        (_version_bundle, "payload type is not application/vnd.aim-cli"),
        (lambda s: st.sign(s.key, msgspec.json.encode({"format": 1})), "cannot be parsed"),
        (lambda s: st.sign_payload(s.key, b"{}", payload_type="application/vnd.in-toto+json"), "payload type"),
    ],
)
def test_malformed_or_oversized_statements_are_refused(signed, tmp_path, planted, needle):
    _set(signed, "v1")
    signed.repository.backend.put(alias_statement_key(M, "prod", 1, signed.signer), planted(signed))
    with pytest.raises(IntegrityError, match=needle) as e:
        _pull(signed, tmp_path / "dest")
    assert e.value.exit_code == 5 and not (tmp_path / "dest").exists()


@LOCAL_ONLY  # parsing and checks, the same on every backend
def test_statement_fields_are_checked_strictly(signed):
    good = st.AliasStatement(1, M, "prod", 1, "v1", "a" * 64, "2026-03-03T10:00:00.000000Z", None)
    assert st.problem(good) is None
    for change in (
        {"format": 2},
        {"index": 0},
        {"index": al.MAX_INDEX + 1},
        {"tag": "../x"},
        {"digest": "A" * 64},
        {"issued_at": "yesterday"},
        {"expires_at": "2026-03-03T09:00:00Z"},
        {"expires_at": "2026-02-31T09:00:00Z"},
    ):
        assert st.problem(msgspec.structs.replace(good, **change)), change
    with pytest.raises(IntegrityError, match="cannot be parsed"):
        st.decode(msgspec.json.encode(good)[:-1] + b',"extra":1}')


@LOCAL_ONLY  # parsing and checks, the same on every backend
# == the state files ================================================================================
@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "cannot be parsed"),
        (b"[]", "cannot be parsed"),
        (b'{"format": 2, "seen": []}', "unknown format"),
        (b'{"format": 1, "seen": [], "x": 1}', "cannot be parsed"),
        (
            b'{"format": 1, "seen": [{"repository": "r", "model": "m", "alias": "prod", "signer": "ab", "index": 1}]}',
            "64 hex",
        ),
        (
            b'{"format": 1, "seen": [{"repository": "r", "model": "m/..", "alias": "prod", "signer": "'
            + b"a" * 64
            + b'", "index": 1}]}',
            "invalid",
        ),
        (
            b'{"format": 1, "seen": ['
            + b",".join(
                [b'{"repository": "r", "model": "m", "alias": "prod", "signer": "' + b"a" * 64 + b'", "index": 1}'] * 2
            )
            + b"]}",
            "twice",
        ),
    ],
)
def test_a_damaged_state_file_is_an_error_never_a_reset(signed, tmp_path, content, needle):
    _set(signed, "v1")
    state = tmp_path / "state" / STATE_NAME
    state.parent.mkdir()
    state.write_bytes(content)
    with pytest.raises(IntegrityError, match=rf"per-user state file .* is damaged: .*{needle}") as e:
        _pull(signed, tmp_path / "dest")
    assert "move it aside" in e.value.hint and state.read_bytes() == content
    assert not (tmp_path / "dest").exists()


@LOCAL_ONLY  # parsing and checks, the same on every backend
def test_oversized_or_linked_state_files_are_refused(signed, tmp_path, monkeypatch):
    from aim_cli.signing import alias_state

    _set(signed, "v1")
    dest = tmp_path / "dest"
    _pull(signed, dest)
    # DEST/.aim's file replaced by a link to a file elsewhere: never followed.
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes((dest / ".aim" / STATE_NAME).read_bytes())
    (dest / ".aim" / STATE_NAME).unlink()
    (dest / ".aim" / STATE_NAME).symlink_to(elsewhere)
    with pytest.raises(IntegrityError, match=r"DEST's state file .* symlink"):
        _pull(signed, dest)
    (dest / ".aim" / STATE_NAME).unlink()
    monkeypatch.setattr(alias_state, "MAX_STATE_BYTES", 100)
    with pytest.raises(IntegrityError, match="larger than 100 bytes"):
        _pull(signed, dest)


# == tag-less signed pulls ============================================================================
def test_tagless_signed_pull_takes_latest_or_the_alias_named(signed, tmp_path):
    with pytest.raises(UsageError, match=r"no alias 'latest'.*--require-signature without --tag") as e:
        _pull(signed, tmp_path / "d0", tag=None)
    assert e.value.exit_code == 2 and not (tmp_path / "d0").exists()
    with pytest.raises(UsageError, match="no alias 'prod'"):
        _pull(signed, tmp_path / "d0", tag=None, alias="prod")
    _set(signed, "v2", alias="latest")
    _set(signed, "v1", alias="prod")
    assert _pull(signed, tmp_path / "d1", tag=None).tag == "v2"
    assert _pull(signed, tmp_path / "d2", tag=None, alias="prod").tag == "v1"
    with pytest.raises(UsageError, match="--tag and --alias"):
        _pull(signed, tmp_path / "d3", tag="v1", alias="prod")
    # --alias names an alias, never a tag, with or without a signature.
    with pytest.raises(UsageError, match="no alias 'v1'"):
        _pull(signed, tmp_path / "d4", tag=None, alias="v1")
    with pytest.raises(NotFoundError):
        api.pull(signed.name, M, tmp_path / "d4", alias="v1", config=signed.config)
    plain = api.pull(signed.name, M, tmp_path / "d5", alias="prod", config=signed.config)
    assert plain.tag == "v1"
    # A signed alias unset by a writer, after a consumer accepted it: refused, not "no alias".
    signed.repository.delete_alias(M, "latest")
    with pytest.raises(IntegrityError, match="signed entry 1 was accepted before"):
        _pull(signed, tmp_path / "d6", tag=None)
    with pytest.raises(VersionNotFoundError):
        _pull(signed, tmp_path / "d7", tag="nothing")


def test_cli_sign_and_signed_pulls(signed, tmp_path):
    env = {"AIM_STATE_DIR": str(tmp_path / "state")}
    dest = tmp_path / "dest"
    pull = ("model", "pull", signed.name, M, str(dest), "--require-signature", str(signed.pub))
    one_line_error(signed.cli(*pull, env=env), 2, "no alias 'latest'", "--alias")
    set_latest = ("model", "alias", "set", signed.name, M, "latest", "--sign", str(signed.pem))
    res = ok(signed.cli(*set_latest, "--tag", "v3", "--json", env=env))
    out = json.loads(res.stdout)
    assert out["statement"]["index"] == 1 and out["statement"]["expires_at"] is None
    pulled = ok(signed.cli(*pull, "-q", env=env))
    assert "pulled m:v3" in pulled.stdout
    assert "signed alias latest of m: tag v3" in pulled.stderr and "has no expiry" in pulled.stderr
    res = ok(signed.cli(*set_latest, "--tag", "v2", "--expires", "7d", env=env))
    assert "signed entry 2 of latest: signer" in res.stdout and "expires 20" in res.stdout
    assert "pulled m:v2" in ok(signed.cli(*pull, "-q", env=env)).stdout
    signed.repository.backend.delete(alias_entry_key(M, "latest", 2))
    one_line_error(signed.cli(*pull, env=env), 5, "rolled back")


def test_statements_are_the_stores_own_keys(signed, caplog):
    """Listings, `repo check` and gc leave statements be; `model delete` removes them."""
    from aim_cli.audit import gc
    from aim_cli.audit.check import check_repo

    _set(signed, "v1")
    key = alias_statement_key(M, "prod", 1, signed.signer)
    assert api.list_tags(signed.name, M, config=signed.config) == ["v1", "v2", "v3"]
    assert check_repo(signed.repository).broken == [] and "skipping" not in caplog.text
    gc.plan_gc(signed.repository)  # refuses to run over a key below models/ it cannot read
    assert [s.key for s in signed.repository.iter_alias_statement_keys()] == [key]
    signed.repository.delete_model(M)
    assert not signed.repository.backend.exists(key)
