"""A repository's aliases role: movable names of versions with an audit trail (docs/design.md §2.1).

An alias's history is a directory of immutable entries, ``models/<model>/aliases/<alias>/<n>.json``
(format/alias.py). Its current value is the entry with the highest index: one listing of that
directory (bounded by MAX_INDEX entries) and one small read. A change writes entry n + 1 with an
exclusive create (``put_if_absent``, which every backend has; never a write conditional on the
current value), so of two writers that read entry n, exactly one creates n + 1: the other is told the value that won
(AliasMovedError, exit 4). Entries are never rewritten or deleted, but by `model delete` of the
whole model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

from aim_cli.errors import (
    AliasMovedError,
    ConflictError,
    IntegrityError,
    KeyNotFoundError,
    NotFoundError,
    ObjectTooLargeError,
    VersionNotFoundError,
)
from aim_cli.format import alias as al
from aim_cli.format.layout import (
    MODELS,
    AliasKey,
    AliasStatementKey,
    alias_entry_key,
    alias_prefix,
    alias_statement_key,
    aliases_prefix,
)
from aim_cli.names import check_name
from aim_cli.repository.keys import StoredKeys
from aim_cli.repository.parallel import map_parallel
from aim_cli.repository.versions import VersionRef, Versions
from aim_cli.util.stamps import now_rfc3339, user_at_host

log = logging.getLogger(__name__)


def describe(record: al.AliasRecord) -> str:
    """``prod -> v3 (digest <64 hex>)``, or ``prod (deleted)``: one entry, for messages (errors
    carry digests whole)."""
    if record.target is None:
        return f"{record.alias} (deleted)"
    return f"{record.alias} -> {record.tag} (digest {record.digest or ''})"


@dataclass(frozen=True)
class History:
    """An alias's entries in index order, and what is wrong with them (a gap, an entry that
    cannot be read, one whose "from" is not what the entry before it set): damage, exit 5 for
    the commands that show it. Problems are (key, why)."""

    model: str
    alias: str
    records: list[al.AliasRecord]
    problems: list[tuple[str, str]]
    highest: int = 0  # the highest index listed: records[-1] is the current entry only if it has it


class Aliases:
    """The aliases of the repository ``keys`` reads."""

    def __init__(self, keys: StoredKeys, versions: Versions, jobs: int):
        self.keys = keys
        self.versions = versions
        self.jobs = jobs
        self.backend = keys.backend
        self.name = keys.name

    # -- reads -------------------------------------------------------------------------------------
    def _entries(self, prefix: str) -> Iterator[AliasKey]:
        """The alias entries below ``prefix``, at most MAX_INDEX of them per alias (more is a
        hostile listing: refused, never read without end). Strays there are `repo check`'s."""
        counts: dict[tuple[str, str], int] = {}
        for key in self.keys.model_keys(prefix):
            if isinstance(key, AliasKey):
                seen = counts[key.model, key.alias] = counts.get((key.model, key.alias), 0) + 1
                if seen > al.MAX_INDEX:
                    raise IntegrityError(
                        f"alias {key.alias!r} of model {key.model!r} in repository {self.name!r} has more than "
                        f"{al.MAX_INDEX} history entries",
                        "the repository is damaged; remove the alias's directory from the storage by hand",
                    )
                yield key

    def _highest(self, model: str, alias: str) -> int:
        """The highest index of the alias's entries: 0 when it never existed."""
        return max((k.index for k in self._entries(alias_prefix(model, alias))), default=0)

    def read_entry(self, model: str, alias: str, index: int) -> al.AliasRecord:
        """Entry ``index``, read within its bound and checked to be the entry its key names.
        KeyNotFoundError passes; IntegrityError if it is not a valid record of that entry."""
        key = alias_entry_key(model, alias, index)
        try:
            record = al.decode(self.backend.get(key, max_size=al.MAX_RECORD_BYTES), where=key)
        except ObjectTooLargeError:
            raise al.invalid(key, f"larger than {al.MAX_RECORD_BYTES} bytes") from None
        if (record.model, record.alias, record.index) != (model, alias, index):
            raise al.invalid(key, f"it is entry {record.index} of {record.model}:{record.alias}")
        return record

    def latest(self, model: str, alias: str) -> al.AliasRecord | None:
        """The alias's latest entry (a set or a delete), None when it never existed."""
        check_name("model", model)
        check_name("alias", alias)
        index = self._highest(model, alias)
        if index == 0:
            return None
        try:
            return self.read_entry(model, alias, index)
        except KeyNotFoundError:  # listed, then gone: only a `model delete` removes entries
            raise NotFoundError(f"alias {alias!r} of model {model!r} was deleted with its model") from None

    def current(self, model: str, alias: str) -> al.AliasRecord | None:
        """The alias's current value (its latest entry, a set), None when it is not set."""
        latest = self.latest(model, alias)
        return latest if latest is not None and latest.target is not None else None

    def get(self, model: str, alias: str) -> al.AliasRecord:
        """As ``current``, NotFoundError (exit 3) when it is not set."""
        found = self.current(model, alias)
        if found is None:
            raise NotFoundError(
                f"alias {alias!r} of model {model!r} is not set in repository {self.name!r}",
                f"`aim_cli model alias list {self.name} {model}` lists its aliases",
            )
        return found

    def list_aliases(self, model: str) -> list[al.AliasRecord]:
        """The current value of every alias of ``model`` that is set, by name: one listing of its
        aliases/, then one small read per alias, in parallel."""
        highest: dict[str, int] = {}
        for key in self._entries(aliases_prefix(check_name("model", model))):
            highest[key.alias] = max(highest.get(key.alias, 0), key.index)
        found = map_parallel(lambda item: self._entry_or_none(model, *item), sorted(highest.items()), self.jobs)
        return [r for r in found if r is not None and r.target is not None]

    def _entry_or_none(self, model: str, alias: str, index: int) -> al.AliasRecord | None:
        try:
            return self.read_entry(model, alias, index)
        except KeyNotFoundError:
            return None

    def history(self, model: str, alias: str) -> History:
        """Every entry of the alias, oldest first, checked against each other: entries 1..n
        all there, and each one's "from" what the one before it left. NotFoundError when the
        alias never existed."""
        check_name("model", model)
        check_name("alias", alias)
        indices = sorted(k.index for k in self._entries(alias_prefix(model, alias)))
        if not indices:
            raise NotFoundError(
                f"alias {alias!r} of model {model!r} has no history in repository {self.name!r}",
                f"`aim_cli model alias list {self.name} {model}` lists its aliases",
            )
        records: list[al.AliasRecord] = []
        problems: list[tuple[str, str]] = []
        before: al.AliasRecord | None = None
        expected = 1
        for index in indices:
            key = alias_entry_key(model, alias, index)
            if index != expected:
                problems.append((key, f"entries {expected} to {index - 1} are missing"))
                before = None  # what the missing entries left is unknown
            expected = index + 1
            try:
                record = self.read_entry(model, alias, index)
            except (IntegrityError, KeyNotFoundError) as e:
                problems.append((key, e.message))
                before = None
                continue
            if (before is not None or index == 1) and record.previous != (before.target if before else None):
                problems.append(
                    (
                        key,
                        f"it says the alias was {_shown(record.previous)} before, but entry "
                        f"{index - 1} left it {_shown(before.target if before else None)}",
                    )
                )
            records.append(record)
            before = record
        return History(model, alias, records, problems, indices[-1])

    # -- signed statements of entries (signing/alias_statement.py) --------------------------------
    def put_statement(self, model: str, alias: str, index: int, signer: str, data: bytes) -> bool:
        """Store a signer's statement of entry ``index`` beside it, only if absent (an exclusive
        create, as the entry): False when one is there already."""
        return self.backend.put_if_absent(alias_statement_key(model, alias, index, signer), data)

    def get_statement(self, model: str, alias: str, index: int, signer: str, *, max_size: int) -> bytes:
        """A signer's statement of entry ``index``, read within ``max_size`` (ObjectTooLargeError
        past it); KeyNotFoundError when there is none."""
        return self.backend.get(alias_statement_key(model, alias, index, signer), max_size=max_size)

    def iter_statement_keys(self) -> Iterator[AliasStatementKey]:
        """Every signed statement of an alias entry in the repository, for `repo check`."""
        return (k for k in self.keys.model_keys(MODELS) if isinstance(k, AliasStatementKey))

    def pointing_at(self, model: str, tag: str) -> list[al.AliasRecord]:
        """The aliases of ``model`` currently set to ``tag`` (whatever digest they name)."""
        return [r for r in self.list_aliases(model) if r.tag == tag]

    def iter_alias_keys(self) -> Iterator[AliasKey]:
        """Every alias entry of the repository (one listing of models/), for `repo check`."""
        return (k for k in self.keys.model_keys(MODELS) if isinstance(k, AliasKey))

    # -- resolution ----------------------------------------------------------------------------------
    def resolve_version(self, model: str, tag: str | None, digest: str | None) -> tuple[VersionRef, bool]:
        """Versions.resolve_version, where ``tag`` may also name an alias: a tag first (an alias
        never shadows a tag), then the alias's current value, whose tag must still hold the
        manifest digest the alias names. The returned ref carries the alias entry it came from
        (``VersionRef.alias``), and the resolution is logged (the CLI shows it on stderr)."""
        try:
            return self.versions.resolve_version(model, tag, digest)
        except VersionNotFoundError as e:
            if tag is None or e.tag != tag:
                raise
            record = self.current(model, tag)
            if record is None:
                raise
        ref = self.target_of(record)
        self.versions.check_pin(ref, digest)
        log.info(
            "alias %s of %s: tag %s, digest %s (entry %d, set by %s at %s)",
            record.alias,
            model,
            record.tag,
            record.digest,
            record.index,
            record.by,
            record.at,
        )
        return ref, False

    def target_of(self, record: al.AliasRecord) -> VersionRef:
        """The version a set alias points at, checked: IntegrityError (exit 5) when its tag is
        gone or holds another manifest than the one the alias was set to (deleted and pushed
        again): the alias dangles, and a read through it must not deliver other bytes."""
        assert record.tag is not None and record.digest is not None
        model, alias = record.model, record.alias
        hint = (
            f"the version was deleted or replaced; point the alias at a version with "
            f"`aim_cli model alias set {self.name} {model} {alias} --tag TAG`, or delete it"
        )
        try:
            ref = self.versions.get_version(model, record.tag)
        except VersionNotFoundError:
            raise IntegrityError(
                f"alias {alias!r} of model {model!r} points at tag {record.tag!r} (digest {record.digest}), "
                f"which is no longer stored",
                hint,
            ) from None
        if ref.digest != record.digest:
            raise IntegrityError(
                f"alias {alias!r} of model {model!r} points at tag {record.tag!r} with digest {record.digest}, "
                f"but that tag now holds digest {ref.digest}",
                hint,
            )
        return replace(ref, alias=record)

    # -- changes -------------------------------------------------------------------------------------
    def append(
        self,
        model: str,
        alias: str,
        target: tuple[str, str] | None,
        *,
        message: str = "",
        at: str | None = None,
        by: str | None = None,
        again: bool = False,
    ) -> tuple[al.AliasRecord, bool]:
        """Point the alias at ``target`` (tag, manifest digest), or unset it (None): create the
        next entry exclusively. Returns (the entry, whether it was written): an alias already at
        ``target`` gets no entry, unless ``again`` (a new signed statement of the same value).
        Unsetting an alias that is not set is NotFoundError; another
        writer's entry in between is AliasMovedError (exit 4) naming the value that won."""
        latest = self.latest(model, alias)
        now = latest.target if latest is not None else None
        if target is None and now is None:
            self.get(model, alias)  # raises: not set
        if target is not None and now == target and not again:
            assert latest is not None
            return latest, False
        record = al.AliasRecord(
            al.FORMAT,
            model,
            alias,
            (latest.index if latest else 0) + 1,
            al.SET if target else al.DELETE,
            target[0] if target else None,
            target[1] if target else None,
            now[0] if now else None,
            now[1] if now else None,
            at or now_rfc3339(),
            (by or user_at_host())[: al.MAX_BY_CHARS],
            message,
        )
        why = al.problem(record)
        if why:
            raise IntegrityError(f"cannot write alias {alias!r} of {model!r}: {why}")  # a bug: inputs were checked
        raw = al.encode(record)
        # Whatever put_if_absent answers, the read-back decides: a retried create whose first
        # answer was lost sees its own entry as another's.
        self.backend.put_if_absent(alias_entry_key(model, alias, record.index), raw)
        stored = self.read_entry(model, alias, record.index)
        if al.encode(stored) != raw:
            raise AliasMovedError(
                f"alias {alias!r} of model {model!r} was changed by {stored.by} at {stored.at} while this command "
                f"ran: it is now {describe(stored)}",
                "nothing was written; run the command again if you still mean to change it",
                current_tag=stored.tag,
                current_digest=stored.digest,
                index=stored.index,
            )
        return record, True

    def set_alias(
        self,
        model: str,
        alias: str,
        tag: str,
        *,
        message: str = "",
        at: str | None = None,
        by: str | None = None,
        again: bool = False,
    ) -> tuple[al.AliasRecord, bool]:
        """Point ``alias`` at ``tag`` and the manifest digest it holds now (``append``). A name
        that is a tag is refused (ConflictError: an alias never shadows a tag); so is a tag
        that is not stored (VersionNotFoundError)."""
        check_name("model", model)
        check_name("alias", alias)
        check_name("tag", tag)
        _check_message(message)
        if self.versions.has_version(model, alias):
            raise ConflictError(
                f"{alias!r} is a tag of model {model!r}, so it cannot be an alias",
                "choose another alias name; an alias never shadows a tag",
            )
        ref = self.versions.get_version(model, tag)
        return self.append(model, alias, (tag, ref.digest), at=at, by=by, message=message, again=again)

    def delete_alias(
        self, model: str, alias: str, *, message: str = "", at: str | None = None, by: str | None = None
    ) -> al.AliasRecord:
        """Unset ``alias`` (its history stays): NotFoundError when it is not set."""
        check_name("model", model)
        check_name("alias", alias)
        _check_message(message)
        return self.append(model, alias, None, at=at, by=by, message=message)[0]

    def remove_pointing_at(
        self, model: str, tag: str, *, at: str | None = None, by: str | None = None
    ) -> list[al.AliasRecord]:
        """Unset every alias of ``model`` set to ``tag`` (`delete-version --force`), each with an
        entry saying so; an alias moved elsewhere meanwhile is left as it is. The entries written."""
        written = []
        for record in self.pointing_at(model, tag):
            message = f"removed by `model delete-version --force` of {tag}"
            for _ in range(3):  # another writer's entry in between: look again
                try:
                    written.append(self.append(model, record.alias, None, at=at, by=by, message=message)[0])
                    break
                except AliasMovedError as e:
                    if e.current_tag != tag:
                        break
        return written

    def refuse_tag_is_alias(self, model: str, tag: str) -> None:
        """ConflictError (exit 4) when ``tag`` is a set alias of ``model``: push takes tags
        only, and a tag named like an alias would shadow it."""
        found = self.current(model, tag)
        if found is not None:
            raise ConflictError(
                f"{tag!r} is an alias of model {model!r} ({describe(found)}), so it cannot be a tag",
                "push under another --tag; an alias never shadows a tag",
            )


def _shown(target: tuple[str, str] | None) -> str:
    return "unset" if target is None else f"{target[0]} ({target[1]})"


def _check_message(message: str) -> None:
    if not isinstance(message, str) or len(message) > al.MAX_MESSAGE_CHARS:
        from aim_cli.errors import UsageError

        raise UsageError(f"the alias message is longer than {al.MAX_MESSAGE_CHARS} characters", "shorten it")
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        from aim_cli.errors import UsageError

        raise UsageError("the alias message is not valid UTF-8", "write the message as UTF-8 text") from None
