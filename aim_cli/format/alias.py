"""An alias's history entry (docs/design.md §2.1): one immutable record per change of the alias,
stored at ``models/<model>/aliases/<alias>/<index>.json`` (layout.py) by an exclusive create.

    {"format": 1, "model": "m", "alias": "prod", "index": 3, "action": "set",
     "tag": "v3", "digest": "<manifest digest>", "previous_tag": "v2", "previous_digest": "<64 hex>",
     "at": "2026-03-03T10:00:00.123456Z", "by": "alice@host", "message": "..."}

``index`` is the entry's place in the history (1, 2, ...), the same number as its key: the one
sequence number that only grows, which a signed statement of the alias (issue 20, item 4) will
carry beside the record. ``action`` is "set" (the alias points at ``tag`` and its manifest
``digest``) or "delete" (the alias is unset; ``tag`` and ``digest`` are null). ``previous_*`` is
what the alias pointed at before this change (null: unset), so each record says "from" and "to"
and a history that lies about its past is caught by comparing neighbours (repository/aliases.py).

A record comes from storage, so ``decode`` is strict: bounded, no unknown field, every field
checked; anything else is an IntegrityError (exit 5), never a partial result.
"""

from __future__ import annotations

import msgspec

from aim_cli.errors import IntegrityError
from aim_cli.format import manifest as mf
from aim_cli.names import NAME_RE, valid_model_name
from aim_cli.util.quoting import printable, quoted

FORMAT = 1
#: A record is at most ~30 KiB (a 4096-character message of escaped control characters is 24 KiB).
MAX_RECORD_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 4096
MAX_BY_CHARS = 256
#: The most entries one alias's history may hold: a listing past it is refused (damage), never
#: read without end. An alias moved every minute for a year takes half of it.
MAX_INDEX = 1_000_000
SET = "set"
DELETE = "delete"


class AliasRecord(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Field order is the key order on disk.
    format: int
    model: str
    alias: str
    index: int
    action: str
    tag: str | None
    digest: str | None
    previous_tag: str | None
    previous_digest: str | None
    at: str
    by: str
    message: str

    @property
    def target(self) -> tuple[str, str] | None:
        """(tag, digest) the alias points at after this change, None when it is unset."""
        return (self.tag, self.digest) if self.tag is not None and self.digest is not None else None

    @property
    def previous(self) -> tuple[str, str] | None:
        """(tag, digest) it pointed at before this change, None when it was unset."""
        if self.previous_tag is None or self.previous_digest is None:
            return None
        return self.previous_tag, self.previous_digest


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AliasRecord)


def encode(record: AliasRecord) -> bytes:
    return _encoder.encode(record)


def _pair_problem(what: str, tag: str | None, digest: str | None) -> str | None:
    """Why (tag, digest) is not a version's name and manifest digest, or both null."""
    if tag is None and digest is None:
        return None
    if tag is None or digest is None:
        return f"{what}tag and {what}digest are not both set"
    if not NAME_RE.fullmatch(tag):
        return f"{what}tag {quoted(tag)} is not a tag name"
    if not mf.HEX64.fullmatch(digest):
        return f"{what}digest {quoted(digest)} is not 64 hex characters"
    return None


def problem(record: AliasRecord) -> str | None:
    """Why ``record`` is not one aim_cli writes, or None."""
    if record.format != FORMAT:
        return "unknown format"
    if not valid_model_name(record.model):
        return f"invalid model name {quoted(record.model)}"
    if not NAME_RE.fullmatch(record.alias):
        return f"invalid alias name {quoted(record.alias)}"
    if not 1 <= record.index <= MAX_INDEX:
        return f"index {record.index} is out of range"
    if record.action not in (SET, DELETE):
        return f"action {quoted(record.action)} is neither {SET!r} nor {DELETE!r}"
    why = _pair_problem("", record.tag, record.digest) or _pair_problem(
        "previous_", record.previous_tag, record.previous_digest
    )
    if why:
        return why
    if (record.action == SET) != (record.target is not None):
        return "a set names a tag and digest, a delete none"
    if record.action == DELETE and record.previous is None:
        return "a delete of an alias that was unset"
    if record.index == 1 and record.previous is not None:
        return "the first entry names a previous value"
    if not mf.CREATED_AT.fullmatch(record.at):
        return f"at {quoted(record.at)} is not an RFC 3339 UTC time"
    if len(record.by) > MAX_BY_CHARS or len(record.message) > MAX_MESSAGE_CHARS:
        return "by or message is too long"
    return None


def invalid(where: str, why: str) -> IntegrityError:
    return IntegrityError(
        f"alias record {where} is invalid: {why}",
        "it was not written by aim_cli; `aim_cli repo check` lists the damage (`alias history` shows the rest)",
    )


def decode(data: bytes, *, where: str) -> AliasRecord:
    """Parse and validate a stored record: an AliasRecord, or IntegrityError and nothing else."""
    if len(data) > MAX_RECORD_BYTES:
        raise invalid(where, f"larger than {MAX_RECORD_BYTES} bytes")
    try:
        record = _decoder.decode(data)
    # Malformed JSON, a wrong type, a lone surrogate; invalid UTF-8 in a key is a UnicodeDecodeError.
    except (msgspec.MsgspecError, UnicodeDecodeError) as e:
        raise invalid(where, f"cannot be parsed: {printable(str(e))}") from None
    why = problem(record)
    if why:
        raise invalid(where, why)
    return record
