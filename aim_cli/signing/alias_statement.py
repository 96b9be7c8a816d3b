"""Signed alias statements (docs/design.md §2.1, §10): what a key says an alias entry is, so a
consumer can refuse a rollback or a freeze by whoever writes the repository (§12).

A statement is stored beside the entry it signs, ``models/<m>/aliases/<alias>/<n>.<signer>.sig``
(format/layout.py), created only if absent. It is a Sigstore bundle (v0.3, key method) around a
DSSE envelope, as a version's signature (bundle.py), with its own payload type: DSSE signs the
type with the payload, so a version's signature never verifies as an alias statement, nor the
reverse. The payload is strict JSON:

    {"format": 1, "model": "m", "alias": "prod", "index": 3, "tag": "v3",
     "digest": "<manifest digest>", "issued_at": "2026-03-03T10:00:00.000000Z",
     "expires_at": "2026-04-02T10:00:00.000000Z"}

``index`` is the entry's index in the alias's history: the sequence number that only grows.
``expires_at`` is null when the signer gave no expiry. Everything read is hostile: bounded,
parsed strictly, every field checked; anything else is an IntegrityError (exit 5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from aim_cli.errors import ConflictError, IntegrityError, KeyNotFoundError, ObjectTooLargeError, UsageError
from aim_cli.format import manifest as mf
from aim_cli.format.alias import MAX_INDEX, AliasRecord
from aim_cli.format.layout import alias_statement_key
from aim_cli.names import valid_model_name, valid_name
from aim_cli.signing.bundle import parse_bundle, sign_payload
from aim_cli.signing.keys import SIGNER_HEX, ecdsa_verify, key_hint
from aim_cli.signing.strict import malformed
from aim_cli.util.quoting import printable, quoted
from aim_cli.util.stamps import rfc3339

PAYLOAD_TYPE = "application/vnd.aim-cli.alias-statement.v1+json"
FORMAT = 1
#: A statement's bundle is ~1 KiB (a key hint, a 300-byte payload, a signature); more is hostile.
MAX_STATEMENT_BYTES = 16 * 1024
#: The longest expiry ``--expires`` takes: ten years.
MAX_EXPIRY = timedelta(days=3660)
_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class AliasStatement(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Field order is the key order of the payload.
    format: int
    model: str
    alias: str
    index: int
    tag: str
    digest: str
    issued_at: str
    expires_at: str | None

    @property
    def target(self) -> tuple[str, str]:
        return self.tag, self.digest


_decoder = msgspec.json.Decoder(AliasStatement)


def parse_time(text: str) -> datetime:
    """A time the statement's grammar (mf.CREATED_AT) accepted, as an aware UTC datetime."""
    seconds, _, fraction = text.removesuffix("Z").partition(".")
    when = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return when + timedelta(microseconds=int((fraction or "0")[:6].ljust(6, "0")))


