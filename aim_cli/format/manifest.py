"""The version manifest (format 1): msgspec Structs, encoding, validation, digest.

A manifest is the commit point of a push and the only thing a pull trusts, so decoding it is
strict: every path is checked against traversal (``..``, absolute paths, backslashes, ``.aim*``),
control characters, the limits below, duplicates, ordering, and every size against its chunks.
A manifest that fails any check is an ``IntegrityError`` (exit 5), never a partial result.
"""

from __future__ import annotations

import re
from itertools import pairwise
from operator import itemgetter
from typing import Annotated

import blake3
import msgspec

from aim_cli.chunking import cdc as chunking
from aim_cli.errors import IntegrityError
from aim_cli.util.quoting import has_control, printable, quoted

FORMAT = 1
HEX64 = re.compile(r"[0-9a-f]{64}")
# created_at as push writes it (RFC 3339, UTC): "2026-01-31T12:00:00.123456Z". Listings order
# versions by this string, so its form is part of the format.
CREATED_AT = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?Z")
# Only permission bits travel: never setuid/setgid/sticky from a manifest.
MODE_MASK = 0o777
# Pull's memory bound (jobs x max chunk size) holds only if a manifest cannot claim bigger chunks.
MAX_CHUNK_SIZE = chunking.MAX_CHUNK_SIZE
# Path limits: push refuses up front what pull could not write. Linux's NAME_MAX and PATH_MAX
# (also the common limits of macOS and of ext4, XFS, APFS, NTFS names), and a depth that a
# tree walk never finds too deep (pull hit RecursionError at 1,000 levels).
MAX_NAME_BYTES = 255  # one path component, UTF-8
MAX_PATH_BYTES = 4096  # a whole manifest path, UTF-8
MAX_PATH_DEPTH = 64  # components of a path ("a/b/c" has 3)
# The most a manifest may hold: every reader of one reads at most this many bytes. A million
# files of ~200 bytes of JSON each fit.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
# Only a drive letter makes a path absolute on Windows ("C:" or "C:/..."); "1:2.txt" is a name.
_DRIVE_RE = re.compile(r"[A-Za-z]:(/|$)")

# A manifest of a 70B model names ~112k chunks, and audits decode every manifest of a repository,
# so the per-chunk rules run in msgspec's C decoder as it parses: each digest's length and each
# size's range. The hex digits are checked by one C-speed pass per file (``_chunks_valid``):
# msgspec's ``pattern`` runs a regex per digest, which costs more than the Python loop did.
# Measured on one 8 MB manifest of 112k chunks (CPU, best of 25): decode + validate 55 ms with
# a regex per chunk in Python, 21 ms now (msgspec's part 13 ms; with ``pattern`` it took 74 ms).
# (Constructing a FileEntry checks nothing: ``validate`` checks everything for manifests that
# were not decoded.)
ChunkDigest = Annotated[str, msgspec.Meta(min_length=64, max_length=64)]
ChunkSize = Annotated[int, msgspec.Meta(gt=0, le=MAX_CHUNK_SIZE)]
_HEX_DIGITS = b"0123456789abcdef"


class FileEntry(msgspec.Struct, array_like=False, forbid_unknown_fields=True):
    path: str
    size: int
    mode: int
    blake3: str
    chunks: list[tuple[ChunkDigest, ChunkSize]]


class Manifest(msgspec.Struct, forbid_unknown_fields=True):
    # Field order is the key order on disk (docs/design.md §3.2).
    format: int
    model: str
    tag: str
    created_at: str
    created_by: str
    message: str
    total_size: int
    files: list[FileEntry]

    def same_content(self, other: Manifest) -> bool:
        """Same paths, sizes, modes and digests: a re-push of this is 'already pushed'."""
        return [(f.path, f.size, f.mode, f.blake3) for f in self.files] == [
            (f.path, f.size, f.mode, f.blake3) for f in other.files
        ]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Manifest)


def encode(manifest: Manifest) -> bytes:
    return _encoder.encode(manifest)


def digest_of(data: bytes) -> str:
    """The manifest digest: BLAKE3 of the manifest's bytes as stored."""
    return blake3.blake3(data).hexdigest()


def check_path(path: str) -> str | None:
    """Why ``path`` is not acceptable as a manifest path, or None if it is. Never raises:
    push calls it on file names as the OS gives them (lone surrogates for non-UTF-8 bytes)."""
    if not path:
        return "empty path"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "path is not valid UTF-8 (a name in another encoding)"
    if size > MAX_PATH_BYTES:
        return f"path is longer than {MAX_PATH_BYTES} bytes"
    if has_control(path):
        return "control character (newline, tab, escape ...) in path"
    if path.startswith("/") or _DRIVE_RE.match(path):
        return "absolute path"
    if "\\" in path:
        return "backslash in path"
    parts = path.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        return f"path is deeper than {MAX_PATH_DEPTH} levels"
    for part in parts:
        if part in ("", ".", ".."):
            return "path is not normalised or climbs out of the tree"
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            return f"a name in the path is longer than {MAX_NAME_BYTES} bytes"
    if parts[0].startswith(".aim"):
        return "paths under .aim are reserved"
    return None


def _number(n: int, spec: str = "d") -> str:
    """An int from a manifest for a message: msgspec accepts ints of thousands of digits."""
    return format(n, spec) if -(2**64) < n < 2**64 else "(a number beyond 64 bits)"


