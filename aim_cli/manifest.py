"""The version manifest (format 1): msgspec Structs, encoding, validation, digest.

A manifest is the commit point of a push and the only thing a pull trusts, so decoding it is
strict: every path is checked against traversal (``..``, absolute paths, backslashes, ``.aim*``),
duplicates, ordering, and every size against its chunks. A manifest that fails any check is an
``IntegrityError`` (exit 5), never a partial result.
"""

from __future__ import annotations

import re

import blake3
import msgspec

from aim_cli import chunking
from aim_cli.errors import IntegrityError

FORMAT = 1
HEX64 = re.compile(r"[0-9a-f]{64}")
# Only permission bits travel: never setuid/setgid/sticky from a manifest.
MODE_MASK = 0o777
# Pull's memory bound (jobs x max chunk size) holds only if a manifest cannot claim bigger chunks.
MAX_CHUNK_SIZE = chunking.MAX_CHUNK_SIZE


class FileEntry(msgspec.Struct, array_like=False, forbid_unknown_fields=True):
    path: str
    size: int
    mode: int
    blake3: str
    chunks: list[tuple[str, int]]


class Manifest(msgspec.Struct, forbid_unknown_fields=True):
    # Field order is the key order on disk (DESIGN.md section 2).
    format: int
    model: str
    tag: str
    created_at: str
    created_by: str
    message: str
    total_size: int
    files: list[FileEntry]

    def same_content(self, other: "Manifest") -> bool:
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


# Limits of what pull can write on common filesystems (stand-in: the config helper owns these).
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_DEPTH = 64


def check_path(path: str) -> str | None:
    """Why ``path`` is not acceptable as a manifest path, or None if it is."""
    if not path:
        return "empty path"
    if path.startswith("/") or (len(path) > 1 and path[1] == ":" and path[0].isascii() and path[0].isalpha()):
        return "absolute path"
    if "\\" in path or "\x00" in path:
        return "backslash or NUL in path"
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "control character in path"
    if len(encoded) > MAX_PATH_BYTES:
        return f"path is longer than {MAX_PATH_BYTES} bytes"
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        return f"path is deeper than {MAX_DEPTH} levels"
    for part in parts:
        if part in ("", ".", ".."):
            return "path is not normalised or climbs out of the tree"
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            return f"a name is longer than {MAX_COMPONENT_BYTES} bytes"
    if parts[0].startswith(".aim"):
        return "paths under .aim are reserved"
    return None


def validate(manifest: Manifest, *, where: str) -> Manifest:
    """Raise IntegrityError unless ``manifest`` is well formed and safe to materialise."""

    def bad(why: str) -> IntegrityError:
        return IntegrityError(
            f"manifest {where} is invalid: {why}",
            "the version is corrupt or was not written by aim_cli; do not use it (run `aim_cli repo check`)",
        )

    if manifest.format != FORMAT:
        raise bad(f"unknown format {manifest.format}")
    total = 0
    previous = None
    seen_dirs: set[str] = set()
    paths = set()
    for f in manifest.files:
        why = check_path(f.path)
        if why:
            raise bad(f"{why}: {f.path!r}")
        if previous is not None and f.path <= previous:
            raise bad(f"paths are not sorted and unique at {f.path!r}")
        previous = f.path
        paths.add(f.path)
        parts = f.path.split("/")
        for i in range(1, len(parts)):
            seen_dirs.add("/".join(parts[:i]))
        if f.size < 0 or not HEX64.fullmatch(f.blake3):
            raise bad(f"bad size or digest for {f.path!r}")
        if f.mode & ~MODE_MASK or f.mode < 0:
            raise bad(f"bad mode {f.mode:o} for {f.path!r}")
        chunk_total = 0
        for digest, size in f.chunks:
            if not HEX64.fullmatch(digest) or not 0 < size <= MAX_CHUNK_SIZE:
                raise bad(f"bad chunk in {f.path!r}")
            chunk_total += size
        if chunk_total != f.size:
            raise bad(f"chunks of {f.path!r} add up to {chunk_total} bytes, not {f.size}")
        total += f.size
    clash = paths & seen_dirs
    if clash:
        raise bad(f"{sorted(clash)[0]!r} is both a file and a directory")
    if total != manifest.total_size:
        raise bad(f"total_size {manifest.total_size} does not match the files ({total})")
    return manifest


def decode(data: bytes, *, where: str) -> Manifest:
    try:
        manifest = _decoder.decode(data)
    except msgspec.DecodeError as e:
        raise IntegrityError(
            f"manifest {where} cannot be parsed: {e}",
            "the version is corrupt; do not use it (run `aim_cli repo check`)",
        ) from None
    return validate(manifest, where=where)
