"""The per-version summary: what listings show, without reading a manifest.

A manifest of a 70B model is ~8 MB of JSON; listing 100 of them read 824 MB and took 16 s and
3.4 GB. The summary is the manifest's header, its counts and its digest, a few hundred bytes:

    {"format": 1, "model": "m", "tag": "v1", "digest": "<manifest digest>",
     "created_at": "...", "created_by": "...", "message": "...", "total_size": N, "files": N, "chunks": N,
     "stored_size": N}

``new_stored_size`` (formats 2 and 3; absent by default, and always in a summary written by
anything but a push) is what the push of this version added to storage: the new chunks as
stored, measured then. Display only, like ``stored_size``; `model versions` shows it as NEW.

``delta_base`` (format 3 only, absent by default) names the version a push paired this one with
for deltas (``model:tag``); display only, like ``stored_size``, and lost when a summary is rebuilt.

``stored_size`` (format 2 repositories only; absent where it is unknown) is what the version's
distinct chunks take in storage, as push measured it. It is the one field not derived from the
manifest, so it is for display only: nothing decides anything by it, and `repo check` does not
compare it (a version's stored size would take a listing of every blob). A format 1 repository's
summaries never carry it, so that older clients, whose reader refuses unknown fields, read them.

It is derived data: ``of_manifest`` computes it from the manifest and its digest alone, so anybody
may (re)write it with a plain put, and the manifest stays the commit point (its bytes and digest
do not change). The message and author are cut to MAX_MESSAGE_CHARS and MAX_CREATED_BY_CHARS
characters so that a summary always fits MAX_SUMMARY_BYTES; `model info` shows them whole.

A summary comes from storage, so ``decode`` is as strict as the manifest's: bounded, no unknown
field, every field checked. A hostile summary can at worst make a listing show wrong metadata:
whatever uses a version reads its manifest, and the newest-tag resolution checks that the
manifest it picked is the one the summary describes (Repository.newest_version).
"""

from __future__ import annotations

from typing import Any

import msgspec

from aim_cli.errors import IntegrityError
from aim_cli.format import manifest as mf
from aim_cli.names import NAME_RE, valid_model_name
from aim_cli.util.quoting import printable, quoted

FORMAT = 1
#: A summary is at most ~30 KiB (a 4096-character message of escaped control characters is 24 KiB).
MAX_SUMMARY_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 4096
MAX_CREATED_BY_CHARS = 256
MAX_COUNT = 2**63 - 1  # sizes and counts fit an int64, as every reader of them assumes