def _file_dir_clash(paths: list[str]) -> str | None:
    """A path that is both a file and the directory of another file, or None.

    In the order where "/" sorts before every other character (control characters, "\\x00"
    included, are refused above), a directory's entries directly follow it: comparing
    neighbours is enough. (A set of every parent directory costs depth x length per file: a
    hostile manifest of deep, long paths would take gigabytes.)"""
    ordered = sorted(paths, key=lambda p: p.replace("/", "\x00"))
    for a, b in pairwise(ordered):
        if b.startswith(a + "/"):
            return a
    return None


def _chunks_valid(chunks: list[tuple[str, int]], *, decoded: bool) -> bool:
    """Whether every chunk is (64 lowercase hex digits, 0 < size <= MAX_CHUNK_SIZE), in a few
    passes that run in C (no Python step per chunk). ``decoded``: msgspec already checked each
    digest's length and each size's range (ChunkDigest, ChunkSize)."""
    if not chunks:
        return True
    if not decoded and not all(
        type(d) is str and len(d) == 64 and type(n) is int and 0 < n <= MAX_CHUNK_SIZE for d, n in chunks
    ):
        return False
    joined = "".join(map(itemgetter(0), chunks))
    return joined.isascii() and not joined.encode("ascii").translate(None, _HEX_DIGITS)


def _bad(where: str, why: str) -> IntegrityError:
    return IntegrityError(
        f"manifest {where} is invalid: {why}",
        "the version is corrupt or was not written by aim_cli; do not use it (run `aim_cli repo check`)",
    )


def validate(manifest: Manifest, *, where: str, decoded: bool = False) -> Manifest:
    """Raise IntegrityError unless ``manifest`` is well formed and safe to materialise.
    ``decoded``: it comes from ``decode``, whose msgspec types already checked part of each chunk."""
    if manifest.format != FORMAT:
        raise _bad(where, f"unknown format {_number(manifest.format)}")
    if not CREATED_AT.fullmatch(manifest.created_at):
        raise _bad(where, f"created_at {quoted(manifest.created_at)} is not an RFC 3339 UTC time")
    total = 0
    previous = None
    for f in manifest.files:
        why = check_path(f.path)
        if why:
            raise _bad(where, f"{why}: {quoted(f.path)}")
        if previous is not None and f.path <= previous:
            raise _bad(where, f"paths are not sorted and unique at {quoted(f.path)}")
        previous = f.path
        if f.size < 0 or not HEX64.fullmatch(f.blake3):
            raise _bad(where, f"bad size or digest for {quoted(f.path)}")
        if not 0 <= f.mode <= MODE_MASK:
            raise _bad(where, f"bad mode {_number(f.mode, '#o')} for {quoted(f.path)}")
        if not _chunks_valid(f.chunks, decoded=decoded):
            raise _bad(where, f"bad chunk in {quoted(f.path)}")
        chunk_total = sum(map(itemgetter(1), f.chunks))
        if chunk_total != f.size:
            raise _bad(where, f"chunks of {quoted(f.path)} add up to {chunk_total} bytes, not {_number(f.size)}")
        total += f.size
    clash = _file_dir_clash([f.path for f in manifest.files])
    if clash is not None:
        raise _bad(where, f"{quoted(clash)} is both a file and a directory")
    if total != manifest.total_size:
        raise _bad(where, f"total_size {_number(manifest.total_size)} does not match the files ({total})")
    return manifest


# Where msgspec's message places a refused chunk: "... - at `$.files[3].chunks[7][0]`".
_CHUNK_AT = re.compile(r"at `\$\.files\[(\d+)\]\.chunks\[")


def _refused_chunk(data: bytes, error: msgspec.ValidationError) -> str | None:
    """validate's reason ("bad chunk in <path>") when msgspec's types refused a chunk, else None.
    The file's path comes from a second, untyped parse: this runs only for a refused manifest."""
    at = _CHUNK_AT.search(str(error))
    if at is None:
        return None
    index = int(at[1])
    try:
        path = msgspec.json.decode(data)["files"][index]["path"]
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError, LookupError, TypeError):
        path = None  # the document is malformed further on (msgspec stopped at the chunk)
    return f"bad chunk in {quoted(path) if isinstance(path, str) else f'file number {index + 1}'}"


def decode(data: bytes, *, where: str) -> Manifest:
    """Parse and validate a stored manifest: a Manifest, or IntegrityError and nothing else."""
    hint = "the version is corrupt; do not use it (run `aim_cli repo check`)"
    if len(data) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"manifest {where} is larger than {MAX_MANIFEST_BYTES} bytes", hint)
    try:
        manifest = _decoder.decode(data)
    except msgspec.ValidationError as e:
        why = _refused_chunk(data, e)
        if why is None:
            raise IntegrityError(f"manifest {where} cannot be parsed: {printable(str(e))}", hint) from None
        raise _bad(where, why) from None
    # Malformed JSON, a wrong type, an int beyond any size; invalid UTF-8 in a key is a
    # UnicodeDecodeError. msgspec's message may quote the input: escaped, never raw.
    except (msgspec.MsgspecError, UnicodeDecodeError) as e:
        raise IntegrityError(f"manifest {where} cannot be parsed: {printable(str(e))}", hint) from None
    return validate(manifest, where=where, decoded=True)
