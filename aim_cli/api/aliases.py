"""Aliases: movable names of versions with an audit trail (docs/design.md §2.1). The commands that
read a version take an alias wherever they take a tag (Repository.resolve_version)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from aim_cli.api.common import ConfigArg, PathArg, open_repository
from aim_cli.errors import UsageError
from aim_cli.util.stamps import rfc3339

if TYPE_CHECKING:
    from aim_cli.format.alias import AliasRecord


@dataclass(frozen=True)
class AliasInfo:
    """One entry of an alias's history; for `alias list`, its latest (a set)."""

    model: str
    alias: str
    index: int  # its place in the history: 1, 2, ... (the sequence number that only grows)
    action: str  # "set" or "delete"
    tag: str | None  # what the alias points at after this change (None: unset)
    digest: str | None  # that version's manifest digest
    previous_tag: str | None  # what it pointed at before (None: unset)
    previous_digest: str | None
    at: str  # RFC 3339 UTC, the writer's clock
    by: str  # user@host of the writer
    message: str

    @classmethod
    def of(cls, r: AliasRecord) -> AliasInfo:
        return cls(
            r.model,
            r.alias,
            r.index,
            r.action,
            r.tag,
            r.digest,
            r.previous_tag,
            r.previous_digest,
            r.at,
            r.by,
            r.message,
        )


@dataclass(frozen=True)
class AliasStatementInfo:
    """A signed statement of an alias entry (`alias set --sign`), stored beside it."""

    index: int  # the entry it signs: the sequence number
    signer: str  # 16 hex of the key hint
    issued_at: str
    expires_at: str | None  # None: no expiry
    key: str  # where it is stored
    created: bool  # False: this key's statement of the entry was there already


@dataclass(frozen=True)
class AliasSetResult:
    alias: AliasInfo  # the entry written, or the latest one when nothing changed
    changed: bool  # False: the alias already pointed at that version; nothing was written
    statement: AliasStatementInfo | None = None  # with ``sign``: the statement of ``alias``


@dataclass(frozen=True)
class AliasHistory:
    """An alias's entries, oldest first; with ``at``, only the entry in force then (and, for a
    whole day, the entries during it). ``problems`` lists damage as (key, why): a gap, an entry
    that cannot be read, one whose "from" is not what the entry before it left. The CLI exits 5
    when there is any."""

    model: str
    alias: str
    entries: list[AliasInfo]
    problems: list[tuple[str, str]]


def alias_set(
    repo: str,
    model: str,
    alias: str,
    *,
    tag: str,
    message: str = "",
    sign: PathArg | None = None,
    password: str | None = None,
    expires: str | timedelta | None = None,
    now: datetime | None = None,
    config: ConfigArg = None,
) -> AliasSetResult:
    """Point ``alias`` at version ``tag`` of ``model`` and the manifest digest it holds now,
    recording who, when, from what and ``message``. ConflictError (exit 4): ``alias`` is a tag,
    or another writer moved it first (AliasMovedError, naming the value that won);
    VersionNotFoundError: no such tag.

    ``sign``: an EC private key (PEM; ``password`` if encrypted) that signs a statement of the
    entry (model, alias, tag, digest, the entry's index as sequence number, issued ``now``,
    expiring after ``expires``: "30d", "12h", or a timedelta; None: never), stored beside it.
    An alias already at ``tag`` whose latest entry has no statement by the key gets one; if it
    has one, a new entry of the same value is written and signed (a fresh expiry)."""
    if sign is None:
        if expires is not None:
            raise UsageError("--expires needs --sign", "pass --sign KEY.pem")
        record, changed = open_repository(repo, config=config).set_alias(model, alias, tag, message=message)
        return AliasSetResult(AliasInfo.of(record), changed)
    return _set_signed(repo, model, alias, tag, message, sign, password, expires, now, config)