def parse_expiry(text: str) -> timedelta:
    """``--expires``: a duration, ``30d``, ``12h``, ``90m``, ``3600s`` or ``2w``, at most ten years."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or int(match[1]) * _UNITS[match[2]] > MAX_EXPIRY.total_seconds():
        raise UsageError(
            f"--expires {quoted(str(text))} is not a duration of at most ten years",
            "give a number and a unit: 30d, 12h, 90m, 3600s or 2w",
        )
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def problem(s: AliasStatement) -> str | None:
    """Why ``s`` is not a statement aim_cli writes, or None."""
    if s.format != FORMAT:
        return "unknown format"
    if not valid_model_name(s.model):
        return f"invalid model name {quoted(s.model)}"
    for kind, name in (("alias", s.alias), ("tag", s.tag)):
        if not valid_name(name):
            return f"invalid {kind} name {quoted(name)}"
    if not 1 <= s.index <= MAX_INDEX:
        return f"index {s.index} is out of range"
    if not mf.HEX64.fullmatch(s.digest):
        return f"digest {quoted(s.digest)} is not 64 hex characters"
    for what, text in (("issued_at", s.issued_at), ("expires_at", s.expires_at)):
        if text is not None and not mf.CREATED_AT.fullmatch(text):
            return f"{what} {quoted(text)} is not an RFC 3339 UTC time"
    try:
        if s.expires_at is not None and parse_time(s.expires_at) <= parse_time(s.issued_at):
            return "it expires before it was issued"
    except ValueError:  # 31 February: the grammar alone lets it through
        return "a time that does not exist"
    return None


def decode(payload: bytes) -> AliasStatement:
    """The payload of a verified envelope, parsed strictly: IntegrityError for anything else."""
    try:
        statement = _decoder.decode(payload)
    except (msgspec.MsgspecError, UnicodeDecodeError) as e:
        raise malformed(f"the alias statement cannot be parsed: {printable(str(e))}") from None
    why = problem(statement)
    if why:
        raise malformed(f"the alias statement is invalid: {why}")
    return statement


def statement_of(record: AliasRecord, now: datetime, expires: timedelta | None) -> AliasStatement:
    """The statement of a set alias entry, issued ``now``."""
    assert record.tag is not None and record.digest is not None
    until = None if expires is None else rfc3339(now + expires)
    return AliasStatement(
        FORMAT, record.model, record.alias, record.index, record.tag, record.digest, rfc3339(now), until
    )


def sign(private_key, statement: AliasStatement) -> bytes:
    """The bundle of ``statement`` signed by ``private_key`` (key method, the payload type above)."""
    return sign_payload(private_key, msgspec.json.encode(statement), payload_type=PAYLOAD_TYPE)


def verify(data: bytes, public_key) -> AliasStatement:
    """The statement in the bundle ``data`` if ``public_key`` signed it; IntegrityError otherwise
    (malformed, another key, altered, not an alias statement)."""
    bundle = parse_bundle(data, max_size=MAX_STATEMENT_BYTES, payload_type=PAYLOAD_TYPE)
    if bundle.method != "key":
        raise malformed("an alias statement is signed by a key, without certificates")
    if bundle.key_hint is not None and bundle.key_hint != key_hint(public_key):
        raise IntegrityError(
            "the alias statement was made by another key (its key hint differs)",
            "pass the public key of the alias's signer",
        )
    ecdsa_verify(public_key, bundle.signature, bundle.payload, PAYLOAD_TYPE)
    return decode(bundle.payload)


def mismatch(statement: AliasStatement, record: AliasRecord) -> str | None:
    """How ``statement`` differs from the entry it is stored beside, or None: each of model,
    alias, index, tag and digest must be the entry's."""
    for what, signed, stored in (
        ("model", statement.model, record.model),
        ("alias", statement.alias, record.alias),
        ("entry", statement.index, record.index),
        ("tag", statement.tag, record.tag),
        ("digest", statement.digest, record.digest),
    ):
        if signed != stored:
            return f"it signs {what} {signed}, the entry says {stored}"
    return None


@dataclass(frozen=True)
class SignedEntry:
    """A statement stored beside its entry (or found there: ``created`` False)."""

    statement: AliasStatement
    signer: str  # 16 hex of the key hint: the statement's stored name
    key: str  # where it is stored
    created: bool


def read_stored(repository, record: AliasRecord, signer: str) -> bytes:
    """The stored statement of ``record`` by ``signer`` (16 hex), read within its bound.
    KeyNotFoundError passes; an oversized one is malformed (IntegrityError)."""
    try:
        return repository.get_alias_statement(
            record.model, record.alias, record.index, signer, max_size=MAX_STATEMENT_BYTES
        )
    except ObjectTooLargeError:
        raise malformed(f"the alias statement is larger than {MAX_STATEMENT_BYTES} bytes") from None


def sign_entry(
    repository, record: AliasRecord, private_key, *, now: datetime, expires: timedelta | None
) -> SignedEntry:
    """Sign the set entry ``record`` and store the statement beside it, only if absent. One there
    already is kept when it is this key's valid statement of this entry (a rerun), else
    ConflictError (exit 4): a statement under this signer's name that is not its own."""
    public_key = private_key.public_key()
    signer = key_hint(public_key)[:SIGNER_HEX]
    key = alias_statement_key(record.model, record.alias, record.index, signer)
    statement = statement_of(record, now, expires)
    if repository.put_alias_statement(record.model, record.alias, record.index, signer, sign(private_key, statement)):
        return SignedEntry(statement, signer, key, True)
    try:
        stored = verify(read_stored(repository, record, signer), public_key)
        why = mismatch(stored, record)
    except (IntegrityError, KeyNotFoundError) as e:
        why = e.message
    if why:
        raise ConflictError(
            f"entry {record.index} of alias {record.alias!r} already has a statement under signer {signer} "
            f"that is not this key's statement of it ({why})",
            f"remove {key} from the storage, then sign again",
        )
    return SignedEntry(stored, signer, key, False)