class Summary(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    # Field order is the key order on disk.
    format: int
    model: str
    tag: str
    digest: str  # BLAKE3 of the manifest's stored bytes
    created_at: str
    created_by: str
    message: str  # its first MAX_MESSAGE_CHARS characters
    total_size: int
    files: int
    chunks: int
    stored_size: int | None = None
    delta_base: str | None = None  # format 3: "model:tag" of the version push paired this one with
    new_stored_size: int | None = None  # formats 2, 3: what of stored_size the push added (display only)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Summary)


def encode(summary: Summary) -> bytes:
    return _encoder.encode(summary)


def _problem(summary: Summary) -> str | None:
    """Why ``summary`` is not one a valid manifest gives, or None."""
    if summary.format != FORMAT:
        return "unknown format"
    if not valid_model_name(summary.model):
        return f"invalid model name {quoted(summary.model)}"
    if not NAME_RE.fullmatch(summary.tag):
        return f"invalid tag name {quoted(summary.tag)}"
    if not mf.HEX64.fullmatch(summary.digest):
        return f"digest {quoted(summary.digest)} is not 64 hex characters"
    if not mf.CREATED_AT.fullmatch(summary.created_at):
        return f"created_at {quoted(summary.created_at)} is not an RFC 3339 UTC time"
    if len(summary.created_by) > MAX_CREATED_BY_CHARS or len(summary.message) > MAX_MESSAGE_CHARS:
        return "created_by or message is too long"
    for field in ("total_size", "files", "chunks", "stored_size", "new_stored_size"):
        if not 0 <= (getattr(summary, field) or 0) <= MAX_COUNT:
            return f"{field} is out of range"
    if summary.delta_base is not None and not _valid_version_name(summary.delta_base):
        return f"delta_base {quoted(summary.delta_base)} is not model:tag"
    return None


def _valid_version_name(text: str) -> bool:
    model, sep, tag = text.partition(":")
    return bool(sep) and valid_model_name(model) and bool(NAME_RE.fullmatch(tag))


def invalid(where: str, why: str) -> IntegrityError:
    return IntegrityError(
        f"summary {where} is invalid: {why}",
        "remove it from the storage: the next listing rebuilds it from its manifest",
    )


def decode(data: bytes, *, where: str) -> Summary:
    """Parse and validate a stored summary: a Summary, or IntegrityError and nothing else."""
    if len(data) > MAX_SUMMARY_BYTES:
        raise invalid(where, f"larger than {MAX_SUMMARY_BYTES} bytes")
    try:
        summary = _decoder.decode(data)
    # Malformed JSON, a wrong type, a lone surrogate; invalid UTF-8 in a key is a UnicodeDecodeError.
    except (msgspec.MsgspecError, UnicodeDecodeError) as e:
        raise invalid(where, f"cannot be parsed: {printable(str(e))}") from None
    why = _problem(summary)
    if why:
        raise invalid(where, why)
    return summary


def of_manifest(
    manifest,
    digest: str,
    *,
    where: str,
    stored_size: int | None = None,
    delta_base: str | None = None,
    new_stored_size: int | None = None,
) -> Summary:
    """The summary of ``manifest`` (a manifest.Manifest, or a ManifestHead) whose stored bytes
    have ``digest``. IntegrityError if the manifest's own fields cannot make a valid one."""
    summary = Summary(
        FORMAT,
        manifest.model,
        manifest.tag,
        digest,
        manifest.created_at,
        manifest.created_by[:MAX_CREATED_BY_CHARS],
        manifest.message[:MAX_MESSAGE_CHARS],
        manifest.total_size,
        len(manifest.files),
        sum(len(f.chunks) for f in manifest.files),
        stored_size,
        delta_base,
        new_stored_size,
    )
    why = _problem(summary)
    if why:
        raise IntegrityError(
            f"manifest {where} is invalid: {why}",
            "the version is corrupt or was not written by aim_cli; run `aim_cli repo check`",
        )
    return summary


def _with_field_type(struct: type, name: str, field: str, new_type) -> type:
    """A Struct with ``struct``'s fields (as strict), ``field`` decoded as ``new_type``."""
    return msgspec.defstruct(
        name,
        [(f.name, new_type if f.name == field else f.type) for f in msgspec.structs.fields(struct)],
        forbid_unknown_fields=True,
    )


# A manifest decoded just enough to summarise it: manifest.Manifest's schema with each file's
# chunks counted, not parsed (4 ms and a few MB for a 70B model's 8 MB manifest of 112k chunks,
# against 70 ms and ~30 MB to decode and validate it whole). Whatever uses a version's files
# decodes its manifest fully (manifest.decode).
_FileHead = _with_field_type(mf.FileEntry, "FileHead", "chunks", list[msgspec.Raw])
# A type built at run time is no type to mypy: list[Any] is what it sees.
ManifestHead = _with_field_type(mf.Manifest, "ManifestHead", "files", list[_FileHead])  # type: ignore[valid-type]

_head_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(ManifestHead)


def of_manifest_bytes(raw: bytes, *, model: str, tag: str, where: str) -> Summary:
    """The summary of the manifest stored as ``raw`` under ``model``/``tag``'s key.
    IntegrityError if it does not parse, is too large, names another version or cannot be summarised."""
    hint = "the version is corrupt; do not use it (run `aim_cli repo check`)"
    if len(raw) > mf.MAX_MANIFEST_BYTES:
        raise IntegrityError(f"manifest {where} is larger than {mf.MAX_MANIFEST_BYTES} bytes", hint)
    try:
        head = _head_decoder.decode(raw)
    except (msgspec.MsgspecError, UnicodeDecodeError) as e:
        raise IntegrityError(f"manifest {where} cannot be parsed: {printable(str(e))}", hint) from None
    if head.format != mf.FORMAT:
        raise IntegrityError(f"manifest {where} is invalid: unknown format", hint)
    if (head.model, head.tag) != (model, tag):
        raise IntegrityError(
            f"manifest {where} names {quoted(head.model)}:{quoted(head.tag)}",
            "the repository is damaged; run `aim_cli repo check`",
        )
    return of_manifest(head, mf.digest_of(raw), where=where)


def differences(stored: Summary, expected: Summary) -> list[str]:
    """The fields in which a stored summary differs from the one its manifest gives (all but
    ``stored_size``, ``delta_base`` and ``new_stored_size``, which no manifest gives)."""
    fields = [f for f in Summary.__struct_fields__ if f not in _DISPLAY_ONLY]
    return [f for f in fields if getattr(stored, f) != getattr(expected, f)]


_DISPLAY_ONLY = ("stored_size", "delta_base", "new_stored_size")