def _set_signed(
    repo: str,
    model: str,
    alias: str,
    tag: str,
    message: str,
    sign: PathArg,
    password: str | None,
    expires: str | timedelta | None,
    now: datetime | None,
    config: ConfigArg,
) -> AliasSetResult:
    from aim_cli.errors import KeyNotFoundError
    from aim_cli.signing import alias_statement as st
    from aim_cli.signing.files import read_user_file
    from aim_cli.signing.keys import SIGNER_HEX, key_hint, load_private_key

    private_key = load_private_key(read_user_file(sign, "key"), password, os.fspath(sign))
    lifetime = st.parse_expiry(expires) if isinstance(expires, str) else expires
    if lifetime is not None and not timedelta(0) < lifetime <= st.MAX_EXPIRY:
        raise UsageError(f"expires={lifetime} is not a lifetime of at most ten years", "pass a positive duration")
    repository = open_repository(repo, config=config)
    record, changed = repository.set_alias(model, alias, tag, message=message)
    if not changed:  # already there: sign that entry, or write it again if this key signed it
        try:
            st.read_stored(repository, record, key_hint(private_key.public_key())[:SIGNER_HEX])
            record, changed = repository.set_alias(model, alias, tag, message=message, again=True)
        except KeyNotFoundError:
            pass
    signed = st.sign_entry(repository, record, private_key, now=now or datetime.now(UTC), expires=lifetime)
    s = signed.statement
    info = AliasStatementInfo(s.index, signed.signer, s.issued_at, s.expires_at, signed.key, signed.created)
    return AliasSetResult(AliasInfo.of(record), changed, info)


def alias_delete(repo: str, model: str, alias: str, *, message: str = "", config: ConfigArg = None) -> AliasInfo:
    """Unset ``alias``; its history stays, ending with this entry. NotFoundError when not set."""
    return AliasInfo.of(open_repository(repo, config=config).delete_alias(model, alias, message=message))


def alias_list(repo: str, model: str, *, config: ConfigArg = None) -> list[AliasInfo]:
    """The aliases of ``model`` that are set, by name, each with its latest entry: one listing and
    one small read per alias. Whether each still matches its version is `repo check`'s."""
    return [AliasInfo.of(r) for r in open_repository(repo, config=config).list_aliases(model)]


def alias_history(
    repo: str, model: str, alias: str, *, at: str | None = None, config: ConfigArg = None
) -> AliasHistory:
    """Every entry of ``alias``, oldest first. ``at``: a time (RFC 3339; no zone means UTC) to show
    only the entry in force then, or a date (``2026-03-03``) for the entry in force when it began
    and every one written during it: what an auditor asks ("what was prod on 3 March")."""
    history = open_repository(repo, config=config).alias_history(model, alias)
    entries = [AliasInfo.of(r) for r in history.records]
    if at is not None:
        entries = entries_at(entries, *_window(at))
    return AliasHistory(model, alias, entries, history.problems)


def entries_at(entries: list[AliasInfo], start: str, end: str) -> list[AliasInfo]:
    """The entry in force at ``start`` (the last by index written no later) and those written
    after it up to ``end`` (both RFC 3339 UTC as entries say them: they compare as strings)."""
    start, end = _sortable(start), _sortable(end)
    before = [e for e in entries if _sortable(e.at) <= start]
    during = [e for e in entries if start < _sortable(e.at) <= end]
    return ([before[-1]] if before else []) + during


def _sortable(at: str) -> str:
    """An RFC 3339 UTC time as format/alias.py accepts it, its fraction padded to 9 digits: such
    strings compare as the times they say."""
    seconds, _, fraction = at.removesuffix("Z").partition(".")
    return f"{seconds}.{fraction.ljust(9, '0')}"


def _window(text: str) -> tuple[str, str]:
    """``--at``'s (start, end): one instant, or a whole UTC day for a bare date."""
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return rfc3339(day), rfc3339(day + timedelta(days=1) - timedelta(microseconds=1))
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--at {text!r} is not a date or time", "give a date (2026-03-03) or a time (2026-03-03T12:00:00Z)"
        ) from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return rfc3339(when), rfc3339(when)
